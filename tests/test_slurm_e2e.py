"""End to end on the test Slurm cluster: a real hub process and a real ``pairio-bridge slurm`` process.

The bridge runs as it would on a login node (here the cluster's only node): jobs become
sbatch jobs, squeue follows them, the job directories are shared with the "compute
node" because it is the same machine. ``squeue``/``scancel`` are wrapped (as a site may
wrap them, through the squeueCommand/scancelCommand site options) by scripts that log
every call, so the tests count real calls.
"""

from __future__ import annotations

import json
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pairio import PairioJobDefinition, PairioJobRequiredResources

from . import test_bridge_e2e as e2e
from .slurm_support import SlurmLab
from .test_bridge_e2e import Stack, public_get, wait_for
from .test_bridge_examples import HELLO_WORLD_COMMAND, add_hello_world, job_id_of, run_example
from .test_cancel_e2e import test_cancel_kills_the_whole_tree_before_the_next_heartbeat  # noqa: F401 - run here with a Slurm bridge

hub = e2e.hub
# a safety net, not a measure: its waits are liveness bounds of up to 120 s each, far below what they guard against
pytestmark = pytest.mark.timeout(600)


def logging_wrapper(directory: Path, program: str) -> tuple[Path, Path]:
    log = directory / f"{program}-calls.log"
    wrapper = directory / f"{program}-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {program} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper, log


class SlurmStack(Stack):
    def __init__(self, hub: e2e.HubProcess, key: str, tmp_path: Path) -> None:
        super().__init__(hub, key, tmp_path, bridge_kind="slurm")
        self.squeue, self.squeue_log = logging_wrapper(tmp_path, "squeue")
        self.scancel, self.scancel_log = logging_wrapper(tmp_path, "scancel")

    def register(self, *extra: str, config_updates: dict[str, Any] | None = None, **site: Any) -> None:  # type: ignore[override]
        slurm = {
            "squeueCommand": str(self.squeue), "scancelCommand": str(self.scancel),
            "queuePollMinSec": 0.3, "queuePollMaxSec": 2.0, **site,
        }
        super().register(*extra, config_updates=config_updates)
        path = self.bridge_dir / "bridge.json"
        config = json.loads(path.read_text())
        config["slurm"] = {**config.get("slurm", {}), **slurm}  # on top of what register wrote
        path.write_text(json.dumps(config))

    def squeue_calls(self) -> list[str]:
        return self.squeue_log.read_text().splitlines() if self.squeue_log.exists() else []

    def slurm_job_id(self, job_id: str) -> str:
        return (self.bridge_dir / "jobs" / job_id / "slurm_job_id").read_text().strip()

    def events(self, job_id: str) -> list[str]:
        response = httpx.get(f"{self.hub.url}/v1/jobs/{job_id}/events", timeout=30)
        response.raise_for_status()
        return [e["message"] for e in response.json()["events"]]


@pytest.fixture
def stack(slurm_cluster: SlurmLab, hub: tuple[e2e.HubProcess, str], tmp_path: Path) -> Iterator[SlurmStack]:
    s = SlurmStack(hub[0], hub[1], tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_the_three_examples_run_as_slurm_jobs(stack: SlurmStack, slurm_cluster: SlurmLab) -> None:
    add_hello_world(stack)
    stack.register("--app", HELLO_WORLD_COMMAND)
    stack.bridge.start()
    printed = run_example(stack, "example1.py") + run_example(stack, "example2.py") + run_example(stack, "example3.py")
    url1, url2, _, url3 = (words[0] for words in printed)
    hello1 = stack.wait_done(stack.client.get_job(job_id_of(stack, url1)), 90)
    assert hello1.status.value == "completed", (hello1.error, stack.bridge.log)
    assert "Hello, world!" in public_get(hello1.consoleOutputUrl).text
    hello2 = stack.wait_done(stack.client.get_job(job_id_of(stack, url2)), 90)
    assert hello2.status.value == "completed", (hello2.error, stack.bridge.log)
    assert public_get(hello2.get_output("output")).text == "Hello, world!"
    count = stack.wait_done(stack.client.get_job(job_id_of(stack, url3)), 90)
    assert count.status.value == "completed", (count.error, stack.bridge.log)
    assert json.loads(public_get(count.get_output("output")).text) == {"num_characters": 13}
    # they really were Slurm jobs, with the examples' resources
    fields = slurm_cluster.show_job(stack.slurm_job_id(hello1.jobId))
    assert fields["JobName"] == f"pairio-{hello1.jobId}" and fields["JobState"] == "COMPLETED"
    assert "mem=4G" in fields["TRES"] or "mem=4096M" in fields["TRES"], fields["TRES"]
    assert any(m.startswith("submitted as Slurm job ") for m in stack.events(hello1.jobId))


def test_timeout_non_zero_exit_and_refused_gpu_request(stack: SlurmStack, slurm_cluster: SlurmLab) -> None:
    stack.register("--num-gpus", "1")  # the slot admits a GPU job, so the bridge claims it and sbatch judges it
    stack.bridge.start()
    failing = stack.submit("work", message="failing on purpose", exit_code=3)
    sleeper = stack.submit("work", message="sleeping", sleep=600)  # far beyond the waits below: only the time limit ends it
    gpu_definition = PairioJobDefinition.model_validate({"appName": "testapp", "processorName": "work"})
    gpu = stack.client.submit_job(
        stack.service, gpu_definition, PairioJobRequiredResources(numCpus=1, numGpus=1, memoryGb=0.5, timeSec=60), skip_cache=True
    )
    gpu_done = stack.wait_done(gpu, 120)
    assert gpu_done.status.value == "failed"
    # refused by sbatch (it never waits in the queue), with sbatch's reason
    assert "sbatch refused the job" in (gpu_done.error or "") and "gres" in (gpu_done.error or "").lower(), gpu_done.error

    failed = stack.wait_done(failing, 120)
    assert failed.status.value == "failed" and "exited with code 3" in (failed.error or ""), failed.error

    stack.wait_status(sleeper, "running", 120)
    wait_for(lambda: (stack.bridge_dir / "jobs" / sleeper.jobId / "slurm_job_id").exists(), 120, "the sleeper to start")
    slurm_cluster.command("scontrol", "update", f"JobId={stack.slurm_job_id(sleeper.jobId)}", "TimeLimit=0")
    timed_out = stack.wait_done(sleeper, 120)
    assert timed_out.status.value == "failed"
    assert "TIMEOUT" in (timed_out.error or "") and "time limit" in (timed_out.error or ""), timed_out.error


def test_cancel_reaches_scancel_and_pending_reasons_reach_the_timeline(stack: SlurmStack, slurm_cluster: SlurmLab) -> None:
    stack.register(extraDirectives=["--hold"])  # every job waits in the queue until released
    stack.bridge.start()
    held = stack.submit("work", message="released", index=1)
    wait_for(lambda: any("waiting in the slurm queue: JobHeld" in m for m in stack.events(held.jobId)), 120,
             f"the pending reason on the timeline; bridge log:\n{stack.bridge.log}")
    slurm_cluster.command("scontrol", "release", _queued_id(slurm_cluster, held.jobId))
    assert stack.wait_done(held, 120).status.value == "completed"

    to_cancel = stack.submit("work", message="never runs", index=2)  # held: only a cancel ends it
    wait_for(lambda: _queued_id(slurm_cluster, to_cancel.jobId, must=False), 120, "the job in the queue")
    slurm_id = _queued_id(slurm_cluster, to_cancel.jobId)
    started = time.monotonic()
    stack.client.cancel_job(to_cancel.jobId)
    wait_for(lambda: stack.scancel_log.exists() and slurm_id in stack.scancel_log.read_text(), 120, "scancel of the Slurm job")
    print(f"\ncancel -> scancel: {time.monotonic() - started:.2f} s")  # information only
    state = slurm_cluster.command("squeue", "-h", "-t", "all", "-j", slurm_id, "-o", "%T").stdout.strip()
    assert state == "CANCELLED"
    assert stack.wait_done(to_cancel, 120).status.value == "failed"


def _queued_id(slurm_cluster: SlurmLab, job_id: str, must: bool = True) -> str:
    out = slurm_cluster.command("squeue", "-h", "-t", "all", "-n", f"pairio-{job_id}", "-o", "%i").stdout.split()
    if must:
        assert out, f"no Slurm job named pairio-{job_id}"
    return out[0] if out else ""


def test_forty_jobs_with_squeue_calls_counted(stack: SlurmStack) -> None:
    stack.register("--multiplicity", "40", "--max-concurrent-jobs", "40")
    stack.bridge.start()
    started = time.monotonic()
    jobs = [stack.submit("work", message=f"job {i}", index=i) for i in range(40)]
    for job in jobs:
        done = stack.wait_done(job, 180)
        assert done.status.value == "completed", (done.error, stack.bridge.log)
    elapsed = time.monotonic() - started
    calls = [c for c in stack.squeue_calls() if " -j " in f" {c} "]
    ids_per_call = [len(c.split(" -j ", 1)[1].split()[0].split(",")) for c in calls]
    print(f"40 jobs in {elapsed:.1f} s: {len(calls)} squeue calls, ids per call {ids_per_call}")
    # Calls follow poll cycles (at most one per queuePollMinSec, here 0.3 s), never one per job.
    assert len(calls) <= elapsed / 0.3 + 5, (len(calls), elapsed)
    assert max(ids_per_call) >= 10, ids_per_call
    assert sum(ids_per_call) > len(calls), "each call asks about many jobs at once"
    assert all(stack.runs_of(job) == 1 for job in jobs)


def test_a_bridge_killed_while_jobs_run_settles_every_job_exactly_once(stack: SlurmStack) -> None:
    stack.register("--multiplicity", "6")
    stack.bridge.start()
    quick = [stack.submit("work", message=f"quick {i}", index=i) for i in range(3)]
    slow = [stack.submit("work", message=f"slow {i}", sleep=4, index=10 + i) for i in range(3)]
    for job in slow:
        stack.wait_status(job, "running", 60)
    assert stack.bridge.process is not None
    stack.bridge.process.send_signal(signal.SIGKILL)
    stack.bridge.process.wait(timeout=10)
    time.sleep(5)  # the slow jobs finish while no bridge watches
    stack.bridge.start()
    for job in quick + slow:
        done = stack.wait_done(job, 60)
        assert done.status.value == "completed", (done.error, stack.bridge.log)
        assert stack.runs_of(job) == 1
        assert "done" in public_get(done.consoleOutputUrl).text


def test_register_writes_site_options_and_refuses_bad_ones(stack: SlurmStack) -> None:
    stack.register(
        "--slurm-partition", "other", "--slurm-qos", "normal",
        "--slurm-option", 'prologue=["export LAB=1"]', "--slurm-option", "gpuStyle=gpus", "--slurm-option", "maxQueuedJobs=7",
    )
    site = json.loads((stack.bridge_dir / "bridge.json").read_text())["slurm"]
    assert (site["partition"], site["qos"], site["prologue"], site["gpuStyle"], site["maxQueuedJobs"]) == (
        "other", "normal", ["export LAB=1"], "gpus", 7
    )
    bad = e2e.subprocess.run(
        e2e.PAIRIO_BRIDGE + ["register", "--dir", str(stack.tmp_path / "other"), "--service", stack.service,
                             "--slurm-option", "gpuStyle=quantum"],
        capture_output=True, text=True, timeout=60, env=stack.env, check=False,
    )
    assert bad.returncode == 2 and "gpuStyle" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_the_slurm_bridge_says_when_slurm_does_not_answer(stack: SlurmStack, tmp_path: Path) -> None:
    stack.register()
    conf = tmp_path / "elsewhere.conf"
    conf.write_text((Path(stack.env["SLURM_CONF"])).read_text().replace("SlurmctldPort=", "SlurmctldPort=1") + "\n")
    result = e2e.subprocess.run(
        e2e.PAIRIO_BRIDGE + ["slurm", "--dir", str(stack.bridge_dir)],
        capture_output=True, text=True, timeout=120, env={**stack.env, "SLURM_CONF": str(conf)}, check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Slurm does not answer on this machine" in result.stderr and "Traceback" not in result.stderr, result.stderr
