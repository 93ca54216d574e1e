"""Starts watchers by forking one long-lived, pre-loaded process instead of a new interpreter per job.

A watcher started as ``python -I -S bridge/watch.py ...`` spends most of its start (tens of
milliseconds of CPU, far more on a busy machine) in the interpreter and its imports; for short
jobs that is more than the job itself. The launcher is that interpreter, started once per
bridge with the same flags, with bridge/watch.py already loaded: for each job it forks, and the
child becomes exactly the watcher the command line would have started (own session, the given
working directory, environment and log file, nothing else inherited) and runs ``watch.main``.

The two halves live here, one home for their line protocol (JSON, one object per line):

- ``python -I -S watcher_launcher.py WATCH_PY`` (``serve``): reads ``{"id", "argv", "cwd", "env",
  "log"}`` on stdin, answers ``{"id", "pid", "createTime"}`` or ``{"id", "error"}``, and reports each ended
  watcher as ``{"exited": pid, "status": code}``. It needs only the standard library and never
  imports pairio or the bridge. When its stdin closes (the bridge ended, however it ended) it
  exits and leaves the watchers running: they are in sessions of their own, as before.
- ``WatcherLauncher`` (in the bridge): starts the process on first use, sends launches, and calls
  ``on_exit`` when a watcher ends. If the launcher cannot start or dies, ``launch`` raises
  ``LauncherUnavailable`` and the caller starts the watcher the plain way.

A warm launcher (``... WATCH_PY IDLE --warm-start``, bridge/local/warm_start.py) is the same process
started as an app's Python interpreter with its usual flags, in the watchers' environment: its
watchers fork the processor from it instead of starting a new interpreter.

What the watcher runs is decided by the bridge alone, as with the plain command line: the
launcher is the bridge's child, reachable only through its pipes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

LAUNCHER_SCRIPT = Path(__file__).resolve()
WARM_FLAG = "--warm-start"
"""the launcher's last argument when it is an apps' interpreter (bridge/local/warm_start.py)"""
REPLY_TIMEOUT_SEC = 60.0  # a fork on a machine that is swapping hard; past it the plain launch is tried
IDLE_EXIT_SEC = 120.0  # with no watcher of its own running for this long, the launcher ends (the next launch starts it again)


class LauncherUnavailable(RuntimeError):
    """The launcher could not start or stopped answering; start the watcher as its own interpreter."""


# ---------------------------------------------------------------- the bridge's side


class WatcherLauncher:
    def __init__(
        self,
        interpreter_args: Sequence[str],
        watch_script: Path,
        on_exit: Callable[[int, int], None],
        *,
        idle_exit_sec: float = IDLE_EXIT_SEC,
        warm_start_env: Optional[dict[str, str]] = None,
    ) -> None:
        """``interpreter_args``: how the plain watcher starts, without its script (``python -I -S``).
        ``on_exit(pid, status)``: called from a reader thread when a launched watcher ends.
        ``warm_start_env``: a warm launcher (bridge/local/warm_start.py): ``interpreter_args`` is the apps'
        interpreter alone, started in this environment (the watchers'), and its watchers fork the processors."""
        self._argv = [*interpreter_args, str(LAUNCHER_SCRIPT), str(watch_script), str(idle_exit_sec)]
        if warm_start_env is not None:
            self._argv.append(WARM_FLAG)
        self._env = warm_start_env if warm_start_env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._replied = threading.Condition(self._lock)
        self._broken: Optional[str] = None

    def launch(self, argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, float]:
        """The pid and create time (as psutil gives it) of a new watcher run with ``argv`` (its arguments, not the
        interpreter's). The create time is read by the launcher before it could reap the watcher: a short job may
        have ended, and its pid be gone, by the time this returns."""
        try:
            return self._launch_once(argv, cwd, env, log)
        except LauncherUnavailable:
            # It may have ended for being idle just as the request went out: one try with a fresh one.
            return self._launch_once(argv, cwd, env, log)

    def _launch_once(self, argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, float]:
        with self._lock:
            process = self._ensure_started()
            self._next_id += 1
            request_id = self._next_id
            line = json.dumps({"id": request_id, "argv": list(argv), "cwd": str(cwd), "env": env, "log": str(log)})
            try:
                assert process.stdin is not None
                process.stdin.write(line.encode() + b"\n")
                process.stdin.flush()
            except OSError as e:
                self._broken = f"the watcher launcher's pipe closed: {e}"
                raise LauncherUnavailable(self._broken) from e
            if not self._replied.wait_for(lambda: request_id in self._replies or self._broken is not None, REPLY_TIMEOUT_SEC):
                self._broken = f"the watcher launcher did not answer within {REPLY_TIMEOUT_SEC:.0f} s"
                self._stop_locked()
            reply = self._replies.pop(request_id, None)
            if reply is None:
                raise LauncherUnavailable(self._broken or "the watcher launcher ended")
        if "error" in reply:
            raise OSError(reply["error"])
        pid = int(reply["pid"])
        created = reply.get("createTime")
        return pid, float(created) if created is not None else _psutil_create_time(pid)

    def close(self) -> None:
        """Ends the launcher (its watchers go on); the next launch starts a new one."""
        with self._lock:
            self._stop_locked()

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None and self._broken is None:
            return self._process
        self._stop_locked()
        self._broken = None
        try:
            self._process = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # the bridge's own log: a launcher that fails says why there
                env=self._env,
                start_new_session=True,  # a Ctrl-C in the bridge's terminal is for the bridge
            )
        except OSError as e:
            raise LauncherUnavailable(f"could not start the watcher launcher ({' '.join(self._argv)}): {e}") from e
        threading.Thread(target=self._read_replies, args=(self._process,), name="watcher-launcher", daemon=True).start()
        return self._process

    def _stop_locked(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()  # it exits at end of input
        except OSError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _read_replies(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "exited" in message:
                self._on_exit(int(message["exited"]), int(message.get("status", -1)))
                continue
            with self._lock:
                self._replies[int(message["id"])] = message
                self._replied.notify_all()
        with self._lock:
            if self._process is process:
                self._broken = "the watcher launcher ended"
            self._replied.notify_all()


def _psutil_create_time(pid: int) -> float:
    import psutil  # the bridge's side only: the launcher process runs without site-packages

    return float(psutil.Process(pid).create_time())


# ---------------------------------------------------------------- the launcher process


def _load_module(name: str, path: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _send(message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:  # raw writes: nothing buffered in sys.stdout is copied into a forked child
        data = data[os.write(1, data):]


def _become_watcher(watch: Any, script: str, request: dict[str, Any]) -> None:
    """In the forked child: the state a fresh ``python -I -S watch.py ARGV`` would have, then its main. Never returns."""
    status = 1
    try:
        os.setsid()
        try:
            with open("/proc/self/comm", "w") as comm:  # what top and ps -o comm show for it
                comm.write("pairio-watcher")
        except OSError:
            pass
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.chdir(request["cwd"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, _max_fd())  # the launcher's pipes and its signal pipe are not the job's
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [script, *request["argv"]]
        status = int(watch.main(request["argv"]) or 0)
    except SystemExit as e:  # a bad command line (status 2) or --help, as the plain watcher would exit
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the traceback goes to the watcher's log, as an uncaught one would
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (ValueError, OSError):
        return 1024


def _create_time(pid: int) -> Optional[float]:
    """When our child ``pid`` started, in seconds since the epoch as psutil's ``create_time`` gives it; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            start_ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat", "rb") as system:
            boot = next(float(line.split()[1]) for line in system if line.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def _reap() -> set[int]:
    """The children that ended, each reported to the bridge."""
    ended: set[int] = set()
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.add(pid)
        _send({"exited": pid, "status": os.waitstatus_to_exitcode(wait_status)})


def serve(script: str, idle_exit_sec: float = IDLE_EXIT_SEC, warm_start: bool = False) -> int:
    watch = _load_module("pairio_watcher", script)
    prepare = getattr(watch, "prepare_to_fork", None)  # what each watcher would do first, done once here
    if prepare is not None:
        prepare()
    if warm_start:
        warm = _load_module("pairio_warm_start", str(Path(__file__).resolve().with_name("warm_start.py")))
        interpreter = warm.WarmInterpreter(dict(os.environ))
        interpreter.warm_up()
        watch.WARM_START = interpreter
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup pipe hears of ended children
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bridge decides when we end: by closing our stdin
    import select

    pending = b""
    children: set[int] = set()
    while True:
        try:
            readable, _, _ = select.select([0, wake_read], [], [], None if children else idle_exit_sec)
        except InterruptedError:
            continue
        if wake_read in readable:
            os.read(wake_read, 4096)
            children -= _reap()
        if not readable and not children and not pending:
            return 0  # idle: the bridge starts a new launcher for its next job
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            _reap()
            return 0  # the bridge is gone: the watchers go on in their own sessions
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            request = json.loads(line)
            try:
                pid = os.fork()
            except OSError as e:
                _send({"id": request["id"], "error": f"fork failed: {e}"})
                continue
            if pid == 0:
                _become_watcher(watch, script, request)
            children.add(pid)
            created = _create_time(pid)  # before any reaping: the child's /proc entry is there even if it ended
            _send({"id": request["id"], "pid": pid, "createTime": created})


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else IDLE_EXIT_SEC, warm_start=sys.argv[3:4] == [WARM_FLAG]))
