"""A job as the hub answers it: one builder from the job's columns, and the JSON of GET /v1/jobs/{id}.

``job_answer`` is the one place a job's answer is built, as the plain JSON-ready dict
``PairioJobData`` would dump (``jobs_public`` validates it into models; the busiest routes
serialize it directly). It reads a job's columns as attributes, so it takes an ORM ``Job``,
a Core row of ``ANSWER_COLUMNS`` or a just-inserted job's ``JobValues`` alike.

The busiest routes read with prebuilt Core statements on a plain connection: an ORM load,
composing a ``select()`` per call and validating the answer into models cost several
times the queries themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

from pydantic_core import to_json
from sqlalchemy import ColumnElement, ScalarSelect, Select, Subquery, bindparam, literal_column, null, select, text, union_all
from sqlalchemy.engine import Row

from pairio.models import PairioJobDefinition, PairioJobInputFile, PairioJobOutputFile, PairioJobParameter
from pairio.status import TERMINAL_STATUSES, JobStatus

from ..db.raw import Reads, prebuilt
from ..db.tables import Job, JobDependency, JobOutput
from ..errors import NotFound
from . import job_secrets

_JOBS = Job.__table__.c
# What an answer reads (a job's secrets only for its compute client's answers, through the ORM)
ANSWER_COLUMNS = (
    _JOBS.job_id, _JOBS.service_name, _JOBS.user_id, _JOBS.batch_id, _JOBS.tags, _JOBS.job_definition,
    _JOBS.job_definition_hash, _JOBS.num_cpus, _JOBS.num_gpus, _JOBS.memory_gb, _JOBS.time_sec,
    _JOBS.target_compute_client_ids, _JOBS.console_output_url, _JOBS.resource_utilization_log_url,
    _JOBS.timestamp_created_sec, _JOBS.timestamp_starting_sec, _JOBS.timestamp_started_sec,
    _JOBS.timestamp_finished_sec, _JOBS.canceled, _JOBS.status, _JOBS.is_runnable, _JOBS.error,
    _JOBS.compute_client_id, _JOBS.compute_client_name, _JOBS.compute_client_user_id, _JOBS.image_uri,
    _JOBS.image_digest, _JOBS.secret_parameter_names,
)
# One round trip for the dependencies and outputs of some jobs (outputs only of jobs that declare any).
_DEPS_SQL = (
    "SELECT job_id, 'd' AS kind, depends_on_job_id AS name, NULL AS file_base_name, NULL AS url, NULL AS size "
    "FROM job_dependencies WHERE job_id IN :ids"
)
_DEPS = text(_DEPS_SQL).bindparams(bindparam("ids", expanding=True))
_DEPS_AND_OUTPUTS = text(
    _DEPS_SQL + " UNION ALL SELECT job_id, 'o', name, file_base_name, url, size FROM job_outputs WHERE job_id IN :with_outputs"
).bindparams(bindparam("ids", expanding=True), bindparam("with_outputs", expanding=True))


class OutputRow(NamedTuple):
    name: str
    file_base_name: str
    url: str
    size: Optional[int]


def dependencies_and_outputs(conn: Any, jobs: Sequence[Any]) -> tuple[dict[str, list[str]], dict[str, list[OutputRow]]]:
    """Per job id, the jobs it depends on and its output rows. ``conn``: a Session or a Connection."""
    ids = [j.job_id for j in jobs]
    deps: dict[str, list[str]] = {i: [] for i in ids}
    outputs: dict[str, list[OutputRow]] = {i: [] for i in ids}
    if ids:
        with_outputs = [j.job_id for j in jobs if (j.job_definition or {}).get("outputFiles")]
        q, params = (_DEPS_AND_OUTPUTS, {"ids": ids, "with_outputs": with_outputs}) if with_outputs else (_DEPS, {"ids": ids})
        for row in conn.execute(q, params):
            if row.kind == "d":
                deps[row.job_id].append(row.name)
            else:
                outputs[row.job_id].append(OutputRow(row.name, row.file_base_name, row.url, row.size))
    return deps, outputs


def job_answer(job: Any, deps: Sequence[str], outputs: Sequence[OutputRow], *, include_private: bool = False) -> dict[str, Any]:
    """The job as the hub answers it, as ``PairioJobData.model_dump(mode="json")`` gives it.

    Users' answers: private key and secrets null, secret parameters ``"***"``.
    ``include_private`` (the compute client holding the job, checked by the caller) gives
    the plain secrets and secret parameters of a job that is not terminal.
    """
    private = include_private and JobStatus(job.status) not in TERMINAL_STATUSES
    definition = _as_answered(job.job_definition if private else job_secrets.masked_definition(job))
    outs = {o.name: o for o in outputs}
    listed = [outs[f["name"]] for f in definition["outputFiles"] if f["name"] in outs]
    return {
        "jobId": job.job_id,
        "jobPrivateKey": None,
        "serviceName": job.service_name,
        "userId": job.user_id,
        "batchId": job.batch_id,
        "tags": list(job.tags),
        "jobDefinition": definition,
        "jobDefinitionHash": job.job_definition_hash,
        "jobDependencies": sorted(deps),
        "requiredResources": {
            "numCpus": job.num_cpus, "numGpus": job.num_gpus, "memoryGb": float(job.memory_gb), "timeSec": float(job.time_sec),
        },
        "targetComputeClientIds": job.target_compute_client_ids,
        # as stored: a row from before the secret-name rule must still reach its bridge, which refuses it by name
        "secrets": job.secrets if (private and job.secrets) else None,
        "inputFileUrlList": [f["url"] for f in definition["inputFiles"]],
        "outputFileUrlList": [o.url for o in listed],
        "outputFileResults": [{"name": o.name, "fileBaseName": o.file_base_name, "url": o.url, "size": o.size} for o in listed],
        "consoleOutputUrl": job.console_output_url,
        "resourceUtilizationLogUrl": job.resource_utilization_log_url,
        "timestampCreatedSec": float(job.timestamp_created_sec),
        "timestampStartingSec": _float(job.timestamp_starting_sec),
        "timestampStartedSec": _float(job.timestamp_started_sec),
        "timestampFinishedSec": _float(job.timestamp_finished_sec),
        "canceled": bool(job.canceled),
        "status": job.status,
        "isRunnable": bool(job.is_runnable),
        "error": job.error,
        "computeClientId": job.compute_client_id,
        "computeClientName": job.compute_client_name,
        "computeClientUserId": job.compute_client_user_id,
        "imageUri": job.image_uri,
        "imageDigest": job.image_digest,
    }


def answer_json(answer: Mapping[str, Any]) -> bytes:
    """The answer's JSON, byte for byte what ``JobPublic.model_dump_json`` gives (the same serializer)."""
    return to_json(answer)


def items_subquery(job_id: ColumnElement[Any], *more: Select[Any]) -> Subquery:
    """The dependencies and outputs of the job ``job_id`` (an expression) as rows of one shape, and ``more``
    rows of that shape (job id, kind, name, file base name, url, size): the number of jobs ahead (kind 'a', in size)."""
    deps, outs = JobDependency.__table__.c, JobOutput.__table__.c
    return union_all(
        select(
            deps.job_id, literal_column("'d'").label("kind"), deps.depends_on_job_id.label("item_name"),
            null().label("file_base_name"), null().label("url"), null().label("size"),
        ).where(deps.job_id == job_id),
        select(outs.job_id, literal_column("'o'"), outs.name, outs.file_base_name, outs.url, outs.size).where(outs.job_id == job_id),
        *more,
    ).subquery("items")


def with_items(items: Subquery) -> tuple[Any, ...]:
    """The columns ``StoredJob.from_rows`` reads besides ``ANSWER_COLUMNS``."""
    return (items.c.kind, items.c.item_name, items.c.file_base_name, items.c.url, items.c.size)


class StoredJob(NamedTuple):
    """A job read with ``ANSWER_COLUMNS``, with its dependencies and outputs."""

    row: Row[Any]
    dependencies: list[str]
    outputs: list[OutputRow]
    jobs_ahead: Optional[int] = None
    """Its service's runnable pending jobs ahead of it, when the statement counted them (an item of kind 'a')."""

    @classmethod
    def from_rows(cls, rows: Sequence[Row[Any]]) -> Optional["StoredJob"]:
        """From the rows of a statement that joins ``items_subquery`` to the job (None when no job was found)."""
        if not rows or rows[0].job_id is None:
            return None
        return cls(
            rows[0],
            [r.item_name for r in rows if r.kind == "d"],
            [OutputRow(r.item_name, r.file_base_name, r.url, r.size) for r in rows if r.kind == "o"],
            next((int(r.size) for r in rows if r.kind == "a"), None),
        )

    def answer(self) -> dict[str, Any]:
        """The job as users see it."""
        return job_answer(self.row, self.dependencies, self.outputs)


# Statements are built once: composing a select() costs more than SQLite takes to run it.


def job_with_items_statement(*extra: ColumnElement[Any], more_items: Sequence[Select[Any]] = ()) -> Select[Any]:
    """A job's columns (and ``extra`` ones), once per dependency and output (once if it has none): the whole answer in one statement.
    ``more_items``: see ``items_subquery``."""
    items = items_subquery(bindparam("job_id"), *more_items)
    return (
        select(*ANSWER_COLUMNS, *extra, *with_items(items))
        .select_from(Job.__table__.outerjoin(items, items.c.job_id == _JOBS.job_id))
        .where(_JOBS.job_id == bindparam("job_id"))
    )


_JOB_WITH_ITEMS = prebuilt(job_with_items_statement())


def latest_job_subquery() -> ScalarSelect[Any]:
    """The id of the latest job of service ``:service`` with definition hash ``:hash``."""
    return (
        select(_JOBS.job_id)
        .where(_JOBS.service_name == bindparam("service"), _JOBS.job_definition_hash == bindparam("hash"))
        .order_by(_JOBS.timestamp_created_sec.desc())
        .limit(1)
        .scalar_subquery()
    )


def _latest_with_items_statement() -> Select[Any]:
    items = items_subquery(latest_job_subquery())
    return (
        select(*ANSWER_COLUMNS, *with_items(items))
        .select_from(Job.__table__.outerjoin(items, items.c.job_id == _JOBS.job_id))
        .where(_JOBS.job_id == latest_job_subquery())
    )


_LATEST_WITH_ITEMS = prebuilt(_latest_with_items_statement())


def stored_job(conn: Reads, job_id: str, statement: Select[Any] = _JOB_WITH_ITEMS) -> StoredJob:
    """The job with its dependencies and outputs, read by one statement (``statement``: one of ``job_with_items_statement``)."""
    job = StoredJob.from_rows(conn.execute(statement, {"job_id": job_id}).all())
    if job is None:
        raise NotFound(f"no job {job_id!r} (it may have been deleted)")
    return job


def public_job_answer(conn: Reads, job_id: str) -> dict[str, Any]:
    """The job as users see it, read by one statement."""
    return stored_job(conn, job_id).answer()


def latest_job_with_definition(conn: Reads, service_name: str, definition_hash: str) -> Optional[StoredJob]:
    """The service's most recent job with this definition hash, if any."""
    return StoredJob.from_rows(conn.execute(_LATEST_WITH_ITEMS, {"service": service_name, "hash": definition_hash}).all())


def _float(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


_DEFINITION_KEYS = tuple(PairioJobDefinition.model_fields)
_ITEM_KEYS = {
    "inputFiles": tuple(PairioJobInputFile.model_fields),
    "outputFiles": tuple(PairioJobOutputFile.model_fields),
    "parameters": tuple(PairioJobParameter.model_fields),
}


def _as_answered(definition: dict[str, Any]) -> dict[str, Any]:
    """A stored definition as the model dumps it. Stored ones are that dump already (checked by
    its keys); one of another shape (a row from an older model) goes through the model."""
    if tuple(definition) == _DEFINITION_KEYS and all(
        tuple(item) == keys for name, keys in _ITEM_KEYS.items() for item in definition[name]
    ):
        return definition
    return PairioJobDefinition.model_validate(definition).model_dump(mode="json")
