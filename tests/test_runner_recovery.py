"""The runner when its backend's submit fails unexpectedly or asks to be retried: the job still runs, once.

A real hub on 127.0.0.1 (in-process uvicorn, SQLite and PostgreSQL) and the runner in this
process on a local backend whose first submits fail: one raises an unexpected error before
starting anything (the runner must find out, as after a restart, that nothing started, and
submit again), one says its scheduler cannot be reached (SubmitRetryLater).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

import bridge.runner as runner_module
from bridge.backend import JobSubmission, SubmitRetryLater
from bridge.config import BridgeConfig
from bridge.hub_api import HubApi
from bridge.local.backend import LocalBackend
from bridge.runner import BridgeRunner
from pairio.models import PairioComputeClientComputeSlot

from .conftest import auth
from .hubtools import REPO, LiveHub, Seed

SLOT = PairioComputeClientComputeSlot(numCpus=1, numGpus=0, memoryGb=1, timeSec=600, multiplicity=1)


class FlakyLocalBackend(LocalBackend):
    def __init__(self, jobs_root: Path, failures: list[Exception]) -> None:
        super().__init__(jobs_root, gpu_ids=[])
        self.failures = failures
        self.submits = 0
        self.lock = threading.Lock()

    def submit(self, job: JobSubmission) -> str:
        with self.lock:
            self.submits += 1
            if self.failures:
                raise self.failures.pop(0)
        return super().submit(job)


def submit_hello(api: httpx.Client, seeded: Seed, name: str, **job_fields: Any) -> str:
    """A hello_world_1 job greeting ``name`` (one CPU, 0.5 GB); its id."""
    body: dict[str, Any] = {
        "serviceName": seeded.service,
        "jobDefinition": {"appName": "hello_world", "processorName": "hello_world_1", "parameters": [{"name": "name", "value": name}]},
        "requiredResources": {"numCpus": 1, "numGpus": 0, "memoryGb": 0.5, "timeSec": 60},
        **job_fields,
    }
    r = api.post("/v1/jobs", json=body, headers=auth(seeded.key))
    assert r.status_code == 201, r.text
    return r.json()["jobId"]  # type: ignore[no-any-return]


def run_until_idle(config: BridgeConfig, backend: LocalBackend, hub: HubApi) -> BridgeRunner:
    """A runner of ``config`` on ``backend`` until it has nothing to do; the hub client is closed after."""
    runner = BridgeRunner(config, backend, hub, exit_when_idle=True)
    try:
        runner.run()
    finally:
        runner.close()
        hub.close()
    return runner


def client_and_job(
    api: httpx.Client, seeded: Seed, live_hub: LiveHub, tmp_path: Path, label: str, app_command: str, **job_fields: Any
) -> tuple[str, BridgeConfig]:
    """A compute client for a runner made in the test, and one hello_world_1 job for it."""
    created = api.post(
        "/v1/compute-clients",
        json={"serviceName": seeded.service, "label": label, "computeSlots": [SLOT.model_dump()]},
        headers=auth(seeded.key),
    ).json()
    job_id = submit_hello(api, seeded, label, **job_fields)
    config = BridgeConfig(
        hubUrl=live_hub.url, serviceName=seeded.service, computeClientId=created["computeClient"]["computeClientId"],
        computeClientPrivateKey=created["computeClientPrivateKey"], label=label, computeSlots=[SLOT],
        appCommands={"hello_world": app_command},
        jobsDir=str(tmp_path / "jobs"), cacheDir=str(tmp_path / "cache"),
        pollIntervalSec=0.05, heartbeatIntervalSec=0.5, claimWaitSec=0.2,
    )  # fmt: skip
    return job_id, config


def test_a_failed_or_postponed_submission_is_retried_and_runs_once(
    seeded: Seed, live_hub: LiveHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "WORKER_RETRY_SEC", 0.2)
    monkeypatch.setattr(runner_module, "SUBMIT_RETRY_SEC", 0.2)
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        job_id, config = client_and_job(
            api, seeded, live_hub, tmp_path, "retry", f"{sys.executable} {REPO / 'apps' / 'hello_world' / 'main.py'}"
        )
        backend = FlakyLocalBackend(config.jobs_path, [RuntimeError("the scheduler hiccuped"), SubmitRetryLater("controller down")])
        hub = HubApi(config.hubUrl, config.computeClientPrivateKey)
        run_until_idle(config, backend, hub)
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "completed", job
        assert backend.submits == 3
        assert "Hello, retry!" in api.get(f"/v1/jobs/{job_id}/console-output").text


def test_a_job_claimed_before_a_restart_gets_its_secrets_from_the_hub_again(
    seeded: Seed, live_hub: LiveHub, tmp_path: Path
) -> None:
    """Secrets are never kept on the bridge's disk: a job claimed by a bridge that stopped before starting it
    is run by the next start with the secrets the hub lists again for this client's jobs."""
    token = "restart-s3cret-token"
    processor = tmp_path / "processor.py"
    processor.write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(tmp_path / 'seen.txt')!r}).write_text(os.environ['TOKEN'])\n"
        "print('token', os.environ['TOKEN'], flush=True)\n"
    )
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        job_id, config = client_and_job(
            api, seeded, live_hub, tmp_path, "again", f"{sys.executable} {processor}", secrets=[{"name": "TOKEN", "value": token}]
        )
        hub = HubApi(config.hubUrl, config.computeClientPrivateKey)
        # The earlier bridge: it claimed the job and stopped before it wrote anything.
        assert [j.jobId for j in hub.claim(1, 0, None)] == [job_id]
        run_until_idle(config, LocalBackend(config.jobs_path, gpu_ids=[]), hub)
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "completed", job
        assert (tmp_path / "seen.txt").read_text() == token
        job_dir = tmp_path / "jobs" / job_id
        assert (job_dir / "console.txt").read_text() == "token ***\n"
        assert not (job_dir / "secrets.json").exists()
        assert all(token.encode() not in p.read_bytes() for p in job_dir.rglob("*") if p.is_file())


class OlderHubApi(HubApi):
    """Calls a hub the way a bridge does against a hub without the one-call report (the path does not exist there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finish_calls = 0

    def finish(self, job_id: str, *args: Any, **kwargs: Any) -> Any:
        self.finish_calls += 1
        self._request("POST", f"/v1/compute/jobs/{job_id}/finish-not-on-this-hub", json={})
        raise AssertionError("the hub answered a path it does not have")


def test_against_a_hub_without_the_one_call_report_the_parts_go_one_by_one(
    seeded: Seed, live_hub: LiveHub, tmp_path: Path
) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        job_id, config = client_and_job(
            api, seeded, live_hub, tmp_path, "older", f"{sys.executable} {REPO / 'apps' / 'hello_world' / 'main.py'}"
        )
        hub = OlderHubApi(config.hubUrl, config.computeClientPrivateKey)
        run_until_idle(config, LocalBackend(config.jobs_path, gpu_ids=[]), hub)
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "completed", job
        assert hub.finish_calls == 1  # tried once; the parts then went one call each
        assert "Hello, older!" in api.get(f"/v1/jobs/{job_id}/console-output").text
        assert api.get(f"/v1/jobs/{job_id}/resource-utilization-log").status_code in (200, 404)
