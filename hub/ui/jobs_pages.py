"""UI: the jobs table, the job page (with its live JSON and console pages), and cancel / rerun / delete."""

from __future__ import annotations

import time
from typing import Any, Optional
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select

from pairio.models import PairioApp
from pairio.status import JobStatus

from ..context import HubContext
from ..core import accounts, job_secrets, job_sort
from ..core import jobs as core
from ..core import waiting
from ..db.tables import Job, JobDependency, JobOutput
from ..deps import Ctx, DbSession
from ..errors import BadRequest, Forbidden, NotFound
from ..security import url_hash
from .auth import FormFields, OptionalViewer, Viewer, require_viewer
from .common import json_router, notice_of, router, see_other
from .jobfiles import CONSOLE_CHUNK_BYTES, console_tail, read_console, read_resource_log, resource_plot_svg
from .render import render

JOBS_PAGE_SIZE = 50
MAX_CURSOR_CHARS = 400  # a cursor holds a timestamp and a job id
MAX_BYTE_OFFSET = 2**53  # the largest integer a browser's JSON numbers hold exactly
FILTER_FIELDS = ("service", "status", "app", "processor", "tag", "user", "client", "batch")


@router.get("/", response_class=RedirectResponse)
def home() -> RedirectResponse:
    return RedirectResponse("/jobs", status_code=307)


# ---------------------------------------------------------------- the jobs table


def job_filter_from(params: dict[str, str]) -> core.JobFilter:
    status: list[JobStatus] = []
    if params.get("status"):
        try:
            status = [JobStatus(params["status"])]
        except ValueError:
            raise BadRequest(f"unknown status {params['status']!r}; use one of {', '.join(s.value for s in JobStatus)}") from None
    return core.JobFilter(
        serviceName=params.get("service") or None, userId=params.get("user") or None,
        appName=params.get("app") or None, processorName=params.get("processor") or None,
        computeClientId=params.get("client") or None, batchId=params.get("batch") or None,
        tags=[params["tag"]] if params.get("tag") else [], status=status,
    )


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    params = {k: request.query_params.get(k, "").strip() for k in FILTER_FIELDS}
    f = job_filter_from(params)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise BadRequest("invalid cursor: follow the page's 'next' link, which carries the cursor unchanged")
    sort = job_sort.parse_sort(request.query_params.get("sort"), request.query_params.get("order"))
    rows, next_cursor = job_sort.find_sorted_jobs(s, f, sort, limit=JOBS_PAGE_SIZE, cursor=cursor)
    counts = core.count_jobs_by_status(s, f=f)
    return render(
        request, "jobs.html", viewer=viewer, jobs=rows, next_cursor=next_cursor, counts=counts,
        total=sum(counts.values()), params=params, is_first_page=cursor is None,
        sort=sort, sort_params={} if sort.is_default else {"sort": sort.key.value, "order": "desc" if sort.descending else "asc"},
        live=any(not JobStatus(j.status).is_terminal for j in rows),
        services=[x.service_name for x in accounts.list_services(s)], now=time.time(), notice=notice_of(request),
    )


# ---------------------------------------------------------------- one job


def _processor_spec(s: DbSession, job: Job) -> Optional[Any]:
    """The processor's spec as registered now (for parameter descriptions), or None when the app is gone."""
    try:
        app = PairioApp.model_validate(accounts.get_app(s, job.service_name, job.app_name).spec)
    except NotFound:
        return None
    return app.get_processor(job.processor_name)


def job_permissions(s: DbSession, job: Job, viewer: Optional[Viewer]) -> dict[str, bool]:
    if viewer is None:
        return {"manage": False, "rerun": False}
    return {"manage": core.may_manage(s, job, viewer.user_id), "rerun": job.user_id == viewer.user_id}


@router.get("/job/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request, ctx: Ctx, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    row = core.get_job_row(s, job_id)
    job = core.jobs_public(s, [row])[0]
    events = core.job_events(s, job_id)
    deps = {j.job_id: j for j in s.scalars(select(Job).where(Job.job_id.in_(job.jobDependencies)))} if job.jobDependencies else {}
    dependants = list(s.scalars(
        select(Job).where(Job.job_id.in_(select(JobDependency.job_id).where(JobDependency.depends_on_job_id == job_id)))
        .order_by(Job.timestamp_created_sec.desc()).limit(200)
    ))
    producers: dict[str, str] = {}
    if job.jobDefinition.inputFiles:
        hashes = {url_hash(f.url): f.name for f in job.jobDefinition.inputFiles}
        for out in s.scalars(select(JobOutput).where(JobOutput.url_hash.in_(list(hashes)))):
            producers[hashes[out.url_hash]] = out.job_id
    processor = _processor_spec(s, row)
    param_specs = {p.name: p for p in processor.parameters} if processor else {}
    console = console_tail(ctx.files.console_output_path(job_id))
    usage = read_resource_log(ctx.files.resource_log_path(job_id)) if row.has_resource_utilization_log else None
    plot = resource_plot_svg(usage, job.requiredResources.numCpus, job.requiredResources.memoryGb) if usage else None
    now = time.time()
    elapsed = None
    if job.timestampStartedSec is not None:
        elapsed = (job.timestampFinishedSec or now) - job.timestampStartedSec
    waiting_reason = waiting.waiting_reason(s, row, heartbeat_timeout_sec=ctx.settings.heartbeat_timeout_sec, now=now)
    return render(
        request, "job.html", viewer=viewer, job=job, events=events, deps=deps, dependants=dependants,
        waiting_reason=waiting_reason, queue_position=waiting.queue_position(s, row), queue_limit=waiting.QUEUE_COUNT_LIMIT,
        producers=producers, param_specs=param_specs, console=console, usage=usage, plot=plot, elapsed=elapsed,
        resource_log_size=_resource_log_size(ctx, job_id), can=job_permissions(s, row, viewer), notice=notice_of(request), now=now,
        erased_secrets=job_secrets.erased_secret_names(row),
        title=f"Job {job.jobId} · {job.jobDefinition.processorName}",
    )


@json_router.get("/job/{job_id}/live")
def job_live(job_id: str, request: Request, ctx: Ctx, s: DbSession) -> JSONResponse:
    """What the job page polls while the job runs: status, the number of events, and new console output."""
    row = core.get_job_row(s, job_id)
    offset = byte_offset_param(request, "consoleOffset")
    chunk = read_console(ctx.files.console_output_path(job_id), offset)
    num_events = len(core.job_events(s, job_id))
    body = {
        "jobId": row.job_id, "status": row.status, "canceled": row.canceled, "error": row.error,
        "isTerminal": JobStatus(row.status).is_terminal, "numEvents": num_events,
        "resourceLogSize": _resource_log_size(ctx, job_id),
        "console": {"start": chunk.start, "end": chunk.end, "size": chunk.size, "text": chunk.text},
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def byte_offset_param(request: Request, name: str) -> int:
    """A byte offset from the query string (0 when absent): an integer from 0 to MAX_BYTE_OFFSET, else 400."""
    raw = request.query_params.get(name, "0").strip()
    # Digits only, and few of them: int() of a huge string is slow, and '-5' or '1e3' are not offsets.
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(MAX_BYTE_OFFSET)) or int(raw) > MAX_BYTE_OFFSET:
        raise BadRequest(f"{name} must be a byte offset: a whole number from 0 to {MAX_BYTE_OFFSET}")
    return int(raw)


def _resource_log_size(ctx: HubContext, job_id: str) -> int:
    """Grows while a running job's bridge uploads its resource log: the page then redraws its plot."""
    try:
        return ctx.files.resource_log_path(job_id).stat().st_size
    except OSError:
        return 0


@router.get("/job/{job_id}/console", response_class=HTMLResponse)
def console_page(job_id: str, request: Request, ctx: Ctx, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    """The console output a piece at a time (for pages without scripts, and logs too large to show at once)."""
    row = core.get_job_row(s, job_id)
    start = byte_offset_param(request, "start")
    chunk = read_console(ctx.files.console_output_path(job_id), start)
    earlier = max(0, chunk.start - CONSOLE_CHUNK_BYTES) if chunk.start > 0 else None
    return render(
        request, "console.html", viewer=viewer, job=row, chunk=chunk, earlier=earlier,
        later=chunk.end if chunk.end < chunk.size else None, title=f"Console output of job {row.job_id}",
    )


@json_router.get("/job/{job_id}/console.json")
def console_json(job_id: str, request: Request, ctx: Ctx, s: DbSession) -> JSONResponse:
    """A piece of the console output ending at byte ``end`` (the job page's "load earlier output")."""
    core.get_job_row(s, job_id)
    end = byte_offset_param(request, "end")
    start = max(0, end - CONSOLE_CHUNK_BYTES)
    chunk = read_console(ctx.files.console_output_path(job_id), start, end - start)
    return JSONResponse({"start": chunk.start, "end": chunk.end, "size": chunk.size, "text": chunk.text}, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- actions


@router.post("/job/{job_id}/cancel")
def cancel(job_id: str, request: Request, ctx: Ctx, s: DbSession, fields: FormFields) -> RedirectResponse:
    viewer = require_viewer(s, request, fields)
    core.cancel_job(ctx, s, viewer.user_id, job_id)
    return see_other(f"/job/{job_id}", "canceled")


@router.post("/job/{job_id}/rerun")
def rerun(job_id: str, request: Request, ctx: Ctx, s: DbSession, fields: FormFields) -> RedirectResponse:
    """Run the job again as a new job (same definition, resources, tags and secrets; the cache skipped)."""
    viewer = require_viewer(s, request, fields)
    row = core.get_job_row(s, job_id)
    if row.user_id != viewer.user_id:
        raise Forbidden(f"only the job's owner ({row.user_id}) may rerun it; submit your own from the playground")
    erased = job_secrets.erased_secret_names(row)
    if erased:
        raise BadRequest(
            f"job {job_id} cannot be rerun from here: the hub erased the values of its secrets and secret parameters "
            f"({', '.join(erased)}) when it finished; submit it again with them (the Submit page takes secret "
            "parameters; secrets need the Python client)"
        )
    job = core.jobs_public(s, [row], include_private=True)[0]
    new, _ = core.create_job(ctx, s, viewer.user_id, core.JobCreate(
        serviceName=job.serviceName, jobDefinition=job.jobDefinition, requiredResources=job.requiredResources,
        tags=job.tags, batchId=job.batchId, targetComputeClientIds=job.targetComputeClientIds, secrets=job.secrets,
        skipCache=True,
    ))
    core.add_event(s, new.job_id, None, f"rerun of job {job_id}")
    return see_other(f"/job/{new.job_id}", "rerun")


@router.post("/job/{job_id}/delete")
def delete(job_id: str, request: Request, ctx: Ctx, s: DbSession, fields: FormFields) -> RedirectResponse:
    viewer = require_viewer(s, request, fields)
    row = core.get_job_row(s, job_id)
    service = row.service_name
    core.delete_jobs(ctx, s, viewer.user_id, [job_id])
    return see_other(f"/jobs?service={quote(service)}", "deleted")
