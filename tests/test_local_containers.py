"""The local backend in container mode, with real engines: podman, and the docker CLI through podman's socket.

The whole bridge contract runs with each job inside a container of the offline test image
(tests/container_support.py), plus what only containers have: the engine's memory and CPU
limits, the container's removal, the env file, a missing image.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bridge.backend import Backend, NativePhase
from bridge.containers import PullPolicy, container_name, oci_create_command
from bridge.local.backend import NativeId
from pairio.models import PairioJobRequiredResources

from . import test_bridge_e2e as e2e
from .bridge_contract import SECRET_VALUE, SLEEP_UNTIL_STOPPED, SPAWN_ESCAPING_CHILD, UNTIL_STOPPED_SEC, BackendContract, wait_for
from .container_support import PodmanSetup, podman_setup, podman_socket  # noqa: F401  (fixtures)
from .test_bridge_e2e import Stack
from .test_local_backend import fast_backend

hub = e2e.hub
# a safety net, not a measure: its waits are liveness bounds of up to 120 s each, far below what they guard against
pytestmark = pytest.mark.timeout(600)


class ContainerContract(BackendContract):
    """Jobs run as ``python3 -c SCRIPT`` in the test image; the engine is podman or docker."""

    engine = "podman"
    python_executable = "python3"
    final_timeout_sec = 120.0
    """a bound for a job that never ends, not a measure: each engine call can take seconds on a busy host"""
    cancel_timeout_sec = 120.0
    operator_env_reaches_jobs = True

    @pytest.fixture(autouse=True)
    def _engine(self, podman_setup: PodmanSetup) -> Iterator[None]:
        self.setup = podman_setup
        yield

    def make_backend(self, tmp_path: Path) -> Backend:
        return fast_backend(self.jobs_root(tmp_path))

    def launch(self, job_id: str, job_dir: Path, resources: PairioJobRequiredResources, argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
        command = oci_create_command(
            self.engine, image=self.setup.image, argv=argv, job_dir=job_dir, job_id=job_id, resources=resources,
            pull_policy=PullPolicy.NEVER,
        )
        return command, ("--container-engine", self.engine, "--container-image", self.setup.image, "--container-name", container_name(job_id))

    def child_process(self, job) -> psutil.Process:  # type: ignore[no-untyped-def]
        """The escaping child as the host sees it: its pid inside the container is another."""
        for p in psutil.process_iter():
            try:
                if f"time.sleep({UNTIL_STOPPED_SEC})" in " ".join(p.cmdline()) and p.environ().get("PAIRIO_JOB_ID") == job.job_id:
                    return p
            except psutil.Error:
                continue
        raise AssertionError(f"no process of job {job.job_id} sleeps on the host")

    def assert_no_container(self, job_id: str) -> None:
        wait_for(self.setup.container_names, lambda names: container_name(job_id) not in names, self.final_timeout_sec)

    # ------------------------------------------------------------ container only

    def test_secrets_reach_the_processor_only_and_never_in_clear(  # type: ignore[override]
        self, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In a container the secrets travel in the env file, which is gone once the container exists;
        neither the engine's command lines nor the container's command show them, and the output is masked."""
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-aws-key")
        monkeypatch.setenv("LAB_SHARED_SETTING", "passed-through")
        script = """
            import json, os, time
            json.dump(dict(os.environ), open("env.json", "w"))
            print("token is", os.environ["TOKEN"], flush=True)
            time.sleep(1.5)
            raise SystemExit("failing with " + os.environ["TOKEN"])
        """
        job = self.prepare_job(tmp_path, script)
        job.secrets = {"TOKEN": SECRET_VALUE}
        job.pass_env = ("LAB_SHARED_*",)
        native_id = backend.submit(job)
        self.submitted.append(native_id)
        name = container_name(job.job_id)
        wait_for(lambda: (self.run_dir(job) / "work" / "env.json").exists(), bool, 20.0)
        inspected = json.loads(self.setup.podman("inspect", name).stdout)[0]
        assert SECRET_VALUE not in json.dumps(inspected.get("Args")) and SECRET_VALUE not in json.dumps(inspected["Config"].get("Cmd"))
        for p in psutil.process_iter():
            try:
                assert SECRET_VALUE not in " ".join(p.cmdline()), p
            except psutil.Error:
                continue
        assert not (job.job_dir / "container.env").exists()  # removed once the engine has read it
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED and outcome.error is not None
        assert "failing with ***" in outcome.error and SECRET_VALUE not in outcome.error
        env = json.loads((self.run_dir(job) / "work" / "env.json").read_text())
        assert env["TOKEN"] == SECRET_VALUE and env["PAIRIO_JOB_ID"] == job.job_id
        assert env["LAB_SHARED_SETTING"] == "passed-through" and "AWS_SECRET_ACCESS_KEY" not in env
        assert "CONTAINERS_CONF" not in env and env["TMPDIR"] == "/tmp" and env["PATH"] == "/usr/bin:/bin"
        assert "token is ***" in (job.job_dir / "console.txt").read_text()
        assert not (job.job_dir / "secrets.json").exists() and not (job.job_dir / "container.env").exists()
        self.assert_no_container(job.job_id)

    def test_engine_enforces_the_memory_limit(self, backend: Backend, tmp_path: Path) -> None:
        script = """
            data = bytearray(400 * 1024 * 1024)
            print("allocated", flush=True)
        """
        native_id, job = self.submit(backend, tmp_path, script, memory_gb=0.125)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED
        assert outcome.error is not None and "over its memory limit of 0.125 GB" in outcome.error, outcome
        self.assert_no_container(job.job_id)

    def test_the_watchers_files_are_out_of_the_containers_reach(self, backend: Backend, tmp_path: Path) -> None:
        """The container sees job.json and the inputs read-only, the outputs and work writable, and nothing else of
        the job directory: what a processor writes beside them stays in its container's own layer, so it cannot
        touch the result, the watcher's record or the cancel mark on the host."""
        script = """
            import json, os
            job_dir = os.path.dirname(os.environ["PAIRIO_JOB_FILE"])
            for name in ("job.json", "inputs/x"):
                try:
                    open(os.path.join(job_dir, name), "w").write("{}")
                    print("wrote", name, flush=True)
                except OSError as e:
                    print("refused", name, type(e).__name__, flush=True)
            for name in ("result.json", "watcher.json", "cancel"):
                open(os.path.join(job_dir, name), "w").write(json.dumps({"phase": "failed", "pid": 1}))
            open(os.path.join(job_dir, "outputs", "ok.txt"), "w").write("fine")
        """
        native_id, job = self.submit(backend, tmp_path, script)
        outcome = self.wait_final(backend, native_id)
        console = (job.job_dir / "console.txt").read_text()
        assert outcome.phase == NativePhase.SUCCEEDED, (outcome, console)
        assert "refused job.json" in console and "refused inputs/x" in console, console
        run_dir = self.run_dir(job)  # where the watcher ran (over SSH: the remote directory)
        assert not (run_dir / "cancel").exists()
        assert json.loads((run_dir / "result.json").read_text())["phase"] == "succeeded"
        assert json.loads((run_dir / "watcher.json").read_text())["pid"] != 1
        assert (run_dir / "outputs" / "ok.txt").read_text() == "fine"

    def test_exit_137_that_is_not_the_memory_limit_is_not_called_one(self, backend: Backend, tmp_path: Path) -> None:
        """Exit 137 alone is any SIGKILL (or a shell passing one on): podman's OOM record tells the memory limit
        apart (the docker CLI through podman's socket has no such record, so only podman is held to it)."""
        if self.engine != "podman":
            pytest.skip("the docker CLI through podman's socket keeps no OOM record")
        native_id, job = self.submit(backend, tmp_path, "import os\nprint('bye', flush=True)\nos._exit(137)\n", memory_gb=0.125)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED and outcome.exit_code == 137, outcome
        assert "memory limit" not in (outcome.error or "") and "137" in (outcome.error or ""), outcome
        self.assert_no_container(job.job_id)

    def test_cpu_limit_is_in_the_containers_cgroup(self, backend: Backend, tmp_path: Path) -> None:
        script = """
            import os
            def read(path):
                try:
                    return open(path).read().strip()
                except OSError:
                    return ""
            open("cpu.txt", "w").write(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") + "/" + read("/sys/fs/cgroup/cpu/cpu.cfs_period_us") + "|" + read("/sys/fs/cgroup/cpu.max"))
        """
        native_id, job = self.submit(backend, tmp_path, script, num_cpus=1)
        assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        text = (self.run_dir(job) / "work" / "cpu.txt").read_text()
        v1, v2 = text.split("|")
        if v1 != "/":
            quota, period = (int(x) for x in v1.split("/"))
            assert quota == period, text  # --cpus 1: one period of CPU time per period
        else:
            quota, period = (int(x) for x in v2.split())
            assert quota == period, text

    def test_container_is_gone_after_each_outcome(self, backend: Backend, tmp_path: Path) -> None:
        ok_id, ok = self.submit(backend, tmp_path, "print('hi')")
        bad_id, bad = self.submit(backend, tmp_path, "raise SystemExit(3)")
        assert self.wait_final(backend, ok_id).phase == NativePhase.SUCCEEDED
        outcome = self.wait_final(backend, bad_id)
        assert outcome.phase == NativePhase.FAILED and outcome.exit_code == 3
        self.assert_no_container(ok.job_id)
        self.assert_no_container(bad.job_id)
        assert (ok.job_dir / "console.txt").read_text().strip() == "hi"

    def test_cancel_removes_the_container(self, backend: Backend, tmp_path: Path) -> None:
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        backend.cancel([native_id])
        outcome = self.wait_final(backend, native_id, timeout_sec=self.cancel_timeout_sec)
        assert outcome.phase == NativePhase.FAILED and outcome.error is not None and "cancel" in outcome.error
        self.assert_no_container(job.job_id)

    def test_a_killed_watcher_leaves_no_container(self, tmp_path: Path) -> None:
        """SIGKILL to the watcher: the next bridge declares the job lost and removes its container."""
        first = self.make_backend(tmp_path)
        native_id, job = self.submit(first, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        os.kill(NativeId.parse(native_id).watcher_pid, signal.SIGKILL)
        second = self.make_backend(tmp_path)
        outcome = self.wait_final(second, native_id)
        assert outcome.phase == NativePhase.LOST
        self.assert_no_container(job.job_id)

    def test_network_only_when_the_processor_asks(self, backend: Backend, tmp_path: Path) -> None:
        script = "import os; open('net.txt', 'w').write(' '.join(sorted(os.listdir('/sys/class/net'))))"
        isolated_id, isolated = self.submit(backend, tmp_path, script)
        networked = self.prepare_job(tmp_path, script)
        networked.command[networked.command.index("--network") + 1] = "bridge"  # as for a spec with needsNetwork
        networked_id = backend.submit(networked)
        for native_id in (isolated_id, networked_id):
            assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        assert (self.run_dir(isolated) / "work" / "net.txt").read_text() == "lo"
        assert "eth0" in (self.run_dir(networked) / "work" / "net.txt").read_text().split()

    def test_a_missing_image_says_how_to_fix_it(self, backend: Backend, tmp_path: Path) -> None:
        job = self.prepare_job(tmp_path, "print('never')")
        missing = "localhost/pairio-no-such-image:404"
        job.command[job.command.index(self.setup.image)] = missing
        job.container_args = tuple(missing if arg == self.setup.image else arg for arg in job.container_args)
        native_id = backend.submit(job)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.FAILED and outcome.error is not None
        assert "image localhost/pairio-no-such-image:404 not found" in outcome.error, outcome.error
        assert "pull policy" in outcome.error
        self.assert_no_container(job.job_id)

    def test_the_engine_says_which_images_are_on_its_host(self, tmp_path: Path) -> None:
        """What the bridge logs at start: the engine on the jobs' host is asked about each app's image."""
        missing = "localhost/pairio-no-such-image:404"
        check = self.make_backend(tmp_path).check_images(self.engine, [self.setup.image, missing])
        assert check is not None and check.error is None, check
        assert dict(check.present) == {self.setup.image: True, missing: False}


class TestPodmanContainers(ContainerContract):
    engine = "podman"


class TestDockerContainers(ContainerContract):
    """The docker CLI through podman's Docker-compatible socket (DOCKER_HOST)."""

    engine = "docker"

    @pytest.fixture(autouse=True)
    def _docker_host(self, podman_socket: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DOCKER_HOST", podman_socket)


def test_podman_runs_the_test_image(podman_setup: PodmanSetup) -> None:
    """The session's engine setup works at all (a failure here explains every other one)."""
    out = subprocess.run(
        ["podman", "run", "--rm", "--pull", "never", "--network", "none", podman_setup.image, "python3", "-c", "print(6 * 7)"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "42", out.stderr


def test_apptainer_runs_a_job_from_a_sandbox_directory(tmp_path: Path) -> None:
    """Real apptainer where one is installed (Debian 12 has no package; see the README): exit code, env file, binds."""
    import shutil

    from bridge.containers import apptainer_exec_command
    from bridge.local.backend import LocalBackend

    from .container_support import build_rootfs

    if shutil.which("apptainer") is None:
        pytest.skip("no apptainer on this machine (Debian 12 has no package for it); its command line is checked in tests/test_bridge_runner.py")
    sandbox = build_rootfs(tmp_path / "sandbox")
    contract = BackendContract()
    job = contract.prepare_job(tmp_path, "import os; open('seen.txt', 'w').write(os.environ['TOKEN']); raise SystemExit(4)")
    job.secrets = {"TOKEN": SECRET_VALUE}
    job.command = apptainer_exec_command(image=str(sandbox), argv=job.command, job_dir=job.job_dir, resources=job.resources)
    job.command[job.command.index(str(sandbox)) + 1] = "python3"
    job.container_args = ("--container-engine", "apptainer", "--container-image", str(sandbox))
    backend = LocalBackend(tmp_path / "jobs", gpu_ids=[], sample_interval_sec=0.1, log_interval_sec=0.2, kill_grace_sec=0.5)
    native_id = backend.submit(job)
    outcome = wait_for(lambda: backend.poll([native_id])[native_id], lambda o: o.phase.is_final, 60.0)
    assert outcome.phase == NativePhase.FAILED and outcome.exit_code == 4, outcome
    assert (job.job_dir / "work" / "seen.txt").read_text() == SECRET_VALUE
    assert not (job.job_dir / "container.env").exists()


def test_the_owner_is_chosen_where_the_container_runs(tmp_path: Path) -> None:
    """The create argv the bridge builds names no uid: the watcher on the engine's host puts that host's user in."""
    from bridge.watch import OWNER_PLACEHOLDER, with_owner

    resources = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=1, timeSec=60)
    for engine in ("podman", "docker"):
        argv = oci_create_command(engine, image="img", argv=["python", OWNER_PLACEHOLDER], job_dir=tmp_path, job_id="J", resources=resources)
        assert argv.count(OWNER_PLACEHOLDER) == 2 and "--user" not in argv and "--userns" not in argv
        assert argv.index(OWNER_PLACEHOLDER) < argv.index("img")
    podman = oci_create_command("podman", image="img", argv=["run", OWNER_PLACEHOLDER], job_dir=tmp_path, job_id="J", resources=resources)
    rootless = with_owner(podman[1:], "podman", uid=1234, gid=99)
    assert ["--userns", "keep-id"] == rootless[rootless.index("--userns") : rootless.index("--userns") + 2]
    assert rootless[-3:] == ["img", "run", OWNER_PLACEHOLDER]  # the processor's own argv is left alone
    rootful = with_owner(podman[1:], "podman", uid=0, gid=0)
    assert ("--user", "0:0") in list(zip(rootful, rootful[1:])) and "--userns" not in rootful
    docker = with_owner(podman[1:], "docker", uid=1234, gid=99)
    assert ("--user", "1234:99") in list(zip(docker, docker[1:])) and docker.count(OWNER_PLACEHOLDER) == 1
    here = with_owner(podman[1:], "docker")
    assert ("--user", f"{os.getuid()}:{os.getgid()}") in list(zip(here, here[1:]))
    assert with_owner(["create", "img"], "docker") == ["create", "img"]  # a command without the placeholder runs as built


def test_the_image_report_names_the_app_and_the_fix() -> None:
    from bridge.images import ImageCheck, app_images, image_report
    from pairio.models import PairioApp

    apps = [
        PairioApp.model_validate({"name": "a1", "processors": [{"name": "p1", "image": "img:1"}, {"name": "p2", "image": "img:1"}, {"name": "p3"}]}),
        PairioApp.model_validate({"name": "a2", "processors": [{"name": "p1", "image": "img:1"}, {"name": "p2", "image": "gone:2"}]}),
    ]
    images = app_images(apps)
    assert images == {"img:1": ["a1", "a2"], "gone:2": ["a2"]}
    check = ImageCheck.from_agent("bob@node:22", {"images": {"img:1": True, "gone:2": False}})
    never = dict((m, level) for level, m in image_report(check, images, "docker", PullPolicy.NEVER))
    (ok,) = [m for m in never if m.startswith("image img:1")]
    assert ok == "image img:1 (app 'a1', 'a2') is on bob@node:22: ok" and never[ok] == logging.INFO
    (bad,) = [m for m in never if m.startswith("image gone:2")]
    assert never[bad] == logging.ERROR and "(app 'a2') is not on bob@node:22" in bad
    assert "run 'docker pull gone:2' on bob@node:22" in bad and "--pull-policy missing" in bad
    pulled = [m for level, m in image_report(check, images, "podman", PullPolicy.MISSING) if m.startswith("image gone:2")]
    assert pulled == ["image gone:2 (app 'a2') is not on bob@node:22 yet: podman pulls it for the first job (pull policy 'missing')"]
    failed = image_report(ImageCheck.from_agent("h", {"error": "docker cannot reach its daemon"}), images, "docker", PullPolicy.NEVER)
    assert failed == [(logging.WARNING, "could not check the apps' images with docker on h: docker cannot reach its daemon")]


def add_app_with_image(stack: Stack, app_name: str, image: str) -> None:
    spec = {"name": app_name, "processors": [{"name": "run", "image": image, "executable": "/app/main.py"}]}
    path = stack.tmp_path / f"{app_name}_spec.json"
    path.write_text(json.dumps(spec))
    stack.hub.admin("add-app", stack.service, str(path))


def test_a_local_bridge_reports_the_apps_images_at_start(
    hub: tuple[e2e.HubProcess, str], tmp_path: Path, podman_setup: PodmanSetup, podman_socket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``pairio-bridge local --container docker``: at start the log says which apps' images are here, and which
    the engine will pull (pull policy 'missing')."""
    monkeypatch.setenv("DOCKER_HOST", podman_socket)
    stack = Stack(hub[0], hub[1], tmp_path)
    missing = "localhost/pairio-no-such-image:404"
    try:
        add_app_with_image(stack, "img_present", podman_setup.image)
        add_app_with_image(stack, "img_missing", missing)
        stack.register("--container", "docker", "--pull-policy", "missing")
        stack.bridge.start()
        log = wait_for(lambda: stack.bridge.log, lambda text: "'img_missing'" in text and "'img_present'" in text, 60.0)
        assert f"image {missing} (app 'img_missing') is not on this host (" in log, log
        assert "yet: docker pulls it for the first job (pull policy 'missing')" in log, log
        assert f"image {podman_setup.image} (app 'img_present') is on this host (" in log and "): ok" in log, log
    finally:
        stack.close()
