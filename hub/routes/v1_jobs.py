"""REST: jobs as users see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from pairio.status import JobStatus

from ..context import HubContext, now_sec
from ..db.raw import RawReads
from ..core import job_answers
from ..core import jobs as core
from ..core import waiting
from ..deps import Ctx, CurrentUser, DbSession, Token, get_ctx
from ..errors import HubError
from ..schemas import (
    DeleteJobsBody,
    FindByDefinitionBody,
    FindByDefinitionResult,
    JobCounts,
    JobCreateBody,
    JobDetailPublic,
    JobEventsPublic,
    JobPublic,
    JobsCreateBody,
    JobsCreated,
    JobsPublic,
)

router = APIRouter(prefix="/v1", tags=["jobs"])
MAX_CURSOR_CHARS = 400  # a cursor holds a timestamp and a job id


def _public(s: DbSession, job: core.Job) -> JobPublic:
    return core.jobs_public(s, [job], model=JobPublic)[0]


# The busiest routes are async and do all their database work and serialization in one
# worker thread (one hand-off each way, as for a plain sync endpoint): sync dependencies
# would each cost a hand-off of their own. They return the JSON themselves, built by
# pydantic in the worker thread, in the form FastAPI gives ``response_model`` (a job's answer:
# hub/core/job_answers.py, serialized without building the model; response_model documents it).


def _json(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json")


def _answer(answer: dict[str, Any], status_code: int = 200) -> Response:
    """A job's answer (``job_answers.job_answer``): the JSON ``JobPublic`` would give, without building the model."""
    return Response(job_answers.answer_json(answer), status_code=status_code, media_type="application/json")


def _ctx(request: Request) -> HubContext:
    return get_ctx(request)


async def _in_thread(fn: Callable[..., Response], *args: Any) -> Response:
    return await run_in_threadpool(fn, *args)


@router.post(
    "/jobs",
    response_model=JobPublic,
    status_code=201,
    responses={200: {"model": JobPublic, "description": "an existing job with the same definition (cache hit)"}},
)
async def create_job(body: JobCreateBody, request: Request, token: Token) -> Response:
    """Create a job, or return the most recent job with the same definition hash (200)."""
    ctx = _ctx(request)
    req = body.to_core()
    # Checks, the cache key and a plain cache hit need no write: SQLite's write lock is taken only to create.
    # Usually one statement does (no transaction needed; on SQLite read on the event loop: HubContext.run_read);
    # else the checks that explain a refusal, in a transaction.
    found = None
    guessed = core.prepared_with_last_app_version(token, req)
    if token and guessed is not None:
        key, prepared = token, guessed
        found = await ctx.run_read(lambda conn: core.caller_and_cached(conn, key, req, prepared))
        if found is not None and found[2] is not None and core.is_read_only_cache_hit(found[2].row, req):
            return _answer(found[2].answer(), 200)
    if found is None:
        return await _in_thread(_create_job, ctx, token, req)
    user, prepared_job, cached = found
    # the key was checked a moment ago, as if the whole request had run then; the role is checked again (with the
    # inserts, presuming the read's answer still holds: else again, before them). On PostgreSQL a new job is first
    # tried in one round trip, checks, inserts and COMMIT (None: it wrote nothing, or does not apply)
    if cached is None and ctx.writes_in_one_round_trip:
        created = await ctx.run_write_in_one_round_trip(
            lambda conn, engine: core.create_new_job_in_one_round_trip(ctx, conn, engine, user, req, prepared_job)
        )
        if created is not None:
            return _answer(core.new_job_answer(created), 201)
    try:
        return await ctx.run_write(lambda s: _create_in(ctx, s, user, req, prepared_job, presumed_new=cached is None))
    except core.CheckedTooSoon:
        return await ctx.run_write(lambda s: _create_in(ctx, s, user, req, prepared_job))


def _create_job(ctx: HubContext, token: Optional[str], req: core.JobCreate) -> Response:
    """The path that explains a refusal (or a first request of an app version): checks in a read transaction."""
    with ctx.read_connection() as conn:
        user, prepared, existing = core.prepare_and_find_cached(conn, token, req)
    if existing is not None and core.is_read_only_cache_hit(existing.row, req):
        return _answer(existing.answer(), 200)
    with ctx.transaction() as s:
        return _create_in(ctx, s, user, req, prepared)


def _create_in(ctx: HubContext, s: Session, user: str, req: core.JobCreate, prepared: core.PreparedJob, presumed_new: bool = False) -> Response:
    """Create the job in the transaction of ``s`` (or find the cached one under the write lock)."""
    job, created = core.create_job_values(ctx, s, user, req, prepared=prepared, presumed_new=presumed_new)
    status = 201 if created else 200
    if isinstance(job, core.JobValues):
        return _answer(core.new_job_answer(job), status)
    return _json(core.jobs_public(s, [job], model=JobPublic)[0], status)


@router.post("/jobs/batch", response_model=JobsCreated, status_code=200)
def create_jobs(body: JobsCreateBody, ctx: Ctx, s: DbSession, user: CurrentUser) -> JobsCreated:
    """Create many jobs in one request, each with its own definition, resources and tags (the cache rules of
    ``POST /v1/jobs`` apply to each). All or nothing: a job the hub refuses refuses the request, naming it."""
    made = []
    for index, request in enumerate(body.jobs):
        try:
            made.append(core.create_job(ctx, s, user, request.to_core()))
        except HubError as e:
            raise type(e)(f"jobs[{index}]: {e.message}") from None
    return JobsCreated(jobs=[JobPublic.model_validate(j.model_dump()) for j in core.jobs_public(s, [job for job, _ in made])],
                       created=[created for _, created in made])


@router.get("/jobs", response_model=JobsPublic)
async def find_jobs(
    request: Request,
    serviceName: Optional[str] = None,
    userId: Optional[str] = None,
    jobId: Optional[str] = None,
    appName: Optional[str] = None,
    processorName: Optional[str] = None,
    computeClientId: Optional[str] = None,
    batchId: Optional[str] = None,
    tag: Annotated[list[str], Query(description="every tag given must be present")] = [],
    inputFileUrl: Optional[str] = None,
    outputFileUrl: Optional[str] = None,
    status: Annotated[list[JobStatus], Query()] = [],
    limit: Annotated[int, Query(ge=1, le=core.MAX_FIND_LIMIT)] = core.DEFAULT_FIND_LIMIT,
    cursor: Annotated[Optional[str], Query(max_length=MAX_CURSOR_CHARS, description="the nextCursor of the previous page")] = None,
) -> Response:
    """Jobs matching every filter given, newest first, a page at a time."""
    f = core.JobFilter(
        serviceName=serviceName, userId=userId, jobId=jobId, appName=appName, processorName=processorName,
        computeClientId=computeClientId, batchId=batchId, tags=tag, inputFileUrl=inputFileUrl,
        outputFileUrl=outputFileUrl, status=status,
    )
    return await _in_thread(_find_jobs, _ctx(request), f, limit, cursor)


def _find_jobs(ctx: HubContext, f: core.JobFilter, limit: int, cursor: Optional[str]) -> Response:
    with ctx.read_transaction() as s:
        rows, next_cursor = core.find_jobs(s, f, limit=limit, cursor=cursor)
        return _json(JobsPublic(jobs=core.jobs_public(s, rows, model=JobPublic), nextCursor=next_cursor))


@router.get("/job-counts", response_model=JobCounts)
async def job_counts(request: Request, serviceName: Optional[str] = None) -> Response:
    """How many jobs are in each status (in one service, or everywhere)."""
    return await _in_thread(_job_counts, _ctx(request), serviceName)


def _job_counts(ctx: HubContext, service_name: Optional[str]) -> Response:
    with ctx.read_transaction() as s:
        return _json(JobCounts(counts=core.count_jobs_by_status(s, service_name)))


@router.post("/jobs/find-by-definition", response_model=FindByDefinitionResult)
def find_job_by_definition(body: FindByDefinitionBody, s: DbSession) -> FindByDefinitionResult:
    """The most recent job in the service with this definition's hash, if any."""
    job = core.find_job_by_definition(s, body.serviceName, body.jobDefinition)
    return FindByDefinitionResult(found=job is not None, job=_public(s, job) if job else None)


@router.post("/jobs/delete", status_code=204)
def delete_jobs(body: DeleteJobsBody, ctx: Ctx, s: DbSession, user: CurrentUser) -> None:
    """Delete several jobs at once (all or none)."""
    core.delete_jobs(ctx, s, user, body.jobIds)


@router.get("/jobs/{job_id}", response_model=JobDetailPublic)
async def get_job(job_id: str, request: Request) -> Response:
    """The job, with why it waits (``waitingReason``) and its place in its service's queue (``queuePosition``)."""
    ctx = _ctx(request)
    return await ctx.run_read(lambda conn: _get_job(ctx, conn, job_id))


def _get_job(ctx: HubContext, conn: RawReads, job_id: str) -> Response:
    stored = job_answers.stored_job(conn, job_id, waiting.JOB_WITH_ITEMS_AND_AHEAD)
    answer = stored.answer()
    answer["waitingReason"] = answer["queuePosition"] = None
    if not JobStatus(answer["status"]).is_terminal and not answer["canceled"]:
        # only a job that may wait pays for the reason, read on the same connection
        job = waiting.WaitingJob.of_stored(stored)
        reason = waiting.waiting_reason(
            conn, job, heartbeat_timeout_sec=ctx.settings.heartbeat_timeout_sec, now=now_sec(), clients_memory=ctx.engine,
        )
        answer["waitingReason"] = reason.model_dump(mode="json", by_alias=True) if reason is not None else None
        answer["queuePosition"] = waiting.queue_position(conn, job)
    return _answer(answer)


@router.get("/jobs/{job_id}/events", response_model=JobEventsPublic)
def get_job_events(job_id: str, s: DbSession) -> JobEventsPublic:
    """What happened to the job, oldest first: created, claimed, started, finished, errors."""
    core.get_job_row(s, job_id)
    return JobEventsPublic(events=core.job_events(s, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, ctx: Ctx, s: DbSession, user: CurrentUser) -> JobPublic:
    """Stop the job: a pending job fails at once, a running one within seconds of its bridge hearing."""
    return _public(s, core.cancel_job(ctx, s, user, job_id))


@router.delete("/jobs/{job_id}", status_code=204)
def delete_job(job_id: str, ctx: Ctx, s: DbSession, user: CurrentUser) -> None:
    core.delete_jobs(ctx, s, user, [job_id])
