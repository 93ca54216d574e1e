"""Why a job that is not finished does not run yet: one closed set of reasons, shared by hub and client.

The hub computes the reason when one job is read (``GET /v1/jobs/{id}``, the job page,
``pairio jobs show``); list endpoints leave it out. Bridges report what only they know
(a batch system's queue, a busy machine) as notes on the job's timeline, starting
with the prefixes below; the hub reads the latest such note back.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from .models import PairioComputeClientComputeSlot

QUEUE_NOTE_PREFIX = "waiting in the "
"""A bridge's note while its batch system queues the job: 'waiting in the slurm queue: Resources'."""
HOST_BUSY_NOTE_PREFIX = "waiting: "
"""A bridge's note while it holds a job back because other programs keep its machine busy."""
STARTED_NOTE_PREFIX = "started on the "
"""A bridge's note when a queued job started: the wait is over."""


class WaitingCode(str, Enum):
    """Why a job waits; the message of a ``PairioWaitingReason`` says it in words."""

    WAITING_FOR_DEPENDENCIES = "waiting_for_dependencies"
    """Pending: a job it depends on (listed, or producing one of its inputs) has not completed."""
    NO_COMPUTE_CLIENT_ONLINE = "no_compute_client_online"
    """Pending: no compute client that could run it has been heard from within the heartbeat timeout."""
    NO_SLOT_FITS = "no_slot_fits"
    """Pending: no compute slot of the service's compute clients fits its required resources."""
    NO_COMPUTE_CLIENT_RUNS_APP = "no_compute_client_runs_app"
    """Pending: the online compute clients that fit it have no command for its app (their claims name the apps they run)."""
    ALL_SLOTS_BUSY = "all_slots_busy"
    """Pending: every compute slot that fits it is taken; ``jobsAhead`` jobs go first."""
    NOT_CLAIMED_YET = "not_claimed_yet"
    """Pending: an online compute client has a free slot that fits; it has not claimed the job yet
    (its next claim does, unless its machine has no room left or older jobs take the slot)."""
    PREPARING = "preparing"
    """Starting: claimed; its compute client is staging inputs and submitting it."""
    HOST_BUSY = "host_busy"
    """Starting: its compute client holds it back while other programs keep the machine busy."""
    BACKEND_QUEUE = "backend_queue"
    """Claimed and submitted: it waits in the batch system's queue (Slurm's reason in ``backendReason``)."""


class PairioWaitingReason(BaseModel):
    """Why a job is not running yet, computed when the job is read."""

    model_config = ConfigDict(extra="ignore")

    code: WaitingCode
    message: str = Field(description="the reason in words, e.g. 'all 2 compute slots that fit it are busy; 3 jobs ahead of it'")
    largestSlot: Optional[PairioComputeClientComputeSlot] = Field(
        default=None, description="no_slot_fits: the compute slot closest to fitting the job"
    )
    largestSlotComputeClient: Optional[str] = Field(default=None, description="no_slot_fits: the label of the compute client with that slot")
    doesNotFit: list[str] = Field(
        default_factory=list, description="no_slot_fits: what the largest slot cannot give, e.g. 'numCpus: asks 64, the slot has 2'"
    )
    jobsAhead: Optional[int] = Field(default=None, description="all_slots_busy: pending jobs that fit the same slots and go first")
    backendReason: Optional[str] = Field(default=None, description="backend_queue: the batch system's reason, e.g. Slurm's 'Resources'")
    unfinishedDependencies: list[str] = Field(default_factory=list, description="waiting_for_dependencies: the jobs it waits for")
