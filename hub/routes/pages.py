"""Minimal server-rendered job page at the job URL (``/job/<jobId>``); every value is HTML-escaped."""

from __future__ import annotations

import json
from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from ..core import jobs as core
from ..deps import Ctx, DbSession
from ..errors import NotFound

router = APIRouter(include_in_schema=False)

_CONSOLE_TAIL_BYTES = 256 * 1024


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}"
        "pre{background:#f4f4f4;padding:1rem;overflow:auto;max-height:40rem}"
        "td,th{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top}</style>"
        f"</head><body>{body}</body></html>"
    )


@router.get("/job/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, ctx: Ctx, s: DbSession) -> HTMLResponse:
    try:
        job = core.jobs_public(s, [core.get_job_row(s, job_id)])[0]
    except NotFound as e:
        return HTMLResponse(_page("Job not found", f"<h1>Job not found</h1><p>{escape(e.message)}</p>"), status_code=404)
    events = core.job_events(s, job_id)
    rows = [
        ("Status", job.status.value + (" (canceled)" if job.canceled else "")),
        ("Service", job.serviceName), ("App / processor", f"{job.jobDefinition.appName} / {job.jobDefinition.processorName}"),
        ("User", job.userId), ("Compute client", job.computeClientName or ""), ("Tags", ", ".join(job.tags)),
        ("Error", job.error or ""),
    ]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    outputs = "".join(
        f"<li><a href='{escape(o.url)}'>{escape(o.name)}: {escape(o.fileBaseName)}</a>"
        f"{'' if o.size is None else f' ({o.size} bytes)'}</li>"
        for o in job.outputFileResults
    )
    inputs = "".join(f"<li><a href='{escape(f.url)}'>{escape(f.name)}: {escape(f.fileBaseName)}</a></li>" for f in job.jobDefinition.inputFiles)
    deps = "".join(f"<li><a href='/job/{escape(d)}'>{escape(d)}</a></li>" for d in job.jobDependencies)
    params = escape(json.dumps({p.name: p.value for p in job.jobDefinition.parameters}, indent=2))
    event_rows = "".join(f"<li>{e.timestampSec:.3f} {escape(e.status.value if e.status else '')} {escape(e.message)}</li>" for e in events)
    console = ""
    path = ctx.files.console_output_path(job_id)
    if path.exists():
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - _CONSOLE_TAIL_BYTES))
            console = f.read().decode("utf-8", errors="replace")
    body = (
        f"<h1>Job {escape(job.jobId)}</h1><table>{table}</table>"
        f"<h2>Parameters</h2><pre>{params}</pre>"
        f"<h2>Inputs</h2><ul>{inputs or '<li>none</li>'}</ul>"
        f"<h2>Outputs</h2><ul>{outputs or '<li>none</li>'}</ul>"
        f"<h2>Dependencies</h2><ul>{deps or '<li>none</li>'}</ul>"
        f"<h2>Events</h2><ul>{event_rows}</ul>"
        f"<h2>Console output</h2><pre>{escape(console)}</pre>"
        f"<p><a href='{escape(job.consoleOutputUrl)}'>full console output</a> · "
        f"<a href='/v1/jobs/{escape(job.jobId)}'>JSON</a></p>"
    )
    return HTMLResponse(_page(f"Pairio job {job.jobId}", body))
