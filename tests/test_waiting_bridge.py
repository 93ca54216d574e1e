"""Why a job waits, with a real hub process and a real ``pairio-bridge local``: no compute client
online before the bridge starts, all slots busy with N jobs ahead while it runs one, a job no slot
fits; as ``GET /v1/jobs/{id}``, ``pairio jobs show`` and the job page show them."""

from __future__ import annotations

import subprocess

import httpx

from pairio import JobStatus, PairioJobDefinition
from pairio.job import PairioJob
from pairio.waiting import WaitingCode

from .test_bridge_e2e import PAIRIO, RESOURCES, Stack, hub, stack, wait_for  # noqa: F401 - fixtures

__all__ = ["hub", "stack"]


def reason(stack: Stack, job: PairioJob) -> WaitingCode | None:
    got = stack.client.get_job(job.jobId).waitingReason
    return got.code if got else None


def jobs_show(stack: Stack, job: PairioJob) -> str:
    result = subprocess.run(PAIRIO + ["jobs", "show", job.jobId], capture_output=True, text=True, timeout=120, env=stack.env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_local_bridge_one_slot_busy_says_how_many_jobs_are_ahead(stack: Stack) -> None:
    stack.register("--num-cpus", "1", "--memory-gb", "1", "--multiplicity", "1")
    first = stack.submit("work", sleep=100, message="first")
    assert reason(stack, first) is WaitingCode.NO_COMPUTE_CLIENT_ONLINE
    assert "'e2e bridge' never heard from" in jobs_show(stack, first)

    definition = PairioJobDefinition(appName="testapp", processorName="work", parameters=[{"name": "message", "value": "too big"}])
    too_big = stack.client.submit_job(stack.service, definition, RESOURCES.model_copy(update={"numCpus": 64}), skip_cache=True)
    note = too_big.get_events()[1].message
    assert "compute client 'e2e bridge' (1 CPUs" in note and "numCpus: asks 64, the slot has 1 CPUs" in note, note
    assert reason(stack, too_big) is WaitingCode.NO_SLOT_FITS

    queued: list[PairioJob] = []
    stack.bridge.start()
    try:
        stack.wait_status(first, "running", timeout_sec=60)
        queued += [stack.submit("work", message=f"queued {i}") for i in range(3)]
        for i, job in enumerate(queued):
            detail = stack.client.get_job(job.jobId)
            assert detail.status is JobStatus.PENDING and detail.queuePosition == i + 2  # the 64-CPU job is first in the queue
            assert detail.waitingReason is not None and detail.waitingReason.code is WaitingCode.ALL_SLOTS_BUSY, detail.waitingReason
            assert detail.waitingReason.jobsAhead == i  # the 64-CPU job fits none of the busy slots: not ahead
        shown = jobs_show(stack, queued[2])
        assert "all 1 compute slot(s) that fit it are busy (on 1 online compute client(s)); 2 job(s) that fit them are ahead of it" in shown, shown
        assert "queue position  4" in shown, shown
        page = httpx.get(f"{stack.hub.url}/job/{queued[2].jobId}", timeout=30).text
        assert 'data-code="all_slots_busy"' in page and "Queue position <strong>4</strong>" in page
        assert reason(stack, too_big) is WaitingCode.NO_SLOT_FITS
    finally:
        for job in [first, too_big, *queued]:
            stack.client.cancel_job(job.jobId)
    wait_for(lambda: stack.client.get_job(first.jobId).status.is_terminal, 60, "the first job to stop")
