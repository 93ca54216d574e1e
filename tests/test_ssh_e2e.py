"""End to end over SSH: a hub process, ``pairio-bridge ssh`` processes, and a real sshd on 127.0.0.1.

The remote host is this machine reached over SSH, with the bridge's remote directory under
the test's tmp_path and the system's /usr/bin/python3 running the watcher. The seed's three
examples run through it (the test of tests/test_bridge_examples.py, with this module's
``stack``); then what only a remote host brings: a connection dropped mid-job, a cancel, a
bridge killed and restarted, a refused host key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_bridge_e2e as e2e
from .ssh_support import TestSshd, sshd  # noqa: F401 - the fixture
from .test_bridge_e2e import (
    PAIRIO_BRIDGE,
    BridgeProcess,
    Stack,
    public_get,
    test_cancel_stops_a_running_job_before_it_ends_on_its_own,  # noqa: F401 - run here with an SSH bridge
    wait_for,
)
from .test_bridge_examples import test_the_three_examples_run_end_to_end  # noqa: F401 - run here with an SSH bridge
from .test_cancel_e2e import test_cancel_kills_the_whole_tree_before_the_next_heartbeat  # noqa: F401 - run here with an SSH bridge

hub = e2e.hub
REMOTE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
SHORT_IDLE_CLAIMS = {"claimWaitSec": 0.5}  # --exit-when-idle exits after one empty claim: keep it short


def ssh_args(sshd: TestSshd, tmp_path: Path) -> tuple[str, ...]:  # noqa: F811
    return (
        "--host", sshd.destination(), "--identity", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
        "--remote-dir", str(tmp_path / "remote"), "--remote-python", REMOTE_PYTHON, "--no-agent",
    )  # fmt: skip


@pytest.fixture
def stack(hub: tuple[e2e.HubProcess, str], tmp_path: Path, sshd: TestSshd) -> Iterator[Stack]:  # noqa: F811
    """A service of its own with a ``pairio-bridge ssh`` bridge (registered by each test)."""
    s = Stack(hub[0], hub[1], tmp_path, bridge_kind="ssh", bridge_args=ssh_args(sshd, tmp_path))
    try:
        yield s
    finally:
        s.close()


def remote_job_dir(stack: Stack, job_id: str) -> Path:
    return stack.tmp_path / "remote" / "jobs" / job_id


def test_a_dropped_connection_mid_job_loses_nothing(stack: Stack, sshd: TestSshd) -> None:  # noqa: F811
    stack.register()
    stack.bridge.start()
    job = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "out.txt"}], text="over ssh",
                       message="first", lines=10, line_interval=0.3)
    stack.wait_status(job, "running")
    wait_for(lambda: "line 1" in stack.client.get_console_output(job.jobId), 60, "console output to reach the hub")
    sshd.restart(down_sec=1.0)  # every connection dropped; the job goes on over there
    done = stack.wait_done(job, 60)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    expected = "first\n" + "".join(f"line {i}\n" for i in range(10)) + "done\n"
    assert public_get(done.consoleOutputUrl).text == expected
    assert public_get(done.outputFileResults[0].url).text == "over ssh"
    assert stack.runs_of(job) == 1
    assert "reconnected" in stack.bridge.log or "answers again" in stack.bridge.log, stack.bridge.log


def test_a_killed_bridge_restarted_from_its_saved_options_adopts_the_remote_job(stack: Stack, tmp_path: Path) -> None:
    stack.register(config_updates=SHORT_IDLE_CLAIMS)
    stack.bridge.start()
    job = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "out.txt"}], text="adopted",
                       message="before", lines=6, line_interval=0.4)
    stack.wait_status(job, "running")
    wait_for(lambda: stack.runs_of(job) == 1, 60, "the processor to start")
    stack.bridge.kill()
    saved = json.loads((stack.bridge_dir / "bridge.json").read_text())["ssh"]
    assert saved["host"] == "127.0.0.1" and saved["remoteDir"] == str(tmp_path / "remote") and not saved.get("acceptNewHostKey")
    # started again with --dir alone: the SSH options come from bridge.json
    stack.bridge = BridgeProcess(stack.bridge_dir, stack.env, "ssh")
    stack.bridge.start("--exit-when-idle")
    done = stack.wait_done(job, 60)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert stack.runs_of(job) == 1
    console = public_get(done.consoleOutputUrl).text
    assert console.startswith("before\n") and console.count("line 0") == 1 and console.endswith("done\n")
    assert public_get(done.outputFileResults[0].url).text == "adopted"
    assert "re-adopted job" in stack.bridge.log
    assert stack.bridge.process is not None and stack.bridge.process.wait(timeout=60) == 0, stack.bridge.log


def test_inputs_go_up_and_outputs_come_back(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    produce = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "greeting.txt"}], text="Hello, remote!")
    count = stack.submit("count", inputs=[{"name": "input", "fileBaseName": "in.txt", "url": produce.get_output("output")}],
                         outputs=[{"name": "output", "fileBaseName": "output.json"}])
    done = stack.wait_done(count, 45)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert json.loads(public_get(done.outputFileResults[0].url).text) == {"count": 14, "text": "Hello, remote!"}
    remote = remote_job_dir(stack, count.jobId)
    assert (remote / "inputs" / "input" / "in.txt").read_text() == "Hello, remote!"
    assert json.loads((remote / "job.json").read_text())["inputs"][0]["path"] == str(remote / "inputs" / "input" / "in.txt")
    assert public_get(done.resourceUtilizationLogUrl).status_code == 200
    # the remote side is two uploaded files run by the system Python: nothing of Pairio is installed there
    tools = sorted(p.name.split("-")[0] for p in (stack.tmp_path / "remote" / ".pairio").iterdir())
    assert tools == ["agent", "owner.json", "watch"], tools
    # the SSH bridge describes itself as the local one does, with the host its jobs go to
    config = json.loads((stack.bridge_dir / "bridge.json").read_text())
    info = public_get(f"{stack.hub.url}/v1/compute-clients/{config['computeClientId']}").json()["bridgeInfo"]
    assert (info["backend"], info["apps"], info["containerMode"]) == ("ssh", ["testapp"], "none")
    assert info["remoteHost"].endswith(f"@{config['ssh']['host']}:{config['ssh'].get('port', 22)}"), info


def test_a_changed_host_key_stops_the_bridge_with_the_reason(stack: Stack, tmp_path: Path) -> None:
    stack.register()
    wrong = tmp_path / "known_hosts_wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True, timeout=30)
    kind, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    port = stack.bridge.args[stack.bridge.args.index("--host") + 1].rsplit(":", 1)[1]
    wrong.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
    result = subprocess.run(
        PAIRIO_BRIDGE + ["ssh", "--dir", str(stack.bridge_dir), *stack.bridge.args, "--known-hosts", str(wrong)],
        capture_output=True, text=True, timeout=60, env=stack.env, check=False,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "HOST KEY MISMATCH" in result.stderr and "ssh-keygen -R" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_host_is_refused_until_trusted(stack: Stack, tmp_path: Path) -> None:
    stack.register(config_updates=SHORT_IDLE_CLAIMS)
    empty = tmp_path / "known_hosts_empty"
    args = [*stack.bridge.args, "--known-hosts", str(empty), "--exit-when-idle"]
    refused = subprocess.run(PAIRIO_BRIDGE + ["ssh", "--dir", str(stack.bridge_dir), *args],
                             capture_output=True, text=True, timeout=60, env=stack.env, check=False)
    assert refused.returncode == 1 and "is not in" in refused.stderr and "--accept-new-host-key" in refused.stderr, refused.stderr
    trusted = subprocess.run(PAIRIO_BRIDGE + ["ssh", "--dir", str(stack.bridge_dir), *args, "--accept-new-host-key"],
                             capture_output=True, text=True, timeout=60, env=stack.env, check=False)
    assert trusted.returncode == 0, trusted.stderr
    assert "recorded the new host key" in trusted.stderr and empty.read_text().startswith("[127.0.0.1]:")
    again = subprocess.run(PAIRIO_BRIDGE + ["ssh", "--dir", str(stack.bridge_dir), "--exit-when-idle"],
                           capture_output=True, text=True, timeout=60, env=stack.env, check=False)
    assert again.returncode == 0, again.stderr


def test_a_remote_directory_of_another_bridge_is_refused(stack: Stack) -> None:
    stack.register(config_updates=SHORT_IDLE_CLAIMS)
    first = subprocess.run(PAIRIO_BRIDGE + ["ssh", "--dir", str(stack.bridge_dir), *stack.bridge.args, "--exit-when-idle"],
                           capture_output=True, text=True, timeout=60, env=stack.env, check=False)
    assert first.returncode == 0, first.stderr
    stack.register("--force")  # a new compute client in the same directory, with the same --remote-dir
    second = subprocess.run(PAIRIO_BRIDGE + ["ssh", "--dir", str(stack.bridge_dir), *stack.bridge.args, "--exit-when-idle"],
                            capture_output=True, text=True, timeout=60, env=stack.env, check=False)
    assert second.returncode == 1 and "belongs to another bridge" in second.stderr and "--remote-dir" in second.stderr, second.stderr


def test_a_container_engine_missing_on_the_remote_host_stops_the_bridge_with_the_fix(stack: Stack) -> None:
    """Checked at connect time: the engine named, how to install it, and the other modes; no job is claimed first."""
    if shutil.which("apptainer"):
        pytest.skip("apptainer is installed here; the check needs an engine that is missing")
    stack.register("--container", "apptainer", config_updates=SHORT_IDLE_CLAIMS)
    result = subprocess.run(PAIRIO_BRIDGE + ["ssh", "--dir", str(stack.bridge_dir), *stack.bridge.args, "--exit-when-idle"],
                            capture_output=True, text=True, timeout=60, env=stack.env, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "container mode 'apptainer' needs apptainer on" in result.stderr and "install apptainer" in result.stderr, result.stderr
    assert "another --container mode" in result.stderr and "Traceback" not in result.stderr
