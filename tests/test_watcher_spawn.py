"""How the watcher starts a processor (``bridge.watch.spawn_processor``, os.posix_spawn): what subprocess.Popen did
for it before, checked with real processes: working directory, session, standard streams, the child's PATH, signal
dispositions, descriptors, and errors that name the program."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bridge.watch import ChildProcess, spawn_processor


def run(command: list[str], work_dir: Path, env: dict[str, str] | None = None, *, piped: bool = False) -> tuple[ChildProcess, str]:
    """Start ``command`` as the watcher would, wait for its end, and return it with its output."""
    console_path = work_dir / "console.txt"
    with open(console_path, "ab") as console:
        child = spawn_processor(command, str(work_dir), dict(os.environ) if env is None else env, console, piped)
    output = child.stdout.read().decode() if piped else ""
    deadline = time.monotonic() + 60
    while child.poll() is None:
        assert time.monotonic() < deadline, "the processor did not end"
        time.sleep(0.01)
    if piped:
        child.stdout.close()
    return child, output if piped else console_path.read_text()


def test_the_processor_runs_in_its_work_dir_in_a_session_of_its_own_reading_nothing(tmp_path: Path) -> None:
    script = "import os, sys; print(os.getcwd(), os.getsid(0) == os.getpid(), repr(sys.stdin.read()), flush=True); print('err', file=sys.stderr)"
    before = os.getcwd()
    child, output = run([sys.executable, "-c", script], tmp_path)
    assert child.returncode == 0
    assert output.splitlines() == [f"{tmp_path} True ''", "err"]  # stdout and stderr both in the console
    assert os.getcwd() == before  # the watcher is back where it was


def test_the_program_is_looked_up_on_the_processors_path_and_relative_to_its_work_dir(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    for path in (tools / "pairio-test-hello", tmp_path / "local.sh"):
        path.write_text(f"#!/bin/sh\necho {path.name} ran\n")
        path.chmod(0o755)
    child, output = run(["pairio-test-hello"], tmp_path, {"PATH": f"/nonexistent:{tools}"})
    assert child.returncode == 0 and output == "pairio-test-hello ran\n"
    child, output = run(["./local.sh"], tmp_path, {"PATH": "/bin:/usr/bin"})
    assert child.returncode == 0 and output.endswith("local.sh ran\n")


def test_a_program_that_cannot_start_raises_an_error_naming_it(tmp_path: Path) -> None:
    with open(tmp_path / "console.txt", "ab") as console:
        with pytest.raises(FileNotFoundError, match="no-such-program"):
            spawn_processor(["no-such-program"], str(tmp_path), {"PATH": "/bin:/usr/bin"}, console, piped=False)
        (tmp_path / "not-executable").write_text("echo hi\n")
        with pytest.raises(PermissionError, match="not-executable"):
            spawn_processor(["./not-executable"], str(tmp_path), {"PATH": "/bin"}, console, piped=True)
        with pytest.raises(FileNotFoundError):
            spawn_processor(["true"], str(tmp_path / "no-such-dir"), {"PATH": "/bin:/usr/bin"}, console, piped=False)


def test_signals_python_ignores_are_the_default_again_and_no_descriptor_leaks(tmp_path: Path) -> None:
    leaked = os.open(os.devnull, os.O_RDONLY)
    high = os.dup2(leaked, 87, inheritable=True)  # inherited by the watcher (from whoever started it): never passed on
    try:
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # as in every Python process
        child, output = run(["/bin/sh", "-c", "grep SigIgn /proc/self/status; test -e /proc/self/fd/87 && echo leaked || echo closed"], tmp_path)
    finally:
        os.close(high)
        os.close(leaked)
    ignored = int(output.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1)), output
    assert output.splitlines()[-1] == "closed"


def test_piped_output_and_exit_codes_as_popen_gives_them(tmp_path: Path) -> None:
    child, output = run([sys.executable, "-c", "print('through the pipe'); raise SystemExit(3)"], tmp_path, piped=True)
    assert (child.returncode, output) == (3, "through the pipe\n")
    child, _ = run(["/bin/sh", "-c", "kill -TERM $$"], tmp_path)
    assert child.returncode == -signal.SIGTERM
