"""The SSH backend against a real sshd on 127.0.0.1: the shared contract, plus what only a remote host has.

The remote host is this machine, reached over SSH as the current user, with the bridge's
remote directory elsewhere under the test's tmp_path; the watcher runs there with the
system's /usr/bin/python3 (when it lacks psutil, as on Debian, the /proc fallback is what
enforces the limits). Contract tests that look into a job's work directory read the
remote one (``run_dir``), which is a local path here.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bridge.backend import JobSubmission, NativePhase, SubmitError
from bridge.remote_jobs import RemoteJobs, map_argument, remote_job_file
from bridge.shell import CommandNotFoundError, LocalShell
from bridge.ssh.backend import SshBackend
from bridge.ssh.connection import SshShell
from bridge.watcher_code import BOOTSTRAP_CODE
from pairio.jobfile import JOB_FILE_NAME, PairioJobFile, PairioJobFileInput, PairioJobFileOutput
from pairio.models import PairioJobRequiredResources

from .bridge_contract import SLEEP_UNTIL_STOPPED, SPAWN_ESCAPING_CHILD, BackendContract, assert_gone, wait_for
from .hubtools import free_port
from .ssh_support import TestSshd, sshd  # noqa: F401 - the fixture

REMOTE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


class RemoteContract(BackendContract):
    """The contract for backends whose jobs run in a remote directory reached over the test sshd
    (the SSH backend; the Slurm backend with --ssh): tests that look into a job's work directory
    read the remote one."""

    operator_env_reaches_jobs = False  # they run in the remote login's environment

    @pytest.fixture(autouse=True)
    def _ssh(self, sshd: TestSshd) -> Iterator[None]:  # noqa: F811
        self.sshd = sshd
        self.shells: list[SshShell] = []
        yield
        for shell in self.shells:
            shell.close()

    def remote_root(self, tmp_path: Path) -> Path:
        return tmp_path / "remote"

    def remote_jobs(self, tmp_path: Path) -> RemoteJobs:
        shell = SshShell(self.sshd.options())
        self.shells.append(shell)
        return RemoteJobs(shell, str(self.remote_root(tmp_path)), python=REMOTE_PYTHON)

    def run_dir(self, job: JobSubmission) -> Path:
        """The job's remote directory (on this same machine)."""
        return self.remote_root(job.job_dir.parent.parent) / "jobs" / job.job_id


class TestSshBackend(RemoteContract):
    def make_backend(self, tmp_path: Path, **kwargs: object) -> SshBackend:
        options: dict[str, object] = dict(
            gpu_ids=[], sample_interval_sec=0.1, log_interval_sec=0.2, kill_grace_sec=0.5
        )
        options.update(kwargs)
        return SshBackend(self.remote_jobs(tmp_path), self.jobs_root(tmp_path), **options)  # type: ignore[arg-type]

    # ------------------------------------------------------------ SSH only

    def test_the_remote_directory_mirrors_the_local_one(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        job = self.prepare_job(tmp_path, """
            import json, os
            job = json.load(open(os.environ["PAIRIO_JOB_FILE"]))
            text = open(job["inputs"][0]["path"]).read()
            print("secret is", os.environ["MY_SECRET"], flush=True)
            for i in range(3000):
                print(f"line {i:05d} " + "x" * 400)
            open(job["outputs"][0]["path"], "w").write(text.upper())
        """, outputs=["shout"])
        staged = job.job_dir / "inputs" / "text" / "in.txt"
        staged.parent.mkdir(parents=True)
        staged.write_text("quiet words")
        job_file = PairioJobFile.read(job.job_dir / JOB_FILE_NAME)
        job_file.inputs = [PairioJobFileInput(name="text", fileBaseName="in.txt", url="https://example.org/in.txt", path=str(staged))]
        job_file.write(job.job_dir / JOB_FILE_NAME)
        job.secrets = {"MY_SECRET": "s3cret"}
        native_id = backend.submit(job)
        self.submitted.append(native_id)
        assert native_id == str(self.remote_root(tmp_path) / "jobs" / job.job_id)

        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.SUCCEEDED, outcome.error
        assert (job.job_dir / "outputs" / "shout" / "shout.txt").read_text() == "QUIET WORDS"
        console = (job.job_dir / "console.txt").read_text()  # over 1 MiB: brought back over several polls
        assert console.startswith("secret is ***\n") and console.count("\n") == 3001  # masked by the watcher there
        assert console == (Path(native_id) / "console.txt").read_text()
        assert json.loads((job.job_dir / "result.json").read_text())["phase"] == "succeeded"
        remote_job = json.loads((Path(native_id) / JOB_FILE_NAME).read_text())
        assert remote_job["inputs"][0]["path"] == f"{native_id}/inputs/text/in.txt"
        assert remote_job["outputs"][0]["path"] == f"{native_id}/outputs/shout/shout.txt"
        assert remote_job["workingDir"] == f"{native_id}/work"
        # secrets reach the job through the agent's stdin, never a command line: nothing about them on disk there
        assert "s3cret" not in (Path(native_id) / "watcher.log").read_text() + (Path(native_id) / "launch.json").read_text()

    def test_the_watcher_runs_with_a_python_that_may_lack_psutil(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        host = backend.remote.probe()
        assert host.python and host.procfs
        if REMOTE_PYTHON == "/usr/bin/python3" and not host.psutil:
            # the limits of the contract suite were enforced by the /proc fallback: check it ran
            native_id, job = self.submit(backend, tmp_path, "import time; time.sleep(0.5)")
            assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
            assert json.loads((job.job_dir / "resource_log.jsonl").read_text().splitlines()[0])["rssBytes"] > 0

    def test_a_dropped_connection_does_not_fail_a_running_job(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        script = "import time\nfor i in range(8):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
        native_id, job = self.submit(backend, tmp_path, script)

        def console_after_poll() -> str:
            backend.poll([native_id])
            return (job.job_dir / "console.txt").read_text() if (job.job_dir / "console.txt").exists() else ""

        wait_for(console_after_poll, lambda text: "tick 1" in text, 15)
        self.sshd.restart(down_sec=1.0)
        # while it is down, polls say "running", never "failed"
        assert backend.poll([native_id])[native_id].phase == NativePhase.RUNNING
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.SUCCEEDED, outcome.error
        assert (job.job_dir / "console.txt").read_text() == "".join(f"tick {i}\n" for i in range(8))
        assert backend.remote.shell.connections_made >= 2  # type: ignore[attr-defined]

    def test_jobs_get_cpus_of_their_own_and_hold_their_resources(self, tmp_path: Path) -> None:
        if len(os.sched_getaffinity(0)) < 2:
            pytest.skip("needs 2 CPUs")
        backend = self.make_backend(tmp_path, gpu_ids=["0", "1"])
        before = backend.capacity()
        assert before.numGpus == 2
        script = "import os, time\nopen('cpus.txt', 'w').write(','.join(map(str, sorted(os.sched_getaffinity(0)))))\n" \
                 "open('gpus.txt', 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])\ntime.sleep(120)\n"
        submitted = [self.submit(backend, tmp_path, script, num_cpus=1, num_gpus=1, memory_gb=0.5) for _ in range(2)]
        during = backend.capacity()
        assert during.numGpus == 0 and during.numCpus <= max(0, before.numCpus - 2)
        with pytest.raises(SubmitError, match="needs 1 GPUs but .* has 0 free of 2"):
            self.submit(backend, tmp_path, script, num_gpus=1)
        files = [(self.run_dir(job) / "work" / "cpus.txt", self.run_dir(job) / "work" / "gpus.txt") for _, job in submitted]
        wait_for(lambda: all(c.exists() and g.exists() for c, g in files), bool, 15)
        assert sorted(c.read_text() for c, _ in files) == sorted(str(c) for c in sorted(os.sched_getaffinity(0))[:2])
        assert sorted(g.read_text() for _, g in files) == ["0", "1"]
        # a restarted bridge re-learns the reservations from the job directories
        assert self.make_backend(tmp_path, gpu_ids=["0", "1"]).capacity().numGpus == 0
        backend.cancel([native_id for native_id, _ in submitted])
        for native_id, _ in submitted:
            self.wait_final(backend, native_id)
        assert backend.capacity().numGpus == 2

    def test_adopt_finds_a_started_job_and_refuses_an_unstarted_one(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        restarted = self.make_backend(tmp_path)
        assert restarted.adopt(job.job_dir) == native_id
        with pytest.raises(LookupError, match="no SSH job was started"):
            restarted.adopt(self.prepare_job(tmp_path, "print(1)").job_dir)
        self.wait_started(job)
        child = self.child_process(job)
        restarted.cancel([native_id])
        outcome = self.wait_final(restarted, native_id, timeout_sec=self.cancel_timeout_sec)
        assert outcome.phase == NativePhase.FAILED and "cancel" in (outcome.error or "")
        assert_gone(child)

    def test_submitting_the_same_job_again_does_not_run_it_twice(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        job = self.prepare_job(tmp_path, "import time; print('ran', flush=True); time.sleep(0.5)")
        native_id = backend.submit(job)
        assert backend.submit(job) == native_id
        assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        assert self.make_backend(tmp_path).submit(job) == native_id
        assert (job.job_dir / "console.txt").read_text().count("ran") == 1

    def test_a_killed_remote_watcher_makes_the_job_lost_and_its_processes_end(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        wait_for(lambda: (Path(native_id) / "watcher.json").exists(), bool, self.final_timeout_sec)
        watcher = json.loads((Path(native_id) / "watcher.json").read_text())
        main_process = psutil.Process(watcher["processGroup"])
        os.kill(watcher["pid"], 9)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.LOST and "watcher on" in (outcome.error or "")
        assert_gone(main_process)

    def test_a_missing_remote_python_is_a_clear_error(self, tmp_path: Path) -> None:
        shell = SshShell(self.sshd.options())
        self.shells.append(shell)
        remote = RemoteJobs(shell, str(self.remote_root(tmp_path)), python="no-such-python3")
        with pytest.raises(CommandNotFoundError, match="remote Python 'no-such-python3' was not found .*remotePython"):
            remote.probe()
        backend = SshBackend(remote, self.jobs_root(tmp_path), gpu_ids=[])
        assert backend.capacity().numCpus == 0  # no claims while the host cannot run jobs


# ---------------------------------------------------------------- pure parts of the mirror


def test_the_job_file_is_moved_into_the_remote_directory(tmp_path: Path) -> None:
    local = tmp_path / "jobs" / "abc"
    resources = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=1, timeSec=60)
    job_file = PairioJobFile(
        jobId="abc", serviceName="s", appName="a", processorName="p", requiredResources=resources, workingDir=str(local / "work"),
        inputs=[PairioJobFileInput(name="i", fileBaseName="x.txt", url="https://h/x", path=str(local / "inputs" / "i" / "x.txt"))],
        outputs=[PairioJobFileOutput(name="o", fileBaseName="y.txt", path=str(local / "outputs" / "o" / "y.txt"))],
    )
    moved = remote_job_file(job_file, local, "/home/alice/pairio-bridge/jobs/abc")
    assert moved.inputs[0].path == "/home/alice/pairio-bridge/jobs/abc/inputs/i/x.txt"
    assert moved.outputs[0].path == "/home/alice/pairio-bridge/jobs/abc/outputs/o/y.txt"
    assert moved.workingDir == "/home/alice/pairio-bridge/jobs/abc/work"
    assert job_file.inputs[0].path.startswith(str(local))  # the local file is left as it is
    assert map_argument(f"{local}:{local}", local, "/r/abc") == "/r/abc:/r/abc"
    assert map_argument(f"{local}x/y", local, "/r/abc") == f"{local}x/y"  # another directory that merely starts the same


def test_scripts_run_by_the_remote_python_import_nothing_of_the_project() -> None:
    for name in ("watch.py", "remote_agent.py"):
        source = (Path(__file__).resolve().parent.parent / "bridge" / name).read_text()
        imports = [line for line in source.splitlines() if line.startswith(("import ", "from ")) or line.startswith("    import ")]
        assert not [line for line in imports if "pairio" in line or "bridge" in line], imports


class TestSshBackendTransfers(TestSshBackend):
    """Inputs fetched there, large outputs, clean-up, an unreachable host: only the tests below, not the contract again."""

    def test_inputs_are_downloaded_there_when_configured_else_uploaded(self, tmp_path: Path) -> None:
        served = tmp_path / "served"
        served.mkdir()
        (served / "a.txt").write_text("from the web")
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(served), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                requests.append(self.path)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            backend = self.make_backend(tmp_path, download_inputs=True)
            job = self.prepare_job(tmp_path, "import json, os\njob = json.load(open(os.environ['PAIRIO_JOB_FILE']))\n"
                                             "print('|'.join(open(i['path']).read() for i in job['inputs']))")
            inputs = []
            # staged here in capitals, so the job's output tells which copy it read (the sizes match)
            for name, url, text in (("a", f"http://127.0.0.1:{server.server_port}/a.txt", "FROM THE WEB"),
                                    ("b", f"http://127.0.0.1:{server.server_port}/missing.txt", "uploaded")):
                staged = job.job_dir / "inputs" / name / f"{name}.txt"
                staged.parent.mkdir(parents=True)
                staged.write_text(text)
                inputs.append(PairioJobFileInput(name=name, fileBaseName=f"{name}.txt", url=url, path=str(staged)))
            job_file = PairioJobFile.read(job.job_dir / JOB_FILE_NAME)
            job_file.inputs = inputs
            job_file.write(job.job_dir / JOB_FILE_NAME)
            native_id = backend.submit(job)
            assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
            assert (job.job_dir / "console.txt").read_text() == "from the web|uploaded\n"
            assert sorted(set(requests)) == ["/a.txt", "/missing.txt"]  # fetched there; the 404 was uploaded instead
        finally:
            server.shutdown()

    def test_a_large_output_comes_back_whole(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        script = """
            import json, os
            job = json.load(open(os.environ["PAIRIO_JOB_FILE"]))
            with open(job["outputs"][0]["path"], "wb") as f:
                for i in range(12):
                    f.write(bytes([65 + i]) * (1024 * 1024))
        """
        native_id, job = self.submit(backend, tmp_path, script, outputs=["big"])
        phases = []
        while True:
            outcome = backend.poll([native_id])[native_id]
            phases.append(outcome.phase)
            if outcome.phase.is_final:
                break
            assert len(phases) < 300
            time.sleep(0.1)
        assert outcome.phase == NativePhase.SUCCEEDED, outcome.error
        local = job.job_dir / "outputs" / "big" / "big.txt"
        assert local.stat().st_size == 12 * 1024 * 1024
        assert local.read_bytes() == (Path(native_id) / "outputs" / "big" / "big.txt").read_bytes()
        backend.close()

    def test_remote_directories_of_ended_jobs_no_longer_kept_are_removed(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        ended_id, ended = self.submit(backend, tmp_path, "print('done')")
        running_id, running = self.submit(backend, tmp_path, "import time; time.sleep(120)")
        kept_id, kept = self.submit(backend, tmp_path, "print('kept')")
        for native_id in (ended_id, kept_id):
            assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        assert backend.remote.clean_up([kept.job_dir.name], min_age_sec=3600) == []  # too recent
        removed = backend.remote.clean_up([kept.job_dir.name], min_age_sec=0)
        assert removed == [ended.job_dir.name]  # the running one is never touched
        assert not Path(ended_id).exists() and Path(running_id).exists() and Path(kept_id).exists()
        backend.cancel([running_id])
        self.wait_final(backend, running_id)

    def test_a_submission_to_an_unreachable_host_fails_after_retrying(self, tmp_path: Path) -> None:
        shell = SshShell(self.sshd.options(port=free_port()))
        self.shells.append(shell)
        backend = SshBackend(RemoteJobs(shell, str(self.remote_root(tmp_path))), self.jobs_root(tmp_path), gpu_ids=[], submit_retry_sec=1.5)
        job = self.prepare_job(tmp_path, "print(1)")
        with pytest.raises(SubmitError, match="could not be reached for 1.5 s: cannot reach"):
            backend.submit(job)
        assert backend.capacity().numCpus == 0
        assert backend.poll(["/nowhere/jobs/x"])["/nowhere/jobs/x"].phase == NativePhase.LOST


# The contract ran once, in TestSshBackend: TestSshBackendTransfers adds only its own tests.
for _name in dir(BackendContract):
    if _name.startswith("test_"):
        setattr(TestSshBackendTransfers, _name, None)
for _name in [n for n in vars(TestSshBackend) if n.startswith("test_")]:
    setattr(TestSshBackendTransfers, _name, None)


# ---------------------------------------------------------------- the watcher where psutil is missing


def run_watcher_without_psutil(job_dir: Path, *args: str) -> dict[str, Any]:
    """bridge/watch.py as the remote host runs it, in a Python where ``import psutil`` fails."""
    watch = Path(__file__).resolve().parent.parent / "bridge" / "watch.py"
    bootstrap = f"import runpy, sys; sys.modules['psutil'] = None; sys.argv = sys.argv[1:]; runpy.run_path({str(watch)!r}, run_name='__main__')"
    subprocess.run([sys.executable, "-c", bootstrap, "watch.py", "--job-dir", str(job_dir), *args], check=True, timeout=60)
    return dict(json.loads((job_dir / "result.json").read_text()))


def test_without_psutil_the_watcher_kills_the_whole_tree_at_its_time_limit(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    script = SPAWN_ESCAPING_CHILD + "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEP_UNTIL_STOPPED
    result = run_watcher_without_psutil(
        job_dir, "--time-sec", "1.5", "--memory-gb", "1", "--num-cpus", "1", "--sample-interval-sec", "0.1",
        "--log-interval-sec", "0.2", "--kill-grace-sec", "0.5", "--", sys.executable, "-c", script,
    )
    assert result["phase"] == "failed" and "time limit of 1.5 s" in result["error"]
    child_pid = int((job_dir / "work" / "child.pid").read_text())
    try:
        assert_gone(psutil.Process(child_pid))
    except psutil.NoSuchProcess:
        pass  # gone already
    samples = [json.loads(line) for line in (job_dir / "resource_log.jsonl").read_text().splitlines()]
    assert samples and max(s["numProcesses"] for s in samples) >= 2 and max(s["rssBytes"] for s in samples) > 0
    watcher = json.loads((job_dir / "watcher.json").read_text())
    assert abs(watcher["createTime"] - time.time()) < 30 and watcher["hostname"]


def test_without_psutil_the_watcher_enforces_memory_and_measures_cpu(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    script = "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass\ndata = b'x' * (300 * 1024 * 1024)\ntime.sleep(30)\n"
    result = run_watcher_without_psutil(
        job_dir, "--time-sec", "30", "--memory-gb", "0.1", "--num-cpus", "1", "--sample-interval-sec", "0.1",
        "--log-interval-sec", "0.1", "--", sys.executable, "-c", script,
    )
    assert result["phase"] == "failed" and "over its memory limit of 0.1 GB" in result["error"], result
    samples = [json.loads(line) for line in (job_dir / "resource_log.jsonl").read_text().splitlines()]
    assert max(s["cpuPercent"] for s in samples) > 20, samples


def test_the_mirror_works_through_any_shell(tmp_path: Path) -> None:
    """RemoteJobs knows nothing of SSH: through LocalShell (Slurm on this login node) it moves and follows a job the same way."""
    contract = BackendContract()
    job = contract.prepare_job(tmp_path, "print('through the seam')", outputs=["out"])
    job.command = [sys.executable, "-c", "import json, os; o = json.load(open(os.environ['PAIRIO_JOB_FILE']))['outputs'][0]; "
                   "open(o['path'], 'w').write('written there'); print('through the seam')"]
    remote = RemoteJobs(LocalShell(), str(tmp_path / "elsewhere"), python=sys.executable)
    remote_dir = remote.upload(job.job_dir)
    assert remote_dir == str(tmp_path / "elsewhere" / "jobs" / job.job_id)
    argv = remote.watcher_command(job.job_dir, job.command, job.resources, watcher_args=["--sample-interval-sec", "0.1"])
    assert argv[:7] == [sys.executable, "-I", "-c", BOOTSTRAP_CODE, remote.watcher_path, "--job-dir", remote_dir]
    assert remote.launch(job.job_dir, argv)["state"] == "launched"
    assert remote.launch(job.job_dir, argv)["state"] in ("launched-before", "ended")  # never twice
    progress = wait_for(lambda: remote.sync([job.job_dir])[job.job_dir], lambda p: p.outcome is not None, 20)
    assert progress.outcome is not None and progress.outcome.phase == NativePhase.SUCCEEDED
    assert (job.job_dir / "console.txt").read_text() == "through the seam\n"
    assert (job.job_dir / "outputs" / "out" / "out.txt").read_text() == "written there"
    assert Path(importlib.util.cache_from_source(remote.watcher_path)).is_file(), "imported, so its bytecode is cached for the next job"
    remote.remove(job.job_dir)
    assert not Path(remote_dir).exists()
    assert remote.sync([job.job_dir])[job.job_dir].outcome is not None  # the local mirror is complete: nothing asked


class TestLongLivedAgent:
    """With a runner listening for ends, the quick agent commands go through one long-lived agent (bridge/agent_session.py)."""

    def job(self, tmp_path: Path, code: str) -> JobSubmission:
        job = BackendContract().prepare_job(tmp_path, code)
        job.command = [sys.executable, "-c", code]
        return job

    def test_over_ssh_one_agent_launches_syncs_and_tells_each_end(self, tmp_path: Path, sshd: TestSshd) -> None:  # noqa: F811
        shell = SshShell(sshd.options())
        try:
            backend = SshBackend(RemoteJobs(shell, str(tmp_path / "remote"), python=REMOTE_PYTHON), tmp_path / "jobs", gpu_ids=[])
            ended = threading.Event()
            backend.notify_job_end(ended.set)
            job = BackendContract().prepare_job(tmp_path, "import time; time.sleep(1); print('ended there')")
            native_id = backend.submit(job)
            assert backend.poll([native_id])[native_id].phase in (NativePhase.QUEUED, NativePhase.RUNNING)
            assert ended.wait(60), "the agent did not tell the job's end"
            outcome = wait_for(lambda: backend.poll([native_id])[native_id], lambda o: o.phase.is_final, 30)
            assert outcome.phase == NativePhase.SUCCEEDED
            assert (job.job_dir / "console.txt").read_text() == "ended there\n"
            assert backend.remote.sessions_started == 1
            backend.close()
        finally:
            shell.close()

    def test_a_watcher_that_dies_is_told_as_an_end_too(self, tmp_path: Path) -> None:
        remote = RemoteJobs(LocalShell(), str(tmp_path / "elsewhere"), python=sys.executable)
        ended = threading.Event()
        remote.use_agent_session(ended.set)
        job = self.job(tmp_path, "import time; time.sleep(120)")
        remote.upload(job.job_dir)
        remote.launch(job.job_dir, remote.watcher_command(job.job_dir, job.command, job.resources))
        watcher_file = Path(remote.remote_dir(job.job_dir)) / "watcher.json"
        pid = wait_for(lambda: json.loads(watcher_file.read_text())["pid"] if watcher_file.exists() else None, lambda p: p, 30)
        os.kill(pid, 9)
        assert ended.wait(30), "a watcher killed without a result was not told"
        progress = wait_for(lambda: remote.sync([job.job_dir])[job.job_dir], lambda p: p.alive is False, 30)
        assert progress.launched and progress.outcome is None  # the backend reports it LOST
        remote.close()

    def test_jobs_outlive_the_agent_and_a_broken_agent_is_replaced(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import bridge.remote_jobs

        remote = RemoteJobs(LocalShell(), str(tmp_path / "elsewhere"), python=sys.executable)
        remote.use_agent_session(lambda: None)
        job = self.job(tmp_path, "import time; time.sleep(1.5); print('outlived it')")
        remote.upload(job.job_dir)
        assert remote.launch(job.job_dir, remote.watcher_command(job.job_dir, job.command, job.resources))["state"] == "launched"
        session = remote._session
        assert session is not None and session.agent_pid is not None
        os.kill(session.agent_pid, 9)  # the agent dies (as with a dropped connection); its watcher runs on
        monkeypatch.setattr(bridge.remote_jobs, "SESSION_RETRY_SEC", 0.0)
        wait_for(lambda: session.alive, lambda alive: not alive, 30)
        # the next command starts a new agent (or, while it cannot, runs one-shot); the job ends as if nothing happened
        progress = wait_for(lambda: remote.sync([job.job_dir])[job.job_dir], lambda p: p.outcome is not None, 30)
        assert progress.outcome is not None and progress.outcome.phase == NativePhase.SUCCEEDED
        assert (job.job_dir / "console.txt").read_text() == "outlived it\n"
        assert remote.sessions_started == 2
        assert remote.launch(job.job_dir, remote.watcher_command(job.job_dir, job.command, job.resources))["state"] in (
            "launched-before", "ended"
        )  # never twice, through the new agent too
        remote.close()
