"""The Slurm backend in podman container mode: the bridge contract on the test cluster, with each job's
watcher running a container of the offline test image inside its Slurm allocation.

The session's private engine settings (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF) are in this process's
environment while ``podman_setup`` lasts; sbatch copies that environment into the job, and the watcher
hands those variables to the engine only, never to the processor.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.backend import Backend, NativePhase
from bridge.containers import container_name
from bridge.slurm.backend import SlurmNativeId

from . import test_bridge_e2e as e2e
from .bridge_contract import SPAWN_ESCAPING_CHILD, wait_for
from .container_support import PodmanSetup, podman_setup  # noqa: F401  (fixture)
from .slurm_support import SlurmLab
from .test_bridge_containers_e2e import add_hello_world_with_image, hello_world_image  # noqa: F401  (fixture)
from .test_bridge_e2e import public_get
from .test_bridge_examples import job_id_of, run_example
from .test_local_containers import ContainerContract
from .test_slurm_backend import TestSlurmBackend, slurm_backend
from .test_slurm_e2e import SlurmStack

hub = e2e.hub

pytestmark = pytest.mark.usefixtures("slurm_cluster")


class TestSlurmPodmanContainers(ContainerContract, TestSlurmBackend):
    engine = "podman"
    final_timeout_sec = 60.0

    def make_backend(self, tmp_path: Path) -> Backend:
        return slurm_backend()

    def watcher_pid(self, native_id: str) -> int:
        job_dir = SlurmNativeId.parse(native_id).job_dir
        wait_for(lambda: (job_dir / "watcher.json").exists(), bool, 30.0)
        return int(json.loads((job_dir / "watcher.json").read_text())["pid"])

    def test_a_killed_watcher_leaves_no_container(self, tmp_path: Path) -> None:  # type: ignore[override]
        """SIGKILL to the watcher inside the allocation: the batch script removes the container, and a restarted
        bridge settles the job from the script's exit code."""
        first = self.make_backend(tmp_path)
        native_id, job = self.submit(first, tmp_path, SPAWN_ESCAPING_CHILD + "time.sleep(120)\n")
        self.wait_started(job, timeout_sec=30.0)
        wait_for(self.setup.container_names, lambda names: container_name(job.job_id) in names, 20.0)
        os.kill(self.watcher_pid(native_id), signal.SIGKILL)
        second = self.make_backend(tmp_path)
        outcome = self.wait_final(second, native_id)
        assert outcome.phase is NativePhase.FAILED and "before its watcher wrote a result" in (outcome.error or ""), outcome
        self.assert_no_container(job.job_id)

    def test_scancel_outside_pairio_leaves_no_container(self, slurm_cluster: SlurmLab, tmp_path: Path) -> None:
        """Slurm's own stop (an administrator's scancel; a TIMEOUT is the same signal): the watcher gets SIGTERM and
        removes the container within the cluster's KillWait."""
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + "time.sleep(120)\n")
        self.wait_started(job, timeout_sec=30.0)
        slurm_cluster.command("scancel", SlurmNativeId.parse(native_id).slurm_job_id)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase is NativePhase.FAILED and "cancelled on the cluster" in (outcome.error or ""), outcome
        self.assert_no_container(job.job_id)

    def test_slurm_timeout_leaves_no_container(self, slurm_cluster: SlurmLab, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + "time.sleep(300)\n", time_sec=600)
        self.wait_started(job, timeout_sec=30.0)
        slurm_cluster.command("scontrol", "update", f"JobId={SlurmNativeId.parse(native_id).slurm_job_id}", "TimeLimit=0")
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase is NativePhase.FAILED and "TIMEOUT" in (outcome.error or ""), outcome
        self.assert_no_container(job.job_id)

    def test_the_image_digest_comes_back_with_the_outcome(self, backend: Backend, tmp_path: Path) -> None:
        native_id, _ = self.submit(backend, tmp_path, "print('hi')")
        outcome = self.wait_final(backend, native_id)
        digest = self.setup.podman("image", "inspect", "--format", "{{.Digest}}", self.setup.image).stdout.strip()
        assert outcome.phase is NativePhase.SUCCEEDED and outcome.image_digest == digest and digest.startswith("sha256:")

    def test_the_engine_settings_reach_the_engine_and_not_the_batch_scripts_command_line(self, backend: Backend, tmp_path: Path) -> None:
        native_id, job = self.submit(backend, tmp_path, "import json, os; json.dump(dict(os.environ), open('env.json', 'w'))")
        assert self.wait_final(backend, native_id).phase is NativePhase.SUCCEEDED
        env = json.loads((job.job_dir / "work" / "env.json").read_text())
        assert "CONTAINERS_CONF" not in env and "CONTAINERS_STORAGE_CONF" not in env
        assert env["SLURM_JOB_ID"] == SlurmNativeId.parse(native_id).slurm_job_id  # the allocation's own variables pass
        assert self.setup.env["CONTAINERS_CONF"] not in (job.job_dir / "slurm_job.sh").read_text()


@pytest.fixture
def stack(slurm_cluster: SlurmLab, hub: tuple[e2e.HubProcess, str], tmp_path: Path) -> Iterator[SlurmStack]:
    s = SlurmStack(hub[0], hub[1], tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_the_examples_run_as_slurm_jobs_in_podman_containers(
    stack: SlurmStack, slurm_cluster: SlurmLab, hello_world_image: str, podman_setup: PodmanSetup,  # noqa: F811
) -> None:
    """A hub, ``pairio-bridge slurm`` registered with ``--container podman``: the seed's examples run in containers
    inside Slurm jobs, and the image's digest is on the job (GET /v1/jobs/{id} and its page)."""
    add_hello_world_with_image(stack, hello_world_image)
    stack.register("--container", "podman", "--pull-policy", "never")
    stack.bridge.start()
    printed = run_example(stack, "example1.py") + run_example(stack, "example2.py") + run_example(stack, "example3.py")
    url1, url2, _, url3 = (words[0] for words in printed)
    hello1 = stack.wait_done(stack.client.get_job(job_id_of(stack, url1)), 120)
    assert hello1.status.value == "completed", (hello1.error, stack.bridge.log)
    assert "Hello, world!" in public_get(hello1.consoleOutputUrl).text
    digest = podman_setup.podman("image", "inspect", "--format", "{{.Digest}}", hello_world_image).stdout.strip()
    assert hello1.imageDigest == digest and digest.startswith("sha256:"), (hello1.imageDigest, stack.bridge.log)
    assert digest in public_get(f"{stack.hub.url}/job/{hello1.jobId}").text
    hello2 = stack.wait_done(stack.client.get_job(job_id_of(stack, url2)), 120)
    assert hello2.status.value == "completed", (hello2.error, stack.bridge.log)
    assert public_get(hello2.get_output("output")).text == "Hello, world!"
    count = stack.wait_done(stack.client.get_job(job_id_of(stack, url3)), 120)
    assert count.status.value == "completed", (count.error, stack.bridge.log)
    assert json.loads(public_get(count.get_output("output")).text) == {"num_characters": 13}
    fields = slurm_cluster.show_job(stack.slurm_job_id(hello1.jobId))
    assert fields["JobName"] == f"pairio-{hello1.jobId}" and fields["JobState"] == "COMPLETED"
    assert "--container-engine podman" in (stack.bridge_dir / "jobs" / hello1.jobId / "slurm_job.sh").read_text()
    assert not [name for name in podman_setup.container_names() if name.startswith("pairio-")]

