"""Slurm over SSH: the Slurm backend driving the test cluster through the test sshd (``pairio-bridge slurm --ssh``).

The "login node" is this machine reached over SSH; Slurm's commands run there with
SLURM_CONF set through the ``commandEnv`` site option (a remote command gets a non-login
environment), job directories are uploaded to a remote directory before sbatch and
mirrored back by one agent command per poll. The whole backend contract runs this way,
then the seed's examples through a real hub and a real ``pairio-bridge slurm --ssh``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.backend import Backend, NativePhase, SubmitError
from bridge.slurm.backend import SlurmBackend, SlurmNativeId

from . import test_bridge_e2e as e2e
from .slurm_support import SlurmLab
from .ssh_support import TestSshd, sshd  # noqa: F401 - the fixture
from .test_bridge_e2e import Stack, public_get
from .test_cancel_e2e import CANCEL_BOUND_SEC, HEARTBEAT_SEC, TREE_PROCESSOR, cancel_to_tree_gone
from .test_bridge_examples import HELLO_WORLD_COMMAND, add_hello_world, job_id_of, run_example
from .test_slurm_backend import FAST_WATCHER, fast_site
from .test_ssh_backend import REMOTE_PYTHON, RemoteContract

# a safety net, not a measure: its waits are liveness bounds of up to 120 s each, far below what they guard against
pytestmark = [pytest.mark.usefixtures("slurm_cluster"), pytest.mark.timeout(600)]
hub = e2e.hub


class TestSlurmOverSsh(RemoteContract):
    final_timeout_sec = 120.0
    """bounds for what never ends, not measures: Slurm schedules, starts and reports a job in its own time"""
    cancel_timeout_sec = 120.0

    def make_backend(self, tmp_path: Path) -> Backend:
        site = fast_site(commandEnv={"SLURM_CONF": os.environ["SLURM_CONF"]})
        return SlurmBackend(site, remote=self.remote_jobs(tmp_path), watcher_args=FAST_WATCHER)

    def test_sbatch_runs_there_with_the_clusters_paths_and_secrets_off_the_command_line(
        self, tmp_path: Path, slurm_cluster: SlurmLab
    ) -> None:
        backend = self.make_backend(tmp_path)
        job = self.prepare_job(tmp_path, "import os; print('token', os.environ['MY_TOKEN'], flush=True); import time; time.sleep(2)")
        job.secrets = {"MY_TOKEN": "tok-123-secret"}
        native_id = backend.submit(job)
        self.submitted.append(native_id)
        fields = slurm_cluster.show_job(SlurmNativeId.parse(native_id).slurm_job_id)
        remote_dir = self.remote_root(tmp_path) / "jobs" / job.job_id
        assert fields["WorkDir"] == str(remote_dir) and fields["Command"] == str(remote_dir / "slurm_job.sh")
        assert "tok-123-secret" not in (job.job_dir / "slurm_job.sh").read_text()
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase is NativePhase.SUCCEEDED, outcome
        assert "token ***" in (job.job_dir / "console.txt").read_text()  # masked there, and mirrored back

    def test_a_refused_submission_quotes_slurm_over_ssh(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        job = self.prepare_job(tmp_path, "print('never')", num_gpus=1)
        job.secrets = {"MY_TOKEN": "tok-never-used"}
        with pytest.raises(SubmitError, match="sbatch refused the job: .*gres"):
            backend.submit(job)
        remote_dir = self.remote_root(tmp_path) / "jobs" / job.job_id
        assert (remote_dir / "job.json").exists() and not (remote_dir / "secrets.json").exists()  # nothing will take them
        assert not (job.job_dir / "secrets.json").exists()


@pytest.fixture
def stack(slurm_cluster: SlurmLab, hub: tuple[e2e.HubProcess, str], tmp_path: Path, sshd: TestSshd) -> Iterator[Stack]:  # noqa: F811
    args = (
        "--ssh", sshd.destination(), "--identity", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
    )  # fmt: skip
    s = Stack(hub[0], hub[1], tmp_path, bridge_kind="slurm", bridge_args=args)
    try:
        yield s
    finally:
        s.close()


def test_the_examples_through_pairio_bridge_slurm_over_ssh(stack: Stack, slurm_cluster: SlurmLab, sshd: TestSshd) -> None:  # noqa: F811
    add_hello_world(stack)
    stack.register("--app", HELLO_WORLD_COMMAND)
    config_path = stack.bridge_dir / "bridge.json"
    config = json.loads(config_path.read_text())
    config["slurm"] = {
        "commandEnv": {"SLURM_CONF": str(slurm_cluster.conf)}, "python": REMOTE_PYTHON,
        "jobsDir": str(stack.tmp_path / "cluster"), "queuePollMinSec": 0.3, "queuePollMaxSec": 2.0,
    }  # fmt: skip
    config["ssh"] = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user, "useAgent": False, "remotePython": REMOTE_PYTHON}
    config_path.write_text(json.dumps(config))
    stack.bridge.start()
    printed = run_example(stack, "example1.py") + run_example(stack, "example2.py") + run_example(stack, "example3.py")
    url1, url2, _, url3 = (words[0] for words in printed)
    hello1 = stack.wait_done(stack.client.get_job(job_id_of(stack, url1)), 90)
    assert hello1.status.value == "completed", (hello1.error, stack.bridge.log)
    assert "Hello, world!" in public_get(hello1.consoleOutputUrl).text
    hello2 = stack.wait_done(stack.client.get_job(job_id_of(stack, url2)), 90)
    assert public_get(hello2.get_output("output")).text == "Hello, world!"
    count = stack.wait_done(stack.client.get_job(job_id_of(stack, url3)), 90)
    assert count.status.value == "completed", (count.error, stack.bridge.log)
    assert json.loads(public_get(count.get_output("output")).text) == {"num_characters": 13}
    # the compute client says where its bridge runs: Slurm, reached over SSH
    info = public_get(f"{stack.hub.url}/v1/compute-clients/{config['computeClientId']}").json()["bridgeInfo"]
    assert (info["backend"], info["remoteHost"]) == ("slurm", f"{sshd.user}@127.0.0.1:{sshd.port}"), info
    # the jobs ran in the cluster's directory, not the bridge's
    ran_there = stack.tmp_path / "cluster" / "jobs" / hello1.jobId
    slurm_id = (ran_there / "slurm_job_id").read_text().strip()
    assert slurm_cluster.show_job(slurm_id)["WorkDir"] == str(ran_there)


@pytest.mark.timeout(600)  # a safety net, not a measure
def test_cancel_kills_the_whole_tree_before_the_next_heartbeat(stack: Stack, slurm_cluster: SlurmLab, sshd: TestSshd) -> None:  # noqa: F811
    """tests/test_cancel_e2e.py's test, through Slurm over SSH (its setup needs the cluster's and the host's settings)."""
    stack.processor.write_text(TREE_PROCESSOR)
    stack.register(config_updates={
        "heartbeatIntervalSec": HEARTBEAT_SEC, "pollIntervalSec": 0.5,
        "slurm": {
            "commandEnv": {"SLURM_CONF": str(slurm_cluster.conf)}, "python": REMOTE_PYTHON,
            "jobsDir": str(stack.tmp_path / "cluster"), "queuePollMinSec": 0.3, "queuePollMaxSec": 2.0,
        },
        "ssh": {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user, "useAgent": False, "remotePython": REMOTE_PYTHON},
    })  # fmt: skip
    stack.bridge.start()
    elapsed = cancel_to_tree_gone(stack)  # within its bound, far below HEARTBEAT_SEC: the hub answered the waiting heartbeat
    print(f"\ncancel -> tree gone on the Slurm-over-SSH bridge: {elapsed:.2f} s (bound on an idle machine {CANCEL_BOUND_SEC:g} s)")
