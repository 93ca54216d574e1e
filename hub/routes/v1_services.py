"""REST: services, their users and roles, apps, compute clients, users and API keys."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Body

from pairio.models import PairioComputeClient, PairioService, PairioServiceApp

from ..core import accounts
from ..core import jobs as core_jobs
from ..deps import CurrentUser, DbSession
from ..schemas import (
    ApiKeyCreateBody,
    ApiKeyCreated,
    ApiKeyPublic,
    ComputeClientCreateBody,
    ComputeClientCreated,
    ComputeClientsPublic,
    Me,
    ServiceAppsPublic,
    ServiceCreateBody,
    ServicesPublic,
    ServiceUserRolesBody,
)

router = APIRouter(prefix="/v1")


# ---------------------------------------------------------------- services


@router.get("/services", response_model=ServicesPublic, tags=["services"])
def list_services(s: DbSession, userId: Optional[str] = None) -> ServicesPublic:
    """All services, or those a user owns or belongs to."""
    return ServicesPublic(services=[accounts.service_public(s, x) for x in accounts.list_services(s, userId)])


@router.post("/services", response_model=PairioService, status_code=201, tags=["services"])
def create_service(body: ServiceCreateBody, s: DbSession, user: CurrentUser) -> PairioService:
    """Create a service owned by the caller."""
    return accounts.service_public(s, accounts.create_service(s, body.serviceName, user))


@router.get("/services/{service_name}", response_model=PairioService, tags=["services"])
def get_service(service_name: str, s: DbSession) -> PairioService:
    return accounts.service_public(s, accounts.get_service_row(s, service_name))


@router.put("/services/{service_name}/users/{user_id}", response_model=PairioService, tags=["services"])
def set_service_user(service_name: str, user_id: str, body: ServiceUserRolesBody, s: DbSession, user: CurrentUser) -> PairioService:
    """Give a user roles in the service (service admins only)."""
    accounts.require_role(s, service_name, user, "admin")
    accounts.set_service_user(s, service_name, user_id, admin=body.admin, create_jobs=body.createJobs, process_jobs=body.processJobs)
    return accounts.service_public(s, accounts.get_service_row(s, service_name))


@router.delete("/services/{service_name}/users/{user_id}", response_model=PairioService, tags=["services"])
def remove_service_user(service_name: str, user_id: str, s: DbSession, user: CurrentUser) -> PairioService:
    accounts.require_role(s, service_name, user, "admin")
    accounts.remove_service_user(s, service_name, user_id)
    return accounts.service_public(s, accounts.get_service_row(s, service_name))


# ---------------------------------------------------------------- apps


@router.get("/services/{service_name}/apps", response_model=ServiceAppsPublic, tags=["apps"])
def list_apps(service_name: str, s: DbSession) -> ServiceAppsPublic:
    accounts.get_service_row(s, service_name)
    return ServiceAppsPublic(serviceApps=[accounts.app_public(a) for a in accounts.list_apps(s, service_name)])


@router.get("/services/{service_name}/apps/{app_name}", response_model=PairioServiceApp, tags=["apps"])
def get_app(service_name: str, app_name: str, s: DbSession) -> PairioServiceApp:
    return accounts.app_public(accounts.get_app(s, service_name, app_name))


@router.put("/services/{service_name}/apps/{app_name}", response_model=PairioServiceApp, tags=["apps"])
def put_app(service_name: str, app_name: str, s: DbSession, user: CurrentUser, spec: dict[str, Any] = Body(...)) -> PairioServiceApp:
    """Register or replace an app from its spec.json (service admins only)."""
    accounts.require_role(s, service_name, user, "admin")
    app = accounts.parse_app_spec(spec)
    if app.name != app_name:
        from ..errors import BadRequest

        raise BadRequest(f"the spec's name {app.name!r} differs from the URL's app name {app_name!r}")
    return accounts.app_public(accounts.add_app(s, service_name, app))


@router.delete("/services/{service_name}/apps/{app_name}", status_code=204, tags=["apps"])
def delete_app(service_name: str, app_name: str, s: DbSession, user: CurrentUser) -> None:
    accounts.require_role(s, service_name, user, "admin")
    accounts.remove_app(s, service_name, app_name)


# ---------------------------------------------------------------- compute clients


@router.get("/compute-clients", response_model=ComputeClientsPublic, tags=["compute clients"])
def list_compute_clients(s: DbSession, serviceName: Optional[str] = None) -> ComputeClientsPublic:
    return ComputeClientsPublic(computeClients=[accounts.compute_client_public(c) for c in accounts.list_compute_clients(s, serviceName)])


@router.post("/compute-clients", response_model=ComputeClientCreated, status_code=201, tags=["compute clients"])
def register_compute_client(body: ComputeClientCreateBody, s: DbSession, user: CurrentUser) -> ComputeClientCreated:
    """Register a compute client (a bridge) for a user with the processJobs role; its key is shown once."""
    cc, key = accounts.register_compute_client(s, body.serviceName, user, body.label, body.computeSlots, body.description)
    s.flush()
    return ComputeClientCreated(computeClient=accounts.compute_client_public(cc), computeClientPrivateKey=key)


@router.get("/compute-clients/{compute_client_id}", response_model=PairioComputeClient, tags=["compute clients"])
def get_compute_client(compute_client_id: str, s: DbSession) -> PairioComputeClient:
    return accounts.compute_client_public(accounts.get_compute_client(s, compute_client_id))


@router.delete("/compute-clients/{compute_client_id}", status_code=204, tags=["compute clients"])
def delete_compute_client(compute_client_id: str, s: DbSession, user: CurrentUser) -> None:
    accounts.delete_compute_client(s, compute_client_id, user)


# ---------------------------------------------------------------- users and keys


@router.get("/me", response_model=Me, tags=["users"])
def me(user: CurrentUser) -> Me:
    """Who the API key belongs to."""
    return Me(userId=user)


@router.get("/me/api-keys", response_model=list[ApiKeyPublic], tags=["users"])
def list_my_keys(s: DbSession, user: CurrentUser) -> list[ApiKeyPublic]:
    return [ApiKeyPublic(keyId=k.key_id, label=k.label, timestampCreatedSec=k.created_sec, revoked=k.revoked) for k in accounts.list_api_keys(s, user)]


@router.post("/me/api-keys", response_model=ApiKeyCreated, status_code=201, tags=["users"])
def create_my_key(body: ApiKeyCreateBody, s: DbSession, user: CurrentUser) -> ApiKeyCreated:
    key, plain = accounts.create_api_key(s, user, body.label)
    return ApiKeyCreated(apiKey=plain, key=ApiKeyPublic(keyId=key.key_id, label=key.label, timestampCreatedSec=key.created_sec, revoked=False))


@router.delete("/me/api-keys/{key_id}", status_code=204, tags=["users"])
def revoke_my_key(key_id: str, s: DbSession, user: CurrentUser) -> None:
    accounts.revoke_api_key(s, user, key_id)


@router.get("/users/{user_id}/stats", tags=["users"])
def user_stats(user_id: str, s: DbSession) -> dict[str, Any]:
    """Jobs, CPU-, GPU-, GB- and job-hours the user consumed (submitted) and provided (ran on their compute clients)."""
    return core_jobs.user_stats(s, user_id)
