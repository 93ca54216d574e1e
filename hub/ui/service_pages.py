"""UI: services (apps, compute clients, users and roles, recent jobs), apps, and compute clients."""

from __future__ import annotations

import time
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import func, select

from pairio.models import PairioApp, PairioComputeClientComputeSlot
from pairio.status import ACTIVE_STATUSES, JobStatus

from ..core import accounts
from ..core import jobs as core
from ..db.tables import ComputeClient, Job, ServiceApp
from ..deps import Ctx, DbSession
from ..errors import BadRequest
from .auth import FormFields, OptionalViewer, require_viewer
from .common import notice_of, router, see_other
from .render import render

RECENT_JOBS = 15


def is_online(cc: ComputeClient, heartbeat_timeout_sec: float, now: float) -> bool:
    return cc.last_active_sec is not None and now - cc.last_active_sec < heartbeat_timeout_sec


def _active_counts(s: DbSession, cc_ids: list[str]) -> dict[str, int]:
    if not cc_ids:
        return {}
    q = (
        select(Job.compute_client_id, func.count())
        .where(Job.compute_client_id.in_(cc_ids), Job.status.in_([st.value for st in ACTIVE_STATUSES]))
        .group_by(Job.compute_client_id)
    )
    return {cc_id: n for cc_id, n in s.execute(q)}


@router.get("/services", response_class=HTMLResponse)
def services_page(request: Request, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    services = accounts.list_services(s)
    num_apps = dict(s.execute(select(ServiceApp.service_name, func.count()).group_by(ServiceApp.service_name)).all())
    num_clients = dict(s.execute(select(ComputeClient.service_name, func.count()).group_by(ComputeClient.service_name)).all())
    mine = {x.service_name for x in accounts.list_services(s, viewer.user_id)} if viewer else set()
    return render(
        request, "services.html", viewer=viewer, services=services, num_apps=num_apps, num_clients=num_clients, mine=mine,
        title="Services",
    )


@router.get("/service/{service_name}", response_class=HTMLResponse)
def service_page(service_name: str, request: Request, ctx: Ctx, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    service = accounts.get_service_row(s, service_name)
    public = accounts.service_public(s, service)
    clients = accounts.list_compute_clients(s, service_name)
    now = time.time()
    recent, _ = core.find_jobs(s, core.JobFilter(serviceName=service_name), limit=RECENT_JOBS)
    roles = accounts.roles_of(s, service_name, viewer.user_id) if viewer else None
    return render(
        request, "service.html", viewer=viewer, service=public, apps=accounts.list_apps(s, service_name),
        clients=clients, online={c.compute_client_id: is_online(c, ctx.settings.heartbeat_timeout_sec, now) for c in clients},
        active=_active_counts(s, [c.compute_client_id for c in clients]), counts=core.count_jobs_by_status(s, service_name),
        recent=recent, is_admin=bool(roles and roles.admin), now=now, notice=notice_of(request),
        users=[u.user_id for u in accounts.list_users(s)] if roles and roles.admin else [],
        title=f"Service {service_name}",
    )


def _checked(fields: dict[str, str], name: str) -> bool:
    return fields.get(name, "") in ("on", "true", "1")


@router.post("/service/{service_name}/users")
def set_roles(service_name: str, request: Request, s: DbSession, fields: FormFields) -> RedirectResponse:
    viewer = require_viewer(s, request, fields)
    accounts.require_role(s, service_name, viewer.user_id, "admin")
    user_id = fields.get("user", "").strip()
    if not user_id:
        raise BadRequest("name the user whose roles to set")
    accounts.set_service_user(
        s, service_name, user_id,
        admin=_checked(fields, "admin"), create_jobs=_checked(fields, "createJobs"), process_jobs=_checked(fields, "processJobs"),
    )
    return see_other(f"/service/{quote(service_name)}#users", "roles-saved")


@router.post("/service/{service_name}/users/{user_id}/remove")
def remove_user(service_name: str, user_id: str, request: Request, s: DbSession, fields: FormFields) -> RedirectResponse:
    viewer = require_viewer(s, request, fields)
    accounts.require_role(s, service_name, viewer.user_id, "admin")
    accounts.remove_service_user(s, service_name, user_id)
    return see_other(f"/service/{quote(service_name)}#users", "user-removed")


@router.get("/service/{service_name}/app/{app_name}", response_class=HTMLResponse)
def app_page(service_name: str, app_name: str, request: Request, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    row = accounts.get_app(s, service_name, app_name)
    app = PairioApp.model_validate(row.spec)
    return render(request, "app.html", viewer=viewer, row=row, app=app, title=f"App {app_name} · {service_name}")


@router.get("/compute-client/{compute_client_id}", response_class=HTMLResponse)
def compute_client_page(compute_client_id: str, request: Request, ctx: Ctx, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    cc = accounts.get_compute_client(s, compute_client_id)
    slots = [PairioComputeClientComputeSlot.model_validate(x) for x in cc.compute_slots]
    active, _ = core.find_jobs(s, core.JobFilter(computeClientId=cc.compute_client_id, status=list(ACTIVE_STATUSES)), limit=200)
    recent, _ = core.find_jobs(s, core.JobFilter(computeClientId=cc.compute_client_id), limit=RECENT_JOBS)
    failures, _ = core.find_jobs(s, core.JobFilter(computeClientId=cc.compute_client_id, status=[JobStatus.FAILED]), limit=10)
    now = time.time()
    load = {
        "jobs": len(active), "slots": sum(x.multiplicity for x in slots),
        "cpus": sum(j.num_cpus for j in active), "gpus": sum(j.num_gpus for j in active), "memoryGb": sum(j.memory_gb for j in active),
    }
    return render(
        request, "compute_client.html", viewer=viewer, cc=cc, slots=slots, active=active, recent=recent, failures=failures,
        bridge=accounts.compute_client_public(cc).bridgeInfo,
        load=load, online=is_online(cc, ctx.settings.heartbeat_timeout_sec, now), now=now,
        counts=core.count_jobs_by_status(s, f=core.JobFilter(computeClientId=cc.compute_client_id)),
        title=f"Compute client {cc.label}",
    )
