"""The Slurm backend in podman container mode: the bridge contract on the test cluster, with each job's
watcher running a container of the offline test image inside its Slurm allocation.

The session's private engine settings (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF) are in this process's
environment while ``podman_setup`` lasts; sbatch copies that environment into the job, and the watcher
hands those variables to the engine only, never to the processor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.backend import Backend, NativePhase
from bridge.config import BridgeConfig, ContainerMode, processor_command
from bridge.containers import PullPolicy, container_name
from bridge.slurm.backend import SlurmNativeId
from bridge.slurm.script import render_sbatch_script
from bridge.slurm.site import SlurmSiteOptions
from pairio.models import PairioComputeClientComputeSlot, PairioJobRequiredResources

from . import test_bridge_e2e as e2e
from .bridge_contract import SLEEP_UNTIL_STOPPED, SPAWN_ESCAPING_CHILD, wait_for
from .container_support import PodmanSetup, podman_setup  # noqa: F401  (fixture)
from .slurm_support import SlurmLab
from .test_bridge_containers_e2e import add_hello_world_with_image, hello_world_image  # noqa: F401  (fixture)
from .test_bridge_e2e import public_get
from .test_bridge_examples import job_id_of, run_example
from .test_local_containers import ContainerContract
from . import test_slurm_backend as slurm_contract  # not its Test class by name: pytest would run it here again
from .test_slurm_e2e import SlurmStack

hub = e2e.hub
# a safety net, not a measure: its waits are liveness bounds of up to 120 s each, far below what they guard against
pytestmark = pytest.mark.timeout(600)
DATA = Path(__file__).parent / "data" / "slurm"
JOB_DIR = Path("/shared/pairio/jobs/job123")
PYTHON = "/opt/pairio/venv/bin/python"
IMAGE = "ghcr.io/lab/app:1"


@pytest.mark.usefixtures("slurm_cluster")
class TestSlurmPodmanContainers(ContainerContract, slurm_contract.TestSlurmBackend):
    engine = "podman"

    def make_backend(self, tmp_path: Path) -> Backend:
        return slurm_contract.slurm_backend()

    def watcher_pid(self, native_id: str) -> int:
        job_dir = SlurmNativeId.parse(native_id).job_dir
        wait_for(lambda: (job_dir / "watcher.json").exists(), bool, self.final_timeout_sec)
        return int(json.loads((job_dir / "watcher.json").read_text())["pid"])

    def test_the_engine_says_which_images_are_on_its_host(self, tmp_path: Path) -> None:  # type: ignore[override]
        """The compute nodes have their own image stores, which the login node cannot see: the Slurm backend
        does not claim to know (the bridge logs nothing at start), and a missing image fails its job there."""
        assert self.make_backend(tmp_path).check_images(self.engine, [self.setup.image]) is None

    def test_a_killed_watcher_leaves_no_container(self, tmp_path: Path) -> None:  # type: ignore[override]
        """SIGKILL to the watcher inside the allocation: the batch script removes the container, and a restarted
        bridge settles the job from the script's exit code."""
        first = self.make_backend(tmp_path)
        native_id, job = self.submit(first, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        wait_for(self.setup.container_names, lambda names: container_name(job.job_id) in names, self.final_timeout_sec)
        os.kill(self.watcher_pid(native_id), signal.SIGKILL)
        second = self.make_backend(tmp_path)
        outcome = self.wait_final(second, native_id)
        assert outcome.phase is NativePhase.FAILED and "before its watcher wrote a result" in (outcome.error or ""), outcome
        self.assert_no_container(job.job_id)

    def test_scancel_outside_pairio_leaves_no_container(self, slurm_cluster: SlurmLab, tmp_path: Path) -> None:
        """Slurm's own stop (an administrator's scancel; a TIMEOUT is the same signal): the watcher gets SIGTERM and
        removes the container within the cluster's KillWait."""
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        self.wait_started(job)
        slurm_cluster.command("scancel", SlurmNativeId.parse(native_id).slurm_job_id)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase is NativePhase.FAILED and "cancelled on the cluster" in (outcome.error or ""), outcome
        self.assert_no_container(job.job_id)

    def test_slurm_timeout_leaves_no_container(self, slurm_cluster: SlurmLab, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED, time_sec=600)
        self.wait_started(job)
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



# ---------------------------------------------------------------- the batch script in container mode (pure)


def bridge_config(mode: ContainerMode) -> BridgeConfig:
    return BridgeConfig(
        hubUrl="http://127.0.0.1:1", serviceName="svc", computeClientId="cc", computeClientPrivateKey="k", label="slurm",
        computeSlots=[PairioComputeClientComputeSlot(numCpus=8, numGpus=2, memoryGb=32, timeSec=3600)],
        containerMode=mode, pullPolicy=PullPolicy.NEVER,
    )


def container_script(mode: ContainerMode, num_gpus: int = 0, job_dir: Path = JOB_DIR, python: str = PYTHON) -> str:
    """The batch script as SlurmBackend.submit writes it for a job of this container mode."""
    resources = PairioJobRequiredResources(numCpus=2, numGpus=num_gpus, memoryGb=4, timeSec=600)
    launch = processor_command(
        bridge_config(mode), app_name="app", image=IMAGE, executable="/app/main.py", job_dir=job_dir, job_id="job123",
        resources=resources,
    )
    return render_sbatch_script("job123", job_dir, resources, SlurmSiteOptions(), launch.command, python, watcher_args=launch.watcher_args)


def test_the_apptainer_command_line_runs_under_the_watcher_in_the_batch_script() -> None:
    """apptainer: the same ``apptainer exec`` as on the local bridge, as the watcher's processor; the GPUs as the
    allocation's processes number them (apptainer shares the node's devices, --nv)."""
    assert container_script(ContainerMode.APPTAINER, num_gpus=1) == (DATA / "expected_apptainer.sh").read_text()


def test_the_podman_batch_script_removes_a_left_container_on_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """podman: the watcher creates the container; should it be killed, the script's exit trap removes the container
    (before the exit code is written, so a job the bridge sees ended has no container left)."""
    monkeypatch.setattr(os, "getuid", lambda: 1000)  # a cluster user, not this session's root: rootless podman
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    assert container_script(ContainerMode.PODMAN) == (DATA / "expected_podman.sh").read_text()


def watcher_gpus(tmp_path: Path, mode: ContainerMode, allocation: dict[str, str]) -> str:
    """Runs the batch script with bash, in an allocation with these variables: the ``--gpus`` its watcher gets."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    job_dir = tmp_path / "job"
    job_dir.mkdir(exist_ok=True)
    fake = tmp_path / "fake-python"  # stands in for the watcher: records its argv
    fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path}/argv.txt\ntouch "$JOB_DIR/result.json" 2>/dev/null; exit 0\n')
    fake.chmod(0o755)
    script = tmp_path / "job.sbatch"
    resources = PairioJobRequiredResources(numCpus=1, numGpus=2, memoryGb=1, timeSec=60)
    engine = mode.value
    # the watcher's options as processor_command gives them (podman: once GPU flags exist for it; it refuses GPU jobs today)
    args = ("--container-engine", engine, "--container-image", IMAGE, *(("--container-name", "pairio-job123") if engine == "podman" else ()))
    script.write_text(render_sbatch_script("job123", job_dir, resources, SlurmSiteOptions(), [engine, "run"], str(fake), watcher_args=args))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"} | allocation
    done = subprocess.run([bash, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    return argv[argv.index("--gpus") + 1]


@pytest.mark.parametrize(
    "allocation, engine_ids, visible_ids",
    [
        # batch step of a cluster that constrains devices: global ids 2,3 are 0,1 inside the job's device cgroup
        ({"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}, "2,3", "0,1"),
        ({"SLURM_STEP_GPUS": "5,7", "SLURM_JOB_GPUS": "4,5,6,7", "CUDA_VISIBLE_DEVICES": "1,3"}, "5,7", "1,3"),  # a step's own GPUs
        ({"CUDA_VISIBLE_DEVICES": "1"}, "1", "1"),  # an older Slurm that sets only CUDA_VISIBLE_DEVICES
        ({"SLURM_JOB_GPUS": "", "CUDA_VISIBLE_DEVICES": "0"}, "0", "0"),
        ({}, "", ""),  # no GPUs in the allocation: the watcher hides every GPU
    ],
)
def test_the_watcher_gets_the_gpus_of_slurms_allocation(
    tmp_path: Path, allocation: dict[str, str], engine_ids: str, visible_ids: str
) -> None:
    """podman/docker name host devices, so they get Slurm's global ids; apptainer and plain processes see the
    allocation's devices as CUDA numbers them there."""
    assert watcher_gpus(tmp_path, ContainerMode.PODMAN, allocation) == engine_ids
    assert watcher_gpus(tmp_path, ContainerMode.APPTAINER, allocation) == visible_ids
