"""The watcher launcher (bridge/local/watcher_launcher.py): one pre-loaded interpreter forks each watcher.

A forked watcher must be indistinguishable from one started as its own interpreter: its own
session, the given working directory, environment and log, no descriptor of the launcher's, and
the bridge hears when it ends. These tests drive the real launcher process with a tiny stand-in
watcher script that records what it was given; the real watcher runs through it in
test_local_backend.py and every bridge test.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from bridge.local.backend import LocalBackend, watcher_interpreter_args
from bridge.local.watcher_launcher import LauncherUnavailable, WatcherLauncher

RECORDING_WATCHER = """\
import json, os, sys
def main(argv):
    out = argv[0]
    record = {
        "argv": list(argv), "sysArgv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd(),
        "sid": os.getsid(0), "pid": os.getpid(), "ppid": os.getppid(),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "comm": open("/proc/self/comm").read().strip(),
    }
    with open(out, "w") as f:
        json.dump(record, f)
    print("to the log")
    if len(argv) > 1 and argv[1] == "wait":
        while not os.path.exists(out + ".go"):
            import time; time.sleep(0.02)
    return int(argv[2]) if len(argv) > 2 else 0
"""

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the launcher serves where watchers run as a script (/proc)")


def wait_for(condition, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Exits:
    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.lock = threading.Lock()

    def __call__(self, pid: int, status: int) -> None:
        with self.lock:
            self.seen[pid] = status


@pytest.fixture
def recording_script(tmp_path: Path) -> Path:
    path = tmp_path / "recording_watch.py"
    path.write_text(RECORDING_WATCHER)
    return path


def launcher_for(script: Path, exits: Exits, **kwargs: float) -> WatcherLauncher:
    return WatcherLauncher(watcher_interpreter_args()[:-1], script, exits, **kwargs)


def test_a_forked_watcher_gets_exactly_what_a_fresh_interpreter_would(recording_script: Path, tmp_path: Path) -> None:
    exits = Exits()
    launcher = launcher_for(recording_script, exits)
    try:
        work = tmp_path / "job"
        work.mkdir()
        out = work / "record.json"
        pid, _ = launcher.launch([str(out), "go", "3"], work, {"ONLY": "this", "PATH": "/usr/bin:/bin"}, work / "watcher.log")
        wait_for(lambda: pid in exits.seen, "the watcher's end to be reported")
        assert exits.seen[pid] == 3  # main's return value is the exit status
        record = json.loads(out.read_text())
        assert record["pid"] == pid
        assert record["sid"] == pid  # a session of its own: the bridge's end or its terminal's signals leave it running
        assert record["ppid"] == launcher.pid
        assert record["env"] == {"ONLY": "this", "PATH": "/usr/bin:/bin"}
        assert record["cwd"] == str(work)
        assert record["sysArgv"] == [str(recording_script), str(out), "go", "3"]
        assert record["fds"] == [0, 1, 2, 3]  # stdin, the log twice, and the listing itself: none of the launcher's pipes
        assert (work / "watcher.log").read_text() == "to the log\n"
        assert record["comm"] == "pairio-watcher"  # as top and ps -o comm show it
    finally:
        launcher.close()


def test_watchers_outlive_the_launcher_and_a_new_one_starts_on_the_next_launch(recording_script: Path, tmp_path: Path) -> None:
    exits = Exits()
    launcher = launcher_for(recording_script, exits)
    try:
        first = tmp_path / "first.json"
        pid, _ = launcher.launch([str(first), "wait"], tmp_path, {}, tmp_path / "1.log")
        old_launcher = launcher.pid
        assert old_launcher is not None
        wait_for(first.exists, "the first watcher to start")
        os.kill(old_launcher, signal.SIGKILL)  # as if the bridge's whole process group had been killed
        wait_for(lambda: not psutil.pid_exists(old_launcher) or psutil.Process(old_launcher).status() == psutil.STATUS_ZOMBIE, "the launcher to die")
        assert psutil.Process(pid).is_running()  # the watcher goes on
        second = tmp_path / "second.json"
        pid2, _ = launcher.launch([str(second)], tmp_path, {}, tmp_path / "2.log")
        assert launcher.pid not in (None, old_launcher)
        wait_for(lambda: pid2 in exits.seen, "the second watcher's end")
        Path(str(first) + ".go").touch()
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "the first watcher to end")
    finally:
        launcher.close()


def test_an_idle_launcher_ends_and_the_next_launch_starts_another(recording_script: Path, tmp_path: Path) -> None:
    exits = Exits()
    launcher = launcher_for(recording_script, exits, idle_exit_sec=0.2)
    try:
        pid, _ = launcher.launch([str(tmp_path / "a.json")], tmp_path, {}, tmp_path / "a.log")
        wait_for(lambda: pid in exits.seen, "the watcher's end")
        wait_for(lambda: launcher.pid is None, "the idle launcher to end")
        pid2, _ = launcher.launch([str(tmp_path / "b.json")], tmp_path, {}, tmp_path / "b.log")
        wait_for(lambda: pid2 in exits.seen, "the next watcher's end")
    finally:
        launcher.close()


def test_the_start_time_of_a_watcher_that_ends_at_once_is_still_known(recording_script: Path, tmp_path: Path) -> None:
    """A short job's watcher may end, and be reaped, before the bridge looks at it: the launcher reads
    its start time first, and it is psutil's figure (what the bridge's adoption checks compare)."""
    exits = Exits()
    launcher = launcher_for(recording_script, exits)
    try:
        before = psutil.Process().create_time()
        pid, created = launcher.launch([str(tmp_path / "a.json")], tmp_path, {}, tmp_path / "a.log")
        wait_for(lambda: pid in exits.seen, "the watcher's end")
        assert not psutil.pid_exists(pid) or psutil.Process(pid).create_time() != created  # gone (or the pid reused)
        assert before <= created <= time.time() + 1
        pid2, created2 = launcher.launch([str(tmp_path / "b.json"), "wait"], tmp_path, {}, tmp_path / "b.log")
        wait_for((tmp_path / "b.json").exists, "the second watcher to start")
        assert psutil.Process(pid2).create_time() == pytest.approx(created2, abs=0.02)
        Path(str(tmp_path / "b.json") + ".go").touch()
        wait_for(lambda: pid2 in exits.seen, "the second watcher's end")
    finally:
        launcher.close()


def test_a_launcher_that_cannot_start_says_so(recording_script: Path, tmp_path: Path) -> None:
    launcher = WatcherLauncher([str(tmp_path / "no-such-python")], recording_script, Exits())
    with pytest.raises(LauncherUnavailable, match="could not start the watcher launcher"):
        launcher.launch([str(tmp_path / "x.json")], tmp_path, {}, tmp_path / "x.log")


def test_the_local_backend_forks_its_watchers_and_hears_of_their_end(tmp_path: Path) -> None:
    from .test_local_backend import TestLocalBackend

    contract = TestLocalBackend()
    backend = LocalBackend(contract.jobs_root(tmp_path), gpu_ids=[])
    ended = threading.Event()
    backend.notify_job_end(ended.set)
    try:
        job = contract.prepare_job(tmp_path, "print('hi')")
        native_id = backend.submit(job)
        watcher_pid = int(native_id.split(":", 1)[0])
        launcher_pid = backend._launcher.pid if backend._launcher is not None else None
        assert launcher_pid is not None
        wait_for(ended.is_set, "the backend to hear of the job's end")
        wait_for(lambda: backend.poll([native_id])[native_id].phase.value == "succeeded", "the job's result")
        assert "hi" in (job.job_dir / "console.txt").read_text()
        assert watcher_pid != launcher_pid
    finally:
        backend.close()
