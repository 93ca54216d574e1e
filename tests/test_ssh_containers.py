"""The SSH backend in podman and docker container modes: the bridge contract over the test sshd, with
each job in a container of the offline test image on the "remote" host (this machine).

The test sshd's logins get the session's private engine settings (CONTAINERS_CONF and
CONTAINERS_STORAGE_CONF, through sshd's SetEnv), as a real host's login would have its own;
for docker also DOCKER_HOST, podman's Docker-compatible socket. The remote agent hands them to
the watcher, which gives them to the engine only. At start the bridge checks the apps' images
on the remote host (bridge/images.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.backend import Backend, NativePhase
from bridge.remote_jobs import RemoteJobs, container_engine_problem
from bridge.ssh.backend import SshBackend
from bridge.ssh.connection import SshShell

from . import test_bridge_e2e as e2e
from .bridge_contract import SLEEP_UNTIL_STOPPED, SPAWN_ESCAPING_CHILD, wait_for
from .container_support import PodmanSetup, podman_setup, podman_socket  # noqa: F401  (fixtures)
from .ssh_support import TestSshd, require_ssh_tools
from .test_bridge_containers_e2e import add_hello_world_with_image, hello_world_image  # noqa: F401  (fixture)
from .test_bridge_e2e import Stack, public_get
from .test_bridge_examples import job_id_of, run_example
from .test_local_containers import ContainerContract, add_app_with_image
from .test_ssh_backend import REMOTE_PYTHON, RemoteContract
from .test_ssh_e2e import ssh_args

hub = e2e.hub
# a safety net, not a measure: its waits are liveness bounds of up to 120 s each, far below what they guard against
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def sshd(podman_setup: PodmanSetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSshd]:  # noqa: F811
    """A test sshd whose logins use the session's podman store (overrides the plain one for this module)."""
    require_ssh_tools()
    server = TestSshd(tmp_path_factory.mktemp("sshd-containers"), set_env=podman_setup.env)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def docker_sshd(podman_setup: PodmanSetup, podman_socket: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSshd]:  # noqa: F811
    """A test sshd whose logins reach the docker CLI's daemon: DOCKER_HOST is the session's podman socket."""
    require_ssh_tools()
    server = TestSshd(tmp_path_factory.mktemp("sshd-docker"), set_env={**podman_setup.env, "DOCKER_HOST": podman_socket})
    server.start()
    yield server
    server.stop()


class SshContainerContract(ContainerContract, RemoteContract):
    """The container contract over the test sshd, for one engine of the remote login."""

    engine = "podman"
    operator_env_reaches_jobs = False  # the remote login's environment, not this process's

    def make_backend(self, tmp_path: Path, **kwargs: object) -> SshBackend:
        options: dict[str, object] = dict(gpu_ids=[], sample_interval_sec=0.1, log_interval_sec=0.2, kill_grace_sec=0.5)
        options.update(kwargs)
        return SshBackend(self.remote_jobs(tmp_path), self.jobs_root(tmp_path), **options)  # type: ignore[arg-type]

    def test_secrets_reach_the_processor_only_and_never_in_clear(  # type: ignore[override]
        self, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Over SSH the secrets reach the container through the env file there; the engine's settings do not."""
        job = self.prepare_job(tmp_path, """
            import json, os
            json.dump(dict(os.environ), open("env.json", "w"))
            print("token is", os.environ["TOKEN"], flush=True)
        """)
        job.secrets = {"TOKEN": "s3cr3t-over-ssh"}
        native_id = backend.submit(job)
        self.submitted.append(native_id)
        assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        env = json.loads((self.run_dir(job) / "work" / "env.json").read_text())
        assert env["TOKEN"] == "s3cr3t-over-ssh" and env["PAIRIO_JOB_ID"] == job.job_id
        assert "CONTAINERS_CONF" not in env and env["TMPDIR"] == "/tmp"
        assert "token is ***" in (job.job_dir / "console.txt").read_text()
        assert not (self.run_dir(job) / "container.env").exists() and not (self.run_dir(job) / "secrets.json").exists()
        self.assert_no_container(job.job_id)

    def test_a_killed_watcher_leaves_no_container(self, tmp_path: Path) -> None:  # type: ignore[override]
        """SIGKILL to the remote watcher: the job is lost, and the agent removes its container."""
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        wait_for(lambda: (Path(native_id) / "watcher.json").exists(), bool, self.final_timeout_sec)
        wait_for(self.setup.container_names, lambda names: f"pairio-{job.job_id}" in names, self.final_timeout_sec)
        os.kill(json.loads((Path(native_id) / "watcher.json").read_text())["pid"], 9)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.LOST and "watcher on" in (outcome.error or "")
        self.assert_no_container(job.job_id)

    def test_the_image_digest_comes_back_with_the_outcome(self, backend: Backend, tmp_path: Path) -> None:
        native_id, _ = self.submit(backend, tmp_path, "print('hi')")
        outcome = self.wait_final(backend, native_id)
        inspected = self.setup.podman("image", "inspect", "--format", "{{.Digest}} sha256:{{.Id}}", self.setup.image).stdout.split()
        # podman records the manifest digest; docker has the image's id (no registry digest for an imported image)
        expected = inspected[0] if self.engine == "podman" else outcome.image_digest
        assert outcome.phase == NativePhase.SUCCEEDED and outcome.image_digest == expected, (outcome, inspected)
        assert outcome.image_digest in inspected

    def test_the_engine_is_checked_at_connect_time(self, tmp_path: Path) -> None:
        remote = self.remote_jobs(tmp_path)
        host = remote.probe(container_engine=self.engine)
        assert container_engine_problem(host, self.engine, "the host") is None
        assert f"{self.engine} version" in str((host.container_engine or {}).get("version")).lower()

    def test_a_killed_bridge_and_watcher_leave_no_container_after_a_restart(self, tmp_path: Path) -> None:
        """SIGKILL to the bridge (its backend simply gone) and to the remote watcher: the next bridge finds the
        job lost, and its agent removes the container with the login's engine settings."""
        first = self.make_backend(tmp_path)
        native_id, job = self.submit(first, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        wait_for(lambda: (Path(native_id) / "watcher.json").exists(), bool, self.final_timeout_sec)
        wait_for(self.setup.container_names, lambda names: f"pairio-{job.job_id}" in names, self.final_timeout_sec)
        os.kill(json.loads((Path(native_id) / "watcher.json").read_text())["pid"], 9)
        for shell in self.shells:
            shell.close()  # the dead bridge's connection
        second = self.make_backend(tmp_path)
        outcome = self.wait_final(second, native_id)
        assert outcome.phase == NativePhase.LOST
        self.assert_no_container(job.job_id)


class TestSshPodmanContainers(SshContainerContract):
    engine = "podman"


class TestSshDockerContainers(SshContainerContract):
    """The docker CLI on the remote host, its daemon podman's Docker-compatible socket (DOCKER_HOST of the login)."""

    engine = "docker"

    @pytest.fixture
    def sshd(self, docker_sshd: TestSshd) -> TestSshd:
        return docker_sshd


def test_a_missing_remote_engine_is_a_clear_error(sshd: TestSshd, tmp_path: Path) -> None:  # noqa: F811
    """An engine the remote login cannot find: the probe says which, how to install it, and the other modes."""
    if shutil.which("apptainer"):
        pytest.skip("apptainer is installed here; the check needs an engine that is missing")
    shell = SshShell(sshd.options())
    try:
        host = RemoteJobs(shell, str(tmp_path / "remote"), python=REMOTE_PYTHON).probe(container_engine="apptainer")
    finally:
        shell.close()
    problem = container_engine_problem(host, "apptainer", shell.description)
    assert problem is not None
    assert "container mode 'apptainer' needs apptainer on" in problem and "not on the PATH" in problem
    assert "install apptainer" in problem and "another --container mode" in problem


def test_an_example_runs_through_pairio_bridge_ssh_in_podman_mode(
    hub: tuple[e2e.HubProcess, str], sshd: TestSshd, tmp_path: Path, hello_world_image: str, podman_setup: PodmanSetup,  # noqa: F811
) -> None:
    """A hub, ``pairio-bridge ssh`` registered with ``--container podman``: the job runs in a container on the
    remote host, and the image's digest is on the job (GET /v1/jobs/{id} and its page)."""
    stack = Stack(hub[0], hub[1], tmp_path, bridge_kind="ssh", bridge_args=ssh_args(sshd, tmp_path))
    try:
        add_hello_world_with_image(stack, hello_world_image)
        stack.register("--container", "podman", "--pull-policy", "never")
        stack.bridge.start()
        url = run_example(stack, "example1.py")[0][0]
        job = stack.wait_done(stack.client.get_job(job_id_of(stack, url)), 90)
        assert job.status.value == "completed", (job.error, stack.bridge.log)
        assert "Hello, world!" in public_get(job.consoleOutputUrl).text
        digest = podman_setup.podman("image", "inspect", "--format", "{{.Digest}}", hello_world_image).stdout.strip()
        assert job.imageDigest == digest and digest.startswith("sha256:"), (job.imageDigest, stack.bridge.log)
        assert digest in public_get(f"{stack.hub.url}/job/{job.jobId}").text
        assert not [name for name in podman_setup.container_names() if name.startswith("pairio-")]
    finally:
        stack.close()


def test_the_apps_images_are_checked_at_connect_time(
    hub: tuple[e2e.HubProcess, str], sshd: TestSshd, tmp_path: Path, podman_setup: PodmanSetup,  # noqa: F811
) -> None:
    """``pairio-bridge ssh --container podman --pull-policy never``: at connect the bridge log names an app whose image
    the remote host lacks, and how to fix it; an image that is there is reported ok."""
    stack = Stack(hub[0], hub[1], tmp_path, bridge_kind="ssh", bridge_args=ssh_args(sshd, tmp_path))
    missing = "localhost/pairio-no-such-image:404"
    try:
        add_app_with_image(stack, "img_present", podman_setup.image)
        add_app_with_image(stack, "img_missing", missing)
        stack.register("--container", "podman", "--pull-policy", "never")
        stack.bridge.start()
        where = sshd.destination()
        problem = f"image {missing} (app 'img_missing') is not on {where} and pull policy 'never' forbids pulling it"
        wait_for(lambda: stack.bridge.log, lambda text: problem in text and "is on" in text, 60)
        log = stack.bridge.log
        assert f"run 'podman pull {missing}' on {where}" in log and "--pull-policy missing" in log, log
        assert f"image {podman_setup.image} (app 'img_present') is on {where}: ok" in log, log
    finally:
        stack.close()


def test_an_example_runs_through_pairio_bridge_ssh_in_docker_mode(
    hub: tuple[e2e.HubProcess, str], docker_sshd: TestSshd, tmp_path: Path, hello_world_image: str, podman_setup: PodmanSetup,  # noqa: F811
) -> None:
    """``pairio-bridge ssh --container docker``: the remote login's docker CLI runs the job (its daemon is podman's socket)."""
    stack = Stack(hub[0], hub[1], tmp_path, bridge_kind="ssh", bridge_args=ssh_args(docker_sshd, tmp_path))
    try:
        add_hello_world_with_image(stack, hello_world_image)
        stack.register("--container", "docker", "--pull-policy", "never")
        stack.bridge.start()
        url = run_example(stack, "example1.py")[0][0]
        job = stack.wait_done(stack.client.get_job(job_id_of(stack, url)), 90)
        assert job.status.value == "completed", (job.error, stack.bridge.log)
        assert "Hello, world!" in public_get(job.consoleOutputUrl).text
        assert job.imageDigest is not None and job.imageDigest.startswith("sha256:"), (job.imageDigest, stack.bridge.log)
        assert f"image {hello_world_image} (app 'hello_world') is on {docker_sshd.destination()}: ok" in stack.bridge.log
        assert not [name for name in podman_setup.container_names() if name.startswith("pairio-")]
    finally:
        stack.close()


def test_an_unreachable_docker_daemon_is_reported_by_the_image_check(sshd: TestSshd, tmp_path: Path, podman_setup: PodmanSetup) -> None:  # noqa: F811
    """A login without DOCKER_HOST (and no daemon at docker's default socket): the check says the daemon is unreachable."""
    if not shutil.which("docker"):
        pytest.skip("no docker CLI here")
    if Path("/var/run/docker.sock").exists():
        pytest.skip("a docker daemon may answer at the default socket here")
    shell = SshShell(sshd.options())
    try:
        backend = SshBackend(RemoteJobs(shell, str(tmp_path / "remote"), python=REMOTE_PYTHON), tmp_path / "jobs", gpu_ids=[])
        check = backend.check_images("docker", [podman_setup.image])
    finally:
        shell.close()
    assert check is not None and check.error is not None and "docker cannot reach its daemon" in check.error, check
    assert check.where == shell.description
