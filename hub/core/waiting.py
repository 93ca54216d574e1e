"""Why a job waits, and where it stands in its service's queue: computed when one job is read.

The reason follows the claim rules (hub/core/compute.py): a pending job is claimed, oldest
first, by an online compute client of its service (one it targets, if it names some) with
a free compute slot that fits it. Once claimed, its bridge says on the timeline when it
waits in a batch system's queue or behind a busy machine (pairio/waiting.py's prefixes).
Counts of jobs ahead stop at ``QUEUE_COUNT_LIMIT`` so a read stays cheap at any queue length.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from sqlalchemy import ColumnElement, Engine, Select, bindparam, func, literal_column, null, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pairio.models import PairioJobRequiredResources
from pairio.status import ACTIVE_STATUSES, JobStatus
from pairio.waiting import HOST_BUSY_NOTE_PREFIX, QUEUE_NOTE_PREFIX, STARTED_NOTE_PREFIX, PairioWaitingReason, WaitingCode

from ..db.raw import RawReads, prebuilt
from ..db.tables import Job, JobDependency, JobEvent
from . import job_answers, slot_fit
from .compute import SlotUsage, _fits_some_slot_sql, resources_of

QUEUE_COUNT_LIMIT = 1000
Reader = Union[Session, Connection, RawReads]
"""Every read here is a Core statement: a session or the connection of a one-statement read both serve."""


@dataclass(frozen=True)
class WaitingJob:
    """What the reason needs of a job: a ``Job`` has these attributes too, and so does ``of_row``'s answer."""

    job_id: str
    service_name: str
    app_name: str
    status: str
    canceled: bool
    is_runnable: bool
    target_compute_client_ids: Optional[list[str]]
    timestamp_created_sec: float
    timestamp_starting_sec: Optional[float]
    compute_client_name: Optional[str]
    num_cpus: int
    num_gpus: int
    memory_gb: float
    time_sec: float
    jobs_ahead: Optional[int] = None
    """Counted in the statement that read the job (``stored_job``); None: not counted."""

    @classmethod
    def of_row(cls, row: Any, jobs_ahead: Optional[int] = None) -> "WaitingJob":
        """From a row read with ``job_answers.ANSWER_COLUMNS`` (the app is its definition's)."""
        return cls(
            row.job_id, row.service_name, row.job_definition["appName"], row.status, bool(row.canceled), bool(row.is_runnable),
            row.target_compute_client_ids, row.timestamp_created_sec, row.timestamp_starting_sec, row.compute_client_name,
            row.num_cpus, row.num_gpus, row.memory_gb, row.time_sec, jobs_ahead,
        )

    @classmethod
    def of_stored(cls, stored: job_answers.StoredJob) -> "WaitingJob":
        """From ``stored_job(conn, job_id, JOB_WITH_ITEMS_AND_AHEAD)``."""
        return cls.of_row(stored.row, stored.jobs_ahead)
# A bridge's notes come right after the claim; looking at the latest few is enough.
RECENT_NOTES = 20


def waiting_reason(
    s: Reader, job: "AnyJob", *, heartbeat_timeout_sec: float, now: float, clients_memory: Optional[Engine] = None,
) -> Optional[PairioWaitingReason]:
    """Why ``job`` does not run yet; None when it is finished, canceled, or running (and not queued by its backend).

    ``clients_memory``: an engine whose recent read of the service's compute clients may serve
    (``slot_fit.remembered_clients``); "no compute client online" among clients is said only from a fresh read."""
    status = JobStatus(job.status)
    if status.is_terminal or job.canceled:
        return None
    if status == JobStatus.PENDING:
        if not job.is_runnable:
            return _dependencies_reason(s, job)
        return _pending_reason(s, job, heartbeat_timeout_sec, now, clients_memory)
    return _claimed_reason(s, job, status)


def queue_position(s: Reader, job: "AnyJob") -> Optional[int]:
    """1 for the next job its service's compute clients claim, among the service's runnable pending jobs
    (claim order: oldest first); None when the job is not such a job. At most ``QUEUE_COUNT_LIMIT + 1``."""
    if job.status != JobStatus.PENDING.value or not job.is_runnable or job.canceled:
        return None
    counted = getattr(job, "jobs_ahead", None)
    return 1 + (counted if counted is not None else _count_ahead(s, job))


# ---------------------------------------------------------------- pending


def _dependencies_reason(s: Reader, job: "AnyJob") -> PairioWaitingReason:
    deps = select(JobDependency.depends_on_job_id).where(JobDependency.job_id == job.job_id)
    unfinished = list(s.scalars(
        select(Job.job_id).where(Job.job_id.in_(deps), Job.status != JobStatus.COMPLETED.value).order_by(Job.job_id).limit(100)
    ))
    listed = ", ".join(unfinished[:5]) + (" ..." if len(unfinished) > 5 else "")
    return PairioWaitingReason(
        code=WaitingCode.WAITING_FOR_DEPENDENCIES,
        message=f"waiting for {len(unfinished)} dependenc{'y' if len(unfinished) == 1 else 'ies'} to complete: {listed}"
        if unfinished else "waiting for its dependencies to complete",
        unfinishedDependencies=unfinished,
    )


def _pending_reason(s: Reader, job: "AnyJob", heartbeat_timeout_sec: float, now: float, clients_memory: Optional[Engine]) -> PairioWaitingReason:
    targets = job.target_compute_client_ids
    remembered = slot_fit.remembered_clients(clients_memory, job.service_name)
    if remembered is not None:
        clients = slot_fit.targeted(remembered, targets)
        reason = _pending_reason_among(s, job, clients, heartbeat_timeout_sec, now)
        # a client heard from since the memory's read would be online: that answer only from a fresh read
        if not (clients and reason.code == WaitingCode.NO_COMPUTE_CLIENT_ONLINE):
            return reason
    read = slot_fit.read_clients(clients_memory, s, job.service_name)
    return _pending_reason_among(s, job, slot_fit.targeted(read, targets), heartbeat_timeout_sec, now)


def _pending_reason_among(
    s: Reader, job: "AnyJob", clients: list[slot_fit.ClientSlots], heartbeat_timeout_sec: float, now: float,
) -> PairioWaitingReason:
    """The reason of a runnable pending job, given the compute clients of its service that it may run on."""
    r = resources_of(job)
    targets = job.target_compute_client_ids
    which = "of the compute clients it targets" if targets is not None else f"of service {job.service_name!r}"
    if not clients:
        return PairioWaitingReason(
            code=WaitingCode.NO_COMPUTE_CLIENT_ONLINE,
            message=f"no compute client online: there is no compute client {which}; start one (pairio-bridge) for the service",
        )
    misfit = slot_fit.closest_misfit(clients, r)
    if misfit is not None:
        return PairioWaitingReason(
            code=WaitingCode.NO_SLOT_FITS,
            message=slot_fit.misfit_message(job.service_name, misfit) + "; it waits for a compute client with a slot that fits",
            largestSlot=misfit.slot, largestSlotComputeClient=misfit.compute_client_label, doesNotFit=misfit.reasons,
        )
    fitting = [c for c in clients if slot_fit.fits_some_slot(c, r)]
    online = [c for c in fitting if c.last_active_sec is not None and now - c.last_active_sec < heartbeat_timeout_sec]
    if not online:
        heard = "; ".join(f"{c.label!r} {_last_heard(c, now)}" for c in fitting[:5])
        return PairioWaitingReason(
            code=WaitingCode.NO_COMPUTE_CLIENT_ONLINE,
            message=f"no compute client online: none of the {len(fitting)} compute client(s) {which} with a slot that fits "
            f"has been heard from in the last {heartbeat_timeout_sec:g} s ({heard})",
        )
    runners = [c for c in online if c.runs_app(job.app_name)]
    if not runners:
        named = "; ".join(f"{c.label!r}: {', '.join(c.apps or ()) or 'no app'}" for c in online[:5])
        return PairioWaitingReason(
            code=WaitingCode.NO_COMPUTE_CLIENT_RUNS_APP,
            message=f"no online compute client {which} runs app {job.app_name!r}: the ones whose slots fit it run only "
            f"other apps ({named}); add the app on one (pairio-bridge apps add --dir DIR {job.app_name}=COMMAND)",
        )
    online = runners
    free_on = _clients_with_a_free_slot(s, online, r)
    if free_on:
        return PairioWaitingReason(
            code=WaitingCode.NOT_CLAIMED_YET,
            message=f"compute client {free_on[0].label!r} has a free slot that fits; it takes the job at its next claim "
            "unless older jobs take the slot or its machine has no room left",
        )
    slots = [slot for c in online for slot in c.slots if slot.fits(r)]
    ahead = _count_ahead(s, job, _fits_some_slot_sql(slots))
    more = "more than " if ahead >= QUEUE_COUNT_LIMIT else ""
    return PairioWaitingReason(
        code=WaitingCode.ALL_SLOTS_BUSY,
        message=f"all {sum(slot.multiplicity for slot in slots)} compute slot(s) that fit it are busy "
        f"(on {len(online)} online compute client(s)); {more}{ahead} job(s) that fit them are ahead of it",
        jobsAhead=ahead,
    )


def _last_heard(c: slot_fit.ClientSlots, now: float) -> str:
    return "never heard from" if c.last_active_sec is None else f"last heard {now - c.last_active_sec:.0f} s ago"


_RUNNING_RESOURCES = select(Job.compute_client_id, Job.num_cpus, Job.num_gpus, Job.memory_gb, Job.time_sec).where(
    Job.compute_client_id.in_(bindparam("clients", expanding=True)), Job.status.in_([st.value for st in ACTIVE_STATUSES])
)


def _clients_with_a_free_slot(s: Reader, clients: Sequence[slot_fit.ClientSlots], r: PairioJobRequiredResources) -> list[slot_fit.ClientSlots]:
    running: dict[str, list[PairioJobRequiredResources]] = defaultdict(list)
    for cc_id, cpus, gpus, memory, time_sec in s.execute(_RUNNING_RESOURCES, {"clients": [c.compute_client_id for c in clients]}):
        running[cc_id].append(PairioJobRequiredResources.model_construct(numCpus=cpus, numGpus=gpus, memoryGb=memory, timeSec=time_sec))
    return [c for c in clients if SlotUsage.of(c.slots, running[c.compute_client_id]).best_slot(r) is not None]


def _ahead_query(also: Optional[ColumnElement[bool]] = None, of: Optional[Any] = None) -> Select[tuple[int]]:
    """Runnable pending jobs of a service that claims take before a job (walks ix_jobs_claimable), up to the limit.
    The job: parameters ``service``, ``created`` and ``job_id``, or the columns of ``of`` (a table the query is correlated to).

    No test of 'canceled': a canceled pending job fails at once, and this way the index alone answers.
    """
    service, created, job_id = (
        (bindparam("service"), bindparam("created"), bindparam("job_id")) if of is None
        else (of.c.service_name, of.c.timestamp_created_sec, of.c.job_id)
    )
    q = select(Job.job_id).where(
        Job.status == JobStatus.PENDING.value,
        Job.is_runnable.is_(True),
        Job.service_name == service,
        tuple_(Job.timestamp_created_sec, Job.job_id) < tuple_(created, job_id),
    )
    if also is not None:
        q = q.where(also)
    if of is not None:
        q = q.correlate(of)
    return select(func.count()).select_from(q.limit(QUEUE_COUNT_LIMIT).subquery())


_AHEAD = prebuilt(_ahead_query())  # built once: composing it costs more than running it


def _jobs_ahead_item() -> Select[Any]:
    """An item row (``job_answers.items_subquery``) of kind 'a' with the number of jobs ahead of the job ``:job_id``,
    only when it is a runnable pending job (``queue_position``'s cases): counted once, whatever its other items."""
    queued = Job.__table__.alias("queued")
    return select(
        queued.c.job_id, literal_column("'a'"), null(), null(), null(), _ahead_query(of=queued).scalar_subquery(),
    ).where(
        queued.c.job_id == bindparam("job_id"), queued.c.status == JobStatus.PENDING.value, queued.c.is_runnable.is_(True),
        queued.c.canceled.is_(False),
    )


JOB_WITH_ITEMS_AND_AHEAD = prebuilt(job_answers.job_with_items_statement(more_items=[_jobs_ahead_item()]))
"""GET /v1/jobs/{id}'s read: the job's answer and, for a runnable pending job, its jobs ahead (``WaitingJob.of_stored``)."""


def _count_ahead(s: Reader, job: "AnyJob", also: Optional[ColumnElement[bool]] = None) -> int:
    params = {"service": job.service_name, "created": job.timestamp_created_sec, "job_id": job.job_id}
    return int(s.scalar(_AHEAD if also is None else _ahead_query(also), params) or 0)


# ---------------------------------------------------------------- claimed


def _claimed_reason(s: Reader, job: "AnyJob", status: JobStatus) -> Optional[PairioWaitingReason]:
    """From the bridge's latest wait note since the claim; a 'starting' job without one is being prepared."""
    notes = s.scalars(
        select(JobEvent.message)
        .where(JobEvent.job_id == job.job_id, JobEvent.status.is_(None), JobEvent.timestamp_sec >= (job.timestamp_starting_sec or 0))
        .order_by(JobEvent.event_id.desc())
        .limit(RECENT_NOTES)
    )
    for note in notes:
        if note.startswith(QUEUE_NOTE_PREFIX):
            _, _, reason = note.partition(": ")
            return PairioWaitingReason(code=WaitingCode.BACKEND_QUEUE, message=note, backendReason=reason or None)
        if note.startswith(HOST_BUSY_NOTE_PREFIX) and status == JobStatus.STARTING:
            return PairioWaitingReason(code=WaitingCode.HOST_BUSY, message=note)
        if note.startswith(STARTED_NOTE_PREFIX):
            break
    if status == JobStatus.STARTING:
        return PairioWaitingReason(
            code=WaitingCode.PREPARING,
            message=f"claimed by compute client {job.compute_client_name!r}, which is staging its inputs and submitting it",
        )
    return None


AnyJob = Union[Job, WaitingJob]
