"""The hub's web UI: server-rendered pages (Jinja2, autoescaped) with a little JavaScript and CSS served by the hub.

Pages: the job page at every job URL (``/job/<jobId>``), the jobs table (``/jobs``), batches (``/batch/<batchId>``),
services, apps, compute clients, the submit playground (``/submit``), settings
(log in with an API key) and the original compute client's registration page. Reading is open to anyone with the link, like job URLs;
changing anything needs a login (session cookie) and a CSRF token (see ``auth``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..errors import HubError
from . import account_pages, batch_pages, jobs_pages, register_compute_client, service_pages, submit_pages, user_pages  # noqa: F401 - they register their routes
from .auth import viewer_for
from .common import json_router, router
from .render import STATIC_DIR, render_error


class _StaticFiles(StaticFiles):
    """The UI's scripts and styles: cacheable for an hour, never sniffed into another type."""

    def file_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_ui(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(json_router)
    app.mount("/static", _StaticFiles(directory=str(STATIC_DIR)), name="static")


def ui_error_page(request: Request, exc: HubError) -> HTMLResponse:
    """A hub error in a UI route, as a page that keeps the navigation (and who is logged in)."""
    viewer = None
    try:
        with request.app.state.ctx.read_transaction() as s:
            viewer = viewer_for(s, request)
    except Exception:  # noqa: BLE001 - the error page must render even when the database is the problem
        viewer = None
    return render_error(request, exc.status_code, exc.message, viewer)
