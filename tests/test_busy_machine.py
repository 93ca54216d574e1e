"""Bridges on a machine busy with other work: CPU burners load every CPU while real hub and bridge processes run.

By default a bridge runs jobs up to its slots whatever else the machine runs (the quick
start must work on a loaded laptop); with ``--respect-machine-load`` a claimed job waits
and its timeline says why, once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from pairio import PairioClient

from .test_bridge_e2e import PAIRIO_BRIDGE, BridgeProcess, HubProcess, Stack, hub, wait_for  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
BUSY_NOTE = "waiting: the host is busy"


@pytest.fixture
def cpu_burners() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One busy-looping process per usable CPU, and one more: the machine's load stays above its CPU count."""
    count = len(os.sched_getaffinity(0)) + 1
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        # Sanity: the machine really is busy, or these tests would prove nothing.
        assert psutil.cpu_percent(interval=1.0) > 75, "the CPU burners did not load the machine"
        yield burners
    finally:
        for b in burners:
            b.kill()
        for b in burners:
            b.wait()


def test_the_quick_start_completes_on_a_machine_busy_with_other_work(
    tmp_path: Path, cpu_burners: list[subprocess.Popen[bytes]]
) -> None:
    """scripts/quickstart.sh's steps, each through its real command, with a bridge left at its defaults."""
    hub = HubProcess(tmp_path / "hub")
    admin_key = hub.admin("create-user", "demo").strip().splitlines()[-1]
    hub.admin("create-service", "hello_world_service", "--owner", "demo")
    hub.admin("add-app", "hello_world_service", str(REPO / "apps/hello_world/spec.json"))
    hub.start()
    env = {
        **os.environ, "PAIRIO_API_URL": hub.url, "PAIRIO_API_KEY": admin_key, "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "PYTHONUNBUFFERED": "1",
    }
    bridge_dir = tmp_path / "bridge"
    bridge = BridgeProcess(bridge_dir, env)
    try:
        register = subprocess.run(
            PAIRIO_BRIDGE + [
                "register", "--dir", str(bridge_dir), "--service", "hello_world_service", "--name", "quickstart",
                "--hub-url", hub.url, "--app", f"hello_world={sys.executable} {REPO / 'apps/hello_world/main.py'}",
            ],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )
        assert register.returncode == 0, register.stderr
        assert json.loads((bridge_dir / "bridge.json").read_text())["respectMachineLoad"] is False
        bridge.start()
        for example in ("example1.py", "example2.py", "example3.py"):
            run = subprocess.run(
                [sys.executable, str(REPO / "examples" / example)], capture_output=True, text=True, timeout=120, env=env, check=False
            )
            assert run.returncode == 0, f"{example}:\n{run.stdout}\n{run.stderr}"
        with PairioClient(hub.url, admin_key) as client:
            jobs = client.find_jobs(service_name="hello_world_service", tags=["example"], limit=20)
            assert len(jobs) >= 3
            for job in jobs:
                done = wait_for(
                    lambda j=job: (lambda current: current if current.status.is_terminal else None)(client.get_job(j.jobId)),
                    240, f"job {job.jobId} to finish; bridge log:\n{bridge.log}", interval=0.5,
                )
                assert done.status.value == "completed", (done.error, bridge.log)
        assert "no room for another job" not in bridge.log, bridge.log
    finally:
        bridge.stop()
        hub.stop()


@pytest.fixture
def stack(hub: tuple[HubProcess, str], tmp_path: Path) -> Iterator[Stack]:
    s = Stack(hub[0], hub[1], tmp_path)
    try:
        yield s
    finally:
        s.close()


def events(stack: Stack, job_id: str) -> list[str]:
    response = httpx.get(f"{stack.hub.url}/v1/jobs/{job_id}/events", timeout=30)
    response.raise_for_status()
    return [e["message"] for e in response.json()["events"]]


def test_with_respect_machine_load_a_job_waits_for_a_busy_host_and_its_timeline_says_so_once(
    stack: Stack, cpu_burners: list[subprocess.Popen[bytes]]
) -> None:
    stack.register("--respect-machine-load")
    assert json.loads((stack.bridge_dir / "bridge.json").read_text())["respectMachineLoad"] is True
    stack.bridge.start("--log-level", "debug")
    job = stack.submit("work", message="patient", sleep=0.5)
    wait_for(lambda: any(m.startswith(BUSY_NOTE) for m in events(stack, job.jobId)), 60, "the busy-host note")
    # It stays held through several more looks at the load (every 2 s), without saying so again.
    wait_for(lambda: stack.bridge.log.count("still waits: the host is busy") >= 3, 60, "three more looks at the load", interval=0.5)
    notes = [m for m in events(stack, job.jobId) if m.startswith(BUSY_NOTE)]
    assert len(notes) == 1, notes
    assert "load " in notes[0] and " CPUs" in notes[0], notes[0]
    assert stack.client.get_job(job.jobId).status.value == "starting"
    assert stack.runs_of(job) == 0
    stack.client.cancel_job(job.jobId)
    canceled = stack.wait_done(job, 60)
    assert canceled.status.value == "failed" and "canceled" in (canceled.error or ""), canceled.error
    assert stack.runs_of(job) == 0

