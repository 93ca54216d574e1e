"""A cancel, end to end: from the user's cancel call until the job's whole process tree is gone.

The processor ignores SIGTERM and starts children in sessions of their own (setsid) that
ignore it too, so only the watcher's escalation to SIGKILL of everything it saw ends the
job. The bridge's heartbeat waits at the hub for 600 s here (HEARTBEAT_SEC), far longer than
the test waits for the tree to go: the cancel must reach it through the hub answering its
waiting heartbeat early, not through its next one. The time it takes is printed
(``pytest -s``), for information only, and measured repeatedly by bench/bench_cancel.py
(the bound is 3 s on an idle machine). tests/test_ssh_e2e.py and tests/test_slurm_e2e.py run
the same test on their bridges.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from .test_bridge_e2e import LONG_POLL_SEC, HubProcess, Stack, hub, wait_for  # noqa: F401 - the hub fixture

CANCEL_BOUND_SEC = 3.0
"""what a cancel takes on an idle machine (bench/bench_cancel.py measures it; tests only print it)"""
HEARTBEAT_SEC = LONG_POLL_SEC
"""the bridge's heartbeat interval in the cancel tests: the module hub lets a heartbeat wait this long"""
TREE_GONE_TIMEOUT_SEC = 120.0
"""a bound for a cancel that never arrives, not a measure: well below HEARTBEAT_SEC"""

TREE_PROCESSOR = textwrap.dedent(
    '''
    """Ignores SIGTERM, and so do its two children, each in a session of its own."""
    import json, os, signal, subprocess, sys, time
    from pathlib import Path

    job = json.loads(Path(os.environ["PAIRIO_JOB_FILE"]).read_text())
    record = Path(job["parameters"]["record_dir"])
    record.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stubborn = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
    children = [
        subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for c in children:
        c.stdout.readline()  # its SIGTERM handler is in place
    (record / f"tree-{job['jobId']}.json").write_text(json.dumps([os.getpid()] + [c.pid for c in children]))
    time.sleep(600)
    '''
)


@pytest.fixture
def stack(hub: tuple[HubProcess, str], tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    s = Stack(hub[0], hub[1], tmp_path)
    try:
        yield s
    finally:
        s.close()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cancel_to_tree_gone(stack: Stack) -> float:
    """Run a stubborn job, cancel it, and return the seconds from the cancel call until its whole tree is gone."""
    job = stack.submit("work", message="stubborn")
    tree_file = stack.record_dir / f"tree-{job.jobId}.json"
    pids: list[int] = json.loads(wait_for(lambda: tree_file.exists() and tree_file.read_text(), 90, "the job's process tree"))
    assert not any(gone(p) for p in pids)
    started = time.monotonic()
    stack.client.cancel_job(job.jobId)
    try:
        wait_for(lambda: all(gone(p) for p in pids), TREE_GONE_TIMEOUT_SEC, f"the tree {pids} to be gone", interval=0.02)
    except AssertionError as e:
        raise AssertionError(f"{e}; bridge log, with its threads' stacks:\n{stack.bridge.log_with_stacks()}") from None
    elapsed = time.monotonic() - started
    failed = stack.wait_done(job, 120)
    assert failed.status.value == "failed" and "canceled" in (failed.error or ""), failed.error
    return elapsed


@pytest.mark.timeout(600)  # a safety net, not a measure: liveness bounds of up to 120 s each, far below the 600 s alternative
def test_cancel_kills_the_whole_tree_before_the_next_heartbeat(stack: Stack) -> None:
    stack.processor.write_text(TREE_PROCESSOR)
    # A heartbeat waiting 600 s: without the hub answering the waiting one early, a cancel would wait for the next.
    stack.register(config_updates={"heartbeatIntervalSec": HEARTBEAT_SEC, "pollIntervalSec": 0.5})
    stack.bridge.start()
    elapsed = cancel_to_tree_gone(stack)
    # information only: a tree gone within TREE_GONE_TIMEOUT_SEC is what proves the early answer
    print(f"\ncancel -> tree gone on the {stack.bridge.kind} bridge: {elapsed:.2f} s (bound on an idle machine {CANCEL_BOUND_SEC:g} s)")
