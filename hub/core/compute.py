"""The bridge-facing side of the hub: claim, heartbeat, status reports, console output,
output files, resource logs, and expiry of compute clients that went silent.

Callers are compute clients (bridges) holding their private key, or a job's own
process holding the job private key issued when the job was claimed. Functions that
take a ``Session`` run inside the caller's transaction; those that take only the
``HubContext`` open short transactions of their own (the routes call them from worker
threads).
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from sqlalchemy import ColumnElement, Select, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session, object_session

from pairio.models import PairioComputeClientComputeSlot, PairioJobData, PairioJobRequiredResources, PairioJobSecret
from pairio.names import check_name
from pairio.status import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus, is_allowed_transition

from ..claim_waiters import ClaimCall
from ..context import HubContext, mark_runnable_changed, now_sec
from ..db.raw import on_connection, prebuilt
from ..db.tables import ComputeClient, Job, JobOutput
from ..errors import BadRequest, Conflict, Forbidden, HubError, NotFound, Unauthorized
from ..security import hash_secret, new_secret
from . import accounts, job_answers, job_secrets
from .claim_scope import ClaimScope, RunnableJobs, runnable_jobs
from .jobs import INSERT_EVENT, add_event, fail_job, get_job_row, jobs_public, on_job_completed, on_job_finished
from .slot_fit import forget_service_clients

JOB_KEY_PREFIX = "pairiojob"
MAX_CLAIM_JOBS = 100
# How many candidate rows one claim attempt looks at: bounds the work of a claim when
# many pending jobs are targeted at other clients or fit none of this client's slots.
CLAIM_SCAN_LIMIT = 2000
CLAIM_PAGE_SIZE = 100
# A bridge flushes the last console output and the resource log after the job ended
# (often after the hub already failed it: canceled, or lost): allow that for a while.
FINAL_FLUSH_GRACE_SEC = 300.0
MAX_ERROR_CHARS = 20_000
# Writing last_active_sec on every claim attempt of a long-polling bridge is wasted I/O.
LAST_ACTIVE_WRITE_INTERVAL_SEC = 1.0
EXPIRY_BATCH_SIZE = 100


# ---------------------------------------------------------------- who is calling


@dataclass(frozen=True)
class JobCaller:
    """A caller allowed to act on one job: its compute client, or the job's own key."""

    compute_client_id: str
    by_job_key: bool


def compute_client_for_key(s: Session, key: Optional[str]) -> ComputeClient:
    return accounts.compute_client_for_key(s, key)


def authorize_job_call(s: Session, job: Job, key: Optional[str]) -> JobCaller:
    """Accept the key of the compute client that claimed ``job``, or the job's private key."""
    key_hash = hash_secret(key) if key else None
    key_client_id = None
    if key_hash is not None and not _is_job_key(job, key_hash):
        key_client_id = s.execute(_CLIENT_ID_BY_KEY_HASH, {"key_hash": key_hash}).scalar()
    return _authorized(s, job, key_hash, key_client_id)


# The compute client whose key has this hash (what a job call checks besides the job's own key)
_CLIENT_ID_BY_KEY_HASH = (
    select(ComputeClient.__table__.c.compute_client_id)
    .where(ComputeClient.__table__.c.private_key_hash == bindparam("key_hash"))
    .limit(1)
)


def _is_job_key(job: Job, key_hash: str) -> bool:
    return job.job_private_key_hash is not None and job.job_private_key_hash == key_hash and bool(job.compute_client_id)


def _authorized(s: Session, job: Job, key_hash: Optional[str], key_client_id: Optional[str]) -> JobCaller:
    """The caller of a job call, given its key's hash and the compute client with that key (if any)."""
    if key_hash is None:
        raise Unauthorized(
            "no key: send 'Authorization: Bearer <compute client private key or job private key>'"
        )
    if _is_job_key(job, key_hash):
        _require_job_key_in_force(job)
        assert job.compute_client_id is not None
        return JobCaller(compute_client_id=job.compute_client_id, by_job_key=True)
    if key_client_id is None:
        raise Unauthorized(
            f"the key is neither a compute client key nor the private key of job {job.job_id} "
            "(a job key is replaced when the job is handed to another compute client)"
        )
    if job.compute_client_id != key_client_id:
        cc = s.get(ComputeClient, key_client_id)
        label = cc.label if cc is not None else key_client_id
        raise Forbidden(
            f"job {job.job_id} is not claimed by compute client {label} ({key_client_id}); "
            "stop working on it (it may have been handed back to pending after missed heartbeats)"
        )
    return JobCaller(compute_client_id=key_client_id, by_job_key=False)


def _require_job_key_in_force(job: Job) -> None:
    """A job's private key stops working ``FINAL_FLUSH_GRACE_SEC`` after the job finished (its last log uploads come before)."""
    if job.timestamp_finished_sec is not None and JobStatus(job.status).is_terminal:
        if now_sec() - job.timestamp_finished_sec > FINAL_FLUSH_GRACE_SEC:
            raise Unauthorized(f"job {job.job_id} finished more than {FINAL_FLUSH_GRACE_SEC:.0f} s ago; its private key no longer works")


def job_for_call(s: Session, job_id: str, key: Optional[str], *, lock: bool = True) -> tuple[Job, JobCaller]:
    """The job (locked for update where the database can, unless ``lock`` is False) and the authorized caller.

    One statement: the job's row and the id of the compute client whose key was sent (checked
    on every call, so a deleted client's key is refused at once).
    """
    key_hash = hash_secret(key) if key else None
    statement = _JOB_FOR_CALL_LOCKED if lock and s.get_bind().dialect.name == "postgresql" else _JOB_FOR_CALL
    row = s.execute(statement, {"job_id": job_id, "key_hash": key_hash}).first()
    if row is None:
        raise NotFound(f"no job {job_id!r} (it may have been deleted)")
    job, key_client_id = row
    return job, _authorized(s, job, key_hash, key_client_id)


def _job_for_call_statement() -> Select[tuple[Job, Optional[str]]]:
    key_client = _CLIENT_ID_BY_KEY_HASH.scalar_subquery().label("key_client_id")
    return select(Job, key_client).where(Job.job_id == bindparam("job_id"))


# built once: composing a select() per call costs more than running it
_JOB_FOR_CALL = _job_for_call_statement()
_JOB_FOR_CALL_LOCKED = _job_for_call_statement().with_for_update(of=Job)


def touch_client_of(s: Session, job: Job) -> None:
    """A job's own process was heard from (the original SDK's calls with its job key): its compute client lives.

    The original compute client itself calls rarely (its jobs talk to the hub for it), so without this
    its running jobs would be taken for lost after the heartbeat timeout."""
    cc = s.get(ComputeClient, job.compute_client_id) if job.compute_client_id else None
    if cc is not None:
        _touch(cc, now_sec(), throttled=True)


def _touch(cc: ComputeClient, now: float, *, throttled: bool = False) -> None:
    """Record that the client was heard from (claim attempts of a waiting bridge write it at most once a second)."""
    if not throttled or cc.last_active_sec is None or now - cc.last_active_sec >= LAST_ACTIVE_WRITE_INTERVAL_SEC:
        cc.last_active_sec = now


# ---------------------------------------------------------------- heartbeat and cancellation


def heartbeat(s: Session, key: Optional[str], active_job_ids: Sequence[str]) -> list[str]:
    """Record that the client is alive; return the jobs it should stop.

    Those are the given jobs (and the client's own starting/running ones) that were
    canceled, deleted, finished in the hub, or handed to another compute client.
    """
    return heartbeat_of(s, compute_client_for_key(s, key), active_job_ids)


def heartbeat_of(s: Session, cc: ComputeClient, active_job_ids: Sequence[str]) -> list[str]:
    """``heartbeat`` for a client already looked up (a waiting heartbeat reads its notify generation in between)."""
    _touch(cc, now_sec())
    return jobs_to_stop(s, cc, active_job_ids)


def record_bridge_info(cc: ComputeClient, info: dict[str, Any]) -> None:
    """Keep what the bridge says of where and how it runs (written only when it changed)."""
    current = {k: v for k, v in (cc.bridge_info or {}).items() if k != "timestampReportedSec"}
    if current != info:
        cc.bridge_info = {**info, "timestampReportedSec": now_sec()}
        forget_service_clients(cc.service_name, object_session(cc))  # the apps it runs: a waiting reason names them


def jobs_to_stop(s: Session, cc: ComputeClient, active_job_ids: Sequence[str]) -> list[str]:
    given = list(dict.fromkeys(active_job_ids))
    stop: set[str] = set()
    found: dict[str, Job] = {}
    if given:
        found = {j.job_id: j for j in s.scalars(select(Job).where(Job.job_id.in_(given)))}
    for job_id in given:
        job = found.get(job_id)
        if (
            job is None
            or job.compute_client_id != cc.compute_client_id
            or JobStatus(job.status) in TERMINAL_STATUSES
            or job.canceled
        ):
            stop.add(job_id)
    stop.update(
        s.scalars(
            select(Job.job_id).where(
                Job.compute_client_id == cc.compute_client_id,
                Job.status.in_([st.value for st in ACTIVE_STATUSES]),
                Job.canceled.is_(True),
            )
        )
    )
    return sorted(stop)


def active_jobs(s: Session, key: Optional[str]) -> list[PairioJobData]:
    """The client's starting and running jobs, secrets included (for a bridge that restarted)."""
    cc = compute_client_for_key(s, key)
    rows = s.scalars(
        select(Job)
        .where(Job.compute_client_id == cc.compute_client_id, Job.status.in_([st.value for st in ACTIVE_STATUSES]))
        .order_by(Job.timestamp_starting_sec, Job.job_id)
    ).all()
    return jobs_public(s, rows, include_private=True)


# ---------------------------------------------------------------- claim


@dataclass
class Capacity:
    """What the compute client has free right now; None means no limit given."""

    numCpus: Optional[int] = None
    numGpus: Optional[int] = None
    memoryGb: Optional[float] = None

    def fits(self, r: PairioJobRequiredResources) -> bool:
        return (
            (self.numCpus is None or r.numCpus <= self.numCpus)
            and (self.numGpus is None or r.numGpus <= self.numGpus)
            and (self.memoryGb is None or r.memoryGb <= self.memoryGb + 1e-9)
        )

    def take(self, r: PairioJobRequiredResources) -> None:
        if self.numCpus is not None:
            self.numCpus -= r.numCpus
        if self.numGpus is not None:
            self.numGpus -= r.numGpus
        if self.memoryGb is not None:
            self.memoryGb -= r.memoryGb


@dataclass
class SlotUsage:
    """How many more jobs each of a client's compute slots can take, and how many it may hold ahead beyond them
    (``spare``: claimed ahead of a free slot, see ``ClaimNowBody.aheadJobs``)."""

    slots: list[PairioComputeClientComputeSlot]
    free: list[int] = field(default_factory=list)
    spare: int = 0

    @classmethod
    def of(cls, slots: list[PairioComputeClientComputeSlot], running: Sequence[PairioJobRequiredResources], ahead: int = 0) -> "SlotUsage":
        """``ahead``: how many jobs the client may hold beyond its slots (those it holds already count against it)."""
        usage = cls(slots=slots, free=[slot.multiplicity for slot in slots])
        beyond = 0
        for r in running:
            # a job beyond the slots is one held ahead, or one that fits no slot any more (slots changed)
            beyond += not usage.take(r)
        usage.spare = max(0, ahead - beyond)
        return usage

    def best_slot(self, r: PairioJobRequiredResources) -> Optional[int]:
        """The smallest free slot the job fits, keeping big slots for big jobs; with none free but ``spare`` left, the
        smallest it fits at all (the job waits for it at the client)."""
        fitting = [i for i, slot in enumerate(self.slots) if self.free[i] > 0 and slot.fits(r)]
        if not fitting and self.spare > 0:
            fitting = [i for i, slot in enumerate(self.slots) if slot.fits(r)]
        if not fitting:
            return None
        return min(fitting, key=lambda i: (self.slots[i].numGpus, self.slots[i].numCpus, self.slots[i].memoryGb, self.slots[i].timeSec))

    def take(self, r: PairioJobRequiredResources) -> bool:
        i = self.best_slot(r)
        if i is None:
            return False
        if self.free[i] > 0:
            self.free[i] -= 1
        else:
            self.spare -= 1
        return True

    def free_slots(self) -> list[PairioComputeClientComputeSlot]:
        return list(self.slots) if self.spare > 0 else [slot for slot, n in zip(self.slots, self.free) if n > 0]


@dataclass
class ClaimedJob:
    answer: dict[str, Any]
    """The job as its compute client sees it (``job_answers.job_answer`` with its secrets, the JSON
    of ``ComputeJob``), with jobPrivateKey: the plain key, shown this once."""

    @property
    def job(self) -> PairioJobData:
        """The answer as a model (for callers in the hub's process: tests, benchmarks); secrets as stored."""
        secrets = self.answer["secrets"]
        job = PairioJobData.model_validate({**self.answer, "secrets": None})
        if secrets:
            job.secrets = [PairioJobSecret.model_construct(**x) for x in secrets]
        return job


def resources_of(job: Any) -> PairioJobRequiredResources:
    """A job's required resources (an ORM ``Job`` or a row with its resource columns)."""
    return PairioJobRequiredResources(numCpus=job.num_cpus, numGpus=job.num_gpus, memoryGb=job.memory_gb, timeSec=job.time_sec)


_J = Job.__table__.c
# Claims read and write with Core statements built once (composing ORM statements per call cost
# more than running them): the columns a claim decides by, and the rows it hands out.
_CANDIDATE_COLUMNS = (
    _J.job_id, _J.timestamp_created_sec, _J.num_cpus, _J.num_gpus, _J.memory_gb, _J.time_sec,
    _J.target_compute_client_ids, _J.app_name, _J.processor_name,
)
_RUNNING_RESOURCES = select(_J.num_cpus, _J.num_gpus, _J.memory_gb, _J.time_sec).where(
    _J.compute_client_id == bindparam("cc_id"), _J.status.in_([st.value for st in ACTIVE_STATUSES])
)
_CLAIMED_WITH_ITEMS = prebuilt(job_answers.job_with_items_statement(_J.secrets))
_TAKE_JOB = (
    update(Job.__table__)
    .where(
        _J.job_id == bindparam("take_job_id"), _J.status == JobStatus.PENDING.value, _J.is_runnable.is_(True), _J.canceled.is_(False)
    )
    .values(
        status=JobStatus.STARTING.value,
        compute_client_id=bindparam("take_cc_id"),
        compute_client_name=bindparam("take_cc_name"),
        compute_client_user_id=bindparam("take_cc_user_id"),
        timestamp_starting_sec=bindparam("take_now"),
        # a fresh private key per claimed job: only its hash is stored, the plain key goes to the bridge once
        job_private_key_hash=bindparam("take_key_hash"),
    )
)


# A slot's bounds on a job's resources: (name in bound parameters, column, slot's minimum, slot's maximum).
_SLOT_BOUNDS = (
    ("cpus", "num_cpus", "minNumCpus", "numCpus"),
    ("gpus", "num_gpus", "minNumGpus", "numGpus"),
    ("memory", "memory_gb", "minMemoryGb", "memoryGb"),
    ("time", "time_sec", "minTimeSec", "timeSec"),
)


def _fits_some_slot_sql(slots: Sequence[PairioComputeClientComputeSlot]) -> ColumnElement[bool]:
    """A WHERE clause that narrows candidates to those fitting one of the slots (hub/core/waiting.py)."""
    return or_(*(and_(*(_J[col].between(getattr(slot, lo), getattr(slot, hi)) for _, col, lo, hi in _SLOT_BOUNDS)) for slot in slots))


def _fits_free_slots_sql(slots: int) -> ColumnElement[bool]:
    """``_fits_some_slot_sql`` for ``slots`` free slots whose bounds are bound parameters (``_slot_params``)."""
    return or_(
        *(
            and_(*(_J[col].between(bindparam(f"slot{i}_min_{k}"), bindparam(f"slot{i}_max_{k}")) for k, col, _, _ in _SLOT_BOUNDS))
            for i in range(slots)
        )
    )


def _slot_params(slots: Sequence[PairioComputeClientComputeSlot]) -> dict[str, Any]:
    return {
        f"slot{i}_{end}_{k}": getattr(slot, attr)
        for i, slot in enumerate(slots)
        for k, _, lo, hi in _SLOT_BOUNDS
        for end, attr in (("min", lo), ("max", hi))
    }


@functools.lru_cache(maxsize=256)
def _walk_statement(slots: int, capacity: tuple[bool, bool, bool], by_app: bool, after: bool, locked: bool) -> Select[Any]:
    """A page of pending runnable jobs of ``:service`` fitting one of ``slots`` free slots, oldest first (built once per shape)."""
    q = select(*_CANDIDATE_COLUMNS).where(
        _J.status == JobStatus.PENDING.value,
        _J.is_runnable.is_(True),
        _J.canceled.is_(False),
        _J.service_name == bindparam("service"),
        _fits_free_slots_sql(slots),
    )
    if by_app:
        q = q.where(_J.app_name == bindparam("app_name"))
    cpus, gpus, memory = capacity
    if cpus:
        q = q.where(_J.num_cpus <= bindparam("cap_cpus"))
    if gpus:
        q = q.where(_J.num_gpus <= bindparam("cap_gpus"))
    if memory:
        q = q.where(_J.memory_gb <= bindparam("cap_memory"))
    if after:
        created, job_id = bindparam("after_created"), bindparam("after_job_id")
        q = q.where(or_(_J.timestamp_created_sec > created, and_(_J.timestamp_created_sec == created, _J.job_id > job_id)))
    q = q.order_by(_J.timestamp_created_sec, _J.job_id).limit(bindparam("page_size"))
    if locked:
        q = q.with_for_update(skip_locked=True)
    return q


def _is_targeted_elsewhere(job: Any, compute_client_id: str) -> bool:
    targets = job.target_compute_client_ids
    return targets is not None and compute_client_id not in targets


def claim_jobs(
    ctx: HubContext, key: Optional[str], max_jobs: int, capacity: Optional[Capacity] = None, scope: Optional[ClaimScope] = None
) -> list[ClaimedJob]:
    """One claim attempt in one transaction: hand up to ``max_jobs`` runnable jobs to the client.

    Oldest first; each job fits a free compute slot and the capacity left, and is one the
    bridge says it can run (``scope``, hub/core/claim_scope.py). Claiming is a conditional
    UPDATE (``WHERE status = 'pending'``) checked by its row count, so two clients racing
    never get the same job; on PostgreSQL the candidates are also read with ``FOR UPDATE
    SKIP LOCKED`` so racing claims take different rows instead of waiting for each other.
    """
    with ctx.transaction() as s:
        return claim_jobs_in(s, key, max_jobs, capacity, scope)


def claim_jobs_in(
    s: Session, key: Optional[str], max_jobs: int, capacity: Optional[Capacity] = None, scope: Optional[ClaimScope] = None,
    *, ahead: int = 0, call: Optional[ClaimCall] = None,
) -> list[ClaimedJob]:
    """``claim_jobs`` in the caller's transaction; ``ahead``: jobs the client may hold beyond its slots (``SlotUsage``),
    none while ``call`` (this claim's place among the waiting ones) sees another client of the service waiting."""
    if not 1 <= max_jobs <= MAX_CLAIM_JOBS:
        raise BadRequest(f"maxJobs must be between 1 and {MAX_CLAIM_JOBS}")
    capacity = Capacity(**vars(capacity)) if capacity else Capacity()
    cc = compute_client_for_key(s, key)
    now = now_sec()
    _touch(cc, now, throttled=True)
    accounts.require_role(s, cc.service_name, cc.user_id, "process_jobs")
    if call is not None:
        call.identify(cc.service_name, cc.compute_client_id, scope.apps if scope is not None else None)
        if ahead and call.others_waiting():
            ahead = 0  # another bridge of the service is idle: it starts them now, not when a slot frees here
    runnable = runnable_jobs(s, cc.service_name, scope) if scope is not None else None
    if runnable is not None and not runnable.processors:
        return []  # nothing of this service is runnable there (e.g. a bridge with no app commands)
    running = s.execute(_RUNNING_RESOURCES, {"cc_id": cc.compute_client_id}).all()
    usage = SlotUsage.of(
        [PairioComputeClientComputeSlot.model_validate(x) for x in cc.compute_slots], [resources_of(j) for j in running], ahead
    )
    keys: dict[str, str] = {}
    for job in _candidates(s, cc, usage, capacity, max_jobs, runnable):
        r = resources_of(job)
        if not capacity.fits(r) or usage.best_slot(r) is None:
            continue
        job_key = new_secret(JOB_KEY_PREFIX)
        if not _take_job(s, job.job_id, cc, now, hash_secret(job_key)):
            continue  # another claim got it first
        keys[job.job_id] = job_key
        usage.take(r)
        capacity.take(r)
        if len(keys) >= max_jobs:
            break
    return _claimed_answers(s, keys)


@dataclass
class _ScanBudget:
    left: int = CLAIM_SCAN_LIMIT


def _candidates(
    s: Session, cc: ComputeClient, usage: SlotUsage, capacity: Capacity, max_jobs: int, runnable: Optional[RunnableJobs]
) -> Iterator[Any]:
    """Pending runnable jobs of the client's service that might fit and that it can run, oldest first (rows of ``_CANDIDATE_COLUMNS``).

    Without ``runnable``, one walk of ``ix_jobs_claimable``; with it, one walk per app the
    bridge runs (``ix_jobs_claimable_app``), merged by age. All walks share one scan limit.
    """
    budget = _ScanBudget()
    page_size = min(max_jobs, CLAIM_PAGE_SIZE)
    if runnable is None:
        walks = [_pending_walk(s, cc, usage, capacity, page_size, budget)]
    else:
        walks = [_pending_walk(s, cc, usage, capacity, page_size, budget, app_name=a) for a in runnable.app_names]
    merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, key=lambda j: (j.timestamp_created_sec, j.job_id))
    for job in merged:
        if _is_targeted_elsewhere(job, cc.compute_client_id):
            continue
        if runnable is not None and not runnable.accepts(job):
            continue  # a processor it cannot run: the job stays pending for a bridge that can
        yield job


def _pending_walk(
    s: Session, cc: ComputeClient, usage: SlotUsage, capacity: Capacity, page_size: int, budget: _ScanBudget,
    *, app_name: Optional[str] = None,
) -> Iterator[Any]:
    """Pending runnable jobs of the client's service (and of one app) that might fit, oldest first, a page at a time.

    The first page is only as large as the claim needs: on PostgreSQL every row read stays
    locked until the claim commits and racing claims skip it, so a claim for one job must
    not hide a hundred from the others (and reading fewer rows is cheaper everywhere).
    """
    postgres = s.get_bind().dialect.name == "postgresql"
    after: Optional[tuple[float, str]] = None
    caps = (capacity.numCpus is not None, capacity.numGpus is not None, capacity.memoryGb is not None)
    while budget.left > 0:
        free = usage.free_slots()
        if not free:
            return
        params = {"service": cc.service_name, "page_size": page_size, **_slot_params(free)}
        if app_name is not None:
            params["app_name"] = app_name
        if capacity.numCpus is not None:
            params["cap_cpus"] = capacity.numCpus
        if capacity.numGpus is not None:
            params["cap_gpus"] = capacity.numGpus
        if capacity.memoryGb is not None:
            params["cap_memory"] = capacity.memoryGb + 1e-9
        if after is not None:
            params["after_created"], params["after_job_id"] = after
        q = _walk_statement(len(free), caps, app_name is not None, after is not None, postgres)
        page = s.execute(q, params).all()
        if not page:
            return
        budget.left -= len(page)
        yield from page
        if len(page) < page_size:
            return
        after = (page[-1].timestamp_created_sec, page[-1].job_id)
        page_size = min(page_size * 2, CLAIM_PAGE_SIZE)


def _take_job(s: Session, job_id: str, cc: ComputeClient, now: float, key_hash: str) -> bool:
    result = s.execute(_TAKE_JOB, {
        "take_job_id": job_id, "take_cc_id": cc.compute_client_id, "take_cc_name": cc.label, "take_cc_user_id": cc.user_id,
        "take_now": now, "take_key_hash": key_hash,
    })
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    # the job's row exists (it was just updated): its event goes in at once, by a prebuilt insert
    on_connection(s.connection()).execute(INSERT_EVENT, {
        "job_id": job_id, "timestamp_sec": now_sec(), "status": JobStatus.STARTING.value,
        "message": f"claimed by compute client {cc.label} ({cc.compute_client_id})",
    })
    return True


def _claimed_answers(s: Session, keys: dict[str, str]) -> list[ClaimedJob]:
    """The claimed jobs as their compute client sees them, in the order claimed (oldest first), with their plain keys.

    One statement per job (a claim takes one job at a time but for batch bridges): its columns,
    secrets, dependencies and outputs.
    """
    claimed = []
    reads = on_connection(s.connection())  # the job's row as the UPDATE left it (nothing of it waits in the session)
    for job_id, plain_key in keys.items():
        job = job_answers.StoredJob.from_rows(reads.execute(_CLAIMED_WITH_ITEMS, {"job_id": job_id}).all())
        assert job is not None  # claimed in this transaction
        answer = job_answers.job_answer(job.row, job.dependencies, job.outputs, include_private=True)
        answer["jobPrivateKey"] = plain_key
        if answer["secrets"]:  # as ComputeJob's StoredJobSecret dumps them
            answer["secrets"] = [{"name": x.get("name"), "value": x.get("value")} for x in answer["secrets"]]
        claimed.append(ClaimedJob(answer=answer))
    return claimed


# ---------------------------------------------------------------- status reports


@dataclass(frozen=True)
class StatusReport:
    jobId: str
    status: JobStatus
    canceled: bool
    error: Optional[str]


def report_of(job: Job) -> StatusReport:
    return StatusReport(jobId=job.job_id, status=JobStatus(job.status), canceled=job.canceled, error=job.error)


def set_job_status(
    s: Session, job_id: str, key: Optional[str], new: JobStatus, error: Optional[str] = None, *, image_digest: Optional[str] = None
) -> StatusReport:
    """Apply a status reported by the job's compute client; only legal transitions change anything."""
    job, caller = job_for_call(s, job_id, key)
    return _set_status(s, job, caller, new, error, image_digest=image_digest)


def _set_status(
    s: Session, job: Job, caller: JobCaller, new: JobStatus, error: Optional[str] = None, *, image_digest: Optional[str] = None
) -> StatusReport:
    """``set_job_status`` for a job already read and its caller authorized."""
    if caller.by_job_key:
        touch_client_of(s, job)
    if error is not None and new != JobStatus.FAILED:
        raise BadRequest("'error' is only accepted with status 'failed'")
    current = JobStatus(job.status)
    if image_digest is not None and not current.is_terminal:
        job.image_digest = image_digest  # a finished job's record stays as it was
    if new == current:
        return report_of(job)  # a repeated report (a retry, a restarted bridge): nothing to do
    if new in (JobStatus.PENDING, JobStatus.STARTING) or not is_allowed_transition(current, new):
        raise Conflict(_illegal_transition_message(job, current, new))
    if new == JobStatus.RUNNING:
        _mark_running(s, job)
    elif new == JobStatus.COMPLETED:
        _complete(s, job)
    else:
        _report_failed(s, job, error)
    return report_of(job)


MAX_JOB_NOTE_CHARS = 1000


def add_job_note(s: Session, job_id: str, key: Optional[str], message: str) -> None:
    """A compute client's note on its job's timeline, e.g. why it waits in a batch queue."""
    job, _ = job_for_call(s, job_id, key)
    _require_writable(job, "a note", allow_final_flush=False)
    message = " ".join(message.split())
    if not message:
        raise BadRequest("the note is empty; send a message such as 'queued on Slurm: Resources'")
    add_event(s, job.job_id, None, _clean_error(job, message)[:MAX_JOB_NOTE_CHARS])


MAX_REPORTS_PER_CALL = 500
"""how many jobs one call for several may name (notes, 'running' reports)"""
R = TypeVar("R")


def for_each_job(s: Session, key: Optional[str], job_ids: Sequence[str], call: Callable[[int], R]) -> tuple[list[R], list[tuple[str, int, str]]]:
    """``call(i)`` for the i-th of several jobs of the compute client whose key this is, each taken or refused on its
    own: what the calls returned, and the refused ones as (job id, the HTTP status the call for that job alone would
    answer, why). Every call checks all before it writes, so a refusal leaves nothing behind. The key must be a
    compute client's (a job's own key speaks for its job only, one call at a time)."""
    compute_client_for_key(s, key)
    if s.get_bind().dialect.name == "postgresql":
        # every row locked at once, in one order, before any is used: two such calls (a bridge's notes and its
        # 'running' reports) naming the same jobs in other orders wait for each other, never in a deadlock
        s.execute(select(Job.job_id).where(Job.job_id.in_(sorted(set(job_ids)))).order_by(Job.job_id).with_for_update(of=Job))
    done: list[R] = []
    refused: list[tuple[str, int, str]] = []
    for i, job_id in enumerate(job_ids):
        try:
            done.append(call(i))
        except HubError as e:
            refused.append((job_id, e.status_code, e.message))
    return done, refused


def add_job_notes(s: Session, key: Optional[str], notes: Sequence[tuple[str, str]]) -> list[tuple[str, int, str]]:
    """Notes (job id, message) on several jobs' timelines, as ``add_job_note`` takes each; the refused ones."""
    return for_each_job(s, key, [job_id for job_id, _ in notes], lambda i: add_job_note(s, notes[i][0], key, notes[i][1]))[1]


def set_jobs_running(s: Session, key: Optional[str], job_ids: Sequence[str]) -> tuple[list[StatusReport], list[tuple[str, int, str]]]:
    """'running' reports of several jobs, as ``set_job_status`` takes each: the reports taken, and the refused ones."""
    return for_each_job(s, key, job_ids, lambda i: set_job_status(s, job_ids[i], key, JobStatus.RUNNING))


MAX_RELEASE_REASON_CHARS = 200
MAX_AHEAD_JOBS = 64
MAX_STARTED_AGO_SEC = 366 * 24 * 3600.0


def release_job(s: Session, job_id: str, key: Optional[str], reason: str) -> StatusReport:
    """The compute client that claimed a job gives it back before starting it (it claimed ahead of a free slot and
    none freed in time): pending again for any compute client, or failed as canceled if its user canceled it."""
    job, caller = job_for_call(s, job_id, key)
    if caller.by_job_key:
        raise Forbidden(f"a job's own key cannot give job {job.job_id} back; its compute client's key can")
    current = JobStatus(job.status)
    if current != JobStatus.STARTING:
        raise Conflict(
            f"job {job.job_id} is {current.value}: only a job still starting (claimed, not yet running) can be given back; "
            "report its end instead"
        )
    who = f"compute client {job.compute_client_name} ({job.compute_client_id})"
    reason = " ".join(reason.split())[:MAX_RELEASE_REASON_CHARS] or "no reason given"
    if job.canceled:
        fail_job(s, job, _canceled_error(job, f"{who} gave it back before starting it"))
    elif not _requeue(s, job, f"{who} gave the job back ({reason})"):
        raise Conflict(f"job {job.job_id} changed while it was being given back; look at it again")
    s.refresh(job)
    return report_of(job)


def _illegal_transition_message(job: Job, current: JobStatus, new: JobStatus) -> str:
    if current.is_terminal:
        return f"job {job.job_id} is already {current.value}, which is final; it cannot become {new.value}"
    allowed = sorted(st.value for st in {JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED} if is_allowed_transition(current, st))
    return (
        f"job {job.job_id} is {current.value}; a compute client may set it to {' or '.join(allowed)}, "
        f"not {new.value} (order: starting -> running -> completed, or failed from any non-terminal status)"
    )


def _mark_running(s: Session, job: Job, at: Optional[float] = None) -> None:
    job.status = JobStatus.RUNNING.value
    job.timestamp_started_sec = now_sec() if at is None else at
    add_event(
        s, job.job_id, JobStatus.RUNNING, f"running on compute client {job.compute_client_name} ({job.compute_client_id})",
        at=job.timestamp_started_sec,
    )


_MISSING_OUTPUTS = (
    select(JobOutput.__table__.c.name)
    .where(JobOutput.__table__.c.job_id == bindparam("job_id"), JobOutput.__table__.c.size.is_(None))
    .order_by(JobOutput.__table__.c.name)
)


def _complete(s: Session, job: Job) -> None:
    if job.canceled:
        # The user asked for it to stop; honour that even though it finished first.
        fail_job(s, job, _canceled_error(job, "the job finished before its compute client could stop it"))
        return
    missing = s.scalars(_MISSING_OUTPUTS, {"job_id": job.job_id}).all() if (job.job_definition or {}).get("outputFiles") else []
    if missing:
        raise Conflict(
            f"job {job.job_id} cannot complete: output(s) {', '.join(missing)} not uploaded; "
            f"upload each with PUT /v1/compute/jobs/{job.job_id}/outputs/<name> first, or report 'failed'"
        )
    job.status = JobStatus.COMPLETED.value
    job.timestamp_finished_sec = now_sec()
    add_event(s, job.job_id, JobStatus.COMPLETED, "completed")
    on_job_finished(s, job)
    on_job_completed(s, job)


def _report_failed(s: Session, job: Job, error: Optional[str]) -> None:
    text = _clean_error(job, error) if error else "the compute client reported a failure without an error message"
    if job.canceled:
        text = _canceled_error(job, f"compute client said: {text}")
    fail_job(s, job, text)


def _canceled_error(job: Job, detail: str) -> str:
    who = job.canceled_by_user_id or "a user"
    return f"canceled by {who} ({detail})"


def _clean_error(job: Job, error: str) -> str:
    """The bridge's error with the job's secret values removed, and bounded in size."""
    text = job_secrets.mask_error_text(job, error)
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + " [truncated]"
    return text


# ---------------------------------------------------------------- console output


class ConsoleOffsetMismatch(Conflict):
    """An append whose offset is past the end of what the hub has; carries the size to resume from."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class ConsoleAppendResult:
    consoleOutputSize: int
    truncated: bool


def _require_writable(job: Job, what: str, *, allow_final_flush: bool) -> None:
    """Writes are for claimed jobs, and (for logs) a short while after they ended."""
    status = JobStatus(job.status)
    if status in ACTIVE_STATUSES:
        return
    if allow_final_flush and status.is_terminal and job.timestamp_finished_sec is not None:
        if now_sec() - job.timestamp_finished_sec <= FINAL_FLUSH_GRACE_SEC:
            return
        raise Conflict(f"job {job.job_id} finished more than {FINAL_FLUSH_GRACE_SEC:.0f} s ago; its {what} can no longer change")
    raise Conflict(f"job {job.job_id} is {status.value}; {what} is accepted only while it is starting or running")


def append_console_output(ctx: HubContext, s: Session, job_id: str, key: Optional[str], offset: int, data: bytes) -> ConsoleAppendResult:
    """Add ``data``, which starts at byte ``offset`` of what the bridge sends, to the job's console output.

    Offsets count the raw bytes the bridge sent (``console_input_size``); the stored
    output is masked (hub/core/job_secrets.py), so its size differs. A retried append
    (offset at or before the end) adds only the bytes the hub does not have yet; an
    offset past the end means bytes were lost in between and is refused with the size
    to resume from. Beyond ``max_console_output_bytes`` received, output is dropped (a
    job event says so).
    """
    job, _ = job_for_call(s, job_id, key)
    return _append_console(ctx, s, job, offset, data)


def _append_console(ctx: HubContext, s: Session, job: Job, offset: int, data: bytes) -> ConsoleAppendResult:
    """``append_console_output`` for a job already read and its caller authorized."""
    _require_writable(job, "console output", allow_final_flush=True)
    received = job.console_input_size or 0
    cap = ctx.settings.max_console_output_bytes
    if offset > received and received < cap:
        raise ConsoleOffsetMismatch(
            f"console output offset {offset} is past the end of the {received} bytes the hub has; resend from offset {received}",
            received,
        )
    if offset >= cap:
        return ConsoleAppendResult(consoleOutputSize=received, truncated=bool(data))
    kept = data[: cap - offset]
    new = kept[received - offset:]  # a retry resends bytes the hub has: skip them
    if new:
        job_secrets.store_console_bytes(s, ctx.files.console_output_path(job.job_id), job, new)
        job.console_input_size = received + len(new)
    truncated = len(kept) < len(data)
    if truncated and received < cap:
        add_event(s, job.job_id, None, f"console output reached the hub's limit of {cap} bytes; later output is dropped")
    return ConsoleAppendResult(consoleOutputSize=job.console_input_size or 0, truncated=truncated)


# ---------------------------------------------------------------- output files


@dataclass(frozen=True)
class UploadTarget:
    job_id: str
    output_name: str
    final_path: Path
    temp_path: Path


def valid_output_name(name: str) -> str:
    try:
        return check_name(name, "output name")
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _declared_output(s: Session, job: Job, name: str) -> JobOutput:
    row = s.get(JobOutput, (job.job_id, name))
    if row is None:
        declared = ", ".join(s.scalars(select(JobOutput.name).where(JobOutput.job_id == job.job_id).order_by(JobOutput.name))) or "none"
        raise NotFound(f"job {job.job_id} declares no output {name!r} (its outputs: {declared})")
    return row


def prepare_output_upload(ctx: HubContext, job_id: str, output_name: str, key: Optional[str]) -> UploadTarget:
    """Check that the upload is allowed before any byte is read; returns where to write it."""
    valid_output_name(output_name)
    with ctx.transaction() as s:
        job, _ = job_for_call(s, job_id, key)
        _declared_output(s, job, output_name)
        _require_writable(job, "output upload", allow_final_flush=False)
        final = ctx.files.output_path(job.job_id, output_name)
    job_secrets.private_dir(final.parent)
    # Names cannot start with '.', so a temp file never collides with an output.
    temp = final.parent / f".upload-{output_name}-{uuid.uuid4().hex}"
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # the upload keeps this mode
    return UploadTarget(job_id=job.job_id, output_name=output_name, final_path=final, temp_path=temp)


def finish_output_upload(ctx: HubContext, target: UploadTarget, key: Optional[str], size: int) -> JobOutput:
    """Move the uploaded file into place and record its size, if the job still accepts it."""
    with ctx.transaction() as s:
        job, _ = job_for_call(s, target.job_id, key)
        row = _declared_output(s, job, target.output_name)
        _require_writable(job, "output upload", allow_final_flush=False)
        os.replace(target.temp_path, target.final_path)
        row.size = size
        add_event(s, job.job_id, None, f"output file {target.output_name!r} uploaded ({size} bytes)")
        s.flush()
        return row


# ---------------------------------------------------------------- resource utilization log


def check_json_lines(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the resource utilization log must be UTF-8 JSON lines") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            raise BadRequest(f"line {number} of the resource utilization log is not JSON; send one JSON object per line") from None


def store_resource_log(ctx: HubContext, s: Session, job_id: str, key: Optional[str], data: bytes) -> None:
    """Replace the job's resource utilization log (JSON lines)."""
    job, _ = job_for_call(s, job_id, key)
    _store_resource_log(ctx, s, job, data)


def _store_resource_log(ctx: HubContext, s: Session, job: Job, data: bytes) -> None:
    """``store_resource_log`` for a job already read and its caller authorized."""
    _require_writable(job, "resource utilization log", allow_final_flush=True)
    check_json_lines(data)
    data = job_secrets.mask_resource_log(s, job, data)
    path = ctx.files.resource_log_path(job.job_id)
    temp = path.parent / f".upload-resource-log-{uuid.uuid4().hex}"
    try:
        job_secrets.write_at(temp, 0, data, len(data))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    job.has_resource_utilization_log = True


# ---------------------------------------------------------------- a finished job's report in one call


def finish_job(
    ctx: HubContext, s: Session, job_id: str, key: Optional[str], status: JobStatus, error: Optional[str], *,
    image_digest: Optional[str] = None, console: Optional[tuple[int, bytes]] = None, resource_log: Optional[bytes] = None,
    started_ago_sec: Optional[float] = None,
) -> tuple[StatusReport, int]:
    """A bridge's last words on a job in one transaction: its console's last bytes (offset, data),
    its resource log, then its final status; each checked as in its own call, and all or nothing.

    ``started_ago_sec``: a job still ``starting`` here ran from that many seconds ago, its 'running' report
    not sent (a short job): it is recorded running from then (not before its claim) first.
    A repeat of a report that already went through (its answer was lost) changes nothing.
    Returns the status report and the console bytes received.
    """
    if status not in (JobStatus.COMPLETED, JobStatus.FAILED):
        raise BadRequest(f"a job finishes as completed or failed, not {status.value}; report running with /status")
    job, caller = job_for_call(s, job_id, key)  # once: the steps below take the job as read and locked here
    current = JobStatus(job.status)
    if current == JobStatus.STARTING and started_ago_sec is not None:
        now = now_sec()
        _mark_running(s, job, at=max(job.timestamp_starting_sec or now, now - started_ago_sec))
        current = JobStatus.RUNNING
    if current != status and not is_allowed_transition(current, status):
        raise Conflict(_illegal_transition_message(job, current, status))  # before anything is written
    path = ctx.files.console_output_path(job.job_id)
    stored = job.console_output_size or 0
    try:
        if JobStatus(job.status) != status:
            if console is not None:
                _append_console(ctx, s, job, console[0], console[1])
            if resource_log is not None:
                _store_resource_log(ctx, s, job, resource_log)
        report = _set_status(s, job, caller, status, error, image_digest=image_digest)
    except BaseException:
        if console is not None and path.exists():
            os.truncate(path, stored)  # the console file as it was: nothing of a refused report stays
        raise
    return report, job.console_input_size or 0


# ---------------------------------------------------------------- lost compute clients


@dataclass
class ExpiryResult:
    failed_job_ids: list[str] = field(default_factory=list)
    requeued_job_ids: list[str] = field(default_factory=list)


def expire_lost_compute_clients(ctx: HubContext, now: Optional[float] = None) -> ExpiryResult:
    """Deal with the jobs of compute clients silent for longer than ``heartbeat_timeout_sec``.

    Running jobs fail (their process is gone or unreachable); starting jobs go back to
    pending for another client, as they never ran. Jobs of deleted compute clients are
    treated the same way. Each batch is a short transaction that re-checks every job
    under a row lock, so several hub processes may run this at once.
    """
    now = now_sec() if now is None else now
    silent_since = now - ctx.settings.heartbeat_timeout_sec
    result = ExpiryResult()
    while True:
        handled_before = len(result.failed_job_ids) + len(result.requeued_job_ids)
        with ctx.transaction() as s:
            batch = _lost_jobs(s, silent_since)
            for job_id, cc_id in batch:
                _expire_job(s, job_id, cc_id, silent_since, now, result)
        handled = len(result.failed_job_ids) + len(result.requeued_job_ids) - handled_before
        if len(batch) < EXPIRY_BATCH_SIZE or handled == 0:
            return result


def _lost_jobs(s: Session, silent_since: float) -> list[tuple[str, str]]:
    stale_clients = select(ComputeClient.compute_client_id).where(
        or_(ComputeClient.last_active_sec.is_(None), ComputeClient.last_active_sec < silent_since)
    )
    known_clients = select(ComputeClient.compute_client_id)
    rows = s.execute(
        select(Job.job_id, Job.compute_client_id)
        .where(
            Job.status.in_([st.value for st in ACTIVE_STATUSES]),
            or_(Job.compute_client_id.in_(stale_clients), Job.compute_client_id.not_in(known_clients)),
        )
        .order_by(Job.timestamp_starting_sec, Job.job_id)
        .limit(EXPIRY_BATCH_SIZE)
    ).all()
    return [(job_id, cc_id) for job_id, cc_id in rows if cc_id is not None]


def _loss_reason(job: Job, cc: Optional[ComputeClient], now: float) -> str:
    name = f"compute client {job.compute_client_name} ({job.compute_client_id})"
    if cc is None:
        return f"{name} was deleted"
    last_seen = cc.last_active_sec if cc.last_active_sec is not None else (job.timestamp_starting_sec or now)
    return f"{name} stopped sending heartbeats for {now - last_seen:.0f} s"


def _expire_job(s: Session, job_id: str, cc_id: str, silent_since: float, now: float, result: ExpiryResult) -> None:
    try:
        job = get_job_row(s, job_id, for_update=True)
    except NotFound:
        return  # deleted meanwhile
    if JobStatus(job.status) not in ACTIVE_STATUSES or job.compute_client_id != cc_id:
        return  # finished, or expired and re-claimed meanwhile (perhaps by another hub process)
    cc = s.get(ComputeClient, cc_id, populate_existing=True)
    if cc is not None and cc.last_active_sec is not None and cc.last_active_sec >= silent_since:
        return  # it heartbeated after we looked
    reason = _loss_reason(job, cc, now)
    if job.status == JobStatus.STARTING.value and not job.canceled:
        if _requeue(s, job, reason):
            result.requeued_job_ids.append(job.job_id)
        return
    if job.canceled:
        fail_job(s, job, _canceled_error(job, f"{reason} before stopping it"))
    else:
        fail_job(s, job, f"{reason}; the job was lost")
    result.failed_job_ids.append(job.job_id)


def _requeue(s: Session, job: Job, reason: str) -> bool:
    """Hand a job that never started back to pending (conditional: only if still starting on that client)."""
    done = s.execute(
        update(Job)
        .where(Job.job_id == job.job_id, Job.status == JobStatus.STARTING.value, Job.compute_client_id == job.compute_client_id)
        .values(
            status=JobStatus.PENDING.value,
            compute_client_id=None,
            compute_client_name=None,
            compute_client_user_id=None,
            timestamp_starting_sec=None,
            job_private_key_hash=None,
            # the next compute client sends its console output from offset 0
            console_input_size=0,
            console_output_size=0,
            console_pending=None,
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_event(s, job.job_id, JobStatus.PENDING, f"{reason} before the job started; it is pending again for another compute client")
    mark_runnable_changed(s)
    return True

