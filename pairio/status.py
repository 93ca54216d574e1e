"""The one job status enum shared by the hub, the client and the bridges."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """Where a job is in its life.

    pending -> starting -> running -> completed, or -> failed from any
    non-terminal state. A terminal status never changes again.
    """

    PENDING = "pending"
    """Queued in the hub; waits for its dependencies and for a compute client."""
    STARTING = "starting"
    """Claimed by a compute client, which is staging inputs and submitting it."""
    RUNNING = "running"
    """The processor is running on the compute client."""
    COMPLETED = "completed"
    """Finished successfully; every declared output was uploaded."""
    FAILED = "failed"
    """Finished unsuccessfully; the job's ``error`` says why."""

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
ACTIVE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.STARTING, JobStatus.RUNNING})

# Legal transitions reported by a compute client. Repeating the current status is
# idempotent and handled separately; pending -> starting happens only by claiming.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.STARTING, JobStatus.FAILED}),
    JobStatus.STARTING: frozenset({JobStatus.RUNNING, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
}


def is_allowed_transition(current: JobStatus, new: JobStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]
