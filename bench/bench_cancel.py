"""How long from a user's cancel call until the job's whole process tree is gone?

The job is tests/test_cancel_e2e.py's stubborn one: it ignores SIGTERM and has two
children in sessions of their own that ignore it too, so only SIGKILL of the whole tree
ends it. Per round, two measurements on this machine:

- end to end: a real hub process and a real ``pairio-bridge local`` process (heartbeats
  every 30 s, so the cancel must come through the hub waking the bridge's waiting
  heartbeat); from ``cancel_job`` until every process of the tree is gone;
- baseline: the same job started by a ``LocalBackend`` directly, from
  ``backend.cancel`` until the tree is gone (the watcher's own share: noticing the
  cancel, SIGTERM, the cancel grace, SIGKILL).

It prints medians, maxima and the ratio end to end / baseline; the bound is 3 s.

    python bench/bench_cancel.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.backend import JobSubmission  # noqa: E402
from bridge.local.backend import LocalBackend, NativeId, watcher_is_alive  # noqa: E402
from pairio import PairioJobRequiredResources  # noqa: E402
from pairio.jobfile import JOB_FILE_NAME  # noqa: E402
from tests.test_bridge_e2e import HubProcess, Stack, wait_for  # noqa: E402
from tests.test_cancel_e2e import TREE_PROCESSOR, cancel_to_tree_gone, gone  # noqa: E402

RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=120)


def end_to_end(hub: HubProcess, key: str, work: Path, rounds: int) -> list[float]:
    work.mkdir(parents=True)
    stack = Stack(hub, key, work)
    stack.processor.write_text(TREE_PROCESSOR)
    stack.register(config_updates={"heartbeatIntervalSec": 30.0, "pollIntervalSec": 0.5})
    stack.bridge.start()
    try:
        return [cancel_to_tree_gone(stack) for _ in range(rounds)]
    finally:
        stack.close()


def baseline(work: Path, rounds: int) -> list[float]:
    """The watcher's share: LocalBackend.cancel straight to the tree gone (default watcher timings)."""
    (work / "jobs").mkdir(parents=True)
    backend = LocalBackend(work / "jobs", gpu_ids=[])
    processor = work / "processor.py"
    processor.write_text(TREE_PROCESSOR)
    times = []
    for i in range(rounds):
        job_dir = work / "jobs" / f"job{i}"
        (job_dir / "work").mkdir(parents=True)
        record = work / "records"
        # the watcher points PAIRIO_JOB_FILE at this file (bridge/watch.py)
        (job_dir / JOB_FILE_NAME).write_text(json.dumps({"jobId": f"job{i}", "parameters": {"record_dir": str(record)}}))
        native_id = backend.submit(JobSubmission(
            job_id=f"job{i}", job_dir=job_dir, command=[sys.executable, str(processor)], resources=RESOURCES,
        ))
        tree_file = record / f"tree-job{i}.json"
        pids = json.loads(wait_for(lambda: tree_file.exists() and tree_file.read_text(), 60, "the tree"))
        started = time.monotonic()
        backend.cancel([native_id])
        wait_for(lambda: all(gone(p) for p in pids), 60, "the tree to be gone", interval=0.02)
        times.append(time.monotonic() - started)
        # the watcher writes its result after the tree is gone: let it finish before the directory goes
        wait_for(lambda: backend.poll([native_id])[native_id].phase.is_final, 60, "the watcher's result", interval=0.02)
        wait_for(lambda: not watcher_is_alive(NativeId.parse(native_id)), 60, "the watcher to end", interval=0.02)
    backend.close()
    return times


def summary(name: str, times: list[float]) -> str:
    return f"{name:>12}: median {statistics.median(times):.2f} s, max {max(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hub = HubProcess(work / "hub")
        key = hub.admin("create-user", "bench").strip().splitlines()[-1]
        hub.start()
        try:
            e2e = end_to_end(hub, key, work / "e2e", args.rounds)
        finally:
            hub.stop()
        base = baseline(work / "baseline", args.rounds)
    print(summary("end to end", e2e))
    print(summary("baseline", base))
    print(f"ratio (medians): {statistics.median(e2e) / statistics.median(base):.2f}; bound 3 s; worst end to end {max(e2e):.2f} s")


if __name__ == "__main__":
    main()
