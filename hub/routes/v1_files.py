"""Public reads of job files: console output, output files, resource utilization logs.

No key is needed: job URLs are shared (a job's output is another job's input URL,
browsers open them). Paths on disk come only from the job id and names stored in
the database, never from the request. Responses carry Content-Length and answer
Range requests (206, as ``hub.ranges`` decides) and HEAD, so large outputs can be read in pieces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, PlainTextResponse
from starlette.types import Receive, Scope, Send

from ..context import HubContext
from ..core.jobs import get_job_row
from ..db.tables import JobOutput
from ..deps import Ctx
from ..errors import NotFound
from ..ranges import ByteRange, Unsatisfiable, decide_range

router = APIRouter(prefix="/v1", tags=["files"])

# Outputs are user-produced content served from the hub's origin: never let a
# browser run them as a page of the hub (an uploaded .html file with scripts).
_UNTRUSTED_CONTENT_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
# Console output and logs grow while the job runs.
_GROWING_FILE_HEADERS = {**_UNTRUSTED_CONTENT_HEADERS, "Cache-Control": "no-cache"}


def _stat(path: Path) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class _RangedFileResponse(FileResponse):
    """A file answered as ``hub.ranges`` decides its Range header (Starlette answers 400 to some valid ones)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [v for k, v in scope["headers"] if k == b"range"]
        if raw and not self._if_range_holds(scope):
            raw = []  # RFC 9110 13.1.5: the representation changed, so send all of it
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        if raw:
            assert self.stat_result is not None
            size = self.stat_result.st_size
            decision = decide_range(raw[0].decode("latin-1") if len(raw) == 1 else None, size)
            if isinstance(decision, Unsatisfiable):
                answer = PlainTextResponse(
                    f"the range is outside the file's {size} bytes", status_code=416,
                    headers={**self._extra_headers, "Content-Range": f"bytes */{size}"},
                )
                await answer(scope, receive, send)
                return
            # Starlette applies the range itself: hand it one canonical range, or none at all.
            headers = [(k, v) for k, v in scope["headers"] if k != b"range"]
            if isinstance(decision, ByteRange):
                headers.append((b"range", f"bytes={decision.start}-{decision.end - 1}".encode()))
            scope = {**scope, "headers": headers}
        await super().__call__(scope, receive, send)

    def _if_range_holds(self, scope: Scope) -> bool:
        """No If-Range, or one naming this file's strong ETag or Last-Modified date."""
        given = [v.decode("latin-1") for k, v in scope["headers"] if k == b"if-range"]
        if not given:
            return True
        return not given[0].startswith("W/") and given[0] in (self.headers.get("etag"), self.headers.get("last-modified"))

    @property
    def _extra_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k.lower() in ("content-security-policy", "x-content-type-options", "cache-control")}


def _file_response(path: Path, st: os.stat_result, media_type: str, headers: dict[str, str], filename: Optional[str] = None) -> FileResponse:
    # Passing the stat result makes Content-Length match the bytes we serve and avoids a 500 if the file vanished.
    return _RangedFileResponse(path, media_type=media_type, headers=headers, stat_result=st, filename=filename, content_disposition_type="inline")


@router.get("/jobs/{job_id}/console-output", response_class=Response)
@router.head("/jobs/{job_id}/console-output", response_class=Response, include_in_schema=False)
def get_console_output(job_id: str, ctx: Ctx) -> Response:
    """The job's console output so far (empty until the compute client sends some)."""
    with ctx.read_transaction() as s:
        job = get_job_row(s, job_id)
        path = ctx.files.console_output_path(job.job_id)
    st = _stat(path)
    if st is None:
        return Response(b"", media_type="text/plain; charset=utf-8", headers=_GROWING_FILE_HEADERS)
    return _file_response(path, st, "text/plain; charset=utf-8", _GROWING_FILE_HEADERS)


@router.get("/jobs/{job_id}/outputs/{output_name}/{file_base_name}", response_class=Response)
@router.head("/jobs/{job_id}/outputs/{output_name}/{file_base_name}", response_class=Response, include_in_schema=False)
def get_output_file(job_id: str, output_name: str, file_base_name: str, ctx: Ctx) -> Response:
    """An output file of a job, at the URL fixed when the job was created (404 until uploaded)."""
    with ctx.read_transaction() as s:
        job = get_job_row(s, job_id)
        row = s.get(JobOutput, (job.job_id, output_name))
        if row is None or row.file_base_name != file_base_name:
            raise NotFound(f"job {job.job_id} has no output file at this URL; see the job's outputFileResults for its URLs")
        if row.size is None:
            raise NotFound(f"output {row.name} of job {job.job_id} is not uploaded yet (the job is {job.status})")
        path = ctx.files.output_path(job.job_id, row.name)
        filename = row.file_base_name
    return _served_or_missing(ctx, path, filename)


@router.get("/jobs/{job_id}/resource-utilization-log", response_class=Response)
@router.head("/jobs/{job_id}/resource-utilization-log", response_class=Response, include_in_schema=False)
def get_resource_utilization_log(job_id: str, ctx: Ctx) -> Response:
    """CPU, GPU and memory samples of the job as JSON lines (404 until the compute client uploads them)."""
    with ctx.read_transaction() as s:
        job = get_job_row(s, job_id)
        if not job.has_resource_utilization_log:
            raise NotFound(f"job {job.job_id} has no resource utilization log yet (the job is {job.status})")
        path = ctx.files.resource_log_path(job.job_id)
    st = _stat(path)
    if st is None:
        raise NotFound(f"the resource utilization log of job {job_id} is missing from the hub's storage")
    return _file_response(path, st, "application/x-ndjson", _GROWING_FILE_HEADERS)


def _served_or_missing(ctx: HubContext, path: Path, filename: str) -> Response:
    st = _stat(path)
    if st is None:
        raise NotFound(f"{filename} is recorded as uploaded but missing from the hub's storage ({ctx.settings.files_dir.name}); the job must run again")
    from mimetypes import guess_type

    media_type = guess_type(filename)[0] or "application/octet-stream"
    return _file_response(path, st, media_type, _UNTRUSTED_CONTENT_HEADERS, filename=filename)
