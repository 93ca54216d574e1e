"""Trivial jobs through ``pairio-bridge ssh`` against the same command run by plain ``ssh host cmd`` (P5).

Per run, on this machine, with a real sshd on 127.0.0.1 (tests/ssh_support.py: its own host
key, client key and known_hosts; the remote host is this machine):

- baseline: N sequential ``ssh -p PORT -i KEY user@127.0.0.1 CMD``, CMD being the tests'
  processor (tests/test_bridge_e2e.py) reading a job file, as the bridge's jobs run it;
  one new connection per job, as a person (or a script) without Pairio would do it;
- through Pairio: N jobs submitted to a real hub process while no bridge runs, then a
  ``pairio-bridge ssh`` process with ``--slots`` one-CPU slots and its default timings;
  the makespan runs from the hub's first claim to its last final status (the bridge's
  own start-up, connecting included, is shown apart);
- the baseline again, so a change in the machine's load shows.

It prints both makespans, their ratio (Pairio / mean of the baselines), where each job's
time went (claim -> remote watcher launched -> processor spawned -> processor ran ->
result.json there -> mirrored here -> final status at the hub), how long a slot sat empty,
the CPU each part used and the bridge's hub requests per job.

    python bench/bench_ssh.py [--jobs 50] [--slots 2] [--sleep 0] [--poll-interval SEC]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_local_makespan import (  # noqa: E402
    JobTimes,
    LoggingHub,
    all_slots_busy_fraction,
    cpu_seconds,
    print_hub_requests,
    reported_jobs,
    quantiles,
    slot_refill_gaps,
)
from tests.ssh_support import TestSshd, require_ssh_tools  # noqa: E402
from tests.test_bridge_e2e import PROCESSOR, Stack, wait_for  # noqa: E402

REMOTE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


def ssh_argv(sshd: TestSshd) -> list[str]:
    """Plain OpenSSH with the bridge's key and known_hosts, nothing shared between calls (no ControlMaster)."""
    return [
        "ssh", "-p", str(sshd.port), "-i", str(sshd.client_key), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ControlMaster=no",
        "-o", "ControlPath=none", "-F", "/dev/null", f"{sshd.user}@127.0.0.1",
    ]  # fmt: skip


def baseline(sshd: TestSshd, work: Path, processor: Path, jobs: int, sleep: float) -> tuple[float, float]:
    """The processor run N times over ``ssh host cmd``, one after the other; (makespan, CPU seconds of ssh, sshd and the processors)."""
    record = work / "records"
    commands = []
    for i in range(jobs):
        job_dir = work / f"job{i}"
        (job_dir / "work").mkdir(parents=True)
        job_file = job_dir / "job.json"
        job_file.write_text(json.dumps({
            "jobId": f"job{i}", "processorName": "work", "inputs": [], "outputs": [],
            "parameters": {"record_dir": str(record), "sleep": sleep, "index": i, "message": ""},
        }))
        commands.append(f"cd {job_dir / 'work'} && PAIRIO_JOB_FILE={job_file} {sys.executable} {processor}")
    times_before, sshd_before = os.times(), sshd_cpu(sshd)
    started = time.monotonic()
    for command in commands:
        subprocess.run([*ssh_argv(sshd), command], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=120)
    makespan = time.monotonic() - started
    times_after = os.times()
    client = times_after.children_user + times_after.children_system - times_before.children_user - times_before.children_system
    return makespan, client + sshd_cpu(sshd) - sshd_before


def job_times(stack: Stack, job: Any) -> tuple[JobTimes, Optional[float]]:
    """The job's steps; the remote ones from the files of its remote directory (the same machine's clock)."""
    remote_dir = stack.tmp_path / "remote" / "jobs" / job.jobId

    def mtime(path: Path) -> Optional[float]:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    span: dict[str, float] = {}
    try:
        span = json.loads((stack.record_dir / f"span-{job.jobId}.json").read_text())
    except (OSError, ValueError):
        pass
    times = JobTimes(
        claimed=job.timestampStartingSec, running_reported=job.timestampStartedSec, finished=job.timestampFinishedSec,
        watcher_launched=mtime(remote_dir / "watcher.log"), watcher_ready=mtime(remote_dir / "watcher.json"),
        processor_started=span.get("start"), processor_ended=span.get("end"), result_written=mtime(remote_dir / "result.json"),
    )
    return times, mtime(stack.bridge_dir / "jobs" / job.jobId / "result.json")


def sshd_cpu(sshd: TestSshd) -> float:
    """CPU seconds of sshd: the listener, its live connections, and what they reaped (ended sessions and their commands).

    A watcher started by a one-shot agent outlives it and leaves sshd's tree (its CPU is not in this);
    one started by the long-lived agent is reaped by it, so its CPU (and its processor's) is.
    """
    assert sshd.process is not None
    import psutil

    total = 0.0
    for p in [psutil.Process(sshd.process.pid), *psutil.Process(sshd.process.pid).children(recursive=True)]:
        try:
            total += cpu_seconds(p.pid)
        except OSError:
            pass  # ended meanwhile: its parent counts it once it is reaped
    return total


def through_pairio(
    hub: LoggingHub, key: str, sshd: TestSshd, work: Path, jobs: int, slots: int, sleep: float, poll_interval: Optional[float]
) -> dict[str, Any]:
    work.mkdir(parents=True)
    args = (
        "--host", sshd.destination(), "--identity", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
        "--remote-dir", str(work / "remote"), "--remote-python", REMOTE_PYTHON, "--no-agent",
    )  # fmt: skip
    stack = Stack(hub, key, work, bridge_kind="ssh", bridge_args=args)
    # the bridge's own defaults for its timings (the tests' Stack makes them faster)
    updates: dict[str, Any] = {"pollIntervalSec": 0.5, "heartbeatIntervalSec": 2.0, "claimWaitSec": 10.0}
    if poll_interval is not None:
        updates["pollIntervalSec"] = poll_interval
    stack.register("--num-cpus", "1", "--multiplicity", str(slots), config_updates=updates)
    try:
        submitted = [stack.submit("work", index=i, sleep=sleep) for i in range(jobs)]
        assert hub.output is not None and hub.process is not None
        log_mark = len(hub.output.lines)
        hub_cpu_before, sshd_cpu_before = cpu_seconds(hub.process.pid), sshd_cpu(sshd)
        bridge_started = time.time()
        stack.bridge.start()
        jobs_dir = stack.bridge_dir / "jobs"

        try:
            wait_for(lambda: reported_jobs(jobs_dir) >= jobs, 60 + 5 * jobs, f"{jobs} jobs to be reported", interval=0.5)
        except AssertionError as e:
            raise SystemExit(f"{e}\n{stack.bridge.log[-3000:]}") from None
        assert stack.bridge.process is not None
        hub_cpu = cpu_seconds(hub.process.pid) - hub_cpu_before
        bridge_cpu = cpu_seconds(stack.bridge.process.pid, children=False)
        remote_cpu = sshd_cpu(sshd) - sshd_cpu_before  # ended sessions and what they ran; a live agent session is not counted
        done = [stack.client.get_job(j.jobId) for j in submitted]
        requests = hub.compute_requests(log_mark)
    finally:
        stack.close()
    failed = [j for j in done if j.status.value != "completed"]
    if failed:
        raise SystemExit(f"{len(failed)} job(s) did not complete, e.g. {failed[0].jobId}: {failed[0].error}\n{stack.bridge.log[-3000:]}")
    pairs = [job_times(stack, j) for j in done]
    times = [t for t, _ in pairs]
    first_claim = min(t.claimed for t in times)
    last_final = max(t.finished for t in times)
    return {
        "makespan": last_final - first_claim,
        "bridge_start": first_claim - bridge_started,
        "times": times,
        "mirrored": [m for _, m in pairs],
        "requests": requests,
        "cpu": {"hub": hub_cpu, "bridge": bridge_cpu, "sshd and what its sessions reaped (a one-shot agent's watchers detach and are not in it)": remote_cpu},
        "first_claim": first_claim,
        "last_final": last_final,
    }


def report_breakdown(result: dict[str, Any], jobs: int, slots: int, baseline_cpu: float) -> None:
    times: list[JobTimes] = result["times"]
    mirrored: list[Optional[float]] = result["mirrored"]

    def spans(a: str, b: str) -> list[float]:
        return [getattr(t, b) - getattr(t, a) for t in times if getattr(t, a) is not None and getattr(t, b) is not None]

    def to_mirror(start: str) -> list[float]:
        return [m - getattr(t, start) for t, m in zip(times, mirrored) if m is not None and getattr(t, start) is not None]

    def from_mirror() -> list[float]:
        return [t.finished - m for t, m in zip(times, mirrored) if m is not None]

    print("where each job's time went (one clock: the remote host is this machine):")
    for label, values in [
        ("claim -> watcher launched there", spans("claimed", "watcher_launched")),
        ("watcher launched -> processor spawned", spans("watcher_launched", "watcher_ready")),
        ("processor spawned -> its code runs", spans("watcher_ready", "processor_started")),
        ("processor run", spans("processor_started", "processor_ended")),
        ("processor ended -> result.json there", spans("processor_ended", "result_written")),
        ("result.json there -> mirrored here", to_mirror("result_written")),
        ("mirrored here -> final status at hub", from_mirror()),
        ("claim -> 'running' at hub", spans("claimed", "running_reported")),
        ("claim -> final status (whole job)", spans("claimed", "finished")),
    ]:
        print(f"  {label:<40} {quantiles(values)}")
    print(f"  {'processor end -> next claim (slot empty)':<40} {quantiles(slot_refill_gaps(times))}")
    busy = all_slots_busy_fraction(times, slots, result["first_claim"], result["last_final"], "claimed", "finished")
    print(f"  {slots} jobs at the hub at once (claim to final status): {100 * busy:.0f}% of the makespan")
    cpu = ", ".join(f"{name} {1000 * sec / jobs:.0f} ms" for name, sec in result["cpu"].items())
    print(f"  CPU per job: {cpu}; baseline: ssh, sshd sessions and processors {1000 * baseline_cpu / jobs:.0f} ms")
    print_hub_requests(result["requests"], jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each processor sleeps (0: trivial jobs)")
    parser.add_argument("--poll-interval", type=float, default=None, help="the bridge's pollIntervalSec [default: its default]")
    parser.add_argument("--no-breakdown", action="store_true")
    args = parser.parse_args()
    try:
        require_ssh_tools()
    except BaseException as e:  # pytest's skip outside a test run
        raise SystemExit(f"cannot run: {e}") from None
    with tempfile.TemporaryDirectory(prefix="pairio-bench-ssh-") as tmp:
        work = Path(tmp)
        (work / "sshd").mkdir()
        sshd = TestSshd(work / "sshd")
        sshd.start()
        try:
            processor = work / "processor.py"
            processor.write_text(PROCESSOR)
            before, cpu_before = baseline(sshd, work / "baseline1", processor, args.jobs, args.sleep)
            hub = LoggingHub(work / "hub")
            key = hub.admin("create-user", "bench").strip().splitlines()[-1]
            hub.start()
            try:
                result = through_pairio(hub, key, sshd, work / "pairio", args.jobs, args.slots, args.sleep, args.poll_interval)
            finally:
                hub.stop()
            after, cpu_after = baseline(sshd, work / "baseline2", processor, args.jobs, args.sleep)
        finally:
            sshd.stop()
    base = (before + after) / 2
    print(f"{args.jobs} jobs, {args.slots} slots, processor sleep {args.sleep:g} s, "
          f"pollIntervalSec {args.poll_interval if args.poll_interval is not None else 'default'}")
    print(f"baseline ({args.jobs} sequential 'ssh host cmd'): {before:.2f} s before, {after:.2f} s after "
          f"({1000 * base / args.jobs:.0f} ms per job)")
    print(f"through hub + pairio-bridge ssh: {result['makespan']:.2f} s (first claim to last final status; "
          f"bridge start to first claim {result['bridge_start']:.2f} s more)")
    if not args.no_breakdown:
        report_breakdown(result, args.jobs, args.slots, (cpu_before + cpu_after) / 2)
    print(f"ratio: {result['makespan'] / base:.2f}")


if __name__ == "__main__":
    main()
