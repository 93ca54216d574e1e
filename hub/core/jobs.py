"""Jobs: create (with caching and dependencies), read, find, cancel, delete, and finish.

Every function runs inside the caller's transaction (``HubContext.transaction``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Optional, TypeVar
from urllib.parse import quote

from sqlalchemy import ColumnElement, Connection, Select, and_, bindparam, case, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from pairio.models import (
    PairioApp,
    PairioJobData,
    PairioJobDefinition,
    PairioJobEvent,
    PairioJobRequiredResources,
    PairioJobSecret,
)
from pairio.status import ACTIVE_STATUSES, JobStatus

from ..context import DELETE_FILES_AFTER_COMMIT, SECRETS_ERASED, HubContext, mark_job_to_stop, mark_runnable_changed, now_sec
from ..db.raw import RawReads, Reads, on_connection, prebuilt
from ..db.tables import (
    ApiKey,
    ComputeClient,
    DeletedJob,
    Job,
    JobDependency,
    JobEvent,
    JobInput,
    JobOutput,
    JobTag,
    Service,
    ServiceApp,
    ServiceUser,
)
from ..errors import BadRequest, Forbidden, NotFound
from ..security import hash_secret, new_id, url_hash
from . import accounts, job_answers, job_counts, job_secrets, slot_fit
from .definition import app_fingerprint, job_definition_hash, normalize_job_definition

SelectT = TypeVar("SelectT", bound=Select[Any])

MAX_FIND_LIMIT = 1000
DEFAULT_FIND_LIMIT = 100


@dataclass
class JobCreate:
    """Everything that describes a job to create (REST and wire protocol share it)."""

    serviceName: str
    jobDefinition: PairioJobDefinition
    requiredResources: PairioJobRequiredResources
    tags: list[str] = field(default_factory=list)
    batchId: Optional[str] = None
    targetComputeClientIds: Optional[list[str]] = None
    secrets: Optional[list[PairioJobSecret]] = None
    jobDependencies: list[str] = field(default_factory=list)
    skipCache: bool = False
    rerunFailing: bool = False
    deleteFailing: bool = False


def add_event(s: Session, job_id: str, status: Optional[JobStatus], message: str, at: Optional[float] = None) -> None:
    """A line on the job's timeline, at ``at`` (default: now)."""
    s.add(JobEvent(job_id=job_id, timestamp_sec=now_sec() if at is None else at, status=status.value if status else None, message=message))


def output_url(ctx: HubContext, job_id: str, name: str, file_base_name: str) -> str:
    # Percent-encoded: 'a?b.txt', 'x#y.txt' or '%2e%2e' are valid file names; ordinary names are unchanged.
    return f"{ctx.settings.base_url}/v1/jobs/{quote(job_id, safe='')}/outputs/{quote(name, safe='')}/{quote(file_base_name, safe='')}"


# ---------------------------------------------------------------- create


@dataclass(frozen=True)
class PreparedJob:
    """A job definition checked against its app and normalized, with its cache key (see ``prepare_job``)."""

    app: PairioApp
    spec_hash: str
    definition: PairioJobDefinition
    definition_hash: str


_PARSED_APPS: dict[tuple[str, str, str], PairioApp] = {}
_FINGERPRINTS: dict[tuple[str, str, str, str], str] = {}
_PARSED_APPS_MAX = 512


def parsed_app(row: ServiceApp) -> PairioApp:
    """The row's app spec as a model, parsed once per spec version (keyed by its hash). Do not modify it."""
    key = (row.service_name, row.app_name, row.spec_hash)
    app = _PARSED_APPS.get(key)
    if app is None:
        if len(_PARSED_APPS) >= _PARSED_APPS_MAX:
            _PARSED_APPS.clear()
            _FINGERPRINTS.clear()
        app = _PARSED_APPS[key] = PairioApp.model_validate(row.spec)
    return app


def cached_parsed_app(service_name: str, app_name: str, spec_hash: str) -> Optional[PairioApp]:
    """``parsed_app``'s result for this spec version, if it was parsed already."""
    return _PARSED_APPS.get((service_name, app_name, spec_hash))


def _fingerprint(row: ServiceApp, app: PairioApp, processor_name: str) -> str:
    key = (row.service_name, row.app_name, row.spec_hash, processor_name)
    fp = _FINGERPRINTS.get(key)
    if fp is None:
        fp = _FINGERPRINTS[key] = app_fingerprint(app, processor_name)
    return fp


def prepare_job(s: Session, user_id: str, req: JobCreate) -> PreparedJob:
    """Check the role and the definition, and compute the cache key; reads only (no write lock needed)."""
    accounts.require_role(s, req.serviceName, user_id, "create_jobs")
    app_name = req.jobDefinition.appName
    spec_hash = _spec_hash(s, req)
    app = _PARSED_APPS.get((req.serviceName, app_name, spec_hash)) if spec_hash else None
    if app is None:  # not parsed yet (or no such app: get_app says so)
        row = accounts.get_app(s, req.serviceName, app_name)
        app, spec_hash = parsed_app(row), row.spec_hash
    assert spec_hash is not None
    return _prepared(req, app, spec_hash)


def _prepared(req: JobCreate, app: PairioApp, spec_hash: str) -> PreparedJob:
    definition = normalize_job_definition(app, req.jobDefinition)
    key = (req.serviceName, req.jobDefinition.appName, spec_hash, definition.processorName)
    fingerprint = _FINGERPRINTS.get(key)
    if fingerprint is None:
        fingerprint = _FINGERPRINTS[key] = app_fingerprint(app, definition.processorName)
    return PreparedJob(app, spec_hash, definition, job_definition_hash(definition, fingerprint))


# Who is calling, whether they may create jobs in the service, and the app's spec version, in one
# round trip; any miss falls back to the checks that explain it (``prepare_request``).
_CALLER_SQL = text(
    "SELECT k.user_id, s.owner_user_id, su.create_jobs, su.admin, a.spec_hash"
    " FROM api_keys k"
    " JOIN services s ON s.service_name = :service"
    " LEFT JOIN service_users su ON su.service_name = s.service_name AND su.user_id = k.user_id"
    " LEFT JOIN service_apps a ON a.service_name = s.service_name AND a.app_name = :app"
    " WHERE k.key_hash = :key_hash AND NOT k.revoked"
)


def prepare_request(conn: Connection, token: Optional[str], req: JobCreate) -> tuple[str, PreparedJob]:
    """The caller's user id (from their API key) and ``prepare_job``'s result, with the usual errors."""
    if token:
        row = conn.execute(_CALLER_SQL, {"service": req.serviceName, "app": req.jobDefinition.appName, "key_hash": hash_secret(token)}).first()
        if row is not None and row.spec_hash and (row.owner_user_id == row.user_id or row.create_jobs or row.admin):
            app = _PARSED_APPS.get((req.serviceName, req.jobDefinition.appName, row.spec_hash))
            if app is not None:
                return row.user_id, _prepared(req, app, row.spec_hash)
    with Session(bind=conn) as s:  # in the connection's transaction
        user = accounts.user_for_api_key(s, token)
        return user, prepare_job(s, user, req)


# The app version (spec hash) each (service, app) had when this process last prepared a job of it:
# a guess, checked by the statement below, that lets the cache key be computed before the round trip.
_LAST_SPEC_HASH: dict[tuple[str, str], str] = {}


def _caller_and_cached_statement() -> Select[Any]:
    keys, services, users, apps = ApiKey.__table__.c, Service.__table__.c, ServiceUser.__table__.c, ServiceApp.__table__.c
    items = job_answers.items_subquery(job_answers.latest_job_subquery())
    return (
        select(
            keys.user_id.label("caller_user_id"), services.owner_user_id, users.create_jobs, users.admin, apps.spec_hash,
            *job_answers.ANSWER_COLUMNS, *job_answers.with_items(items),
        )
        .select_from(ApiKey.__table__)
        .join(Service.__table__, services.service_name == bindparam("service"))
        .outerjoin(ServiceUser.__table__, and_(users.service_name == services.service_name, users.user_id == keys.user_id))
        .outerjoin(ServiceApp.__table__, and_(apps.service_name == services.service_name, apps.app_name == bindparam("app")))
        .outerjoin(Job.__table__, Job.__table__.c.job_id == job_answers.latest_job_subquery())
        .outerjoin(items, items.c.job_id == Job.__table__.c.job_id)
        .where(keys.key_hash == bindparam("key_hash"), keys.revoked.is_(False))
    )


# Who is calling, whether they may create jobs, the app's version and the latest job with the definition's
# hash (with its dependencies and outputs), in one statement built once; used only if the app's version is
# the one the hash was computed with.
_CALLER_AND_CACHED = prebuilt(_caller_and_cached_statement())
CallerAndCached = tuple[str, PreparedJob, Optional[job_answers.StoredJob]]


def prepared_with_last_app_version(token: Optional[str], req: JobCreate) -> Optional[PreparedJob]:
    """``prepare_job``'s result computed with the app version this process saw last, without the database:
    None when ``caller_and_cached`` cannot use it (no key, ``skipCache``, the version unknown, a definition
    that version refuses: ``prepare_request`` checks the key, the role and the current version first)."""
    app_key = (req.serviceName, req.jobDefinition.appName)
    spec_hash = _LAST_SPEC_HASH.get(app_key)
    app = _PARSED_APPS.get((*app_key, spec_hash)) if spec_hash else None
    if not token or app is None or spec_hash is None or req.skipCache:
        return None
    try:
        return _prepared(req, app, spec_hash)
    except BadRequest:
        return None


def caller_and_cached(conn: Reads, token: str, req: JobCreate, prepared: PreparedJob) -> Optional[CallerAndCached]:
    """``prepare_and_find_cached``'s result in one statement for ``prepared_with_last_app_version``'s result;
    None when it cannot answer (the key unknown or revoked, the role missing, the app version changed)."""
    params = {"service": req.serviceName, "app": req.jobDefinition.appName, "key_hash": hash_secret(token), "hash": prepared.definition_hash}
    rows = conn.execute(_CALLER_AND_CACHED, params).all()
    if not rows:
        return None
    row = rows[0]
    if row.spec_hash != prepared.spec_hash or not (row.owner_user_id == row.caller_user_id or row.create_jobs or row.admin):
        return None
    return row.caller_user_id, prepared, job_answers.StoredJob.from_rows(rows)


def prepare_and_find_cached(conn: Connection, token: Optional[str], req: JobCreate) -> CallerAndCached:
    """``prepare_request``'s result and the latest job with the definition's hash (None with ``skipCache``)."""
    user, prepared = prepare_request(conn, token, req)
    if len(_LAST_SPEC_HASH) >= _PARSED_APPS_MAX:
        _LAST_SPEC_HASH.clear()
    _LAST_SPEC_HASH[(req.serviceName, req.jobDefinition.appName)] = prepared.spec_hash
    existing = None if req.skipCache else job_answers.latest_job_with_definition(conn, req.serviceName, prepared.definition_hash)
    return user, prepared, existing


# Whether the user may create jobs in the service and the id of the service's latest job with the
# definition's hash, in one statement built once; a refusal is explained by require_role.
_ROLE_AND_CACHED_ID = prebuilt(text(
    "SELECT s.owner_user_id, su.create_jobs, su.admin,"
    " (SELECT j.job_id FROM jobs j WHERE j.service_name = s.service_name AND j.job_definition_hash = :hash"
    "  ORDER BY j.timestamp_created_sec DESC LIMIT 1) AS cached_job_id"
    " FROM services s"
    " LEFT JOIN service_users su ON su.service_name = s.service_name AND su.user_id = :user"
    " WHERE s.service_name = :service"
))


def _require_role_and_find_cached(s: Session, service_name: str, user_id: str, definition_hash: str) -> Optional[Job]:
    """``require_role(..., "create_jobs")`` and the service's latest job with this definition hash (usually none),
    after ``_serialize_same_definition`` (in the same round trip where the connection can)."""
    conn = on_connection(s.connection())
    params = {"service": service_name, "user": user_id, "hash": definition_hash}
    row = conn.execute_after(_serialize_same_definition_statements(s, definition_hash), _ROLE_AND_CACHED_ID, params).first()
    if not _may_create(row, user_id):
        accounts.require_role(s, service_name, user_id, "create_jobs")
    return None if row is None or row.cached_job_id is None else s.get(Job, row.cached_job_id)


def _nothing_to_read_first(req: JobCreate, definition: PairioJobDefinition) -> bool:
    """Whether a new job's rows follow from the request alone: no cache to skip, no target compute clients,
    dependencies or inputs (whose producers are dependencies) to look up before the inserts."""
    return not (req.skipCache or req.targetComputeClientIds is not None or req.jobDependencies or definition.inputFiles)


def _may_create(row: Any, user_id: str) -> bool:
    """Whether ``_ROLE_AND_CACHED_ID``'s row lets the user create jobs (else ``require_role`` explains why not)."""
    return row is not None and bool(row.owner_user_id == user_id or row.create_jobs or row.admin)


_LATEST_ID_BY_DEFINITION = (
    select(Job.__table__.c.job_id)
    .where(Job.__table__.c.service_name == bindparam("service"), Job.__table__.c.job_definition_hash == bindparam("hash"))
    .order_by(Job.__table__.c.timestamp_created_sec.desc())
    .limit(1)
)


def _cached_job_under_lock(s: Session, service_name: str, definition_hash: str) -> Optional[Job]:
    """The service's most recent job with this definition hash: usually there is none, so look up the id alone first."""
    job_id = s.connection().execute(_LATEST_ID_BY_DEFINITION, {"service": service_name, "hash": definition_hash}).scalar()
    return None if job_id is None else s.get(Job, job_id)


def failed_before_processor_ran(job: Any) -> bool:
    """A bridge claimed the job and it failed before its processor started (no command or image for its app
    there, an input it could not stage, ...): the bridge's doing, not a result, so the cache never serves it.
    ``job``: a ``Job`` or a row of its columns."""
    return job.status == JobStatus.FAILED and job.compute_client_id is not None and job.timestamp_started_sec is None and not job.canceled


def is_read_only_cache_hit(existing: Any, req: JobCreate) -> bool:
    """Whether submitting ``req`` would return ``existing`` (a ``Job`` or a row of its columns) unchanged
    (no rerun, no new tags): no write needed."""
    if req.skipCache or (existing.status == JobStatus.FAILED and req.rerunFailing) or failed_before_processor_ran(existing):
        return False
    return all(t in existing.tags for t in req.tags)


class JobValues(SimpleNamespace):
    """A job just inserted, as the column values written (what ``job_answers.job_answer`` reads)."""

    job_id: str


def create_job(
    ctx: HubContext, s: Session, user_id: str, req: JobCreate, *, prepared: Optional[PreparedJob] = None
) -> tuple[Job, bool]:
    """Create a job, or return the cached one with the same definition hash (see the README's cache rules).

    Returns the job and whether it was created (False for a cache hit). ``prepared`` (from
    ``prepare_job`` in a read transaction just before, for this user and request) saves
    checking the definition again; the role is checked here in any case.
    """
    job, created = create_job_values(ctx, s, user_id, req, prepared=prepared)
    if isinstance(job, JobValues):
        loaded = s.get(Job, job.job_id)
        assert loaded is not None
        return loaded, created
    return job, created


# The checks of a creation in one round trip: a division by zero, which fails the transaction before its inserts
# (the server skips them and the COMMIT), unless no job has the definition's hash and the user may create jobs in
# the service: what ``_ROLE_AND_CACHED_ID`` and ``_may_create`` decide, in one value. The job is looked up as there
# (the latest, by the index on service, hash and creation time): a plain EXISTS was planned, on a table not yet
# analyzed, as a walk through the service's jobs by another index.
_FAIL_UNLESS_NEW_AND_ALLOWED = prebuilt(text(
    "SELECT 1 / CASE WHEN (SELECT j.job_id FROM jobs j WHERE j.service_name = :service AND j.job_definition_hash = :hash"
    "   ORDER BY j.timestamp_created_sec DESC LIMIT 1) IS NOT NULL THEN 0"
    " ELSE COALESCE((SELECT CASE WHEN s.owner_user_id = :user OR su.create_jobs OR su.admin THEN 1 ELSE 0 END"
    "   FROM services s LEFT JOIN service_users su ON su.service_name = s.service_name AND su.user_id = :user"
    "   WHERE s.service_name = :service), 0) END AS allowed"
))


def create_new_job_in_one_round_trip(
    ctx: HubContext, conn: RawReads, clients_engine: Any, user_id: str, req: JobCreate, prepared: PreparedJob,
) -> Optional[JobValues]:
    """A new job written in one round trip and one transaction: the definition's lock, the role and cache checks,
    the inserts and the COMMIT, where a read just before found the role and no job with the definition (PostgreSQL
    on the event loop: ``conn.commit_all``). None when this way does not apply, when the checks refuse (the role is
    gone, a job of the definition was created meanwhile: nothing was written), or when the connection failed (the
    COMMIT may have happened: the usual way then finds the job by its definition): the caller creates the usual
    way, which explains a refusal.

    It applies when the new job's rows follow from the request alone (``_nothing_to_read_first``) and the service's
    compute clients (``slot_fit``'s memory, ``clients_engine`` being the engine the loop's writes remember them for)
    have a slot that fits the job, or there are none: else the usual way writes on the timeline that none fits."""
    if not (conn.sends_together and _nothing_to_read_first(req, prepared.definition)):
        return None
    try:
        clients = slot_fit.remembered_clients(clients_engine, req.serviceName)
        if clients is None:
            clients = slot_fit.read_clients(clients_engine, conn, req.serviceName)
        if slot_fit.closest_misfit(clients, req.requiredResources) is not None:
            return None
        job, inserts = _new_job_rows(ctx, new_id(), user_id, req, prepared, [], True)
        checks = {"service": req.serviceName, "user": user_id, "hash": prepared.definition_hash}
        conn.commit_all([_advisory_lock(prepared.definition_hash), (_FAIL_UNLESS_NEW_AND_ALLOWED, checks), *inserts])
    except DBAPIError:
        return None
    ctx.notifier.notify()  # committed: wake the waiting claims
    return job


class CheckedTooSoon(Exception):
    """``create_job_values(..., presumed_new=True)`` wrote a job that the checks sent with it refuse (the role is
    missing, or a job with the definition exists now): roll the transaction back and create without presuming."""


def create_job_values(
    ctx: HubContext, s: Session, user_id: str, req: JobCreate, *, prepared: Optional[PreparedJob] = None, presumed_new: bool = False,
) -> tuple[Job | JobValues, bool]:
    """``create_job`` without loading a new job back: it is inserted by Core statements and returned
    as ``JobValues`` (no dependencies failed, the usual case), else as the ``Job``.

    ``presumed_new`` (with ``prepared``; a read just before found the role and no job with the definition): where
    the connection sends statements together, the job's inserts go in the same round trip as the checks, after
    them; when the checks refuse, ``CheckedTooSoon`` is raised and the transaction must be rolled back."""
    if prepared is None:
        prepared = prepare_job(s, user_id, req)
        checked_role = True
    else:
        checked_role = False
    definition, definition_hash = prepared.definition, prepared.definition_hash

    existing: Optional[Job] = None
    checks: list[tuple[Any, Any]] = []  # sent with the inserts
    if presumed_new and not checked_role and _nothing_to_read_first(req, definition) and on_connection(s.connection()).sends_together:
        params = {"service": req.serviceName, "user": user_id, "hash": definition_hash}
        checks = [*_serialize_same_definition_statements(s, definition_hash), (_ROLE_AND_CACHED_ID, params)]
    elif req.skipCache:
        if not checked_role:
            accounts.require_role(s, req.serviceName, user_id, "create_jobs")
    elif checked_role:
        _serialize_same_definition(s, definition_hash)
        existing = _cached_job_under_lock(s, req.serviceName, definition_hash)
    else:
        existing = _require_role_and_find_cached(s, req.serviceName, user_id, definition_hash)
    if existing is not None:
        if existing.status == JobStatus.FAILED and (req.rerunFailing or failed_before_processor_ran(existing)):
            if req.deleteFailing:
                delete_job(ctx, s, existing, reason=f"deleted by {user_id} (deleteFailing on resubmission)")
        else:
            _add_tags(s, existing, req.tags)
            return existing, False

    if req.targetComputeClientIds is not None:
        for cc_id in req.targetComputeClientIds:
            cc = s.get(ComputeClient, cc_id)
            if cc is None:
                raise BadRequest(f"targetComputeClientIds names compute client {cc_id!r}, which does not exist")
            if cc.service_name != req.serviceName:
                raise BadRequest(f"target compute client {cc_id!r} belongs to another service")

    job_id = new_id()
    dependencies = _dependencies(s, definition, req.jobDependencies, job_id)
    dep_status = {
        j.job_id: (JobStatus(j.status), j.error) for j in (s.scalars(select(Job).where(Job.job_id.in_(dependencies))) if dependencies else [])
    }
    failed_dep = next((d for d in dependencies if dep_status[d][0] == JobStatus.FAILED), None)
    is_runnable = all(dep_status[d][0] == JobStatus.COMPLETED for d in dependencies)
    job, inserts = _new_job_rows(ctx, job_id, user_id, req, prepared, dependencies, is_runnable)
    if checks:
        checked = on_connection(s.connection()).execute_all([*checks, *inserts])[len(checks) - 1].first()
        if not _may_create(checked, user_id) or checked.cached_job_id is not None:
            raise CheckedTooSoon(f"job {job_id} of {definition_hash}")
    else:
        on_connection(s.connection()).send_all(inserts)
    if failed_dep is not None:
        failed = s.get(Job, job_id)
        assert failed is not None
        _fail(s, failed, f"dependency {failed_dep} failed: {dep_status[failed_dep][1] or 'no error given'}")
        return failed, True
    _note_if_no_slot_fits(s, job, req.requiredResources)
    if is_runnable:
        mark_runnable_changed(s)
    return job, True


def _new_job_rows(
    ctx: HubContext, job_id: str, user_id: str, req: JobCreate, prepared: PreparedJob, dependencies: list[str], is_runnable: bool,
) -> tuple[JobValues, list[tuple[Any, Any]]]:
    """A new job's column values and the prebuilt inserts that write it (its tags, inputs, outputs, dependencies
    and its first event)."""
    app, definition, definition_hash = prepared.app, prepared.definition, prepared.definition_hash
    processor = app.get_processor(definition.processorName)
    now = now_sec()
    base = ctx.settings.base_url
    job = JobValues(
        job_id=job_id,
        service_name=req.serviceName,
        user_id=user_id,
        batch_id=req.batchId,
        app_name=definition.appName,
        processor_name=definition.processorName,
        job_definition=definition.model_dump(mode="json"),
        job_definition_hash=definition_hash,
        tags=list(dict.fromkeys(req.tags)),
        num_cpus=req.requiredResources.numCpus,
        num_gpus=req.requiredResources.numGpus,
        memory_gb=req.requiredResources.memoryGb,
        time_sec=req.requiredResources.timeSec,
        target_compute_client_ids=req.targetComputeClientIds,
        secrets=[x.model_dump() for x in req.secrets] if req.secrets else None,
        console_output_url=f"{base}/v1/jobs/{job_id}/console-output",
        resource_utilization_log_url=f"{base}/v1/jobs/{job_id}/resource-utilization-log",
        timestamp_created_sec=now,
        timestamp_starting_sec=None,
        timestamp_started_sec=None,
        timestamp_finished_sec=None,
        canceled=False,
        canceled_by_user_id=None,
        status=JobStatus.PENDING.value,
        is_runnable=is_runnable,
        error=None,
        compute_client_id=None,
        compute_client_name=None,
        compute_client_user_id=None,
        image_uri=(processor.image or None) if processor else None,
        image_digest=None,
        job_private_key_hash=None,
        console_output_size=0,
        console_input_size=0,
        console_pending=None,
        has_resource_utilization_log=False,
        secret_parameter_names=job_secrets.secret_parameter_names(processor),
    )
    # Prebuilt Core statements on the driver's cursor, not ORM objects: the unit of work costs several times these inserts.
    # (all in one round trip where the connection can: RawReads.send_all)
    inserts: list[tuple[Any, Any]] = [(_INSERT_JOB, vars(job))]
    if job.tags:
        inserts.append((_INSERT_TAG, [{"job_id": job_id, "tag": tag, "timestamp_created_sec": now} for tag in job.tags]))
    if definition.inputFiles:
        inserts.append((_INSERT_INPUT, [{"job_id": job_id, "name": f.name, "url": f.url, "url_hash": url_hash(f.url)} for f in definition.inputFiles]))
    job.outputs = []
    for out in definition.outputFiles:
        url = output_url(ctx, job_id, out.name, out.fileBaseName)
        job.outputs.append({"job_id": job_id, "name": out.name, "file_base_name": out.fileBaseName, "url": url, "url_hash": url_hash(url), "size": None})
    if job.outputs:
        inserts.append((_INSERT_OUTPUT, job.outputs))
    if dependencies:
        inserts.append((_INSERT_DEPENDENCY, [{"job_id": job_id, "depends_on_job_id": d} for d in dependencies]))
    job.dependencies = dependencies
    waits = "" if is_runnable else f"; waits for {len(dependencies)} dependenc{'y' if len(dependencies) == 1 else 'ies'}"
    inserts.append((INSERT_EVENT, {"job_id": job_id, "timestamp_sec": now, "status": JobStatus.PENDING.value, "message": f"created by {user_id}{waits}"}))
    return job, inserts


def _note_if_no_slot_fits(s: Session, job: "JobValues", resources: PairioJobRequiredResources) -> None:
    """Say at once on the timeline when no compute slot of the service can take the job.

    The job stays pending (a compute client with a bigger slot may register); the waiting
    reason of ``GET /v1/jobs/{id}`` is computed afresh at each read.
    """
    misfit = slot_fit.no_slot_fits(s, job.service_name, job.target_compute_client_ids, resources)
    if misfit is not None:
        add_event(
            s, job.job_id, None,
            slot_fit.misfit_message(job.service_name, misfit)
            + "; the job stays pending until a compute client with a slot that fits registers"
            " (or cancel it and submit it with smaller requiredResources)",
        )


def new_job_answer(job: JobValues) -> dict[str, Any]:
    """A user's answer for a job ``create_job_values`` just inserted (its dependencies and outputs as written)."""
    outputs = [job_answers.OutputRow(o["name"], o["file_base_name"], o["url"], o["size"]) for o in job.outputs]
    return job_answers.job_answer(job, job.dependencies, outputs)


# Each with the keys of every parameter set create_job_values gives it.
_INSERT_JOB = prebuilt(insert(Job.__table__), [c.key for c in Job.__table__.c])
_INSERT_TAG = prebuilt(insert(JobTag.__table__), ["job_id", "tag", "timestamp_created_sec"])
_INSERT_INPUT = prebuilt(insert(JobInput.__table__), ["job_id", "name", "url", "url_hash"])
_INSERT_OUTPUT = prebuilt(insert(JobOutput.__table__), ["job_id", "name", "file_base_name", "url", "url_hash", "size"])
_INSERT_DEPENDENCY = prebuilt(insert(JobDependency.__table__), ["job_id", "depends_on_job_id"])
INSERT_EVENT = prebuilt(insert(JobEvent.__table__), ["job_id", "timestamp_sec", "status", "message"])


def _spec_hash(s: Session, req: JobCreate) -> Optional[str]:
    return s.scalars(
        select(ServiceApp.spec_hash).where(ServiceApp.service_name == req.serviceName, ServiceApp.app_name == req.jobDefinition.appName)
    ).first()


def _serialize_same_definition(s: Session, definition_hash: str) -> None:
    """Make concurrent submissions of one definition take turns, so the second finds the first's job.

    SQLite writers are serialised already (BEGIN IMMEDIATE); on PostgreSQL a transaction-scoped
    advisory lock keyed by the hash does it, across hub processes too.
    """
    on_connection(s.connection()).send_all(_serialize_same_definition_statements(s, definition_hash))


def _serialize_same_definition_statements(s: Session, definition_hash: str) -> list[tuple[Any, dict[str, Any]]]:
    """What ``_serialize_same_definition`` runs (nothing on SQLite): for ``RawReads.execute_after``."""
    if s.get_bind().dialect.name != "postgresql":
        return []
    return [_advisory_lock(definition_hash)]


def _advisory_lock(definition_hash: str) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL: the transaction's lock on a definition hash (creations of one definition go one at a time)."""
    return (_ADVISORY_XACT_LOCK, {"k": int(definition_hash[:15], 16)})


_ADVISORY_XACT_LOCK = prebuilt(text("SELECT pg_advisory_xact_lock(:k)"))


def _dependencies(s: Session, definition: PairioJobDefinition, listed: Sequence[str], job_id: str) -> list[str]:
    """Jobs this one waits for: those listed plus the jobs whose outputs are its inputs."""
    deps: dict[str, None] = {}
    for d in listed:
        if s.get(Job, d) is None:
            raise BadRequest(f"jobDependencies names job {d!r}, which does not exist (or was deleted)")
        deps[d] = None
    hashes = [url_hash(f.url) for f in definition.inputFiles]
    if hashes:
        for producer in s.scalars(select(JobOutput.job_id).where(JobOutput.url_hash.in_(hashes))):
            deps[producer] = None
    deps.pop(job_id, None)
    return list(deps)


def _add_tags(s: Session, job: Job, tags: Iterable[str]) -> None:
    new = [t for t in dict.fromkeys(tags) if t not in job.tags]
    if new:
        job.tags = job.tags + new
        for t in new:
            s.add(JobTag(job_id=job.job_id, tag=t, timestamp_created_sec=job.timestamp_created_sec))


# ---------------------------------------------------------------- read


_JOB_BY_ID = select(Job).where(Job.job_id == bindparam("job_id"))  # built once, as the statements below
_JOB_BY_ID_FOR_UPDATE = _JOB_BY_ID.with_for_update()


def get_job_row(s: Session, job_id: str, *, for_update: bool = False) -> Job:
    locked = for_update and s.bind is not None and s.get_bind().dialect.name == "postgresql"
    job = s.scalars(_JOB_BY_ID_FOR_UPDATE if locked else _JOB_BY_ID, {"job_id": job_id}).first()
    if job is None:
        raise NotFound(f"no job {job_id!r} (it may have been deleted)")
    return job


JobDataT = TypeVar("JobDataT", bound=PairioJobData)


def jobs_public(
    s: Session, jobs: Sequence[Job], *, include_private: bool = False, model: type[JobDataT] = PairioJobData  # type: ignore[assignment]
) -> list[JobDataT]:
    """Jobs as users see them (``job_answers.job_answer``), as models of class ``model`` (a subclass
    of ``PairioJobData`` without fields of its own). ``include_private``: for the compute client
    holding the jobs (checked by the caller), the secrets of jobs that are not terminal.
    """
    deps, outputs = job_answers.dependencies_and_outputs(s, jobs)
    result = []
    for j in jobs:
        answer = job_answers.job_answer(j, deps[j.job_id], outputs[j.job_id], include_private=include_private)
        secrets = answer["secrets"]
        public = model.model_validate({**answer, "secrets": None} if secrets else answer)
        if secrets:
            # as stored: a row from before the secret-name rule must still reach its bridge, which refuses it by name
            public.secrets = [PairioJobSecret.model_construct(**x) for x in secrets]
        result.append(public)
    return result


def job_events(s: Session, job_id: str) -> list[PairioJobEvent]:
    rows = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.event_id))
    return [PairioJobEvent(timestampSec=e.timestamp_sec, status=JobStatus(e.status) if e.status else None, message=e.message) for e in rows]


def find_job_by_definition(s: Session, service_name: str, definition: PairioJobDefinition) -> Optional[Job]:
    row = accounts.get_app(s, service_name, definition.appName)
    app = parsed_app(row)
    normalized = normalize_job_definition(app, definition)
    h = job_definition_hash(normalized, _fingerprint(row, app, normalized.processorName))
    return s.scalars(
        select(Job).where(Job.service_name == service_name, Job.job_definition_hash == h).order_by(Job.timestamp_created_sec.desc()).limit(1)
    ).first()


@dataclass
class JobFilter:
    serviceName: Optional[str] = None
    userId: Optional[str] = None
    jobId: Optional[str] = None
    appName: Optional[str] = None
    processorName: Optional[str] = None
    computeClientId: Optional[str] = None
    batchId: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    inputFileUrl: Optional[str] = None
    outputFileUrl: Optional[str] = None
    status: list[JobStatus] = field(default_factory=list)

    def has_filter_besides_status(self) -> bool:
        return any(
            getattr(self, f) for f in (
                "serviceName", "userId", "jobId", "appName", "processorName", "computeClientId",
                "batchId", "tags", "inputFileUrl", "outputFileUrl",
            )
        )


def encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.timestamp_created_sec!r}|{job.job_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        ts, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return float(ts), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("invalid cursor: pass back the nextCursor of a previous page unchanged") from None


def find_jobs(
    s: Session, f: JobFilter, *, limit: int = DEFAULT_FIND_LIMIT, cursor: Optional[str] = None, oldest_first: bool = False,
) -> tuple[list[Job], Optional[str]]:
    """Jobs matching every filter, newest (or oldest) first; returns a page and the cursor of the next page."""
    if not 1 <= limit <= MAX_FIND_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_FIND_LIMIT}")
    rows: list[Job] = list(s.scalars(find_jobs_query(f, limit + 1, cursor, oldest_first=oldest_first)).all())
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def find_jobs_query(f: JobFilter, limit: int, cursor: Optional[str] = None, *, oldest_first: bool = False) -> Select[tuple[Job]]:
    """The query of a page: keyset paging on (created, job id), newest first (or oldest first: the same
    indexes walked backwards).

    With a tag filter the page is walked in ``job_tags``' (tag, created, job id) index, which
    holds each job's creation time: in order, however many jobs carry the tag.
    """
    tags = list(dict.fromkeys(f.tags))
    created: Any = Job.timestamp_created_sec
    job_id: Any = Job.job_id
    q = select(Job)
    if tags:
        q = q.join(JobTag, and_(JobTag.job_id == Job.job_id, JobTag.tag == tags[0]))
        created, job_id = JobTag.timestamp_created_sec, JobTag.job_id
        f = replace(f, tags=tags[1:])
    q = _filtered(q, f)
    if cursor:
        ts, jid = _decode_cursor(cursor)
        if oldest_first:
            q = q.where(or_(created > ts, and_(created == ts, job_id > jid)))
        else:
            q = q.where(or_(created < ts, and_(created == ts, job_id < jid)))
    if oldest_first:
        return q.order_by(created.asc(), job_id.asc()).limit(limit)
    return q.order_by(created.desc(), job_id.desc()).limit(limit)


def _filtered(q: SelectT, f: JobFilter) -> SelectT:
    for attr, column in (
        ("serviceName", Job.service_name), ("userId", Job.user_id), ("jobId", Job.job_id),
        ("appName", Job.app_name), ("processorName", Job.processor_name),
        ("computeClientId", Job.compute_client_id), ("batchId", Job.batch_id),
    ):
        value = getattr(f, attr)
        if value:
            q = q.where(column == value)
    for tag in dict.fromkeys(f.tags):
        q = q.where(Job.job_id.in_(select(JobTag.job_id).where(JobTag.tag == tag)))
    if f.inputFileUrl:
        q = q.where(Job.job_id.in_(select(JobInput.job_id).where(JobInput.url_hash == url_hash(f.inputFileUrl))))
    if f.outputFileUrl:
        q = q.where(Job.job_id.in_(select(JobOutput.job_id).where(JobOutput.url_hash == url_hash(f.outputFileUrl))))
    if f.status:
        statuses = [st.value for st in dict.fromkeys(f.status)]
        # one status as '=' lets the planner walk ix_jobs_status_created in order
        q = q.where(Job.status == statuses[0]) if len(statuses) == 1 else q.where(Job.status.in_(statuses))
    return q


def filter_jobs(q: SelectT, f: JobFilter) -> SelectT:
    """``q`` restricted to the jobs matching every filter of ``f`` (for queries ordered otherwise, hub/core/job_sort.py)."""
    return _filtered(q, f)


def count_jobs_by_status(s: Session, service_name: Optional[str] = None, f: Optional[JobFilter] = None) -> dict[str, int]:
    """Jobs per status: from the maintained counts (hub/core/job_counts.py) when at most the
    service is given, else by one GROUP BY over an index."""
    f = replace(f or JobFilter(), status=[])
    if service_name:
        f = replace(f, serviceName=service_name)
    counts = {st.value: 0 for st in JobStatus}
    if not replace(f, serviceName=None).has_filter_besides_status():
        counts.update(job_counts.counts_by_status(s, f.serviceName))
        return counts
    q = _filtered(select(Job.status, func.count()), f).group_by(Job.status)
    for status, n in s.execute(q):
        counts[status] = n
    return counts


# ---------------------------------------------------------------- cancel, delete


def may_manage(s: Session, job: Job, user_id: str) -> bool:
    """Whether the user may cancel or delete the job: its owner or an admin of its service (if the service still exists)."""
    if job.user_id == user_id:
        return True
    return s.get(Service, job.service_name) is not None and accounts.roles_of(s, job.service_name, user_id).admin


def cancel_job(ctx: HubContext, s: Session, user_id: str, job_id: str) -> Job:
    """Ask a job to stop. A pending job fails at once; a claimed one fails when its bridge stops it."""
    job = get_job_row(s, job_id, for_update=True)
    if not may_manage(s, job, user_id):
        raise Forbidden(f"only the job's owner ({job.user_id}) or an admin of service {job.service_name!r} may cancel it")
    status = JobStatus(job.status)
    if status.is_terminal or job.canceled:
        return job
    job.canceled = True
    job.canceled_by_user_id = user_id  # the failure reported later by the bridge names who canceled
    if status == JobStatus.PENDING:
        _fail(s, job, f"canceled by {user_id} before it started")
    else:
        add_event(s, job.job_id, None, f"cancel requested by {user_id}; waiting for compute client {job.compute_client_name or job.compute_client_id} to stop it")
        if job.compute_client_id:
            mark_job_to_stop(s, job.compute_client_id)  # its bridge's waiting heartbeat hears of it at once
    return job


def delete_jobs(ctx: HubContext, s: Session, user_id: str, job_ids: Sequence[str]) -> None:
    """Delete jobs and their files; each must be the user's own (or the user an admin of its service)."""
    jobs = []
    for job_id in dict.fromkeys(job_ids):
        job = get_job_row(s, job_id, for_update=True)
        accounts.require_role(s, job.service_name, user_id, "create_jobs")
        if not may_manage(s, job, user_id):
            raise Forbidden(f"job {job_id} belongs to {job.user_id}; only they or a service admin may delete it")
        jobs.append(job)
    for job in jobs:
        delete_job(ctx, s, job, reason=f"deleted by {user_id}")


def delete_job(ctx: HubContext, s: Session, job: Job, *, reason: str) -> None:
    s.add(
        DeletedJob(
            job_id=job.job_id, user_id=job.user_id, compute_client_user_id=job.compute_client_user_id,
            num_cpus=job.num_cpus, num_gpus=job.num_gpus, memory_gb=job.memory_gb,
            timestamp_started_sec=job.timestamp_started_sec, timestamp_finished_sec=job.timestamp_finished_sec,
            timestamp_deleted_sec=now_sec(),
        )
    )
    _fail_dependants(s, job.job_id, f"dependency {job.job_id} was {reason}")
    if job.compute_client_id and not JobStatus(job.status).is_terminal:
        mark_job_to_stop(s, job.compute_client_id)
    s.execute(delete(JobDependency).where(JobDependency.depends_on_job_id == job.job_id))
    if job_secrets.had_secrets(job):
        s.info[SECRETS_ERASED] = True  # with the row: housekeeping empties SQLite's write-ahead log
    s.delete(job)
    s.flush()
    s.info.setdefault(DELETE_FILES_AFTER_COMMIT, []).append(job.job_id)


# ---------------------------------------------------------------- finishing and dependencies


def _fail(s: Session, job: Job, error: str) -> None:
    job.status = JobStatus.FAILED.value
    job.error = error
    job.is_runnable = False
    job.timestamp_finished_sec = now_sec()
    add_event(s, job.job_id, JobStatus.FAILED, error)
    on_job_finished(s, job)
    _fail_dependants(s, job.job_id, f"dependency {job.job_id} failed: {error}")


def on_job_finished(s: Session, job: Job) -> None:
    """The one place every path to a terminal status passes (failures of every kind, completion)."""
    job_secrets.erase_job_secrets(s, job, job.timestamp_finished_sec or now_sec())


def fail_job(s: Session, job: Job, error: str) -> None:
    """Fail a non-terminal job and, transitively, every job waiting on it."""
    if JobStatus(job.status).is_terminal:
        return
    _fail(s, job, error)


_UNFINISHED_DEPENDANTS = select(Job).where(
    Job.job_id.in_(select(JobDependency.job_id).where(JobDependency.depends_on_job_id == bindparam("job_id"))),
    Job.status.not_in([JobStatus.COMPLETED.value, JobStatus.FAILED.value]),
)
_WAITING_DEPENDANTS = select(Job).where(
    Job.job_id.in_(select(JobDependency.job_id).where(JobDependency.depends_on_job_id == bindparam("job_id"))),
    Job.status == JobStatus.PENDING.value,
    Job.is_runnable.is_(False),
)


def _fail_dependants(s: Session, job_id: str, error: str) -> None:
    dependants = s.scalars(_UNFINISHED_DEPENDANTS, {"job_id": job_id}).all()
    for d in dependants:
        if JobStatus(d.status) in ACTIVE_STATUSES:
            continue  # already running on a compute client; it has its inputs
        _fail(s, d, error)


def on_job_completed(s: Session, job: Job) -> None:
    """Make dependants runnable when this was the last of their dependencies to complete."""
    waiting = s.scalars(_WAITING_DEPENDANTS, {"job_id": job.job_id}).all()
    for d in waiting:
        dep_ids = select(JobDependency.depends_on_job_id).where(JobDependency.job_id == d.job_id)
        unfinished = s.scalars(
            select(Job.job_id).where(Job.job_id.in_(dep_ids), Job.status != JobStatus.COMPLETED.value).limit(1)
        ).first()
        if unfinished is None:
            s.execute(update(Job).where(Job.job_id == d.job_id, Job.status == JobStatus.PENDING.value).values(is_runnable=True))
            add_event(s, d.job_id, None, "all dependencies completed; the job is runnable")
            mark_runnable_changed(s)


# ---------------------------------------------------------------- statistics


def user_stats(s: Session, user_id: str) -> dict[str, Any]:
    """Jobs and CPU/GPU/GB/job hours a user consumed (submitted) and provided (ran), summed by the database.

    As in the original Pairio, only jobs that both started and finished count: a
    pending, running or never-started (e.g. canceled while pending) job adds nothing.
    """
    return {
        "userId": user_id,
        "consumed": _usage(s, Job, Job.user_id == user_id),
        "provided": _usage(s, Job, Job.compute_client_user_id == user_id),
        "consumedDeleted": _usage(s, DeletedJob, DeletedJob.user_id == user_id),
        "providedDeleted": _usage(s, DeletedJob, DeletedJob.compute_client_user_id == user_id),
    }


def _usage(s: Session, table: type[Job] | type[DeletedJob], where: ColumnElement[bool]) -> dict[str, float]:
    started, finished = table.timestamp_started_sec, table.timestamp_finished_sec
    hours = case((finished > started, (finished - started) / 3600.0), else_=0.0)
    row = s.execute(
        select(
            func.count(),
            func.coalesce(func.sum(table.num_cpus * hours), 0.0),
            func.coalesce(func.sum(table.num_gpus * hours), 0.0),
            func.coalesce(func.sum(table.memory_gb * hours), 0.0),
            func.coalesce(func.sum(hours), 0.0),
        ).where(where, started.is_not(None), finished.is_not(None))
    ).one()
    return {"numJobs": int(row[0]), "cpuHours": float(row[1]), "gpuHours": float(row[2]), "gbHours": float(row[3]), "jobHours": float(row[4])}
