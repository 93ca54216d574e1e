"""Warm start: a Python processor forked from an interpreter that has already started, not a new one per job.

``python /abs/main.py`` spends most of a short job's CPU before the script's first line: the
interpreter's start, the site module and the start-up hooks of the installed packages (an
editable install's hook alone is half of it). With ``pythonWarmStart`` on, the local bridge
starts its watcher launcher (bridge/local/watcher_launcher.py) a second time *as the app's
interpreter, with its usual flags and site*, for the apps whose command is
``PYTHON SCRIPT [ARGS...]``. Each watcher forked from it forks once more for the processor, and
the child runs the script with runpy after making itself what ``PYTHON SCRIPT ARGS`` would have
been: its own session, the job's working directory, environment, console and arguments, the
script's directory first on ``sys.path``, Python's default signal handlers, no other open files.
It ends as that interpreter would: non-daemon threads joined, ``atexit`` handlers run, the exit
status of ``sys.exit`` or 1 after an uncaught exception's traceback.

Only what the operator configured runs this way (the app's command from the bridge's own
settings; nothing a submitter sends), and only when nothing the interpreter reads at its start
differs between the launcher and the job (``STARTUP_ENV``): otherwise, or when the script is
not a plain file, the watcher starts the command as usual. What differs from a fresh
interpreter, and is documented in the README: the process's command line in ``ps`` is the
launcher's (its name, ``comm``, is the script's); the hash seed is the launcher's, shared by its
jobs; standard-library modules the watcher uses are already imported.

This file needs only the standard library: it runs inside the launcher, which never imports the bridge.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Optional, Sequence

PYTHON_NAME = re.compile(r"python[0-9.]*")
STARTUP_ENV_PREFIXES = ("PYTHON", "LC_")
STARTUP_ENV_NAMES = ("HOME", "LANG")
"""what an interpreter reads from its environment at start (paths, flags, the user site, the text encoding): a job
whose values differ from the launcher's gets an interpreter of its own"""
EXEC_FAILED_EXIT_CODE = 127


def python_interpreter(command: Sequence[str], path: Optional[str]) -> Optional[str]:
    """The absolute path of the interpreter when ``command`` is ``PYTHON SCRIPT [ARGS...]`` (no interpreter options),
    as ``path`` (a PATH value) finds it, not resolved: a virtual environment's ``bin/python`` is a symlink whose
    location, not target, chooses the environment; None for any other command."""
    if len(command) < 2 or command[1].startswith("-") or not PYTHON_NAME.fullmatch(os.path.basename(command[0])):
        return None
    found = shutil.which(command[0], path=path)
    return os.path.abspath(found) if found else None


def startup_environment(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_ENV_PREFIXES) or k in STARTUP_ENV_NAMES}


class WarmInterpreter:
    """The launcher's interpreter as a processor's: ``accepts`` says whether a job's command may start here,
    ``start`` forks its processor."""

    def __init__(self, startup_env: dict[str, str]) -> None:
        self.startup_env = startup_environment(startup_env)

    @staticmethod
    def warm_up() -> None:
        """Import now what running a script imports the first time (runpy, pkgutil, ...), once for every job."""
        import runpy

        runpy.run_path(os.devnull, run_name="__pairio_warm_up__")

    def accepts(self, command: Sequence[str], env: dict[str, str]) -> bool:
        interpreter = python_interpreter(command, env.get("PATH"))
        return (
            interpreter is not None
            and interpreter == sys.executable
            and os.path.isfile(command[1])
            and startup_environment(env) == self.startup_env
        )

    def start(self, command: Sequence[str], cwd: str, env: dict[str, str], console: IO[bytes], piped: bool) -> tuple[int, Optional[IO[bytes]]]:
        """Fork the processor: its output goes to ``console``, or (``piped``) to a pipe the watcher reads. Returns its
        pid and that pipe (the watcher follows it as any child it started, ``ChildProcess``)."""
        read_end, write_end = os.pipe() if piped else (-1, console.fileno())
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of the watcher's own output is copied into the child
        pid = os.fork()
        if pid == 0:
            _become_processor(list(command), cwd, env, write_end)
        if piped:
            os.close(write_end)
            return pid, os.fdopen(read_end, "rb", buffering=0)
        return pid, None


def _become_processor(command: list[str], cwd: str, env: dict[str, str], output: int) -> None:
    """In the forked child: the state ``PYTHON SCRIPT ARGS`` would start in, then the script. Never returns."""
    try:
        os.setsid()  # its own session and group: one killpg reaches the whole job
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(3, _max_fd())  # the watcher's files and pipes are not the job's
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        script = command[1]
        sys.argv = command[1:]
        sys.orig_argv = list(command)
        sys.path[0] = os.path.dirname(os.path.realpath(script))
        _name_process(os.path.basename(script))
    except BaseException as e:  # noqa: BLE001 - set-up failed before any of the job's code ran: start it the usual way
        try:
            os.execvpe(command[0], command, env)
        except OSError:
            pass
        os.write(2, f"watcher: could not start the processor {command[0]!r}: {e}\n".encode())
        os._exit(EXEC_FAILED_EXIT_CODE)
    os._exit(_run_script(command[1]))


def _run_script(script: str) -> int:
    """Run the script as ``__main__`` and end as the interpreter would; the exit status."""
    import runpy

    status = 0
    interrupted = False
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        status = _exit_status(e.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        interrupted = True
    except BaseException:  # noqa: BLE001 - an uncaught exception: its traceback, then status 1
        sys.excepthook(*sys.exc_info())
        status = 1
    status = _finalize(status)
    if interrupted:  # as the interpreter does: end by the signal, so that the parent sees SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return status


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass
    return 1


def _finalize(status: int) -> int:
    """The interpreter's own end: wait for non-daemon threads, run atexit handlers, flush the standard streams
    (a failed flush makes the status 120, as it does for the interpreter)."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001
            if status == 0:
                status = 120
    return status


def _name_process(name: str) -> None:
    """What top and ps -o comm show for the processor (its command line stays the launcher's)."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (ValueError, OSError):
        return 1024
