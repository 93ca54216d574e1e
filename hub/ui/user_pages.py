"""UI: a user's page (jobs and CPU/GPU/memory hours consumed and provided), and the original Pairio's page paths.

The original web UI linked to ``/compute_client/<id>``, ``/service_app/<service>/<app>``,
``/playground`` and ``/user/<id>``; links saved from it keep working here.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from ..core import accounts
from ..core import jobs as core
from ..db.tables import ComputeClient
from ..deps import DbSession
from .auth import OptionalViewer
from .common import router
from .render import render

RECENT_JOBS = 15

# (key in the statistics, what the page calls it)
STATS_ROWS = [
    ("numJobs", "Jobs"), ("cpuHours", "CPU-hours"), ("gpuHours", "GPU-hours"), ("gbHours", "Memory GB-hours"),
    ("jobHours", "Job-hours"),
]


def _with_deleted(stats: dict[str, Any], part: str) -> dict[str, float]:
    """One column of the page: the jobs that still exist plus the deleted ones (their usage counts too)."""
    live, deleted = stats[part], stats[f"{part}Deleted"]
    return {k: live[k] + deleted[k] for k in live}


@router.get("/user/{user_id}", response_class=HTMLResponse)
def user_page(user_id: str, request: Request, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    user = accounts.get_user(s, user_id)
    stats = core.user_stats(s, user.user_id)
    recent, _ = core.find_jobs(s, core.JobFilter(userId=user.user_id), limit=RECENT_JOBS)
    clients = list(s.scalars(select(ComputeClient).where(ComputeClient.user_id == user.user_id).order_by(ComputeClient.label)))
    return render(
        request, "user.html", viewer=viewer, user_id=user.user_id, rows=STATS_ROWS,
        consumed=_with_deleted(stats, "consumed"), provided=_with_deleted(stats, "provided"),
        services=accounts.list_services(s, user.user_id), clients=clients, recent=recent, now=time.time(),
        title=f"User {user.user_id}",
    )


# ---------------------------------------------------------------- the original UI's paths


def _moved(path: str) -> RedirectResponse:
    # 308 keeps the method; the original UI's pages were only ever fetched with GET.
    return RedirectResponse(path, status_code=308)


@router.get("/compute_client/{compute_client_id}")
def original_compute_client_page(compute_client_id: str) -> RedirectResponse:
    return _moved(f"/compute-client/{quote(compute_client_id, safe='')}")


@router.get("/service_app/{service_name}/{app_name}")
def original_service_app_page(service_name: str, app_name: str) -> RedirectResponse:
    return _moved(f"/service/{quote(service_name, safe='')}/app/{quote(app_name, safe='')}")


@router.get("/playground")
def original_playground() -> RedirectResponse:
    return _moved("/submit")
