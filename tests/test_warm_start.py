"""Warm start (bridge/local/warm_start.py): processors forked from an app's interpreter that has already started.

The backend contract runs again with warm start on and every job's command as ``PYTHON SCRIPT``, so
limits, cancel, secrets, outputs and restarts hold for forked processors too; the tests below pin
what a forked processor sees against what ``PYTHON SCRIPT ARGS`` would give it, and when a job is
not forked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import bridge.watch as bridge_watch
from bridge.backend import Backend
from bridge.local.backend import LocalBackend
from bridge.local.warm_start import python_interpreter, startup_environment
from pairio.models import PairioJobRequiredResources

from .bridge_contract import BackendContract
from .test_bridge_e2e import Stack, hub, public_get, stack  # noqa: F401 - the hub and stack fixtures

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the launcher serves where watchers run as a script (/proc)")

# What the processor sees, written where the test reads it; "forked" is whether it came from the warm launcher.
RECORDING_PROCESSOR = """
import atexit, json, os, sys, threading, time
record = {
    "forked": "pairio_watcher" in sys.modules,
    "argv": sys.argv, "name": __name__, "file": __file__, "path0": sys.path[0], "cwd": os.getcwd(),
    "env": dict(os.environ), "sid": os.getsid(0), "pid": os.getpid(),
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "comm": open("/proc/self/comm").read().strip(), "stdin": os.readlink("/proc/self/fd/0"),
    "umask": os.umask(0o077),
}
with open(os.environ["RECORD"], "w") as f:
    json.dump(record, f)
print("out line")
print("err line", file=sys.stderr)
def later():
    time.sleep(0.2)
    print("thread done", flush=True)
threading.Thread(target=later).start()  # not a daemon: the interpreter waits for it
atexit.register(lambda: print("atexit ran", flush=True))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def warm_backend(jobs_root: Path, **kwargs: object) -> LocalBackend:
    return LocalBackend(
        jobs_root, gpu_ids=[], sample_interval_sec=0.1, log_interval_sec=0.2, kill_grace_sec=0.5, python_warm_start=True,
        **kwargs,  # type: ignore[arg-type]
    )


class TestWarmStartBackend(BackendContract):
    """The whole backend contract, each job's script in a file run as ``PYTHON SCRIPT``: forked where it can be."""

    isolated_watcher = False

    def make_backend(self, tmp_path: Path) -> Backend:
        return warm_backend(self.jobs_root(tmp_path))

    def launch(self, job_id: str, job_dir: Path, resources: PairioJobRequiredResources, argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
        assert argv[1] == "-c"
        script = job_dir / "main.py"
        script.write_text(argv[2])
        return [argv[0], str(script), *argv[3:]], ()


def run_job(backend: LocalBackend, tmp_path: Path, source: str, *args: str, env: dict[str, str] | None = None,
            secrets: dict[str, str] | None = None) -> tuple[dict[str, object], str, dict[str, object]]:  # fmt: skip
    """Run ``source`` as ``sys.executable SCRIPT ARGS`` through ``backend``: its record, console and result.json."""
    contract = TestWarmStartBackend()
    job = contract.prepare_job(tmp_path, source)
    script = job.job_dir / "main.py"
    script.write_text(textwrap.dedent(source))
    record = job.job_dir / "record.json"
    job = dataclasses.replace(job, command=[sys.executable, str(script), *args], secrets=secrets or {}, pass_env=("RECORD", *(env or {})))
    os.environ["RECORD"] = str(record)
    try:
        native_id = backend.submit(job)
        contract.wait_final(backend, native_id)
    finally:
        os.environ.pop("RECORD", None)
    result = json.loads((job.job_dir / "result.json").read_text())
    return json.loads(record.read_text()), (job.job_dir / "console.txt").read_text(), result


def test_a_forked_processor_starts_as_python_script_args_would(tmp_path: Path) -> None:
    backend = warm_backend(tmp_path / "jobs")
    try:
        record, console, result = run_job(backend, tmp_path, RECORDING_PROCESSOR, "3")
    finally:
        backend.close()
    assert record["forked"] is True
    script = str((tmp_path / "jobs").resolve() / Path(str(record["file"])).parent.name / "main.py")
    assert record["argv"] == [script, "3"]
    assert record["name"] == "__main__" and record["file"] == script
    assert record["path0"] == os.path.dirname(os.path.realpath(script))
    assert record["cwd"].endswith("/work")  # type: ignore[union-attr]
    assert record["sid"] == record["pid"]  # a session and group of its own
    assert record["fds"] == [0, 1, 2, 3]  # the standard streams and the listing's own descriptor: nothing of the watcher's
    assert record["stdin"] == "/dev/null"
    assert record["comm"] == "main.py"
    assert record["umask"] == 0o077
    env = record["env"]
    assert isinstance(env, dict) and env["PAIRIO_JOB_ID"] and env["OMP_NUM_THREADS"] == "1"
    assert not any(k.startswith("PAIRIO_") and k not in ("PAIRIO_JOB_ID", "PAIRIO_JOB_FILE") for k in env)
    # it ended as the interpreter would: threads joined, atexit run, its exit status kept
    assert result["exitCode"] == 3 and result["phase"] == "failed"
    for line in ("out line", "err line", "thread done", "atexit ran"):
        assert line in console


@pytest.mark.parametrize(
    "source, status, expected",
    [
        ("raise ValueError('broken input')\n", 1, "ValueError: broken input"),
        ("import sys; sys.exit('no luck')\n", 1, "no luck"),
        ("import sys; sys.exit()\n", 0, ""),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)\n", -15, ""),
    ],
)
def test_a_forked_processor_ends_with_the_interpreters_status(tmp_path: Path, source: str, status: int, expected: str) -> None:
    backend = warm_backend(tmp_path / "jobs")
    try:
        record, console, result = run_job(
            backend, tmp_path, f"import json, os, sys\njson.dump({{'forked': 'pairio_watcher' in sys.modules}}, open(os.environ['RECORD'], 'w'))\n{source}"
        )
    finally:
        backend.close()
    assert record["forked"] is True
    assert result["exitCode"] == status
    assert expected in console


def test_secrets_reach_a_forked_processor_and_its_console_is_masked(tmp_path: Path) -> None:
    source = RECORDING_PROCESSOR.replace('print("out line")', 'print("the token is", os.environ["API_TOKEN"])')
    backend = warm_backend(tmp_path / "jobs")
    try:
        record, console, _ = run_job(backend, tmp_path, source, secrets={"API_TOKEN": "s3cr3t-value"})
    finally:
        backend.close()
    assert record["forked"] is True
    assert record["env"]["API_TOKEN"] == "s3cr3t-value"  # type: ignore[index]
    assert "the token is ***" in console and "s3cr3t-value" not in console


def test_a_job_whose_interpreter_would_start_differently_gets_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = warm_backend(tmp_path / "jobs")
    try:
        record, _, _ = run_job(backend, tmp_path, RECORDING_PROCESSOR)
        assert record["forked"] is True
        # PYTHONPATH, passed to this job only, changes what its interpreter would import: not forked
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
        record, console, result = run_job(backend, tmp_path, RECORDING_PROCESSOR, env={"PYTHONPATH": ""})
    finally:
        backend.close()
    assert record["forked"] is False
    assert record["env"]["PYTHONPATH"] == str(tmp_path)  # type: ignore[index]
    assert result["exitCode"] == 0 and "atexit ran" in console


def test_without_warm_start_every_processor_is_its_own_interpreter(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "jobs", gpu_ids=[], sample_interval_sec=0.1, log_interval_sec=0.2)
    try:
        record, _, _ = run_job(backend, tmp_path, RECORDING_PROCESSOR)
    finally:
        backend.close()
    assert record["forked"] is False


def test_only_python_script_commands_are_warm_started(tmp_path: Path) -> None:
    path = os.path.dirname(sys.executable)
    python = os.path.basename(sys.executable)
    assert python_interpreter([python, "main.py", "--x"], path) == sys.executable
    assert python_interpreter([sys.executable, "main.py"], None) == sys.executable
    assert python_interpreter([python, "-m", "module"], path) is None  # interpreter options: as given
    assert python_interpreter([python, "-u", "main.py"], path) is None
    assert python_interpreter([python], path) is None
    assert python_interpreter(["Rscript", "main.R"], path) is None
    assert python_interpreter(["/bin/sh", "main.py"], path) is None
    assert python_interpreter(["python3.99", "main.py"], str(tmp_path)) is None  # not on that PATH


def test_the_interpreters_start_up_settings_are_compared_not_the_jobs_own() -> None:
    env = {"PYTHONPATH": "/x", "LANG": "C.UTF-8", "LC_ALL": "C", "HOME": "/home/u", "PAIRIO_JOB_ID": "j", "OMP_NUM_THREADS": "2", "PATH": "/bin"}
    assert startup_environment(env) == {"PYTHONPATH": "/x", "LANG": "C.UTF-8", "LC_ALL": "C", "HOME": "/home/u"}



def test_a_bridge_registered_with_its_defaults_forks_its_jobs_processors(stack: Stack) -> None:  # noqa: F811
    """Through the real hub and ``pairio-bridge local``: warm start is the default, in bridge.json and in the bridge,
    whose warm launcher is the app's interpreter; jobs complete with their console and outputs."""
    stack.register()
    config = json.loads((stack.bridge_dir / "bridge.json").read_text())
    assert config["pythonWarmStart"] is True and config["claimAheadJobs"] == 2
    stack.bridge.start()
    produce = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "greeting.txt"}], message="Hello, warm!", text="warm text")
    done = stack.wait_done(produce)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert "Hello, warm!" in public_get(done.consoleOutputUrl).text
    assert public_get(produce.get_output("output")).text == "warm text"
    assert stack.bridge.process is not None
    launchers = [p.cmdline() for p in psutil.Process(stack.bridge.process.pid).children()]
    assert any(c[:1] == [sys.executable] and c[-1] == "--warm-start" for c in launchers), launchers


def test_a_bridge_registered_without_warm_start_starts_an_interpreter_per_job(stack: Stack) -> None:  # noqa: F811
    stack.register("--no-python-warm-start", "--claim-ahead", "0")
    config = json.loads((stack.bridge_dir / "bridge.json").read_text())
    assert config["pythonWarmStart"] is False and config["claimAheadJobs"] == 0
    stack.bridge.start()
    done = stack.wait_done(stack.submit("work", message="cold"))
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert stack.bridge.process is not None
    launchers = [p.cmdline() for p in psutil.Process(stack.bridge.process.pid).children()]
    assert not any(c[-1:] == ["--warm-start"] for c in launchers), launchers


def test_a_warm_launcher_that_cannot_start_leaves_its_jobs_to_start_cold(tmp_path: Path) -> None:
    from bridge.local.watcher_launcher import WatcherLauncher

    backend = warm_backend(tmp_path / "jobs")
    broken = WatcherLauncher([str(tmp_path / "no-such-python")], Path(bridge_watch.__file__), lambda pid, status: None, warm_start_env={})
    backend._warm_launchers[sys.executable] = broken  # as if this interpreter's launcher had been started and failed
    try:
        first, _, first_result = run_job(backend, tmp_path, RECORDING_PROCESSOR)
        second, _, _ = run_job(backend, tmp_path, RECORDING_PROCESSOR)
    finally:
        backend.close()
    assert first["forked"] is False and first_result["exitCode"] == 0
    assert second["forked"] is False and backend._warm_launchers[sys.executable] is None  # not tried again
