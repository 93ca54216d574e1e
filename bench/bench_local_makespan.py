"""Makespan of many trivial jobs through the hub and ``pairio-bridge local``, against running them directly.

Per run, on this machine, back to back:

- baseline: the same processor command (tests/test_bridge_e2e.py's processor, reading a
  job file) run directly N times, ``--slots`` at a time;
- through Pairio: N jobs submitted to a real hub process (``pairio hub serve``) while no
  bridge runs, then a ``pairio-bridge local`` process with ``--slots`` slots (one CPU
  each) registered and started with its defaults: each processor forked from the app's
  interpreter started once (warm start, bridge/local/warm_start.py), where the baseline starts a
  new one per job, and jobs claimed ahead while both slots are busy, each started the moment a
  slot frees (``--claim-ahead N`` sets claimAheadJobs); the makespan runs from the hub's first
  claim to the hub's last final status (the bridge process's own start-up is shown apart);
- the same again with the bridge registered with ``--no-python-warm-start --claim-ahead 0``
  (unless ``--no-cold``): a new interpreter per job, a slot refilled only once it is free;
- the same N jobs through bench/bare_pipeline.py (unless ``--no-bare``): a bare FastAPI + SQLite
  hub and a bridge of threads starting each processor under /bin/sh, nothing else; what a design
  of this shape pays on this machine at least, as its own ratio and CPU-bound floor;
- the baseline again, so a change in the machine's load shows.

It prints the makespans, their ratios (Pairio / mean of the baselines), where each job's
time went (medians and 90th percentiles of claim -> watcher started -> processor
started -> processor ended -> result written -> final status at the hub, and the gap
from one job's end to the next claim), how often all slots ran processors together, and
how many hub requests the bridge made per job (the hub's access log), and the ratio the CPU
used allows at best (every process's CPU time on the machine's CPUs, none ever idle).

    python bench/bench_local_makespan.py [--jobs 500] [--slots 2] [--sleep 0]
        [--respect-machine-load] [--poll-interval SEC] [--no-breakdown] [--no-bare] [--no-cold] [--claim-ahead N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import bare_pipeline  # noqa: E402

from tests.test_bridge_e2e import PAIRIO, HubProcess, OutputCollector, Stack, wait_for  # noqa: E402

ACCESS_LINE = re.compile(r'"(GET|POST|PUT|DELETE|PATCH) (/v1/compute/[^ ?]*)')


class LoggingHub(HubProcess):
    """The tests' hub process, with uvicorn's access log on (to count the bridge's requests) and default timings."""

    def start(self) -> None:
        self.process = subprocess.Popen(
            PAIRIO + ["hub", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.output = OutputCollector(self.process)
        wait_for(self._answers, 60, f"the hub at {self.url}")

    def compute_requests(self, skip_lines: int = 0) -> dict[str, int]:
        assert self.output is not None
        counts: dict[str, int] = {}
        for line in self.output.lines[skip_lines:]:
            m = ACCESS_LINE.search(line)
            if m:
                path = re.sub(r"/jobs/[^/]+", "/jobs/ID", m.group(2))
                key = f"{m.group(1)} {path}"
                counts[key] = counts.get(key, 0) + 1
        return counts


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU time of a process (and of the children it reaped), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def reported_jobs(jobs_dir: Path) -> int:
    """How many of the bridge's jobs it has reported to the hub (their state.json says so)."""
    count = 0
    for state in jobs_dir.glob("*/state.json"):
        try:
            count += json.loads(state.read_text()).get("phase") == "reported"
        except (OSError, ValueError):
            pass
    return count


def launcher_cpu(bridge_pid: int) -> float:
    """CPU of the bridge's watcher launcher (bridge/local/watcher_launcher.py), with the watchers it forked and reaped."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == bridge_pid and b"watcher_launcher" in (entry / "cmdline").read_bytes():
                total += cpu_seconds(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


BASELINE_CPU: list[float] = []


def baseline(work: Path, processor: Path, jobs: int, slots: int, sleep: float) -> float:
    """The processor run directly ``jobs`` times, ``slots`` at a time; the makespan in seconds."""
    times_before = os.times()
    record = work / "records"
    files = []
    for i in range(jobs):
        job_dir = work / f"job{i}"
        (job_dir / "work").mkdir(parents=True)
        job_file = job_dir / "job.json"
        job_file.write_text(json.dumps({
            "jobId": f"job{i}", "processorName": "work", "inputs": [], "outputs": [],
            "parameters": {"record_dir": str(record), "sleep": sleep, "index": i, "message": ""},
        }))
        files.append(job_file)
    running: dict[int, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    for job_file in files:
        while len(running) >= slots:
            pid, _ = os.wait()
            running.pop(pid, None)
        p = subprocess.Popen(
            [sys.executable, str(processor)], cwd=job_file.parent / "work", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, env={**os.environ, "PAIRIO_JOB_FILE": str(job_file)},
        )
        running[p.pid] = p
    for p in running.values():
        p.wait()
    makespan = time.monotonic() - started
    times_after = os.times()
    BASELINE_CPU.append(
        times_after.children_user + times_after.children_system - times_before.children_user - times_before.children_system
    )
    return makespan


@dataclass
class JobTimes:
    claimed: float
    running_reported: Optional[float]
    finished: float
    watcher_launched: Optional[float]
    """the bridge created watcher.log, just before starting the watcher process"""
    watcher_ready: Optional[float]
    """the watcher wrote watcher.json, just after starting the processor"""
    processor_started: Optional[float]
    processor_ended: Optional[float]
    result_written: Optional[float]


def job_times(stack: Stack, job: Any) -> JobTimes:
    job_dir = stack.bridge_dir / "jobs" / job.jobId

    def mtime(name: str) -> Optional[float]:
        try:
            return (job_dir / name).stat().st_mtime
        except OSError:
            return None

    span: dict[str, float] = {}
    try:
        span = json.loads((stack.record_dir / f"span-{job.jobId}.json").read_text())
    except (OSError, ValueError):
        pass
    return JobTimes(
        claimed=job.timestampStartingSec, running_reported=job.timestampStartedSec, finished=job.timestampFinishedSec,
        watcher_launched=mtime("watcher.log"), watcher_ready=mtime("watcher.json"),
        processor_started=span.get("start"), processor_ended=span.get("end"), result_written=mtime("result.json"),
    )


def quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return f"median {1000 * statistics.median(values):6.0f} ms, p90 {1000 * p90:6.0f} ms"


def all_slots_busy_fraction(times: list[JobTimes], slots: int, start: float, end: float, first: str, last: str) -> float:
    """The share of [start, end] during which ``slots`` jobs were between their ``first`` and ``last`` times at once."""
    spans = [(getattr(t, first), getattr(t, last)) for t in times if getattr(t, first) and getattr(t, last)]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    at_once, last, busy = 0, start, 0.0
    for when, change in events:
        if at_once >= slots:
            busy += when - last
        at_once += change
        last = when
    return busy / (end - start) if end > start else 0.0


def slot_refill_gaps(times: list[JobTimes]) -> list[float]:
    """Per claim after the first ones: the time since the latest processor end before it (how long a slot sat empty)."""
    ends = sorted(t.processor_ended for t in times if t.processor_ended)
    gaps = []
    for t in sorted(times, key=lambda t: t.claimed):
        earlier = [e for e in ends if e <= t.claimed]
        if earlier:
            gaps.append(t.claimed - earlier[-1])
    return gaps


def through_pairio(
    hub: LoggingHub, key: str, work: Path, jobs: int, slots: int, sleep: float, respect_load: bool,
    poll_interval: Optional[float], cold: bool = False, claim_ahead: Optional[int] = None,
) -> dict[str, Any]:
    work.mkdir(parents=True)
    stack = Stack(hub, key, work)
    extra = ["--respect-machine-load"] if respect_load else []
    if cold:
        extra += ["--no-python-warm-start", "--claim-ahead", "0"]
    elif claim_ahead is not None:
        extra += ["--claim-ahead", str(claim_ahead)]
    # the bridge's own defaults for its timings (the tests' Stack makes them faster)
    updates: dict[str, Any] = {"pollIntervalSec": 0.5, "heartbeatIntervalSec": 2.0, "claimWaitSec": 10.0}
    if poll_interval is not None:
        updates["pollIntervalSec"] = poll_interval
    stack.register("--num-cpus", "1", "--multiplicity", str(slots), *extra, config_updates=updates)
    try:
        submitted = [stack.submit("work", index=i, sleep=sleep) for i in range(jobs)]
        assert hub.output is not None
        log_mark = len(hub.output.lines)
        assert hub.process is not None
        hub_cpu_before = cpu_seconds(hub.process.pid)
        bridge_started = time.time()
        stack.bridge.start()
        jobs_dir = stack.bridge_dir / "jobs"

        wait_for(lambda: reported_jobs(jobs_dir) >= jobs, 60 + 5 * jobs, f"{jobs} jobs to be reported", interval=0.5)
        assert stack.bridge.process is not None
        hub_cpu = cpu_seconds(hub.process.pid) - hub_cpu_before
        bridge_cpu = cpu_seconds(stack.bridge.process.pid, children=False)
        watchers_cpu = cpu_seconds(stack.bridge.process.pid) - bridge_cpu  # reaped watchers, with their processors
        watchers_cpu += launcher_cpu(stack.bridge.process.pid)  # the watcher launcher and the watchers it reaped
        # the hub's answer reached the bridge, so the hub has every final status
        done = [stack.client.get_job(j.jobId) for j in submitted]
        requests = hub.compute_requests(log_mark)
    finally:
        stack.close()
    failed = [j for j in done if j.status.value != "completed"]
    if failed:
        raise SystemExit(f"{len(failed)} job(s) did not complete, e.g. {failed[0].jobId}: {failed[0].error}\n{stack.bridge.log[-3000:]}")
    times = [job_times(stack, j) for j in done]
    first_claim = min(t.claimed for t in times)
    last_final = max(t.finished for t in times)
    return {
        "makespan": last_final - first_claim,
        "bridge_start": first_claim - bridge_started,
        "times": times,
        "requests": requests,
        "cpu": {"hub": hub_cpu, "bridge": bridge_cpu, "watchers and processors": watchers_cpu},
        "first_claim": first_claim,
        "last_final": last_final,
    }


def report_breakdown(result: dict[str, Any], jobs: int, slots: int) -> None:
    times: list[JobTimes] = result["times"]

    def spans(a: str, b: str) -> list[float]:
        return [getattr(t, b) - getattr(t, a) for t in times if getattr(t, a) is not None and getattr(t, b) is not None]

    print("where each job's time went (hub clock = this machine's):")
    for label, a, b in [
        ("claim -> watcher launched", "claimed", "watcher_launched"),
        ("watcher launched -> processor spawned", "watcher_launched", "watcher_ready"),
        ("processor spawned -> its code runs", "watcher_ready", "processor_started"),
        ("processor run", "processor_started", "processor_ended"),
        ("processor ended -> result.json", "processor_ended", "result_written"),
        ("result.json -> final status at hub", "result_written", "finished"),
        ("claim -> 'running' at hub", "claimed", "running_reported"),
        ("claim -> final status (whole job)", "claimed", "finished"),
    ]:
        print(f"  {label:<40} {quantiles(spans(a, b))}")
    print(f"  {'processor end -> next claim (slot empty)':<40} {quantiles(slot_refill_gaps(times))}")
    for what, first, last in [
        ("watchers (launch to result)", "watcher_launched", "result_written"),
        ("jobs at the hub (claim to final status)", "claimed", "finished"),
    ]:
        busy = all_slots_busy_fraction(times, slots, result["first_claim"], result["last_final"], first, last)
        print(f"  {slots} {what} at once: {100 * busy:.0f}% of the makespan")
    cpu = ", ".join(f"{name} {1000 * sec / jobs:.0f} ms" for name, sec in result["cpu"].items())
    print(f"  CPU per job: {cpu}; the processor alone (baseline) {1000 * statistics.mean(BASELINE_CPU) / jobs:.0f} ms")
    print_hub_requests(result["requests"], jobs)


def print_hub_requests(requests: dict[str, int], jobs: int) -> None:
    """The bridge's hub requests by route (from the hub's access log), most frequent first."""
    total = sum(requests.values())
    print(f"  hub requests from the bridge: {total} ({total / jobs:.1f} per job)")
    for name, count in sorted(requests.items(), key=lambda kv: -kv[1]):
        print(f"    {count:6d}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each processor sleeps (0: trivial jobs)")
    parser.add_argument("--respect-machine-load", action="store_true", help="register the bridge with --respect-machine-load")
    parser.add_argument("--poll-interval", type=float, default=None, help="the bridge's pollIntervalSec [default: its default]")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--claim-ahead", type=int, default=None, help="the bridge's claimAheadJobs in the run with its defaults [default: its default]")
    parser.add_argument("--no-cold", action="store_true", help="skip the run with a new interpreter per job and no claims ahead")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare pipeline (bench/bare_pipeline.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hub = LoggingHub(work / "hub")
        key = hub.admin("create-user", "bench").strip().splitlines()[-1]
        processor = work / "processor.py"
        from tests.test_bridge_e2e import PROCESSOR

        processor.write_text(PROCESSOR)
        before = baseline(work / "baseline1", processor, args.jobs, args.slots, args.sleep)
        hub.start()
        try:
            result = through_pairio(
                hub, key, work / "pairio", args.jobs, args.slots, args.sleep, args.respect_machine_load, args.poll_interval,
                claim_ahead=args.claim_ahead,
            )
            cold = None if args.no_cold else through_pairio(
                hub, key, work / "cold", args.jobs, args.slots, args.sleep, args.respect_machine_load, args.poll_interval, cold=True,
            )
        finally:
            hub.stop()
        bare = None if args.no_bare else bare_pipeline.run(work / "bare", processor, args.jobs, args.slots, args.sleep)
        after = baseline(work / "baseline2", processor, args.jobs, args.slots, args.sleep)
    base = (before + after) / 2
    load = "on" if args.respect_machine_load else "off"
    print(f"{args.jobs} jobs, {args.slots} slots, processor sleep {args.sleep:g} s, machine-load check {load}, "
          f"pollIntervalSec {args.poll_interval if args.poll_interval is not None else 'default'}")
    print(f"baseline (direct, {args.slots} at a time): {before:.2f} s before, {after:.2f} s after")
    ahead = f"claimAheadJobs {args.claim_ahead}" if args.claim_ahead is not None else "claiming ahead as by default"
    runs = [(f"through hub + bridge with its defaults (warm start, {ahead})", result)]
    if cold is not None:
        runs.append(("through hub + bridge with --no-python-warm-start --claim-ahead 0 (a new interpreter per job, "
                     "a slot refilled once free)", cold))
    for title, run in runs:
        print(f"{title}: {run['makespan']:.2f} s (first claim to last final status; "
              f"bridge start to first claim {run['bridge_start']:.2f} s more), ratio {run['makespan'] / base:.2f}")
        print(f"  extra makespan per job: {1000 * (run['makespan'] - base) / args.jobs:.0f} ms")
        if not args.no_breakdown:
            report_breakdown(run, args.jobs, args.slots)
            print(f"  {cpu_bound(run, base)}")
    if bare is not None:
        cpu = ", ".join(f"{name} {1000 * sec / args.jobs:.0f} ms" for name, sec in bare["cpu"].items())
        print(f"bare pipeline (bench/bare_pipeline.py: bare FastAPI + SQLite hub, a bridge of threads, /bin/sh as supervisor; "
              f"no features): {bare['makespan']:.2f} s, ratio {bare['makespan'] / base:.2f}")
        print(f"  CPU per job: {cpu}; {cpu_bound(bare, base)}")
    print(f"ratio: {result['makespan'] / base:.2f}")
    if cold is not None:
        print(f"ratio with a new interpreter per job and no claims ahead: {cold['makespan'] / base:.2f}")


def cpu_bound(result: dict[str, Any], base: float) -> str:
    """The ratio this run's CPU allows at best: every process's CPU time (hub, bridge with its start-up, watchers and
    processors) spread over the machine's CPUs with none ever idle, against the baseline's makespan."""
    cpus = len(os.sched_getaffinity(0))
    floor = sum(result["cpu"].values()) / cpus / base
    return f"CPU-bound floor of the ratio (this CPU on {cpus} CPUs, none ever idle): {floor:.2f}"


if __name__ == "__main__":
    main()
