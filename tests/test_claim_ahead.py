"""claimAheadJobs: a bridge whose slots are all busy claims jobs ahead, starts each the moment a slot frees, and gives
back one that finds no free slot in time (``POST /v1/compute/jobs/{id}/release``). Real hub and bridge processes."""

from __future__ import annotations

from pathlib import Path

import httpx

from pairio.job import PairioJob

from .test_bridge_e2e import Stack, hub, stack, wait_for  # noqa: F401 - the hub and stack fixtures

ONE_SLOT = ("--num-cpus", "1", "--multiplicity", "1")


def timeline(stack: Stack, job_id: str) -> list[str]:  # noqa: F811
    return [e["message"] for e in httpx.get(f"{stack.hub.url}/v1/jobs/{job_id}/events", timeout=30).json()["events"]]


def one_running_one_held(stack: Stack) -> tuple[PairioJob, PairioJob, Path]:  # noqa: F811
    """A one-slot bridge that claims one job ahead: the first job runs until the returned file exists, the second is
    held (starting at the hub) with a hold long enough never to end in a test."""
    stack.register(*ONE_SLOT, config_updates={"claimAheadJobs": 1, "claimAheadHoldSec": 600})
    go = stack.tmp_path / "go"
    first = stack.submit("work", go_file=str(go))
    second = stack.submit("work")
    stack.bridge.start()
    stack.wait_status(first, "running")
    stack.wait_status(second, "starting")
    return first, second, go


def test_a_job_claimed_ahead_waits_for_the_slot_and_starts_when_it_frees(stack: Stack) -> None:  # noqa: F811
    stack.register(*ONE_SLOT, config_updates={"claimAheadJobs": 1})
    go = stack.tmp_path / "go"
    first = stack.submit("work", go_file=str(go))
    second = stack.submit("work", message="second ran")
    stack.bridge.start()
    stack.wait_status(first, "running")
    stack.wait_status(second, "starting")  # claimed ahead, by this bridge, while its one slot is busy
    assert stack.client.get_job(second.jobId).computeClientId == stack.client.get_job(first.jobId).computeClientId
    assert stack.runs_of(second) == 0  # not started beside the first
    assert stack.client.get_job(first.jobId).status.value == "running"
    go.touch()
    for job in (first, second):
        done = stack.wait_done(job)
        assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert stack.runs_of(second) == 1
    assert not any("gave the job back" in m for m in timeline(stack, second.jobId))


def test_a_job_claimed_ahead_goes_back_when_no_slot_frees_in_time(stack: Stack) -> None:  # noqa: F811
    stack.register(*ONE_SLOT, config_updates={"claimAheadJobs": 1, "claimAheadHoldSec": 0.5})
    go = stack.tmp_path / "go"
    first = stack.submit("work", go_file=str(go))
    second = stack.submit("work", message="second ran")
    stack.bridge.start()
    stack.wait_status(first, "running")
    wait_for(lambda: any("gave the job back" in m for m in timeline(stack, second.jobId)), 60, "the job claimed ahead to go back")
    # pending for any bridge again; this one claims nothing ahead until one of its jobs ends
    assert stack.client.get_job(second.jobId).status.value == "pending"
    assert stack.runs_of(second) == 0
    go.touch()
    for job in (first, second):
        done = stack.wait_done(job)
        assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert stack.runs_of(second) == 1
    released = [m for m in timeline(stack, second.jobId) if "gave the job back" in m]
    assert len(released) == 1 and "no slot of this bridge freed within" in released[0], released


def test_a_job_claimed_ahead_and_canceled_fails_without_running(stack: Stack) -> None:  # noqa: F811
    first, second, go = one_running_one_held(stack)
    stack.client.cancel_job(second.jobId)
    done = stack.wait_done(second)
    assert done.status.value == "failed" and "cancel" in (done.error or ""), done.error
    assert stack.runs_of(second) == 0
    assert stack.client.get_job(first.jobId).status.value == "running"
    go.touch()
    assert stack.wait_done(first).status.value == "completed"


def test_a_draining_bridge_gives_back_the_jobs_it_claimed_ahead_at_once(stack: Stack) -> None:  # noqa: F811
    first, second, go = one_running_one_held(stack)
    assert stack.bridge.process is not None
    stack.bridge.process.terminate()  # SIGTERM: drain
    stack.wait_status(second, "pending")
    released = [m for m in timeline(stack, second.jobId) if "gave the job back" in m]
    assert len(released) == 1 and "the bridge is stopping" in released[0], released
    go.touch()  # the running job is finished and reported before the bridge exits
    assert stack.wait_done(first).status.value == "completed"
    stack.bridge.process.wait(timeout=60)
    assert stack.client.get_job(second.jobId).status.value == "pending" and stack.runs_of(second) == 0
