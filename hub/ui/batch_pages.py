"""UI: a batch's page (``/batch/<batchId>``): counts per status, progress, failed jobs first, then the rest.

Open to anyone with the link, like the jobs it shows. While jobs of the batch are unfinished the
page polls ``GET /v1/batches/<batchId>`` and redraws itself when a count changes (pairio.js).
"""

from __future__ import annotations

import time
from typing import Optional

from fastapi import Request
from fastapi.responses import HTMLResponse

from ..core import batches
from ..deps import DbSession
from ..errors import BadRequest
from .auth import OptionalViewer
from .common import router
from .jobs_pages import MAX_CURSOR_CHARS
from .render import render

BATCH_PAGE_SIZE = 50
MAX_ERROR_LINE_CHARS = 300


def _cursor(request: Request, name: str) -> Optional[str]:
    cursor = request.query_params.get(name) or None
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise BadRequest(f"invalid {name}: follow the page's links, which carry the cursor unchanged")
    return cursor


def first_line(error: Optional[str]) -> str:
    """The first non-empty line of a job's error, cut to a table cell's worth."""
    line = next((x.strip() for x in (error or "").splitlines() if x.strip()), "")
    return line if len(line) <= MAX_ERROR_LINE_CHARS else line[: MAX_ERROR_LINE_CHARS - 1] + "…"


@router.get("/batch/{batch_id}", response_class=HTMLResponse)
def batch_page(batch_id: str, request: Request, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    failed_cursor, cursor = _cursor(request, "failedCursor"), _cursor(request, "cursor")
    summary = batches.batch_summary(s, batch_id)
    failed, next_failed = batches.batch_jobs(s, batch_id, failed=True, limit=BATCH_PAGE_SIZE, cursor=failed_cursor)
    others, next_others = batches.batch_jobs(s, batch_id, failed=False, limit=BATCH_PAGE_SIZE, cursor=cursor)
    return render(
        request, "batch.html", viewer=viewer, batch=summary, failed=failed, next_failed=next_failed,
        others=others, next_others=next_others, failed_cursor=failed_cursor, cursor=cursor,
        errors={j.job_id: first_line(j.error) for j in failed}, now=time.time(), title=f"Batch {batch_id}",
    )
