"""Why a job waits on Slurm: the bridge's note of Slurm's pending reason (squeue %r) becomes the job's
waiting reason in ``GET /v1/jobs/{id}``, ``pairio jobs show`` and the job page, until the job starts."""

from __future__ import annotations

import httpx

from pairio.waiting import PairioWaitingReason, WaitingCode

from .slurm_support import SlurmLab
from .test_bridge_e2e import wait_for
from .test_slurm_e2e import SlurmStack, _queued_id, hub, stack  # noqa: F401 - fixtures
from .test_waiting_bridge import jobs_show

__all__ = ["hub", "stack"]


def test_slurms_pending_reason_is_the_waiting_reason_until_the_job_runs(stack: SlurmStack, slurm_cluster: SlurmLab) -> None:
    stack.register(extraDirectives=["--hold"])  # the job waits in Slurm's queue until released
    stack.bridge.start()
    held = stack.submit("work", message="held")

    def slurm_reason() -> PairioWaitingReason | None:
        reason = stack.client.get_job(held.jobId).waitingReason
        return reason if reason is not None and reason.code is WaitingCode.BACKEND_QUEUE else None

    reason = wait_for(slurm_reason, 120, f"Slurm's reason as the waiting reason; bridge log:\n{stack.bridge.log}")
    assert (reason.backendReason or "").startswith("JobHeld"), reason  # JobHeldUser: held by sbatch --hold
    assert reason.message == f"waiting in the slurm queue: {reason.backendReason}"
    assert reason.message in jobs_show(stack, held)
    page = httpx.get(f"{stack.hub.url}/job/{held.jobId}", timeout=30).text
    assert 'data-code="backend_queue"' in page and reason.message in page
    slurm_cluster.command("scontrol", "release", _queued_id(slurm_cluster, held.jobId))
    done = stack.wait_done(held, 120)
    assert done.status.value == "completed" and stack.client.get_job(held.jobId).waitingReason is None
