"""REST: jobs as users see them."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Query, Response, status

from pairio.status import JobStatus

from ..core import jobs as core
from ..deps import Ctx, CurrentUser, DbSession
from ..errors import HubError
from ..schemas import (
    DeleteJobsBody,
    FindByDefinitionBody,
    FindByDefinitionResult,
    JobCounts,
    JobCreateBody,
    JobEventsPublic,
    JobPublic,
    JobsCreateBody,
    JobsCreated,
    JobsPublic,
)

router = APIRouter(prefix="/v1", tags=["jobs"])
MAX_CURSOR_CHARS = 400  # a cursor holds a timestamp and a job id


def _public(s: DbSession, job: object) -> JobPublic:
    return JobPublic.model_validate(core.jobs_public(s, [job])[0].model_dump())  # type: ignore[list-item]


@router.post(
    "/jobs",
    response_model=JobPublic,
    status_code=201,
    responses={200: {"model": JobPublic, "description": "an existing job with the same definition (cache hit)"}},
)
def create_job(body: JobCreateBody, ctx: Ctx, s: DbSession, user: CurrentUser, response: Response) -> JobPublic:
    """Create a job, or return the most recent job with the same definition hash (200)."""
    job, created = core.create_job(ctx, s, user, body.to_core())
    if not created:
        response.status_code = status.HTTP_200_OK
    return _public(s, job)


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
def find_jobs(
    s: DbSession,
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
) -> JobsPublic:
    """Jobs matching every filter given, newest first, a page at a time."""
    f = core.JobFilter(
        serviceName=serviceName, userId=userId, jobId=jobId, appName=appName, processorName=processorName,
        computeClientId=computeClientId, batchId=batchId, tags=tag, inputFileUrl=inputFileUrl,
        outputFileUrl=outputFileUrl, status=status,
    )
    rows, next_cursor = core.find_jobs(s, f, limit=limit, cursor=cursor)
    return JobsPublic(jobs=[JobPublic.model_validate(j.model_dump()) for j in core.jobs_public(s, rows)], nextCursor=next_cursor)


@router.get("/job-counts", response_model=JobCounts)
def job_counts(s: DbSession, serviceName: Optional[str] = None) -> JobCounts:
    """How many jobs are in each status (in one service, or everywhere)."""
    return JobCounts(counts=core.count_jobs_by_status(s, serviceName))


@router.post("/jobs/find-by-definition", response_model=FindByDefinitionResult)
def find_job_by_definition(body: FindByDefinitionBody, s: DbSession) -> FindByDefinitionResult:
    """The most recent job in the service with this definition's hash, if any."""
    job = core.find_job_by_definition(s, body.serviceName, body.jobDefinition)
    return FindByDefinitionResult(found=job is not None, job=_public(s, job) if job else None)


@router.post("/jobs/delete", status_code=204)
def delete_jobs(body: DeleteJobsBody, ctx: Ctx, s: DbSession, user: CurrentUser) -> None:
    """Delete several jobs at once (all or none)."""
    core.delete_jobs(ctx, s, user, body.jobIds)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: str, s: DbSession) -> JobPublic:
    return _public(s, core.get_job_row(s, job_id))


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
