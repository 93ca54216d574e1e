"""A finished job's report claims the next job for the slot it frees (``POST /v1/compute/jobs/{id}/finish`` with
``claim``): no claim call of its own between jobs, each job run once, a lost answer and an older hub handled.

A real hub on 127.0.0.1 (in-process uvicorn, SQLite and PostgreSQL) and the runner in this process on a local
backend with one slot; the hub client is the bridge's own, wrapped to count its calls (and, for the two failure
cases, to lose an answer after the hub committed it, or to send what a hub without the field refuses).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from bridge import runner as runner_module
from bridge.backend import JobSubmission
from bridge.config import BridgeConfig
from bridge.hub_api import ClaimRequest, FinishAnswer, HubApi, HubUnreachableError
from bridge.local.backend import LocalBackend
from bridge.runner import BridgeRunner
from pairio.models import PairioComputeClientComputeSlot, PairioJobData
from pairio.status import JobStatus

from .hubtools import REPO, LiveHub, Seed
from .test_runner_recovery import client_and_job, run_until_idle, submit_hello

SLOT = PairioComputeClientComputeSlot(numCpus=1, numGpus=0, memoryGb=1, timeSec=600, multiplicity=1)
HELLO = f"{sys.executable} {REPO / 'apps' / 'hello_world' / 'main.py'}"


class CountingBackend(LocalBackend):
    """The local backend, counting the jobs handed to it (each must be handed over once)."""

    def __init__(self, jobs_root: Path) -> None:
        super().__init__(jobs_root, gpu_ids=[])
        self.submitted: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def submit(self, job: JobSubmission) -> str:
        with self._count_lock:
            self.submitted[job.job_id] += 1
        return super().submit(job)


class CountingHubApi(HubApi):
    """The bridge's hub client, counting claims: those of their own, and those in finish reports with what they took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claim_calls: list[int] = []
        """jobs each claim call of its own brought"""
        self.status_calls = 0
        self.console_calls = 0
        self.running_batches: list[int] = []
        """jobs in each call for several jobs' 'running'"""
        self.finish_claims: list[Optional[int]] = []
        """jobs each finish report's claim brought (None: the report went without a claim)"""

    def claim(
        self, max_jobs: int, wait_sec: float, capacity: Any, runs: Optional[dict[str, Any]] = None, ahead: int = 0
    ) -> list[PairioJobData]:
        jobs = super().claim(max_jobs, wait_sec, capacity, runs, ahead)
        self.claim_calls.append(len(jobs))
        return jobs

    def set_status(self, *args: Any, **kwargs: Any) -> Any:
        self.status_calls += 1
        return super().set_status(*args, **kwargs)

    def report_running(self, job_ids: Any) -> Any:
        self.running_batches.append(len(job_ids))
        return super().report_running(job_ids)

    def append_console_output(self, *args: Any, **kwargs: Any) -> int:
        self.console_calls += 1
        return super().append_console_output(*args, **kwargs)

    def finish(self, job_id: str, status: JobStatus, error: Optional[str] = None, **kwargs: Any) -> FinishAnswer:
        answer = super().finish(job_id, status, error, **kwargs)
        self.finish_claims.append(None if answer.claimed is None else len(answer.claimed))
        return answer


class LostAnswerHubApi(CountingHubApi):
    """The first finish report with a claim reaches the hub, which commits it; its answer is lost on the way back."""

    lost = False

    def finish(self, job_id: str, status: JobStatus, error: Optional[str] = None, **kwargs: Any) -> FinishAnswer:
        answer = super().finish(job_id, status, error, **kwargs)
        if kwargs.get("claim") is not None and not self.lost:
            self.lost = True
            raise HubUnreachableError("the connection dropped before the answer came (a test)")
        return answer


class OlderHubApi(CountingHubApi):
    """A finish report with a claim goes as to a hub that has no such field: it refuses it (422), as ours refuses any
    field it does not know."""

    refused = 0

    def finish(
        self, job_id: str, status: JobStatus, error: Optional[str] = None, *, claim: Optional[ClaimRequest] = None, **kwargs: Any
    ) -> FinishAnswer:
        if claim is None:
            return super().finish(job_id, status, error, **kwargs)
        self.refused += 1
        self._request("POST", f"/v1/compute/jobs/{job_id}/finish", json={"status": status.value, "claimOnANewerHub": claim.body()})
        raise AssertionError("the hub took a field it does not know")


class NoRunningBatchesHubApi(CountingHubApi):
    """A hub from before the call for several jobs' 'running': the batch goes where this hub has no route (its 404)."""

    def report_running(self, job_ids: Any) -> Any:
        self.running_batches.append(len(job_ids))
        self._request("POST", "/v1/compute/running-on-a-newer-hub", json={"jobIds": list(job_ids)})
        raise AssertionError("the hub answered a call it does not have")


class NoStartedAgoHubApi(CountingHubApi):
    """A finish report with startedAgoSec goes as to a hub without that field (before it, 'running' went apart): the
    hub refuses it (422), as ours refuses any field it does not know."""

    refused = 0

    def finish(self, job_id: str, status: JobStatus, error: Optional[str] = None, *, started_ago: Optional[float] = None, **kwargs: Any) -> FinishAnswer:
        if started_ago is None:
            return super().finish(job_id, status, error, **kwargs)
        self.refused += 1
        self._request("POST", f"/v1/compute/jobs/{job_id}/finish", json={"status": status.value, "startedAgoOnANewerHub": started_ago})
        raise AssertionError("the hub took a field it does not know")


def _client_and_jobs(api: httpx.Client, seeded: Seed, live_hub: LiveHub, tmp_path: Path, label: str, count: int) -> tuple[list[str], BridgeConfig]:
    """A compute client with one slot for a runner made in the test, and ``count`` hello_world_1 jobs for it, oldest
    first (greeting ``label``, then ``label 1``, ``label 2``...)."""
    first, config = client_and_job(api, seeded, live_hub, tmp_path, label, HELLO)
    return [first] + [submit_hello(api, seeded, f"{label} {i}") for i in range(1, count)], config


@dataclass
class Run:
    job_ids: list[str]
    hub: CountingHubApi
    runner: BridgeRunner


def _run_jobs(api: httpx.Client, seeded: Seed, live_hub: LiveHub, tmp_path: Path, label: str, count: int, hub_class: type[CountingHubApi]) -> Run:
    """``count`` jobs run by a runner with one slot until it is idle; each must have completed, and run once."""
    job_ids, config = _client_and_jobs(api, seeded, live_hub, tmp_path, label, count)
    config = config.model_copy(update={"claimAheadJobs": 0})  # one job per freed slot (claims ahead: test_claim_ahead.py)
    hub = hub_class(config.hubUrl, config.computeClientPrivateKey)
    backend = CountingBackend(config.jobs_path)
    runner = run_until_idle(config, backend, hub)
    for i, job_id in enumerate(job_ids):
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "completed", job
        assert f"Hello, {label}{f' {i}' if i else ''}!" in api.get(f"/v1/jobs/{job_id}/console-output").text
        statuses = [e["status"] for e in api.get(f"/v1/jobs/{job_id}/events").json()["events"] if e["status"]]
        assert statuses[-3:] == ["starting", "running", "completed"], statuses
    assert backend.submitted == Counter({job_id: 1 for job_id in job_ids}), "each job handed to the backend once"
    return Run(job_ids, hub, runner)


def test_each_finish_report_claims_the_next_job_for_the_slot_it_frees(seeded: Seed, live_hub: LiveHub, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        hub = _run_jobs(api, seeded, live_hub, tmp_path, "chain", 4, CountingHubApi).hub
        # the first job came by a claim of its own, each next one by the report of the job before it, and the last
        # report's claim found nothing (the claims after it, waiting for more, found nothing either)
        assert hub.finish_claims == [1, 1, 1, 0]
        assert sum(hub.claim_calls) == 1 and hub.claim_calls[0] == 1


def test_a_lost_answer_to_a_report_that_claimed_is_found_in_the_hubs_list(seeded: Seed, live_hub: LiveHub, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        # the job the lost answer brought was adopted from the hub's list of this client's jobs, and ran once;
        # the report whose answer was lost went again (a repeat the hub takes as it is)
        run = _run_jobs(api, seeded, live_hub, tmp_path, "lost", 3, LostAnswerHubApi)
        assert isinstance(run.hub, LostAnswerHubApi) and run.hub.lost
        assert [e["status"] for e in api.get(f"/v1/jobs/{run.job_ids[0]}/events").json()["events"]].count("completed") == 1


def test_against_a_hub_without_claims_in_reports_the_freed_slot_is_claimed_apart(seeded: Seed, live_hub: LiveHub, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        run = _run_jobs(api, seeded, live_hub, tmp_path, "older", 3, OlderHubApi)
        hub, runner = run.hub, run.runner
        assert isinstance(hub, OlderHubApi)
        assert hub.refused == 1, "refused once; the reports then went without a claim"
        assert hub.finish_claims == [None, None, None]
        assert sum(hub.claim_calls) == 3
        assert not runner._hub_takes_finish_claims


def test_against_a_hub_without_started_ago_running_is_reported_apart(
    seeded: Seed, live_hub: LiveHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "RUNNING_REPORT_DELAY_SEC", 3600.0)  # every job's 'running' would go with its end
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        run = _run_jobs(api, seeded, live_hub, tmp_path, "no-started-ago", 3, NoStartedAgoHubApi)
        assert isinstance(run.hub, NoStartedAgoHubApi)
        # refused once, then 'running' went apart at each start (each job's events, checked by _run_jobs: starting,
        # running, completed)
        assert run.hub.refused == 1 and not run.runner._hub_takes_started_ago


def test_a_job_that_ends_before_its_running_report_and_console_are_due_is_reported_in_one_call(
    seeded: Seed, live_hub: LiveHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "RUNNING_REPORT_DELAY_SEC", 3600.0)
    monkeypatch.setattr(runner_module, "CONSOLE_HOLD_SEC", 3600.0)
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        run = _run_jobs(api, seeded, live_hub, tmp_path, "one-call", 2, CountingHubApi)
        assert run.hub.status_calls == 0, "no call of its own for 'running'"
        assert run.hub.console_calls == 0, "its console output went with its finish report (checked by _run_jobs)"
        for job_id in run.job_ids:
            job = api.get(f"/v1/jobs/{job_id}").json()
            assert job["timestampStartingSec"] <= job["timestampStartedSec"] <= job["timestampFinishedSec"]


SLEEPER = f"{sys.executable} -c 'import time; time.sleep(3)'"


@pytest.mark.parametrize("hub_class", [CountingHubApi, NoRunningBatchesHubApi])
def test_running_reports_due_together_go_in_one_call_or_one_each_to_an_older_hub(
    seeded: Seed, live_hub: LiveHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_class: type[CountingHubApi]
) -> None:
    monkeypatch.setattr(runner_module, "RUNNING_REPORT_DELAY_SEC", 0.2)  # due while the jobs still run (3 s each)
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        first, config = client_and_job(api, seeded, live_hub, tmp_path, "sleepers", SLEEPER)
        job_ids = [first] + [submit_hello(api, seeded, f"sleeper {i}") for i in range(1, 3)]
        slots = [SLOT.model_copy(update={"multiplicity": 3})]
        config = config.model_copy(update={"computeSlots": slots, "claimAheadJobs": 0})
        hub = hub_class(config.hubUrl, config.computeClientPrivateKey)
        runner = run_until_idle(config, CountingBackend(config.jobs_path), hub)
        for job_id in job_ids:
            statuses = [e["status"] for e in api.get(f"/v1/jobs/{job_id}/events").json()["events"] if e["status"]]
            assert statuses[-3:] == ["starting", "running", "completed"], statuses
        if hub_class is CountingHubApi:
            assert hub.status_calls == 0 and sum(hub.running_batches) == 3, hub.running_batches
            assert runner._hub_takes_running_batches
        else:
            assert len(hub.running_batches) == 1, "tried once"
            assert hub.status_calls == 3 and not runner._hub_takes_running_batches
