"""Jobs: create (with caching and dependencies), read, find, cancel, delete, and finish.

Every function runs inside the caller's transaction (``HubContext.transaction``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Optional, TypeVar
from urllib.parse import quote

from sqlalchemy import ColumnElement, Select, and_, bindparam, case, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from pairio.models import (
    PairioApp,
    PairioJobData,
    PairioJobDefinition,
    PairioJobEvent,
    PairioJobOutputFileResult,
    PairioJobRequiredResources,
    PairioJobSecret,
)
from pairio.status import ACTIVE_STATUSES, JobStatus

from ..context import DELETE_FILES_AFTER_COMMIT, SECRETS_ERASED, HubContext, mark_job_to_stop, mark_runnable_changed, now_sec
from ..db.tables import ComputeClient, DeletedJob, Job, JobDependency, JobEvent, JobInput, JobOutput, JobTag, Service, ServiceApp
from ..errors import BadRequest, Forbidden, NotFound
from ..security import hash_secret, new_id, url_hash
from . import accounts, job_counts, job_secrets
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


def add_event(s: Session, job_id: str, status: Optional[JobStatus], message: str) -> None:
    s.add(JobEvent(job_id=job_id, timestamp_sec=now_sec(), status=status.value if status else None, message=message))


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


def prepare_request(s: Session, token: Optional[str], req: JobCreate) -> tuple[str, PreparedJob]:
    """The caller's user id (from their API key) and ``prepare_job``'s result, with the usual errors."""
    if token:
        row = s.execute(_CALLER_SQL, {"service": req.serviceName, "app": req.jobDefinition.appName, "key_hash": hash_secret(token)}).first()
        if row is not None and row.spec_hash and (row.owner_user_id == row.user_id or row.create_jobs or row.admin):
            app = _PARSED_APPS.get((req.serviceName, req.jobDefinition.appName, row.spec_hash))
            if app is not None:
                return row.user_id, _prepared(req, app, row.spec_hash)
    user = accounts.user_for_api_key(s, token)
    return user, prepare_job(s, user, req)


def cached_job(s: Session, service_name: str, definition_hash: str) -> Optional[Job]:
    """The most recent job of the service with this definition hash, if any."""
    return s.scalars(
        select(Job)
        .where(Job.service_name == service_name, Job.job_definition_hash == definition_hash)
        .order_by(Job.timestamp_created_sec.desc())
        .limit(1)
    ).first()


def _cached_job_under_lock(s: Session, service_name: str, definition_hash: str) -> Optional[Job]:
    """``cached_job`` as a creation needs it: usually there is none, so look up the id alone first."""
    job_id = s.scalars(
        select(Job.job_id)
        .where(Job.service_name == service_name, Job.job_definition_hash == definition_hash)
        .order_by(Job.timestamp_created_sec.desc())
        .limit(1)
    ).first()
    return None if job_id is None else s.get(Job, job_id)


def failed_before_processor_ran(job: Job) -> bool:
    """A bridge claimed the job and it failed before its processor started (no command or image for its app
    there, an input it could not stage, ...): the bridge's doing, not a result, so the cache never serves it."""
    return job.status == JobStatus.FAILED and job.compute_client_id is not None and job.timestamp_started_sec is None and not job.canceled


def is_read_only_cache_hit(existing: Job, req: JobCreate) -> bool:
    """Whether submitting ``req`` would return ``existing`` unchanged (no rerun, no new tags): no write needed."""
    if req.skipCache or (existing.status == JobStatus.FAILED and req.rerunFailing) or failed_before_processor_ran(existing):
        return False
    return all(t in existing.tags for t in req.tags)


def create_job(
    ctx: HubContext, s: Session, user_id: str, req: JobCreate, *, prepared: Optional[PreparedJob] = None
) -> tuple[Job, bool]:
    """Create a job, or return the cached one with the same definition hash (see the README's cache rules).

    Returns the job and whether it was created (False for a cache hit). ``prepared`` (from
    ``prepare_job`` in a read transaction just before, for this user and request) saves
    checking the definition again; the role is checked here in any case.
    """
    if prepared is None:
        prepared = prepare_job(s, user_id, req)
    else:
        accounts.require_role(s, req.serviceName, user_id, "create_jobs")
    app, definition, definition_hash = prepared.app, prepared.definition, prepared.definition_hash

    if not req.skipCache:
        _serialize_same_definition(s, definition_hash)
        existing = _cached_job_under_lock(s, req.serviceName, definition_hash)
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
    processor = app.get_processor(definition.processorName)
    now = now_sec()
    base = ctx.settings.base_url
    job = Job(
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
        canceled=False,
        status=JobStatus.PENDING.value,
        is_runnable=is_runnable,
        image_uri=(processor.image or None) if processor else None,
        console_output_size=0,
        console_input_size=0,
        has_resource_utilization_log=False,
        secret_parameter_names=job_secrets.secret_parameter_names(processor),
    )
    s.add(job)
    s.flush()
    for tag in job.tags:
        s.add(JobTag(job_id=job_id, tag=tag, timestamp_created_sec=now))
    for f in definition.inputFiles:
        s.add(JobInput(job_id=job_id, name=f.name, url=f.url, url_hash=url_hash(f.url)))
    for out in definition.outputFiles:
        url = output_url(ctx, job_id, out.name, out.fileBaseName)
        s.add(JobOutput(job_id=job_id, name=out.name, file_base_name=out.fileBaseName, url=url, url_hash=url_hash(url)))
    for d in dependencies:
        s.add(JobDependency(job_id=job_id, depends_on_job_id=d))
    add_event(s, job_id, JobStatus.PENDING, f"created by {user_id}" + ("" if is_runnable else f"; waits for {len(dependencies)} dependenc{'y' if len(dependencies) == 1 else 'ies'}"))
    if failed_dep is not None:
        _fail(s, job, f"dependency {failed_dep} failed: {dep_status[failed_dep][1] or 'no error given'}")
    elif is_runnable:
        mark_runnable_changed(s)
    return job, True


def _spec_hash(s: Session, req: JobCreate) -> Optional[str]:
    return s.scalars(
        select(ServiceApp.spec_hash).where(ServiceApp.service_name == req.serviceName, ServiceApp.app_name == req.jobDefinition.appName)
    ).first()


def _serialize_same_definition(s: Session, definition_hash: str) -> None:
    """Make concurrent submissions of one definition take turns, so the second finds the first's job.

    SQLite writers are serialised already (BEGIN IMMEDIATE); on PostgreSQL a transaction-scoped
    advisory lock keyed by the hash does it, across hub processes too.
    """
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(definition_hash[:15], 16)})


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


def get_job_row(s: Session, job_id: str, *, for_update: bool = False) -> Job:
    q = select(Job).where(Job.job_id == job_id)
    if for_update and s.bind is not None and s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    job = s.scalars(q).first()
    if job is None:
        raise NotFound(f"no job {job_id!r} (it may have been deleted)")
    return job


JobDataT = TypeVar("JobDataT", bound=PairioJobData)


# One round trip for a page's dependencies and outputs (outputs only of jobs that declare any).
# Plain SQL built once: composing the equivalent select() per call costs more than the query.
_DEPS_SQL = (
    "SELECT job_id, 'd' AS kind, depends_on_job_id AS name, NULL AS file_base_name, NULL AS url, NULL AS size "
    "FROM job_dependencies WHERE job_id IN :ids"
)
_DEPS = text(_DEPS_SQL).bindparams(bindparam("ids", expanding=True))
_DEPS_AND_OUTPUTS = text(
    _DEPS_SQL + " UNION ALL SELECT job_id, 'o', name, file_base_name, url, size FROM job_outputs WHERE job_id IN :with_outputs"
).bindparams(bindparam("ids", expanding=True), bindparam("with_outputs", expanding=True))


class _OutputRow(NamedTuple):
    name: str
    file_base_name: str
    url: str
    size: Optional[int]


def jobs_public(
    s: Session, jobs: Sequence[Job], *, include_private: bool = False, model: type[JobDataT] = PairioJobData  # type: ignore[assignment]
) -> list[JobDataT]:
    """Jobs as users see them: private keys and secrets null, secret parameters ``"***"``.

    ``include_private`` (for the compute client holding the jobs, checked by the caller)
    gives the plain secrets and secret parameters of jobs that are not terminal. ``model``:
    the class to build (a subclass of ``PairioJobData`` without fields of its own).
    """
    ids = [j.job_id for j in jobs]
    outputs: dict[str, list[_OutputRow]] = {i: [] for i in ids}
    deps: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        with_outputs = [j.job_id for j in jobs if (j.job_definition or {}).get("outputFiles")]
        q, params = (_DEPS_AND_OUTPUTS, {"ids": ids, "with_outputs": with_outputs}) if with_outputs else (_DEPS, {"ids": ids})
        for row in s.execute(q, params):
            if row.kind == "d":
                deps[row.job_id].append(row.name)
            else:
                outputs[row.job_id].append(_OutputRow(row.name, row.file_base_name, row.url, row.size))
    result = []
    for j in jobs:
        private = include_private and not job_secrets.is_terminal(j)
        definition = PairioJobDefinition.model_validate(j.job_definition if private else job_secrets.masked_definition(j))
        outs = {o.name: o for o in outputs[j.job_id]}
        result.append(
            model(
                jobId=j.job_id,
                jobPrivateKey=None,
                serviceName=j.service_name,
                userId=j.user_id,
                batchId=j.batch_id,
                tags=list(j.tags),
                jobDefinition=definition,
                jobDefinitionHash=j.job_definition_hash,
                jobDependencies=sorted(deps[j.job_id]),
                requiredResources=PairioJobRequiredResources(numCpus=j.num_cpus, numGpus=j.num_gpus, memoryGb=j.memory_gb, timeSec=j.time_sec),
                targetComputeClientIds=j.target_compute_client_ids,
                # as stored: a row from before the secret-name rule must still reach its bridge, which refuses it by name
                secrets=[PairioJobSecret.model_construct(**x) for x in j.secrets] if (private and j.secrets) else None,
                inputFileUrlList=[f.url for f in definition.inputFiles],
                outputFileUrlList=[outs[f.name].url for f in definition.outputFiles if f.name in outs],
                outputFileResults=[
                    PairioJobOutputFileResult(name=o.name, fileBaseName=o.file_base_name, url=o.url, size=o.size)
                    for o in (outs[f.name] for f in definition.outputFiles if f.name in outs)
                ],
                consoleOutputUrl=j.console_output_url,
                resourceUtilizationLogUrl=j.resource_utilization_log_url,
                timestampCreatedSec=j.timestamp_created_sec,
                timestampStartingSec=j.timestamp_starting_sec,
                timestampStartedSec=j.timestamp_started_sec,
                timestampFinishedSec=j.timestamp_finished_sec,
                canceled=j.canceled,
                status=JobStatus(j.status),
                isRunnable=j.is_runnable,
                error=j.error,
                computeClientId=j.compute_client_id,
                computeClientName=j.compute_client_name,
                computeClientUserId=j.compute_client_user_id,
                imageUri=j.image_uri,
                imageDigest=j.image_digest,
            )
        )
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


def find_jobs(s: Session, f: JobFilter, *, limit: int = DEFAULT_FIND_LIMIT, cursor: Optional[str] = None) -> tuple[list[Job], Optional[str]]:
    """Jobs matching every filter, newest first; returns a page and the cursor of the next page."""
    if not 1 <= limit <= MAX_FIND_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_FIND_LIMIT}")
    rows: list[Job] = list(s.scalars(find_jobs_query(f, limit + 1, cursor)).all())
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def find_jobs_query(f: JobFilter, limit: int, cursor: Optional[str] = None) -> Select[tuple[Job]]:
    """The query of a page: keyset paging on (created, job id), newest first.

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
        q = q.where(or_(created < ts, and_(created == ts, job_id < jid)))
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


def _fail_dependants(s: Session, job_id: str, error: str) -> None:
    dependants = s.scalars(
        select(Job).where(
            Job.job_id.in_(select(JobDependency.job_id).where(JobDependency.depends_on_job_id == job_id)),
            Job.status.not_in([JobStatus.COMPLETED.value, JobStatus.FAILED.value]),
        )
    ).all()
    for d in dependants:
        if JobStatus(d.status) in ACTIVE_STATUSES:
            continue  # already running on a compute client; it has its inputs
        _fail(s, d, error)


def on_job_completed(s: Session, job: Job) -> None:
    """Make dependants runnable when this was the last of their dependencies to complete."""
    waiting = s.scalars(
        select(Job).where(
            Job.job_id.in_(select(JobDependency.job_id).where(JobDependency.depends_on_job_id == job.job_id)),
            Job.status == JobStatus.PENDING.value,
            Job.is_runnable.is_(False),
        )
    ).all()
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
