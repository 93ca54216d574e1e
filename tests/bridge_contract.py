"""The contract every bridge backend must pass (local, Slurm, SSH).

Subclass ``BackendContract`` in a ``Test...`` class and implement ``make_backend``:

    class TestLocalBackend(BackendContract):
        def make_backend(self, tmp_path: Path) -> Backend:
            return LocalBackend(self.jobs_root(tmp_path), ...)

``make_backend`` must build the same backend each time it is called with the same
``tmp_path``: the restart tests call it twice and expect the second instance to follow
jobs the first one started. Jobs are ``python -c`` scripts (``python_executable``), so the
suite needs no other tool where the jobs run.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from bridge.backend import Backend, JobSubmission, NativeOutcome, NativePhase
from pairio.jobfile import JOB_FILE_NAME, PairioJobFile, PairioJobFileOutput
from pairio.models import PairioJobRequiredResources

T = TypeVar("T")

SECRET_VALUE = "tok-contract-s3cret-value"

UNTIL_STOPPED_SEC = 600
"""How long a job that must be stopped sleeps: far beyond every wait in these tests, so a job that
ends within one was ended by what the test checks (a cancel, a limit, a signal), not by itself."""

# A job prints this, then spawns a child in a session of its own (so it escapes the job's
# process group) and records the child's pid, so tests can check the whole tree was killed.
SPAWN_ESCAPING_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(%d)"], start_new_session=True)
open("child.pid", "w").write(str(child.pid))
print("started", flush=True)
""" % UNTIL_STOPPED_SEC
SLEEP_UNTIL_STOPPED = f"time.sleep({UNTIL_STOPPED_SEC})\n"
"""appended to SPAWN_ESCAPING_CHILD: the job then runs until something stops it"""

WAIT_FOR_GO = f"""
import os, time
deadline = time.time() + {UNTIL_STOPPED_SEC}
while not os.path.exists("go") and time.time() < deadline:
    time.sleep(0.05)
"""
"""a job starting so waits until the test creates ``go`` in its working directory"""


class BackendContract:
    python_executable: str = sys.executable
    final_timeout_sec: float = 60.0
    """a bound for a job that never ends, not a measure: how long a short job may take from submit to a final state"""
    cancel_timeout_sec: float = 60.0
    """a bound for a cancel that never takes effect, not a measure: well below UNTIL_STOPPED_SEC"""
    operator_env_reaches_jobs: bool = True
    """the jobs run in an environment made from this test process's (not a remote login's), so passEnv can be checked"""
    isolated_watcher: bool = True
    """the watcher runs as ``python -I``; False for warm start (bridge/local/warm_start.py), whose watchers run in the
    app's interpreter started as the processor's would be, in the operator's environment for watchers (never a job's)"""

    # ------------------------------------------------------------ hooks

    def make_backend(self, tmp_path: Path) -> Backend:
        raise NotImplementedError

    def run_dir(self, job: JobSubmission) -> Path:
        """Where the job's directory is where it runs (a remote backend's copy); the job directory itself by default."""
        return job.job_dir

    def launch(self, job_id: str, job_dir: Path, resources: PairioJobRequiredResources, argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
        """The command and watcher options that run ``argv`` as the job (container mode: the engine's, around it)."""
        return argv, ()

    def jobs_root(self, tmp_path: Path) -> Path:
        """Where job directories go (a backend on a shared file system may move it)."""
        return tmp_path / "jobs"

    # ------------------------------------------------------------ helpers

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return self.make_backend(tmp_path)

    @pytest.fixture(autouse=True)
    def _cancel_leftover_jobs(self, tmp_path: Path) -> Iterator[None]:
        """A failed assertion must not leave ten-minute sleepers behind."""
        self.submitted: list[str] = []
        yield
        if self.submitted:
            self.make_backend(tmp_path).cancel(self.submitted)

    def prepare_job(
        self,
        tmp_path: Path,
        script: str,
        *,
        num_cpus: int = 1,
        num_gpus: int = 0,
        memory_gb: float = 1.0,
        time_sec: float = 60.0,
        outputs: Sequence[str] = (),
    ) -> JobSubmission:
        """A job directory as the runner leaves it: job.json written, work/ and outputs/<name>/ created."""
        job_id = uuid.uuid4().hex[:12]
        job_dir = (self.jobs_root(tmp_path) / job_id).resolve()
        (job_dir / "work").mkdir(parents=True)
        resources = PairioJobRequiredResources(numCpus=num_cpus, numGpus=num_gpus, memoryGb=memory_gb, timeSec=time_sec)
        output_files = []
        for name in outputs:
            (job_dir / "outputs" / name).mkdir(parents=True)
            output_files.append(
                PairioJobFileOutput(name=name, fileBaseName=f"{name}.txt", path=str(job_dir / "outputs" / name / f"{name}.txt"))
            )
        PairioJobFile(
            jobId=job_id,
            serviceName="contract_service",
            appName="contract_app",
            processorName="contract_processor",
            outputs=output_files,
            parameters={"greeting": "hello"},
            requiredResources=resources,
            workingDir=str(job_dir / "work"),
        ).write(job_dir / JOB_FILE_NAME)
        command, container_args = self.launch(job_id, job_dir, resources, [self.python_executable, "-c", textwrap.dedent(script)])
        return JobSubmission(job_id=job_id, job_dir=job_dir, command=command, resources=resources, container_args=container_args)

    def submit(self, backend: Backend, tmp_path: Path, script: str, **kwargs: object) -> tuple[str, JobSubmission]:
        job = self.prepare_job(tmp_path, script, **kwargs)  # type: ignore[arg-type]
        native_id = backend.submit(job)
        if hasattr(self, "submitted"):
            self.submitted.append(native_id)
        return native_id, job

    def wait_final(self, backend: Backend, native_id: str, timeout_sec: float | None = None) -> NativeOutcome:
        timeout_sec = timeout_sec or self.final_timeout_sec
        return wait_for(lambda: backend.poll([native_id])[native_id], lambda o: o.phase.is_final, timeout_sec)

    def wait_started(self, job: JobSubmission, timeout_sec: float | None = None) -> None:
        """Until the job has spawned its escaping child (see SPAWN_ESCAPING_CHILD)."""
        wait_for(lambda: (self.run_dir(job) / "work" / "child.pid").exists(), bool, timeout_sec or self.final_timeout_sec)

    def child_process(self, job: JobSubmission) -> psutil.Process:
        return psutil.Process(int((self.run_dir(job) / "work" / "child.pid").read_text()))

    # ------------------------------------------------------------ outcomes

    def test_successful_job(self, backend: Backend, tmp_path: Path) -> None:
        native_id, job = self.submit(backend, tmp_path, "print('hello from the job', flush=True)")
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.SUCCEEDED, outcome
        assert outcome.exit_code == 0
        assert outcome.error is None
        assert "hello from the job" in (job.job_dir / "console.txt").read_text()

    def test_failing_job_reports_exit_code_and_console_tail(self, backend: Backend, tmp_path: Path) -> None:
        script = """
            import sys
            print("about to fail", flush=True)
            print("details on stderr", file=sys.stderr, flush=True)
            sys.exit(3)
        """
        native_id, job = self.submit(backend, tmp_path, script)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED
        assert outcome.exit_code == 3, outcome
        assert outcome.error is not None
        assert "exited with code 3" in outcome.error
        assert "about to fail" in outcome.error and "details on stderr" in outcome.error
        assert "details on stderr" in (job.job_dir / "console.txt").read_text()

    def test_time_limit_kills_the_whole_tree(self, backend: Backend, tmp_path: Path) -> None:
        # The job ignores SIGTERM, so only the escalation to SIGKILL ends it.
        script = (
            SPAWN_ESCAPING_CHILD
            + """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
"""
            + SLEEP_UNTIL_STOPPED
        )
        native_id, job = self.submit(backend, tmp_path, script, time_sec=1.5)
        self.wait_started(job)
        child = self.child_process(job)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED
        assert outcome.error is not None and "time limit of 1.5 s" in outcome.error
        assert_gone(child)

    def test_memory_limit_kills_the_job(self, backend: Backend, tmp_path: Path) -> None:
        script = """
            import time
            data = b"x" * (300 * 1024 * 1024)  # touched, so it counts in RSS
            print("allocated", flush=True)
            time.sleep(%d)
        """ % UNTIL_STOPPED_SEC
        native_id, _ = self.submit(backend, tmp_path, script, memory_gb=0.1)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED
        assert outcome.error is not None and "memory limit of 0.1 GB" in outcome.error

    def test_cancel_stops_the_job_and_its_tree_before_they_end_on_their_own(self, backend: Backend, tmp_path: Path) -> None:
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        child = self.child_process(job)
        started = time.monotonic()
        backend.cancel([native_id])
        outcome = self.wait_final(backend, native_id, timeout_sec=self.cancel_timeout_sec)
        print(f"\ncancel -> final state: {time.monotonic() - started:.2f} s")  # information only: alone, the job would run UNTIL_STOPPED_SEC
        assert outcome.phase == NativePhase.FAILED
        assert outcome.error is not None and "cancel" in outcome.error
        assert_gone(child)

    def test_cancel_right_after_submit(self, backend: Backend, tmp_path: Path) -> None:
        native_id, _ = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        backend.cancel([native_id])
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED
        assert outcome.error is not None and "cancel" in outcome.error

    def test_cancel_is_idempotent(self, backend: Backend, tmp_path: Path) -> None:
        running_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        done_id, _ = self.submit(backend, tmp_path, "print('quick')")
        self.wait_final(backend, done_id)
        self.wait_started(job)
        backend.cancel([running_id, done_id])
        backend.cancel([running_id, done_id])
        assert self.wait_final(backend, running_id).phase == NativePhase.FAILED
        backend.cancel([running_id, done_id])
        assert backend.poll([done_id])[done_id].phase == NativePhase.SUCCEEDED

    # ------------------------------------------------------------ polling

    def test_poll_many_jobs_in_one_call(self, backend: Backend, tmp_path: Path) -> None:
        ids = [self.submit(backend, tmp_path, f"import sys; sys.exit({code})")[0] for code in (0, 4, 0)]
        outcomes = wait_for(
            lambda: backend.poll(ids), lambda o: all(x.phase.is_final for x in o.values()), self.final_timeout_sec
        )
        assert set(outcomes) == set(ids)
        assert [outcomes[i].phase for i in ids] == [NativePhase.SUCCEEDED, NativePhase.FAILED, NativePhase.SUCCEEDED]
        assert outcomes[ids[1]].exit_code == 4

    def test_poll_of_unknown_ids_is_lost_not_an_error(self, backend: Backend, tmp_path: Path) -> None:
        unknown = ["", "not-a-job-id", "999999999", "1:2:/nonexistent/job/dir", "::::"]
        outcomes = backend.poll(unknown)
        assert set(outcomes) == set(unknown)
        assert all(o.phase == NativePhase.LOST for o in outcomes.values()), outcomes
        backend.cancel(unknown)  # nothing to stop, and no exception

    def test_poll_of_a_running_job(self, backend: Backend, tmp_path: Path) -> None:
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        assert backend.poll([native_id])[native_id].phase == NativePhase.RUNNING
        backend.cancel([native_id])
        self.wait_final(backend, native_id)

    # ------------------------------------------------------------ the job's view

    def test_job_reads_its_job_file_and_writes_its_outputs(self, backend: Backend, tmp_path: Path) -> None:
        script = """
            import json, os
            job = json.load(open(os.environ["PAIRIO_JOB_FILE"]))
            out = job["outputs"][0]
            with open(out["path"], "w") as f:
                f.write(job["parameters"]["greeting"] + " from " + os.getcwd())
        """
        native_id, job = self.submit(backend, tmp_path, script, outputs=["result"])
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.SUCCEEDED, outcome.error
        written = (job.job_dir / "outputs" / "result" / "result.txt").read_text()
        assert written == f"hello from {self.run_dir(job) / 'work'}"

    def test_thread_counts_follow_num_cpus(self, backend: Backend, tmp_path: Path) -> None:
        script = """
            import json, os
            names = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "CUDA_VISIBLE_DEVICES"]
            json.dump({n: os.environ.get(n) for n in names}, open("env.json", "w"))
        """
        native_id, job = self.submit(backend, tmp_path, script, num_cpus=2)
        assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        env = json.loads((self.run_dir(job) / "work" / "env.json").read_text())
        assert env == {
            "OMP_NUM_THREADS": "2",
            "MKL_NUM_THREADS": "2",
            "OPENBLAS_NUM_THREADS": "2",
            "NUMEXPR_NUM_THREADS": "2",
            "CUDA_VISIBLE_DEVICES": "",
        }

    def test_job_does_not_see_the_bridges_api_key(
        self, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PAIRIO_API_KEY", "the-bridge-owners-key")
        script = """
            import os
            open("key.txt", "w").write(os.environ.get("PAIRIO_API_KEY", "unset"))
        """
        native_id, job = self.submit(backend, tmp_path, script)
        assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        assert (self.run_dir(job) / "work" / "key.txt").read_text() == "unset"

    def test_secrets_reach_the_processor_only_and_never_in_clear(
        self, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Issue 10: secrets are handed over in a file the watcher deletes at once, and reach the processor's
        environment only; the operator's environment stays out of the job except for passEnv; output is masked."""
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-aws-key")
        monkeypatch.setenv("GITHUB_TOKEN", "operator-github-token")
        monkeypatch.setenv("LAB_SHARED_SETTING", "passed-through")
        script = """
            import base64, json, os
            json.dump(dict(os.environ), open("env.json", "w"))
            job_dir = os.path.dirname(os.environ["PAIRIO_JOB_FILE"])
            watcher = {
                "environ": open(f"/proc/{os.getppid()}/environ", "rb").read().decode("utf-8", "replace"),
                "cmdline": open(f"/proc/{os.getppid()}/cmdline", "rb").read().decode("utf-8", "replace"),
                "secretsFileLeft": os.path.exists(os.path.join(job_dir, "secrets.json")),
            }
            json.dump(watcher, open("watcher_seen.json", "w"))
            token = os.environ["TOKEN"]
            print("token is", token, "and", base64.b64encode(token.encode()).decode(), flush=True)
            raise SystemExit("failing with " + token)
        """
        job = self.prepare_job(tmp_path, script)
        job.secrets = {"TOKEN": SECRET_VALUE}
        job.pass_env = ("LAB_SHARED_*",)
        native_id = backend.submit(job)
        self.submitted.append(native_id)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED and outcome.error is not None, outcome
        assert "failing with ***" in outcome.error and SECRET_VALUE not in outcome.error  # the console tail, masked

        work = self.run_dir(job) / "work"
        env = json.loads((work / "env.json").read_text())
        assert env["TOKEN"] == SECRET_VALUE
        assert env["PAIRIO_JOB_ID"] == job.job_id
        assert "AWS_SECRET_ACCESS_KEY" not in env and "GITHUB_TOKEN" not in env and "PAIRIO_API_KEY" not in env
        if self.operator_env_reaches_jobs:
            assert env["LAB_SHARED_SETTING"] == "passed-through"
        watcher = json.loads((work / "watcher_seen.json").read_text())
        if self.isolated_watcher:
            assert "-I" in watcher["cmdline"].split("\0")  # isolated: PYTHON* variables cannot change the watcher
        else:
            assert "--warm-start" in watcher["cmdline"].split("\0")  # a warm launcher's fork (see the attribute)
        assert SECRET_VALUE not in watcher["environ"] and SECRET_VALUE not in watcher["cmdline"]
        assert watcher["secretsFileLeft"] is False
        console = (job.job_dir / "console.txt").read_text()
        assert "token is *** and ***" in console, console
        for directory in {self.run_dir(job), job.job_dir}:
            assert not (directory / "secrets.json").exists()
            for path in directory.rglob("*"):
                if path.is_file() and path.name not in ("env.json", "watcher_seen.json"):
                    assert SECRET_VALUE.encode() not in path.read_bytes(), path
        for name in ("console.txt", "result.json", "resource_log.jsonl", "watcher.json", "work/env.json"):
            mode = (self.run_dir(job) / name).stat().st_mode & 0o777
            assert mode == 0o600, f"{name} has mode {mode:o}"

    def test_resource_log_has_samples(self, backend: Backend, tmp_path: Path) -> None:
        script = """
            import time
            end = time.time() + 1.2
            while time.time() < end:
                pass
        """
        native_id, job = self.submit(backend, tmp_path, script)
        assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        samples = [json.loads(line) for line in (job.job_dir / "resource_log.jsonl").read_text().splitlines()]
        assert samples
        for sample in samples:
            assert {"timestampSec", "cpuPercent", "rssBytes", "numProcesses"} <= set(sample)
        assert max(s["rssBytes"] for s in samples) > 0
        assert max(s["numProcesses"] for s in samples) >= 1

    # ------------------------------------------------------------ restart safety

    def test_a_new_backend_follows_jobs_of_the_previous_one(self, tmp_path: Path) -> None:
        first = self.make_backend(tmp_path)
        quick_id, _ = self.submit(first, tmp_path, "print('done before the restart')")
        # runs until the test lets it end, so it is still running after the restart however slow the machine
        slow_id, slow = self.submit(first, tmp_path, WAIT_FOR_GO + "print('done after the restart')\n")
        self.wait_final(first, quick_id)
        del first

        second = self.make_backend(tmp_path)
        assert second.poll([quick_id])[quick_id].phase == NativePhase.SUCCEEDED
        assert second.poll([slow_id])[slow_id].phase in (NativePhase.QUEUED, NativePhase.RUNNING)
        (self.run_dir(slow) / "work" / "go").write_text("")
        assert self.wait_final(second, slow_id).phase == NativePhase.SUCCEEDED

    def test_a_new_backend_cancels_jobs_of_the_previous_one(self, tmp_path: Path) -> None:
        first = self.make_backend(tmp_path)
        native_id, job = self.submit(first, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        child = self.child_process(job)
        del first

        second = self.make_backend(tmp_path)
        second.cancel([native_id])
        outcome = self.wait_final(second, native_id, timeout_sec=self.cancel_timeout_sec)
        assert outcome.phase == NativePhase.FAILED and outcome.error is not None and "cancel" in outcome.error
        assert_gone(child)


def wait_for(read: Callable[[], T], done: Callable[[T], object], timeout_sec: float, interval_sec: float = 0.1) -> T:
    """Calls ``read`` until ``done`` accepts its value; fails the test with the last value after ``timeout_sec``."""
    deadline = time.monotonic() + timeout_sec
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still not done after {timeout_sec} s; last value: {value!r}")
        time.sleep(interval_sec)


def assert_gone(process: psutil.Process, timeout_sec: float = 60.0) -> None:
    """The process has ended (a zombie waiting for its parent counts as ended); ``timeout_sec`` bounds a kill that
    never comes, well below the UNTIL_STOPPED_SEC such a process sleeps."""

    def alive() -> bool:
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    wait_for(alive, lambda a: not a, timeout_sec, interval_sec=0.05)
