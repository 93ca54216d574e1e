"""How much does the Slurm bridge add to Slurm itself? Jobs through Pairio vs a plain sbatch loop.

Starts a throw-away single-node Slurm cluster (tests/slurm_support.py; needs root and
the packages of scripts/ensure-test-packages.sh), or with ``--slurm-conf FILE`` uses the
cluster already running from that slurm.conf (e.g. the tests' ``slurm_cluster``; it is
neither started nor stopped), a hub process on SQLite and a ``pairio-bridge slurm``
process, then times, on the same cluster:

- baseline: a plain loop of ``sbatch --parsable`` submitting N jobs that run the same
  processor the Pairio jobs run (a small Python script), waiting until Slurm lists
  all of them as ended;
- pairio: N jobs submitted with the Python client, from ``submit_job`` until the hub
  has all of them completed (claim, staging, sbatch, squeue, output upload, report).

It prints both times, the ratio pairio / baseline, jobs per second, and the number of
squeue calls the bridge made (counted through a wrapper, as a site may wrap squeue).
The node advertises 8 CPUs (SlurmdParameters=config_overrides), so Slurm's own
scheduling, not the two cores of a small machine, sets the pace of the baseline.

    sudo python bench/bench_slurm_throughput.py [--jobs 40] [--slurm-conf FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.slurm_support import SlurmLab, slurm_missing  # noqa: E402
from tests.test_bridge_e2e import PROCESSOR, HubProcess, Stack, wait_for  # noqa: E402


class PatientHub(HubProcess):
    """The tests' hub process, given more time to start on a machine other programs keep busy."""

    def start(self) -> None:
        try:
            super().start()
        except AssertionError:
            if self.process is None or self.process.poll() is not None:
                raise
            wait_for(self._answers, 180, f"the hub at {self.url}")


def wait_until_ended(lab: SlurmLab, ids: list[str], timeout_sec: float = 600) -> None:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        out = lab.command("squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%T").stdout.split()
        if len(out) == len(ids) and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in out):
            return
        time.sleep(0.1)
    raise SystemExit("the baseline jobs did not end in time")


def baseline(lab: SlurmLab, root: Path, n: int) -> float:
    processor = root / "processor.py"
    processor.write_text(PROCESSOR)
    job_file = root / "job.json"
    job_file.write_text(json.dumps({"jobId": "baseline", "processorName": "work", "parameters": {"message": "hi"}, "outputs": [], "inputs": []}))
    started = time.monotonic()
    ids = []
    for i in range(n):
        result = lab.command(
            "sbatch", "--parsable", f"--job-name=baseline-{i}", "--time=1", "--mem=512M", "--cpus-per-task=1",
            f"--chdir={root}", f"--output={root}/baseline-{i}.out",
            f"--wrap=PAIRIO_JOB_FILE={job_file} {sys.executable} {processor}",
        )
        ids.append(result.stdout.strip().split(";")[0])
    wait_until_ended(lab, ids)
    return time.monotonic() - started


def breakdown(stack: Stack, jobs: list) -> dict[str, float]:  # type: ignore[type-arg]
    """Medians of where each job's time went, from the hub's events and the processor's own start/end times."""
    import statistics

    import httpx

    from bridge.slurm.script import EXIT_CODE_FILE, SCRIPT_FILE, SLURM_JOB_ID_FILE

    parts: dict[str, list[float]] = {
        "created -> claimed": [], "claimed -> batch script written": [], "batch script -> Slurm started it": [],
        "script started -> processor started": [],
        "processor ran": [], "processor ended -> result.json": [], "result.json -> script exited": [],
        "script exited -> completed at hub": [],
    }
    for job in jobs:
        events = httpx.get(f"{stack.hub.url}/v1/jobs/{job.jobId}/events", timeout=30).json()["events"]
        at = {e["status"]: e["timestampSec"] for e in events if e.get("status")}
        span = json.loads((stack.record_dir / f"span-{job.jobId}.json").read_text())
        parts["created -> claimed"].append(at["starting"] - at["pending"])
        job_dir = stack.bridge_dir / "jobs" / job.jobId
        script, began, result, exited = (
            (job_dir / name).stat().st_mtime for name in (SCRIPT_FILE, SLURM_JOB_ID_FILE, "result.json", EXIT_CODE_FILE)
        )
        parts["claimed -> batch script written"].append(script - at["starting"])
        parts["batch script -> Slurm started it"].append(began - script)  # sbatch, the queue's wait for a free CPU, the launch
        parts["script started -> processor started"].append(span["start"] - began)  # bash, the watcher's start
        parts["processor ran"].append(span["end"] - span["start"])
        parts["processor ended -> result.json"].append(result - span["end"])
        parts["result.json -> script exited"].append(exited - result)
        parts["script exited -> completed at hub"].append(at["completed"] - exited)
    return {k: statistics.median(v) for k, v in parts.items()}


def through_pairio(root: Path, n: int) -> tuple[float, int, dict[str, float]]:
    hub = PatientHub(root / "hub")
    key = hub.admin("create-user", "bench").strip().splitlines()[-1]
    hub.start()
    stack = Stack(hub, key, root / "stack", bridge_kind="slurm")
    log = root / "squeue-calls.log"
    wrapper = root / "squeue-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $*" >> {log}\nexec squeue "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    try:
        stack.register("--multiplicity", str(n), "--max-concurrent-jobs", str(n),
                       config_updates={"slurm": {"squeueCommand": str(wrapper), "queuePollMinSec": 0.5}})
        stack.bridge.start()
        time.sleep(3)  # the bridge's start-up is not part of the measurement
        started = time.monotonic()
        jobs = [stack.submit("work", message=f"job {i}", index=i) for i in range(n)]
        for job in jobs:
            done = stack.wait_done(job, 600)
            if done.status.value != "completed":
                raise SystemExit(f"job {job.jobId} {done.status.value}: {done.error}")
        elapsed = time.monotonic() - started
        calls = len(log.read_text().splitlines()) if log.exists() else 0
        if os.environ.get("PAIRIO_BENCH_BRIDGE_LOG"):
            Path(os.environ["PAIRIO_BENCH_BRIDGE_LOG"]).write_text(stack.bridge.log + "\n--- squeue calls\n" + (log.read_text() if log.exists() else ""))
        return elapsed, calls, breakdown(stack, jobs)
    finally:
        stack.close()
        hub.stop()


@contextmanager
def cluster(root: Path, slurm_conf: Path | None) -> Iterator[SlurmLab]:
    """The cluster to measure on, with SLURM_CONF pointing at it (the bridge inherits it): the one running
    from ``slurm_conf``, or a throw-away one under ``root``, stopped at the end."""
    if slurm_conf is not None:
        lab = SlurmLab.running(slurm_conf.resolve())
        os.environ["SLURM_CONF"] = str(lab.conf)
        yield lab
        return
    missing = slurm_missing()
    if missing:
        raise SystemExit(f"cannot run: {missing}")
    lab = SlurmLab(root)
    lab.start()
    os.environ["SLURM_CONF"] = str(lab.conf)
    try:
        yield lab
    finally:
        lab.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument(
        "--slurm-conf", type=Path, default=None,
        help="measure on the cluster already running from this slurm.conf (neither started nor stopped here); "
        "default: a throw-away single-node cluster",
    )
    args = parser.parse_args()
    if args.slurm_conf is not None and not args.slurm_conf.is_file():
        raise SystemExit(f"--slurm-conf {args.slurm_conf}: no such file")
    with tempfile.TemporaryDirectory(prefix="pairio-bench-slurm-") as tmp:
        root = Path(tmp)
        (root / "stack").mkdir()
        with cluster(root / "slurm", args.slurm_conf) as lab:
            lab.command("sbatch", "--parsable", "--wrap=true", f"--output={root}/warmup.out")  # the first scheduling pass is slow
            time.sleep(3)
            plain = baseline(lab, root, args.jobs)
            pairio, calls, parts = through_pairio(root, args.jobs)
    print(f"Slurm {'.'.join(map(str, lab.version))}, {args.jobs} jobs on {'the cluster of ' + str(lab.conf) if args.slurm_conf else 'one node advertising 8 CPUs'}")
    print(f"  plain sbatch loop: {plain:6.1f} s ({args.jobs / plain:.1f} jobs/s)")
    print(f"  through Pairio:    {pairio:6.1f} s ({args.jobs / pairio:.1f} jobs/s), {calls} squeue calls")
    print(f"  ratio pairio / plain sbatch: {pairio / plain:.2f}")
    print("  median per job through Pairio:")
    for name, seconds in parts.items():
        print(f"    {name:36s} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
