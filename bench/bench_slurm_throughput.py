"""How much does the Slurm bridge add to Slurm itself? Jobs through Pairio vs a plain sbatch loop.

Starts a throw-away single-node Slurm cluster (tests/slurm_support.py; needs root and
the packages of scripts/ensure-test-packages.sh), or with ``--slurm-conf FILE`` uses the
cluster already running from that slurm.conf (e.g. the tests' ``slurm_cluster``; it is
neither started nor stopped), a hub process on SQLite and a ``pairio-bridge slurm``
process, then times, on the same cluster, in ``--rounds`` rounds whose order alternates
(plain first, then Pairio first, ...) so that the cluster's drift falls on both alike:

- baseline: a plain loop of ``sbatch --parsable`` submitting N jobs that run the same
  processor the Pairio jobs run (a small Python script), until ``squeue`` lists all of
  them as ended (asked every 0.1 s);
- pairio: N jobs submitted with the Python client, from ``submit_job`` until the hub
  counts all of them completed (asked every 0.1 s: claim, staging, sbatch, squeue,
  output upload, report).

It prints the median time of each, their ratio (the headline), each round's ratio, the
machine's CPU time per job on each side (all processes: the Slurm daemons, the hub, the
bridge, the jobs), the number of squeue calls the bridge made (counted through a
wrapper, as a site may wrap squeue) and the median of each step of a job's life.
The node advertises 8 CPUs (SlurmdParameters=config_overrides), so Slurm's own
scheduling, not the two cores of a small machine, sets the pace of the baseline.

    sudo python bench/bench_slurm_throughput.py [--jobs 40] [--rounds 5] [--slurm-conf FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

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


POLL_SEC = 0.1
"""how often both sides are asked whether their jobs have all ended: the same for both, so neither gains"""


def machine_cpu_sec() -> float:
    """CPU time spent so far by the whole machine (every process, kernel included), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_until_ended(lab: SlurmLab, ids: list[str], timeout_sec: float = 600) -> None:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        out = lab.command("squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%T").stdout.split()
        if len(out) == len(ids) and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in out):
            return
        time.sleep(POLL_SEC)
    raise SystemExit("the baseline jobs did not end in time")


def baseline(lab: SlurmLab, root: Path, n: int, round_no: int) -> float:
    processor = root / "processor.py"
    processor.write_text(PROCESSOR)
    job_file = root / "job.json"
    job_file.write_text(json.dumps({"jobId": "baseline", "processorName": "work", "parameters": {"message": "hi"}, "outputs": [], "inputs": []}))
    started = time.monotonic()
    ids = []
    for i in range(n):
        result = lab.command(
            "sbatch", "--parsable", f"--job-name=baseline-{round_no}-{i}", "--time=1", "--mem=512M", "--cpus-per-task=1",
            f"--chdir={root}", f"--output={root}/baseline-{round_no}-{i}.out",
            f"--wrap=PAIRIO_JOB_FILE={job_file} {sys.executable} {processor}",
        )
        ids.append(result.stdout.strip().split(";")[0])
    wait_until_ended(lab, ids)
    return time.monotonic() - started


def breakdown(stack: Stack, jobs: list[Any]) -> dict[str, float]:
    """Medians of where each job's time went, from the hub's events and the processor's own start/end times."""
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


class ThroughPairio:
    """A hub on SQLite and a Slurm bridge, started once and kept for every round."""

    def __init__(self, root: Path, n: int) -> None:
        self.hub = PatientHub(root / "hub")
        key = self.hub.admin("create-user", "bench").strip().splitlines()[-1]
        self.hub.start()
        self.stack = Stack(self.hub, key, root / "stack", bridge_kind="slurm")
        self.squeue_log = root / "squeue-calls.log"
        wrapper = root / "squeue-wrapper"
        wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $*" >> {self.squeue_log}\nexec squeue "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        self.jobs: list[Any] = []
        self.squeue_calls: list[int] = []
        self.asker = httpx.Client(base_url=self.hub.url, timeout=30)
        """one kept-alive connection for the polls: a new client per poll would cost this machine's CPU more than squeue"""
        self.stack.register("--multiplicity", str(n), "--max-concurrent-jobs", str(n),
                            config_updates={"slurm": {"squeueCommand": str(wrapper), "queuePollMinSec": 0.5}})
        self.stack.bridge.start()
        time.sleep(3)  # the bridge's start-up is not part of the measurement

    def _ended(self) -> int:
        counts = self.asker.get("/v1/job-counts", params={"serviceName": self.stack.service}).json()["counts"]
        return int(counts.get("completed", 0)) + int(counts.get("failed", 0))

    def round(self, n: int, round_no: int) -> float:
        calls_before = self._squeue_calls()
        ended_before = self._ended()
        started = time.monotonic()
        jobs = [self.stack.submit("work", message=f"job {round_no}.{i}", index=round_no * 100_000 + i) for i in range(n)]
        deadline = started + 600
        while self._ended() < ended_before + n:
            if time.monotonic() > deadline:
                raise SystemExit("the jobs through Pairio did not end in time")
            time.sleep(POLL_SEC)
        elapsed = time.monotonic() - started
        for job in jobs:
            done = self.stack.client.get_job(job.jobId)
            if done.status.value != "completed":
                raise SystemExit(f"job {job.jobId} {done.status.value}: {done.error}")
        self.jobs += jobs
        self.squeue_calls.append(self._squeue_calls() - calls_before)
        return elapsed

    def _squeue_calls(self) -> int:
        return len(self.squeue_log.read_text().splitlines()) if self.squeue_log.exists() else 0

    def close(self) -> None:
        try:
            if os.environ.get("PAIRIO_BENCH_BRIDGE_LOG"):
                log = self.squeue_log.read_text() if self.squeue_log.exists() else ""
                Path(os.environ["PAIRIO_BENCH_BRIDGE_LOG"]).write_text(self.stack.bridge.log + "\n--- squeue calls\n" + log)
        finally:
            self.asker.close()
            self.stack.close()
            self.hub.stop()


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


def _range(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} s median, {min(values):.2f}-{max(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs per round and side")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each timing both sides, their order alternating")
    parser.add_argument(
        "--slurm-conf", type=Path, default=None,
        help="measure on the cluster already running from this slurm.conf (neither started nor stopped here); "
        "default: a throw-away single-node cluster",
    )
    args = parser.parse_args()
    if args.slurm_conf is not None and not args.slurm_conf.is_file():
        raise SystemExit(f"--slurm-conf {args.slurm_conf}: no such file")
    if args.jobs < 1 or args.rounds < 1:
        raise SystemExit("--jobs and --rounds must be at least 1")
    plain: list[float] = []
    pairio: list[float] = []
    cpu = {"plain": 0.0, "pairio": 0.0}
    with tempfile.TemporaryDirectory(prefix="pairio-bench-slurm-") as tmp:
        root = Path(tmp)
        (root / "stack").mkdir()
        with cluster(root / "slurm", args.slurm_conf) as lab:
            lab.command("sbatch", "--parsable", "--wrap=true", f"--output={root}/warmup.out")  # the first scheduling pass is slow
            side = ThroughPairio(root, args.jobs)
            try:
                for r in range(args.rounds):
                    order = ("plain", "pairio") if r % 2 == 0 else ("pairio", "plain")
                    for name in order:
                        cpu_before = machine_cpu_sec()
                        if name == "plain":
                            plain.append(baseline(lab, root, args.jobs, r))
                        else:
                            pairio.append(side.round(args.jobs, r))
                        cpu[name] += machine_cpu_sec() - cpu_before
                    print(f"  round {r + 1}: plain {plain[-1]:.2f} s, pairio {pairio[-1]:.2f} s, ratio {pairio[-1] / plain[-1]:.2f}", flush=True)
                parts = breakdown(side.stack, side.jobs)
            finally:
                side.close()
    n_total = args.jobs * args.rounds
    where = "the cluster of " + str(lab.conf) if args.slurm_conf else "one node advertising 8 CPUs"
    print(f"Slurm {'.'.join(map(str, lab.version))}, {args.jobs} jobs per round, {args.rounds} rounds (order alternating), on {where}")
    print(f"  plain sbatch loop: {_range(plain)} ({args.jobs / statistics.median(plain):.1f} jobs/s)")
    print(f"  through Pairio:    {_range(pairio)} ({args.jobs / statistics.median(pairio):.1f} jobs/s), "
          f"{statistics.median(side.squeue_calls):.0f} squeue calls per round")
    print(f"  ratio pairio / plain sbatch: {statistics.median(pairio) / statistics.median(plain):.2f} (of the medians; "
          f"rounds: {', '.join(f'{b / a:.2f}' for a, b in zip(plain, pairio))})")
    print(f"  machine CPU per job: plain {cpu['plain'] / n_total * 1000:.0f} ms, through Pairio {cpu['pairio'] / n_total * 1000:.0f} ms")
    print("  median per job through Pairio:")
    for name, seconds in parts.items():
        print(f"    {name:36s} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
