"""REST for bridges (compute clients): heartbeat, claim, status, console output, output files.

Calls send ``Authorization: Bearer <compute client private key>``; calls under
``/v1/compute/jobs/{jobId}`` also accept the job private key issued at claim. Long-polling
claims wait on the event loop, not in worker threads, so a hub can hold many of them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic_core import to_json
from sqlalchemy.orm import Session

from pairio.models import Name, PairioJobData
from pairio.status import JobStatus

from ..claim_waiters import ClaimCall
from ..context import HubContext
from ..core import compute
from ..core.jobs import jobs_public
from ..deps import Ctx, Token
from ..errors import BadRequest, HubError, PayloadTooLarge

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/compute", tags=["compute (bridges)"])

# Output uploads may be far larger than JSON bodies (see app.state.upload_limits).
UPLOAD_PATH_PREFIX = "/v1/compute/jobs/"
MAX_ACTIVE_JOB_IDS = 10_000
MAX_CLAIM_WAIT_SEC = 3600.0
_WRITE_BUFFER_BYTES = 1024 * 1024
# Bounds on numbers that reach SQL: larger ones overflow PostgreSQL's integers (a 500 instead of an answer).
MAX_FREE_CAPACITY = 10**9
MAX_CONSOLE_OFFSET = 2**53

Key = Token
T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Database and disk work off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- bodies and results


ContainerModeName = Literal["none", "podman", "docker", "apptainer"]
MAX_CLAIM_APPS = 500


class BridgeInfoBody(_Body):
    """Where and how the bridge runs: shown on the compute client's page and in its REST answer."""

    host: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$", description="the bridge machine's host name")
    backend: Literal["local", "slurm", "ssh"] = Field(description="where its jobs run")
    remoteHost: Optional[str] = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$",
        description="ssh, or slurm over ssh: the host jobs are sent to",
    )
    containerMode: ContainerModeName
    apps: Optional[list[Name]] = Field(
        default=None, max_length=MAX_CLAIM_APPS, description="container mode none: the apps it has a command for"
    )
    version: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9.+_\-]+$", description="the bridge's pairio version")


class HeartbeatBody(_Body):
    activeJobIds: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=MAX_ACTIVE_JOB_IDS, description="the jobs this bridge is working on"
    )
    stoppingJobIds: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=MAX_ACTIVE_JOB_IDS,
        description="jobs the bridge is stopping or finishing already: a waiting heartbeat does not answer early for them",
    )
    bridge: Optional[BridgeInfoBody] = Field(
        default=None, description="where and how the bridge runs; send it when it changed (the hub keeps the last one)"
    )
    waitSec: float = Field(
        default=0, ge=0, le=MAX_CLAIM_WAIT_SEC, allow_inf_nan=False,
        description="with nothing to stop, wait up to this long for one of the client's jobs to be canceled or deleted "
        "(answered at once then; reduced to a quarter of the heartbeat timeout)",
    )


class HeartbeatResult(BaseModel):
    cancelJobIds: list[str] = Field(description="jobs to stop: canceled, deleted, finished in the hub, or handed to another client")
    heartbeatTimeoutSec: float = Field(description="a client silent this long loses its jobs; beat well within it")


class CanceledJobs(BaseModel):
    jobIds: list[str]


class ClaimCapacity(_Body):
    """What the bridge has free right now; a missing field means no limit."""

    numCpus: Optional[int] = Field(default=None, ge=0, le=MAX_FREE_CAPACITY)
    numGpus: Optional[int] = Field(default=None, ge=0, le=MAX_FREE_CAPACITY)
    memoryGb: Optional[float] = Field(default=None, ge=0, le=MAX_FREE_CAPACITY, allow_inf_nan=False)


class ClaimNowBody(_Body):
    """A claim that does not wait: what a finish report may carry for the slot it frees."""

    maxJobs: int = Field(default=1, ge=1, le=compute.MAX_CLAIM_JOBS)
    capacity: Optional[ClaimCapacity] = None
    apps: Optional[list[Name]] = Field(
        default=None, max_length=MAX_CLAIM_APPS,
        description="the apps this bridge has a command for: only their jobs are handed out (omitted: any app)",
    )
    containerMode: Optional[ContainerModeName] = Field(
        default=None,
        description="how the bridge starts processors: 'none' takes no job of an original-SDK image; podman, docker and "
        "apptainer take only jobs whose processor has an image and an executable (omitted: any job)",
    )
    originalSdkImages: StrictBool = Field(
        default=True, description="container modes: whether it runs images built with the original Pairio SDK (their containers must reach the hub)"
    )
    aheadJobs: int = Field(
        default=0, ge=0, le=compute.MAX_AHEAD_JOBS,
        description="how many jobs the client may hold beyond its slots' multiplicity: claimed ahead of a free slot, started "
        "when one frees, given back (POST /v1/compute/jobs/{id}/release) if none frees in time",
    )

    def scope(self) -> Optional[compute.ClaimScope]:
        if self.apps is None and self.containerMode is None:
            return None
        apps = frozenset(self.apps) if self.apps is not None else None
        return compute.ClaimScope(apps=apps, container_mode=self.containerMode, original_sdk_images=self.originalSdkImages)

    def claim_in(self, s: Session, key: Optional[str], call: Optional[ClaimCall] = None) -> list[compute.ClaimedJob]:
        """One claim attempt in the transaction of ``s``; ``call``: the claim's place among the waiting ones."""
        capacity = compute.Capacity(**self.capacity.model_dump()) if self.capacity else None
        return compute.claim_jobs_in(s, key, self.maxJobs, capacity, self.scope(), ahead=self.aheadJobs, call=call)


class ClaimBody(ClaimNowBody):
    waitSec: float = Field(
        default=0, ge=0, le=MAX_CLAIM_WAIT_SEC, allow_inf_nan=False,
        description="long-poll up to this long when nothing is runnable (reduced to the hub's claim_max_wait_sec)",
    )


class StoredJobSecret(BaseModel):
    """A secret as stored. Its name is not checked again here: a job from before the secret-name rule must
    reach its bridge, which refuses it by name (a validation error here would answer 500 to every claim)."""

    name: str
    value: str


class ComputeJob(PairioJobData):
    """A job as its compute client sees it: secrets and secret parameters until it ends; jobPrivateKey only in the claim's answer."""

    secrets: Optional[list[StoredJobSecret]] = None  # type: ignore[assignment]


class ComputeJobDetail(ComputeJob):
    consoleOutputSize: int = Field(description="bytes of console output the hub received (before masking secrets): the offset to append at")


class ClaimResult(BaseModel):
    jobs: list[ComputeJob]


class ComputeJobs(BaseModel):
    jobs: list[ComputeJob]


class StatusBody(_Body):
    status: JobStatus
    error: Optional[str] = Field(default=None, max_length=100_000, description="with status 'failed' only")
    imageDigest: Optional[str] = Field(
        default=None, max_length=300, pattern=r"^[a-z0-9]+:[a-f0-9]{32,256}$",
        description="the resolved digest of the container image the job ran (e.g. sha256:...), recorded on the job",
    )


class FinishBody(StatusBody):
    consoleOffset: Optional[int] = Field(default=None, ge=0, le=MAX_CONSOLE_OFFSET, description="where consoleBase64's bytes start")
    consoleBase64: Optional[str] = Field(default=None, description="the console output's last bytes, base64; with consoleOffset")
    resourceLog: Optional[str] = Field(default=None, description="the whole resource utilization log (JSON lines)")
    startedAgoSec: Optional[float] = Field(
        default=None, ge=0, le=compute.MAX_STARTED_AGO_SEC, allow_inf_nan=False,
        description="for a job still starting at the hub: it ran, without a 'running' report of its own (a short job "
        "reported in one call), from this many seconds before this call; the hub records it running from then (never "
        "before it was claimed), then its end",
    )
    claim: Optional[ClaimNowBody] = Field(
        default=None,
        description="claim jobs for the slot this job frees, once its report is committed, as POST /v1/compute/claim would "
        "without waiting; the answer's claimedJobs lists them. A call with a claim is not repeated on a lost answer: the "
        "client's job list (GET /v1/compute/jobs) shows what it claimed",
    )


class NoteBody(_Body):
    message: str = Field(min_length=1, max_length=10_000, description="shown on the job's timeline (the first 1000 characters)")


class JobNote(NoteBody):
    """A note and the job it is for (``POST /v1/compute/notes``)."""

    jobId: str = Field(min_length=1, max_length=100)


class NotesBody(_Body):
    notes: list[JobNote] = Field(min_length=1, max_length=compute.MAX_REPORTS_PER_CALL, description="in the order they happened")


class RunningBody(_Body):
    jobIds: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(min_length=1, max_length=compute.MAX_REPORTS_PER_CALL)


class RefusedReport(BaseModel):
    jobId: str
    statusCode: int = Field(description="what the call for this job alone would have answered (404, 403, 409, ...)")
    detail: str


class NotesResult(BaseModel):
    added: int
    refused: list[RefusedReport] = Field(description="notes not added, each with why; the others are on their jobs' timelines")


class RunningResult(BaseModel):
    jobs: list[StatusResult] = Field(description="the reports taken, as POST /v1/compute/jobs/{jobId}/status answers each")
    refused: list[RefusedReport] = Field(description="the reports refused, each with why (the job ended, or is another client's)")


class ReleaseBody(_Body):
    reason: str = Field(
        default="", max_length=10_000,
        description=f"why, for the job's timeline (the first {compute.MAX_RELEASE_REASON_CHARS} characters)",
    )


class StatusResult(BaseModel):
    jobId: str
    status: JobStatus
    canceled: bool = Field(description="true when the user asked the job to stop: stop it and report failed")
    error: Optional[str] = None


class ConsoleAppended(BaseModel):
    consoleOutputSize: int
    truncated: bool = Field(description="true when bytes were dropped at the hub's console output limit")


class FinishResult(StatusResult):
    consoleOutputSize: int
    claimedJobs: Optional[list[ComputeJob]] = Field(
        default=None, description="with a claim in the call: the jobs it took (as POST /v1/compute/claim answers them; may be empty)"
    )


class OutputUploaded(BaseModel):
    name: str
    fileBaseName: str
    url: str
    size: int


class ResourceLogStored(BaseModel):
    size: int


# ---------------------------------------------------------------- the compute client


@router.post("/heartbeat", response_model=HeartbeatResult)
async def heartbeat(body: HeartbeatBody, request: Request, ctx: Ctx, key: Key) -> Response:
    """Say the bridge is alive; learn which of its jobs to stop.

    With ``waitSec`` > 0 and nothing to stop, the call waits until a user cancels or deletes
    one of the client's jobs (it answers at once then) or ``waitSec`` passes, so a bridge
    waiting here hears of a cancel without polling for it.
    """
    wait_sec = min(body.waitSec, ctx.settings.heartbeat_timeout_sec / 4)
    deadline = anyio.current_time() + wait_sec
    known = set(body.stoppingJobIds)
    info = body.bridge.model_dump() if body.bridge is not None else None
    while True:
        client_id, generation, stop = await in_thread(_beat, ctx, key, body.activeJobIds, info)
        info = None  # recorded by the first look
        remaining = deadline - anyio.current_time()
        if not set(stop) <= known or remaining <= 0:
            return _json({"cancelJobIds": stop, "heartbeatTimeoutSec": float(ctx.settings.heartbeat_timeout_sec)})
        await ctx.stop_notifier.wait(generation, min(remaining, _recheck_interval(ctx)), key=client_id)
        if await request.is_disconnected():
            return _json({"cancelJobIds": [], "heartbeatTimeoutSec": float(ctx.settings.heartbeat_timeout_sec)})


def _beat(ctx: HubContext, key: Optional[str], active_job_ids: list[str], info: Optional[dict[str, Any]] = None) -> tuple[str, int, list[str]]:
    """One heartbeat: the client's id, its stop-notify generation (read before the jobs are), the jobs to stop."""
    with ctx.transaction() as s:
        cc = compute.compute_client_for_key(s, key)
        if info is not None:
            compute.record_bridge_info(cc, info)
        generation = ctx.stop_notifier.generation(cc.compute_client_id)
        return cc.compute_client_id, generation, compute.heartbeat_of(s, cc, active_job_ids)


@router.get("/canceled-jobs", response_model=CanceledJobs)
def canceled_jobs(ctx: Ctx, key: Key) -> CanceledJobs:
    """The client's starting or running jobs that users canceled (counts as a heartbeat)."""
    with ctx.transaction() as s:
        return CanceledJobs(jobIds=compute.heartbeat(s, key, []))


@router.get("/jobs", response_model=ComputeJobs)
def my_active_jobs(ctx: Ctx, key: Key) -> ComputeJobs:
    """The client's starting and running jobs, for a bridge that restarted."""
    with ctx.read_transaction() as s:
        return ComputeJobs(jobs=[ComputeJob.model_validate(j.model_dump()) for j in compute.active_jobs(s, key)])


@router.post("/claim", response_model=ClaimResult)
async def claim(body: ClaimBody, request: Request, ctx: Ctx, key: Key) -> Response:
    """Take up to ``maxJobs`` runnable jobs that fit the client's slots and capacity, oldest first.

    With ``waitSec`` > 0 and nothing to take, the call waits until a job becomes runnable
    (it returns at once then) or ``waitSec`` passes, and answers ``{"jobs": []}``.
    """
    wait_sec = min(body.waitSec, ctx.settings.claim_max_wait_sec)
    deadline = anyio.current_time() + wait_sec
    call = ctx.claim_waiters.call()
    try:
        while True:
            generation = ctx.notifier.generation()  # read before the attempt, so a notify during it is not missed
            claimed = await ctx.run_write(lambda s: _claim_answer(s, key, body, call))
            remaining = deadline - anyio.current_time()
            if claimed is not None or remaining <= 0:
                return claimed if claimed is not None else _no_jobs()
            call.start_waiting()  # meanwhile, no other client of the service gets jobs ahead
            await ctx.notifier.wait(generation, min(remaining, _recheck_interval(ctx)))
            if await request.is_disconnected():
                # Jobs claimed now would sit in 'starting' with nobody to run them.
                return _no_jobs()
    finally:
        call.stop_waiting()


def _no_jobs() -> Response:
    return Response(b'{"jobs":[]}', media_type="application/json")


def _claim_answer(s: Session, key: Optional[str], body: ClaimBody, call: ClaimCall) -> Optional[Response]:
    """One claim attempt in the transaction of ``s`` (``HubContext.run_write``: on SQLite on the event loop); its
    answer (``ClaimResult``'s JSON), or None when it got no job."""
    claimed = body.claim_in(s, key, call)
    if not claimed:
        return None
    return Response(to_json({"jobs": [c.answer for c in claimed]}), media_type="application/json")


def _recheck_interval(ctx: HubContext) -> float:
    """Jitter keeps many waiting bridges from re-reading the database in lockstep."""
    return ctx.settings.claim_recheck_interval_sec * random.uniform(0.8, 1.2)


# ---------------------------------------------------------------- one job


@router.get("/jobs/{job_id}", response_model=ComputeJobDetail)
def get_compute_job(job_id: str, ctx: Ctx, key: Key) -> ComputeJobDetail:
    """The job, with its secrets while it is not finished, and the console output offset (the private key is not shown again)."""
    with ctx.read_transaction() as s:
        job, _ = compute.job_for_call(s, job_id, key, lock=False)
        data = jobs_public(s, [job], include_private=True)[0].model_dump()
        return ComputeJobDetail.model_validate({**data, "consoleOutputSize": job.console_input_size or 0})


@router.post("/jobs/{job_id}/status", response_model=StatusResult)
async def set_status(job_id: str, body: StatusBody, ctx: Ctx, key: Key) -> Response:
    """Report ``running``, ``completed`` (after uploading every output) or ``failed`` (with ``error``).

    Repeating the current status is a harmless no-op; an illegal transition is 409.
    """
    if body.status.is_terminal:  # a job's end also writes files (its console output, erased secrets): in a thread
        return await in_thread(_set_status, ctx, job_id, body, key)
    return await ctx.run_write(lambda s: _status_in(s, job_id, body, key))


def _set_status(ctx: HubContext, job_id: str, body: StatusBody, key: Optional[str]) -> Response:
    with ctx.transaction() as s:
        return _status_in(s, job_id, body, key)


def _status_in(s: Session, job_id: str, body: StatusBody, key: Optional[str]) -> Response:
    report = compute.set_job_status(s, job_id, key, body.status, body.error, image_digest=body.imageDigest)
    return _json(_status_result(report))


def _status_result(report: compute.StatusReport) -> dict[str, Any]:
    """``StatusResult`` as JSON-ready values."""
    return {"jobId": report.jobId, "status": report.status.value, "canceled": report.canceled, "error": report.error}


def _json(value: Any) -> Response:
    """A result the route's ``response_model`` documents, serialized by pydantic-core (in the worker thread that built it)."""
    return Response(to_json(value), media_type="application/json")


@router.post(
    "/jobs/{job_id}/finish",
    response_model=FinishResult,
    responses={409: {"description": "an illegal transition, or consoleOffset past the end (the body's consoleOutputSize says where to resume)"}},
)
async def finish(job_id: str, body: FinishBody, ctx: Ctx, key: Key) -> Response:
    """Report a finished job in one call: the console's last bytes, the resource log and the final status
    (``completed`` or ``failed``), each as its own call would, all or nothing. Repeating it is harmless.

    With ``claim``, the slot the job frees is filled in the same call: once the report is committed, the
    hub claims as ``POST /v1/compute/claim`` would without waiting (its own transaction: a claim that gets
    nothing, or is refused, leaves the report committed, and ``claimedJobs`` is empty). A refused report
    claims nothing.
    """
    result = await in_thread(_finish, ctx, job_id, body, key)
    if isinstance(result, Response):
        return result
    claim = body.claim
    if claim is not None:
        try:
            call = ctx.claim_waiters.call()
            claimed = await ctx.run_write(lambda s: claim.claim_in(s, key, call))
        except HubError as e:
            # e.g. the user lost the process_jobs role: the bridge hears it from its next claim of its own
            log.info("the claim sent with job %s's finish report got nothing: %s", job_id, e)
            claimed = []
        result["claimedJobs"] = [c.answer for c in claimed]
    return _json(result)


def _finish(ctx: HubContext, job_id: str, body: FinishBody, key: Optional[str]) -> dict[str, Any] | Response:
    console = None
    if body.consoleBase64 is not None:
        if body.consoleOffset is None:
            raise BadRequest("consoleBase64 needs consoleOffset: where its bytes start in the console output")
        try:
            console = (body.consoleOffset, base64.b64decode(body.consoleBase64, validate=True))
        except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
            raise BadRequest("consoleBase64 is not base64; send the console bytes base64-encoded") from None
    resource_log = body.resourceLog.encode() if body.resourceLog is not None else None
    try:
        with ctx.transaction() as s:
            report, console_size = compute.finish_job(
                ctx, s, job_id, key, body.status, body.error, image_digest=body.imageDigest, console=console, resource_log=resource_log,
                started_ago_sec=body.startedAgoSec,
            )
    except compute.ConsoleOffsetMismatch as e:
        return JSONResponse({"detail": e.message, "consoleOutputSize": e.size}, status_code=e.status_code)
    return {**_status_result(report), "consoleOutputSize": console_size}


@router.post(
    "/jobs/{job_id}/release",
    response_model=StatusResult,
    responses={409: {"description": "the job is not starting any more (running or finished): report its end instead"}},
)
def release(job_id: str, body: ReleaseBody, ctx: Ctx, key: Key) -> Response:
    """Give back a job this compute client claimed and has not started (claimed ahead of a free slot, none freed in
    time): it is pending again for any compute client (failed as canceled if its user canceled it meanwhile)."""
    with ctx.transaction() as s:
        return _json(_status_result(compute.release_job(s, job_id, key, body.reason)))


@router.post("/jobs/{job_id}/notes", status_code=204)
def add_note(job_id: str, body: NoteBody, ctx: Ctx, key: Key) -> None:
    """Add a line to the job's timeline while it is starting or running (why it waits in a batch queue, ...)."""
    with ctx.transaction() as s:
        compute.add_job_note(s, job_id, key, body.message)


@router.post("/notes", response_model=NotesResult)
def add_notes(body: NotesBody, ctx: Ctx, key: Key) -> NotesResult:
    """Lines on the timelines of several of this compute client's jobs in one call (a bridge following many queued
    jobs notes them all after each look at its queue). Each note is taken or refused on its own, as the call for
    one job would: the refused ones are listed, the rest are added in one transaction."""
    with ctx.transaction() as s:
        refused = compute.add_job_notes(s, key, [(note.jobId, note.message) for note in body.notes])
    return NotesResult(added=len(body.notes) - len(refused), refused=_refused(refused))


@router.post("/running", response_model=RunningResult)
async def report_running(body: RunningBody, ctx: Ctx, key: Key) -> RunningResult:
    """'running' for several of this compute client's jobs in one call (a bridge that started many at once). Each
    report is taken or refused on its own, as POST /v1/compute/jobs/{jobId}/status with ``running`` would take it."""
    return await in_thread(_report_running, ctx, key, body.jobIds)


def _report_running(ctx: HubContext, key: Optional[str], job_ids: list[str]) -> RunningResult:
    with ctx.transaction() as s:
        reports, refused = compute.set_jobs_running(s, key, job_ids)
    return RunningResult(jobs=[StatusResult.model_validate(_status_result(r)) for r in reports], refused=_refused(refused))


def _refused(refused: list[tuple[str, int, str]]) -> list[RefusedReport]:
    return [RefusedReport(jobId=job_id, statusCode=code, detail=detail) for job_id, code, detail in refused]


@router.post(
    "/jobs/{job_id}/console-output",
    response_model=ConsoleAppended,
    responses={409: {"description": "offset past the end; the body's consoleOutputSize says where to resume"}},
)
async def append_console_output(
    job_id: str,
    request: Request,
    ctx: Ctx,
    key: Key,
    offset: Annotated[int, Query(ge=0, le=MAX_CONSOLE_OFFSET, description="where these bytes start in the console output")],
) -> Any:
    """Write the raw request body at ``offset`` of the console output (retries with the same offset are safe)."""
    data = await request.body()

    def append() -> compute.ConsoleAppendResult:
        with ctx.transaction() as s:
            return compute.append_console_output(ctx, s, job_id, key, offset, data)

    try:
        result = await in_thread(append)
    except compute.ConsoleOffsetMismatch as e:
        return JSONResponse({"detail": e.message, "consoleOutputSize": e.size}, status_code=e.status_code)
    return ConsoleAppended(consoleOutputSize=result.consoleOutputSize, truncated=result.truncated)


@router.put("/jobs/{job_id}/outputs/{output_name}", response_model=OutputUploaded)
async def upload_output(job_id: str, output_name: str, request: Request, ctx: Ctx, key: Key) -> OutputUploaded:
    """Upload a declared output file as the raw request body (streamed to disk), while the job is starting or running."""
    target = await in_thread(compute.prepare_output_upload, ctx, job_id, output_name, key)
    try:
        size = await receive_to_file(request, target.temp_path, ctx.settings.max_upload_bytes)
        row = await in_thread(compute.finish_output_upload, ctx, target, key, size)
    finally:
        await in_thread(functools.partial(target.temp_path.unlink, missing_ok=True))
    return OutputUploaded(name=row.name, fileBaseName=row.file_base_name, url=row.url, size=size)


@router.put("/jobs/{job_id}/resource-utilization-log", response_model=ResourceLogStored)
async def upload_resource_log(job_id: str, request: Request, ctx: Ctx, key: Key) -> ResourceLogStored:
    """Replace the job's resource utilization log: JSON lines, one sample per line."""
    data = await receive_limited(request, ctx.settings.max_json_body_bytes)

    def store() -> None:
        with ctx.transaction() as s:
            compute.store_resource_log(ctx, s, job_id, key, data)

    await in_thread(store)
    return ResourceLogStored(size=len(data))


# ---------------------------------------------------------------- request bodies


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body larger than the hub's limit of {limit} bytes")


async def receive_limited(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (uploads under /v1/compute/jobs have a larger outer limit)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _too_large(limit)
    return bytes(data)


async def receive_to_file(request: Request, path: Path, limit: int) -> int:
    """Stream the body into ``path`` in large writes done off the event loop; returns its size."""
    size = 0
    buffer = bytearray()
    f = await in_thread(open, path, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            buffer += chunk
            if len(buffer) >= _WRITE_BUFFER_BYTES:
                await in_thread(f.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await in_thread(f.write, bytes(buffer))
    finally:
        await in_thread(f.close)
    return size

