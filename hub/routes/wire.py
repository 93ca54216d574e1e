"""The original Pairio wire protocol: ``POST /api/<callName>``, answered by the same core as ``/v1``.

Existing clients (the prototype's Python client, browser apps such as Neurosift)
send ``{"type": "<callName>Request", ...}`` and read ``{"type": "<callName>Response", ...}``;
errors are ``{"error": "<message>"}`` with 400, 401, 404, 405, 413 or 500. The calls
and shapes are in shared/docs/wire-protocol.md and app-protocol.md (section 5).

Every answer, errors included, is built here rather than by the app's exception
handlers, because the REST API answers errors as ``{"detail": ...}`` with other codes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pairio.models import MAX_TAGS, PairioApp, PairioComputeClientComputeSlot, PairioJobData, PairioJobDefinition
from pairio.status import JobStatus

from ..context import HubContext, now_sec
from ..core import accounts
from ..core import compute
from ..core import jobs as core
from ..core import job_answers, original_sdk
from ..db.raw import RawReads
from ..db.tables import ComputeClient, Job, Service, ServiceApp
from ..deps import bearer_token, get_ctx
from ..errors import (
    DATABASE_UNAVAILABLE, BadRequest, Conflict, Forbidden, HubError, PayloadTooLarge, Unauthorized, database_unavailable_log,
)
from ..schemas import JobCreateBody

log = logging.getLogger("pairio.hub.wire")

router = APIRouter(tags=["wire protocol"])

MAX_ID_CHARS = 200
MAX_ERRORS_SHOWN = 5
MAX_ERROR_PART_CHARS = 300


# ---------------------------------------------------------------- request bodies


class WireRequest(BaseModel):
    """A call's body without its ``type``; unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


Id = Field(max_length=MAX_ID_CHARS)
OptionalId = Field(default=None, max_length=MAX_ID_CHARS)
StatusName = Literal["pending", "starting", "running", "completed", "failed"]


class CreateJobRequest(JobCreateBody):
    userId: str = Field(default="", max_length=MAX_ID_CHARS, description='"" means the API key\'s user')

    @field_validator("batchId", mode="before")
    @classmethod
    def _empty_batch_is_none(cls, v: Any) -> Any:
        # The prototype's client sends batchId "" for "no batch".
        return None if v == "" else v

    def to_core(self) -> core.JobCreate:
        return core.JobCreate(**{f.name: getattr(self, f.name) for f in fields(core.JobCreate)})


class GetJobRequest(WireRequest):
    jobId: str = Id
    includePrivateKey: bool = False
    computeClientId: Optional[str] = OptionalId


class FindJobByDefinitionRequest(WireRequest):
    serviceName: str = Id
    jobDefinition: PairioJobDefinition


class FindJobsRequest(WireRequest):
    userId: Optional[str] = OptionalId
    jobId: Optional[str] = OptionalId
    processorName: Optional[str] = OptionalId
    computeClientId: Optional[str] = OptionalId
    batchId: Optional[str] = OptionalId
    tags: Optional[list[str]] = Field(default=None, max_length=MAX_TAGS)
    serviceName: Optional[str] = OptionalId
    appName: Optional[str] = OptionalId
    inputFileUrl: Optional[str] = Field(default=None, max_length=4096)
    outputFileUrl: Optional[str] = Field(default=None, max_length=4096)
    status: Optional[list[StatusName]] = Field(default=None, max_length=len(JobStatus))
    limit: int = Field(default=core.DEFAULT_FIND_LIMIT, ge=1, le=core.MAX_FIND_LIMIT)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_all_form(cls, v: Any) -> Any:
        # Browser clients send {"$all": [...]}, meaning the same as a plain list.
        if isinstance(v, dict):
            if set(v) != {"$all"}:
                raise ValueError('tags must be a list of tags or {"$all": [tags]}')
            return v["$all"]
        return v

    @field_validator("status", mode="before")
    @classmethod
    def _one_status_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def to_filter(self) -> core.JobFilter:
        return core.JobFilter(
            serviceName=self.serviceName, userId=self.userId, jobId=self.jobId, appName=self.appName,
            processorName=self.processorName, computeClientId=self.computeClientId, batchId=self.batchId,
            tags=self.tags or [], inputFileUrl=self.inputFileUrl, outputFileUrl=self.outputFileUrl,
            status=[JobStatus(x) for x in self.status or []],
        )


class CancelJobRequest(WireRequest):
    jobId: str = Id


class DeleteJobsRequest(WireRequest):
    userId: str = Field(default="", max_length=MAX_ID_CHARS)
    jobIds: list[str] = Field(max_length=1000)


class GetServiceRequest(WireRequest):
    serviceName: str = Id


class GetServicesRequest(WireRequest):
    userId: Optional[str] = OptionalId


class GetServiceAppRequest(WireRequest):
    serviceName: str = Id
    appName: str = Id


class GetServiceAppsRequest(WireRequest):
    serviceName: Optional[str] = OptionalId
    appName: Optional[str] = OptionalId


class GetComputeClientRequest(WireRequest):
    computeClientId: str = Id


class GetComputeClientsRequest(WireRequest):
    serviceName: Optional[str] = OptionalId


class ComputeUserStatsRequest(WireRequest):
    userId: str = Id


class AddServiceRequest(WireRequest):
    serviceName: str = Id
    userId: str = Id


class ServiceUserEntry(WireRequest):
    userId: str = Id
    admin: bool
    createJobs: bool
    processJobs: bool


class SetServiceInfoRequest(WireRequest):
    serviceName: str = Id
    users: Optional[list[ServiceUserEntry]] = Field(default=None, max_length=1000)


class WireServiceApp(WireRequest):
    serviceName: str = Id
    appName: str = Id
    appSpecificationUri: str = Field(max_length=4096)
    appSpecificationCommit: str = Field(max_length=200)
    appSpecification: dict[str, Any]


class AddServiceAppRequest(WireRequest):
    serviceApp: WireServiceApp


class SetServiceAppInfoRequest(WireRequest):
    serviceName: str = Id
    appName: str = Id
    appSpecificationUri: Optional[str] = Field(default=None, max_length=4096)
    appSpecificationCommit: Optional[str] = Field(default=None, max_length=200)
    appSpecification: Optional[dict[str, Any]] = None


class DeleteServiceAppRequest(WireRequest):
    serviceName: str = Id
    appName: str = Id


class CreateComputeClientRequest(WireRequest):
    serviceNames: list[str] = Field(max_length=100)
    computeClientName: str = Field(max_length=200)
    userId: str = Id


class DeleteComputeClientRequest(WireRequest):
    computeClientId: str = Id


class SetComputeClientInfoRequest(WireRequest):
    computeClientId: str = Id
    serviceNames: Optional[list[str]] = Field(default=None, max_length=100)
    computeClientName: Optional[str] = Field(default=None, max_length=200)
    description: Optional[str] = Field(default=None, max_length=10_000)
    computeSlots: Optional[list[PairioComputeClientComputeSlot]] = Field(default=None, max_length=100)
    processJobsForUsers: Optional[list[str]] = Field(default=None, max_length=1000)


class PingComputeClientsRequest(WireRequest):
    serviceName: str = Id


class ResetUserApiKeyRequest(WireRequest):
    userId: str = Id


class SetJobStatusRequest(WireRequest):
    jobId: str = Id
    computeClientId: str = Id
    status: Literal["starting", "running", "completed", "failed"]
    error: Optional[str] = Field(default=None, max_length=100_000)


# ---------------------------------------------------------------- the calls


@dataclass
class Caller:
    """One call's context: the hub, its transaction, and the API key it came with (if any)."""

    ctx: HubContext
    s: Session
    api_key: Optional[str]
    request_base: str = ""
    """the URL the call reached the hub at (signed upload URLs must work from where the caller runs)"""

    def user_id(self, claimed: str = "") -> str:
        """The key's user; ``claimed`` (a request's userId) must be "" or that user."""
        user = accounts.user_for_api_key(self.s, self.api_key)
        if claimed and claimed != user:
            raise Unauthorized(f'userId does not match the API key\'s user; send userId "" or {user!r}')
        return user

    def jobs(self, rows: list[Job]) -> list[dict[str, Any]]:
        return [wire_job(j) for j in core.jobs_public(self.s, rows)]

    def job(self, row: Job) -> dict[str, Any]:
        return self.jobs([row])[0]


RequestT = TypeVar("RequestT", bound=BaseModel)
Answer = Callable[[Caller, Any], dict[str, Any]]


@dataclass(frozen=True)
class WireCall:
    name: str
    request: type[BaseModel]
    answer: Answer
    reads_only: bool = False
    """runs in a read transaction: on SQLite it neither takes nor waits for the write lock (Neurosift polls getJob)"""
    on_loop: Optional[Callable[[RawReads, Any], Optional[dict[str, Any]]]] = None
    """the answer from prebuilt statements on the event loop (``HubContext.run_read``); None: ``answer`` gives it"""


CALLS: dict[str, WireCall] = {}


def wire_call(
    name: str, request: type[RequestT], *, reads_only: bool = False,
    on_loop: Optional[Callable[[RawReads, RequestT], Optional[dict[str, Any]]]] = None,
) -> Callable[[Callable[[Caller, RequestT], dict[str, Any]]], Answer]:
    def register(answer: Callable[[Caller, RequestT], dict[str, Any]]) -> Answer:
        CALLS[name] = WireCall(name, request, answer, reads_only, on_loop)
        return answer

    return register


@wire_call("createJob", CreateJobRequest)
def create_job(c: Caller, req: CreateJobRequest) -> dict[str, Any]:
    job, _created = core.create_job(c.ctx, c.s, c.user_id(req.userId), req.to_core())
    return {"job": c.job(job)}


def get_job_on_loop(conn: RawReads, req: GetJobRequest) -> Optional[dict[str, Any]]:
    """getJob's answer from one prebuilt statement, as ``get_job`` gives it (Neurosift's poll, read as
    ``GET /v1/jobs/{id}`` reads); None when only ``get_job`` can answer (a private key asked for, a job being stopped)."""
    if req.includePrivateKey:
        return None
    stored = job_answers.stored_job(conn, req.jobId)
    if being_stopped(stored.row):
        return None
    return {"job": wire_job_fields(stored.answer())}


@wire_call("getJob", GetJobRequest, reads_only=True, on_loop=get_job_on_loop)
def get_job(c: Caller, req: GetJobRequest) -> dict[str, Any]:
    return original_sdk_get_job(c, req)


@wire_call("findJobByDefinition", FindJobByDefinitionRequest, reads_only=True)
def find_job_by_definition(c: Caller, req: FindJobByDefinitionRequest) -> dict[str, Any]:
    job = core.find_job_by_definition(c.s, req.serviceName, req.jobDefinition)
    # "job" is left out, not null, when nothing matches: clients validate it as optional.
    return {"found": True, "job": c.job(job)} if job is not None else {"found": False}


@wire_call("findJobs", FindJobsRequest, reads_only=True)
def find_jobs(c: Caller, req: FindJobsRequest) -> dict[str, Any]:
    job_filter = req.to_filter()
    if not job_filter.has_filter_besides_status():
        raise BadRequest(
            "findJobs needs at least one filter besides status and limit: userId, jobId, processorName, "
            "computeClientId, batchId, tags, serviceName, appName, inputFileUrl or outputFileUrl"
        )
    rows, _next_cursor = core.find_jobs(c.s, job_filter, limit=req.limit)
    return {"jobs": c.jobs(rows)}


@wire_call("cancelJob", CancelJobRequest)
def cancel_job(c: Caller, req: CancelJobRequest) -> dict[str, Any]:
    core.cancel_job(c.ctx, c.s, c.user_id(), req.jobId)
    return {}


@wire_call("deleteJobs", DeleteJobsRequest)
def delete_jobs(c: Caller, req: DeleteJobsRequest) -> dict[str, Any]:
    core.delete_jobs(c.ctx, c.s, c.user_id(req.userId), req.jobIds)
    return {}


@wire_call("getService", GetServiceRequest, reads_only=True)
def get_service(c: Caller, req: GetServiceRequest) -> dict[str, Any]:
    return {"service": wire_service(c.s, accounts.get_service_row(c.s, req.serviceName))}


@wire_call("getServices", GetServicesRequest, reads_only=True)
def get_services(c: Caller, req: GetServicesRequest) -> dict[str, Any]:
    services = accounts.list_services(c.s, req.userId)
    if req.userId:  # the original lists only the services the user owns, not those it has a role in
        services = [x for x in services if x.owner_user_id == req.userId]
    return {"services": [wire_service(c.s, x) for x in services]}


@wire_call("getServiceApp", GetServiceAppRequest, reads_only=True)
def get_service_app(c: Caller, req: GetServiceAppRequest) -> dict[str, Any]:
    return {"serviceApp": wire_service_app(accounts.get_app(c.s, req.serviceName, req.appName))}


@wire_call("getServiceApps", GetServiceAppsRequest, reads_only=True)
def get_service_apps(c: Caller, req: GetServiceAppsRequest) -> dict[str, Any]:
    return {"serviceApps": [wire_service_app(a) for a in accounts.list_apps(c.s, req.serviceName, req.appName)]}


@wire_call("getComputeClient", GetComputeClientRequest, reads_only=True)
def get_compute_client(c: Caller, req: GetComputeClientRequest) -> dict[str, Any]:
    return {"computeClient": wire_compute_client(accounts.get_compute_client(c.s, req.computeClientId))}


@wire_call("getComputeClients", GetComputeClientsRequest, reads_only=True)
def get_compute_clients(c: Caller, req: GetComputeClientsRequest) -> dict[str, Any]:
    clients = accounts.list_compute_clients(c.s, req.serviceName)
    return {"computeClients": [wire_compute_client(cc) for cc in clients]}


@wire_call("computeUserStats", ComputeUserStatsRequest, reads_only=True)
def compute_user_stats(c: Caller, req: ComputeUserStatsRequest) -> dict[str, Any]:
    return {"userStats": core.user_stats(c.s, req.userId)}


# The web UI's calls that change state. The prototype authenticated them with a GitHub
# token for userId; here the caller's API key stands for that user.


@wire_call("addService", AddServiceRequest)
def add_service(c: Caller, req: AddServiceRequest) -> dict[str, Any]:
    accounts.create_service(c.s, req.serviceName, c.user_id(req.userId))
    return {}


@wire_call("setServiceInfo", SetServiceInfoRequest)
def set_service_info(c: Caller, req: SetServiceInfoRequest) -> dict[str, Any]:
    accounts.require_role(c.s, req.serviceName, c.user_id(), "admin")
    if req.users is None:
        raise BadRequest("Nothing to update: send users, the service's whole list of users and their roles")
    service = accounts.get_service_row(c.s, req.serviceName)
    listed = {u.userId for u in req.users}
    # The list replaces the service's users; the owner keeps every role whatever it says.
    for old in accounts.service_public(c.s, service).users:
        if old.userId not in listed and old.userId != service.owner_user_id:
            accounts.remove_service_user(c.s, req.serviceName, old.userId)
    for u in req.users:
        accounts.set_service_user(
            c.s, req.serviceName, u.userId, admin=u.admin, create_jobs=u.createJobs, process_jobs=u.processJobs
        )
    return {}


def _add_app_from_spec(c: Caller, service_name: str, app_name: str, spec: dict[str, Any]) -> None:
    app = accounts.parse_app_spec(spec)
    if app.name != app_name:
        raise BadRequest(f"appName {app_name!r} differs from the spec's name {app.name!r}; send the same name in both")
    accounts.add_app(c.s, service_name, app)


@wire_call("addServiceApp", AddServiceAppRequest)
def add_service_app(c: Caller, req: AddServiceAppRequest) -> dict[str, Any]:
    # The spec comes inside the request: the prototype's UI fetches it from the URI itself,
    # so the hub makes no outbound request. The URI and commit are not kept.
    app = req.serviceApp
    accounts.require_role(c.s, app.serviceName, c.user_id(), "admin")
    _add_app_from_spec(c, app.serviceName, app.appName, app.appSpecification)
    return {}


@wire_call("setServiceAppInfo", SetServiceAppInfoRequest)
def set_service_app_info(c: Caller, req: SetServiceAppInfoRequest) -> dict[str, Any]:
    accounts.require_role(c.s, req.serviceName, c.user_id(), "admin")
    accounts.get_app(c.s, req.serviceName, req.appName)
    if req.appSpecification is None:
        raise BadRequest("Nothing to update: send appSpecification (this hub keeps no spec URI or commit)")
    _add_app_from_spec(c, req.serviceName, req.appName, req.appSpecification)
    return {}


@wire_call("deleteServiceApp", DeleteServiceAppRequest)
def delete_service_app(c: Caller, req: DeleteServiceAppRequest) -> dict[str, Any]:
    accounts.require_role(c.s, req.serviceName, c.user_id(), "admin")
    accounts.remove_app(c.s, req.serviceName, req.appName)
    return {}


@wire_call("createComputeClient", CreateComputeClientRequest)
def create_compute_client(c: Caller, req: CreateComputeClientRequest) -> dict[str, Any]:
    user = c.user_id(req.userId)
    if len(req.serviceNames) != 1:
        raise BadRequest(
            f"serviceNames has {len(req.serviceNames)} names; a compute client of this hub serves exactly one "
            "service, so register one client per service"
        )
    cc, key = accounts.register_compute_client(c.s, req.serviceNames[0], user, req.computeClientName, [accounts.ORIGINAL_DEFAULT_SLOT])
    c.s.flush()
    return {"computeClientId": cc.compute_client_id, "computeClientPrivateKey": key}


@wire_call("deleteComputeClient", DeleteComputeClientRequest)
def delete_compute_client(c: Caller, req: DeleteComputeClientRequest) -> dict[str, Any]:
    accounts.delete_compute_client(c.s, req.computeClientId, c.user_id())
    return {}


@wire_call("setComputeClientInfo", SetComputeClientInfoRequest)
def set_compute_client_info(c: Caller, req: SetComputeClientInfoRequest) -> dict[str, Any]:
    user = c.user_id()
    cc = accounts.get_compute_client(c.s, req.computeClientId)
    if req.serviceNames is not None and req.serviceNames != [cc.service_name]:
        raise BadRequest(
            f"serviceNames must stay [{cc.service_name!r}]: a compute client of this hub serves one service; "
            "register another client for another service"
        )
    if req.processJobsForUsers is not None:
        raise BadRequest("processJobsForUsers is not supported here; send null or leave it out (roles decide whose jobs run)")
    if req.computeClientName is None and req.description is None and req.computeSlots is None:
        raise BadRequest("Nothing to update: send computeClientName, description or computeSlots")
    accounts.update_compute_client(
        c.s, req.computeClientId, user, label=req.computeClientName, description=req.description, compute_slots=req.computeSlots
    )
    return {}


@wire_call("pingComputeClients", PingComputeClientsRequest)
def ping_compute_clients(c: Caller, req: PingComputeClientsRequest) -> dict[str, Any]:
    # Bridges here poll for work themselves, so a ping has nothing to wake; the UI's
    # following getComputeClients shows each client's last activity.
    accounts.get_service_row(c.s, req.serviceName)
    return {}


@wire_call("resetUserApiKey", ResetUserApiKeyRequest)
def reset_user_api_key(c: Caller, req: ResetUserApiKeyRequest) -> dict[str, Any]:
    user = c.user_id(req.userId)
    old_keys = [k for k in accounts.list_api_keys(c.s, user) if not k.revoked]
    _key, plain = accounts.create_api_key(c.s, user, label="resetUserApiKey")
    for k in old_keys:  # a reset replaces the user's keys, the one sent with this call included
        accounts.revoke_api_key(c.s, user, k.key_id)
    return {"apiKey": plain}


# The rest of the original web UI's calls, and the old compute client's pubsub look-up.


class DeleteServiceRequest(WireRequest):
    serviceName: str = Id


class AddUserRequest(WireRequest):
    userId: str = Id


class SetUserInfoRequest(WireRequest):
    userId: str = Id
    name: Optional[str] = Field(default=None, max_length=200)
    email: Optional[str] = Field(default=None, max_length=200)


class GetPubsubSubscriptionRequest(WireRequest):
    computeClientId: Optional[str] = OptionalId


@wire_call("deleteService", DeleteServiceRequest)
def delete_service(c: Caller, req: DeleteServiceRequest) -> dict[str, Any]:
    accounts.delete_service(c.s, req.serviceName, c.user_id())
    return {}


@wire_call("addUser", AddUserRequest)
def add_user(c: Caller, req: AddUserRequest) -> dict[str, Any]:
    # The prototype's addUser could never succeed (app-protocol.md section 6); its users came
    # from resetUserApiKey. Here a user exists as soon as it has an API key, so adding
    # oneself is a no-op, and other users are created by an administrator.
    c.user_id(req.userId)
    return {}


@wire_call("setUserInfo", SetUserInfoRequest)
def set_user_info(c: Caller, req: SetUserInfoRequest) -> dict[str, Any]:
    c.user_id(req.userId)
    if req.name or req.email:
        raise BadRequest(
            "this hub keeps no user name or email (a user is its userId and API keys); "
            "send setUserInfo without name and email, or leave the call out"
        )
    return {}


# Bridges here ask the hub for work themselves; there is no PubNub channel. The old compute
# client subscribes with what it gets and, hearing nothing, falls back to asking
# getRunnableJobsForComputeClient every 10 minutes; the placeholder key says why.
NO_PUBSUB_KEY = "pairio-hub-has-no-pubsub"
PUBSUB_CHANNEL = "pairio-compute-clients"


@wire_call("getPubsubSubscription", GetPubsubSubscriptionRequest)
def get_pubsub_subscription(c: Caller, req: GetPubsubSubscriptionRequest) -> dict[str, Any]:
    if req.computeClientId is None:
        raise BadRequest("computeClientId is missing; send the id of the compute client whose key is in Authorization")
    cc = accounts.compute_client_for_key(c.s, c.api_key)
    if cc.compute_client_id != req.computeClientId:
        raise Unauthorized(
            f"the key is compute client {cc.compute_client_id}'s, not {req.computeClientId!r}; send the matching id and key"
        )
    cc.last_active_sec = now_sec()
    return {"subscription": {"pubnubSubscribeKey": NO_PUBSUB_KEY, "pubnubChannel": PUBSUB_CHANNEL, "pubnubUser": cc.compute_client_id}}


# The job process's call, made with the job's private key.


@wire_call("setJobStatus", SetJobStatusRequest)
def set_job_status(c: Caller, req: SetJobStatusRequest) -> dict[str, Any]:
    job, caller = compute.job_for_call(c.s, req.jobId, c.api_key)
    if caller.by_job_key:  # a late report within the grace gets the usual "final" refusal (400), as the original SDK expects
        original_sdk.require_key_in_force(job, for_upload=True)
    if caller.compute_client_id != req.computeClientId:
        raise Unauthorized(
            f"job {job.job_id} is run by compute client {caller.compute_client_id}, not {req.computeClientId!r}; "
            "send the COMPUTE_CLIENT_ID the job was started with"
        )
    # "starting" is set when a bridge claims the job, so here it can only repeat the current status.
    compute.set_job_status(c.s, req.jobId, c.api_key, JobStatus(req.status), req.error)
    return {}


# ---------------------------------------------------------------- jobs of original-SDK images
# Their job process calls getJob, setJobStatus and getSignedUploadUrl (hub/core/original_sdk.py).


class GetSignedUploadUrlRequest(WireRequest):
    jobId: str = Id
    uploadType: Literal["output", "consoleOutput", "resourceUtilizationLog", "other"]
    outputName: Optional[str] = OptionalId
    otherName: Optional[str] = Field(default=None, max_length=400)
    size: int = Field(ge=0)
    fallbackFileBaseName: Optional[str] = Field(default=None, max_length=400, description="sent by one old SDK build; ignored")


@wire_call("getSignedUploadUrl", GetSignedUploadUrlRequest)
def get_signed_upload_url(c: Caller, req: GetSignedUploadUrlRequest) -> dict[str, Any]:
    signed = original_sdk.signed_upload_url(
        c.ctx, c.s, req.jobId, c.api_key, req.uploadType, output_name=req.outputName, other_name=req.otherName,
        size=req.size, upload_base=c.request_base or c.ctx.settings.base_url,
    )
    return {"signedUrl": signed.signed_url, "downloadUrl": signed.download_url}


def being_stopped(job: Any) -> bool:
    """A canceled job that has not stopped yet (``job``: a ``Job`` or a row of its columns): getJob shows it as failed."""
    return bool(job.canceled) and JobStatus(job.status) in (JobStatus.STARTING, JobStatus.RUNNING)


def original_sdk_get_job(c: Caller, req: GetJobRequest) -> dict[str, Any]:
    """getJob: anyone may read a job (its key and secrets are null); with includePrivateKey, its own process gets its key back.

    The hub keeps only a hash of a job's private key, so the key is echoed only to a caller
    that sends it (with the job's computeClientId, while the job runs); anyone else gets
    null, as users always do. A compute client gets the key once, when it claims the job. A canceled job that has
    not stopped yet reads as failed: the original SDK's job-status monitor stops a job whose
    status leaves 'running', and that is how such an image notices a cancel.
    """
    job = core.get_job_row(c.s, req.jobId)
    d = c.job(job)
    if being_stopped(job):
        d["status"] = JobStatus.FAILED.value
        d["error"] = f"canceled by {job.canceled_by_user_id or 'a user'} (the job is being stopped)"
    own = req.includePrivateKey and bool(c.api_key) and original_sdk.is_own_key(job, c.api_key or "")
    if own and req.computeClientId == job.compute_client_id:
        original_sdk.require_key_in_force(job, for_upload=False)
        d["jobPrivateKey"] = c.api_key
    return {"job": d}


# ---------------------------------------------------------------- the original compute client's claim


class GetRunnableJobsForComputeClientRequest(WireRequest):
    computeClientId: str = Id


# How many jobs one call hands over at most: the slots limit them further.
MAX_RUNNABLE_JOBS_PER_CALL = 20


@wire_call("getRunnableJobsForComputeClient", GetRunnableJobsForComputeClientRequest)
def get_runnable_jobs_for_compute_client(c: Caller, req: GetRunnableJobsForComputeClientRequest) -> dict[str, Any]:
    """The original compute client's poll: the jobs it should start (with their private keys) and its running ones.

    This hub issues a job's private key when a compute client claims the job and keeps only its
    hash, so the runnable jobs listed here are claimed by this call: they are 'starting' and
    this client's (its own later 'starting' report is then a no-op). They fit the client's
    slots, as any claim; secrets are null, as the original sent them.
    """
    cc = compute.compute_client_for_key(c.s, c.api_key)
    if cc.compute_client_id != req.computeClientId:
        raise Unauthorized(f"the key is the key of compute client {cc.compute_client_id}, not {req.computeClientId!r}")
    claimed = compute.claim_jobs_in(c.s, c.api_key, MAX_RUNNABLE_JOBS_PER_CALL)  # checks the processJobs role too
    runnable = []
    for item in claimed:
        d = wire_job(item.job)
        d["secrets"] = None
        runnable.append(d)
    running_rows = core.find_jobs(
        c.s, core.JobFilter(computeClientId=cc.compute_client_id, status=[JobStatus.RUNNING]), limit=core.MAX_FIND_LIMIT
    )[0]
    return {"runnableJobs": runnable, "runningJobs": c.jobs(running_rows)}


# ---------------------------------------------------------------- wire shapes


def wire_job(job: PairioJobData) -> dict[str, Any]:
    """The Job shape of the doc, as the prototype's clients validate it."""
    return wire_job_fields(job.model_dump(mode="json"))


def wire_job_fields(d: dict[str, Any]) -> dict[str, Any]:
    """``wire_job`` of a job's answer as ``PairioJobData.model_dump(mode="json")`` gives it (modified in place).

    The prototype's validators take ``batchId`` as a string (it stored "" for no
    batch) and ``cacheBust`` as absent or a string, never null.
    """
    d.pop("imageDigest", None)  # not in the doc's Job shape: the prototype's validators reject unknown fields
    if d["batchId"] is None:
        d["batchId"] = ""
    if d["jobDefinition"].get("cacheBust") is None:
        d["jobDefinition"].pop("cacheBust", None)
    return d


def wire_service(s: Session, service: Service) -> dict[str, Any]:
    """The prototype's Service, with exactly its fields (its web UI refuses others)."""
    d = accounts.service_public(s, service).model_dump(mode="json")
    return {"serviceName": d["serviceName"], "userId": d["userId"], "users": d["users"]}


def wire_service_app(row: ServiceApp) -> dict[str, Any]:
    """The prototype's serviceApp, with exactly its fields: its web UI discards answers with others.

    The prototype kept a URI and commit of the spec; its clients read them as
    strings, so they are "" here (this hub keeps only the spec itself).
    """
    app = accounts.app_public(row)
    return {
        "serviceName": app.serviceName,
        "appName": app.appName,
        "appSpecificationUri": "",
        "appSpecificationCommit": "",
        "appSpecification": original_spec(app.appSpecification),
    }


def original_spec(app: PairioApp) -> dict[str, Any]:
    """The spec in the prototype's spec.json form (its validators refuse our extra fields).

    Our additions (version, tags, needsNetwork, required, secret) are left out;
    ``defaultValue``, ``options`` and ``list`` appear only where the prototype writes them.
    """
    return {
        "name": app.name,
        "description": app.description,
        "processors": [
            {
                "name": p.name,
                "description": p.description,
                "label": p.label,
                "image": p.image,
                "executable": p.executable,
                "inputs": [
                    {"name": i.name, "description": i.description, **({"list": True} if i.list else {})} for i in p.inputs
                ],
                "outputs": [{"name": o.name, "description": o.description} for o in p.outputs],
                "parameters": [_original_parameter(x.model_dump(mode="json")) for x in p.parameters],
                "attributes": [{"name": a.name, "value": a.value} for a in p.attributes],
            }
            for p in app.processors
        ],
    }


def _original_parameter(d: dict[str, Any]) -> dict[str, Any]:
    out = {"name": d["name"], "type": d["type"], "description": d["description"]}
    if d["default"] is not None:
        out["defaultValue"] = d["default"]
    if d["options"] is not None:
        out["options"] = d["options"]
    return out


def wire_compute_client(cc: ComputeClient) -> dict[str, Any]:
    """The prototype's ComputeClient, with exactly its fields (its web UI refuses others)."""
    public = accounts.compute_client_public(cc)
    d: dict[str, Any] = {
        "serviceNames": [public.serviceName],
        "computeClientId": public.computeClientId,
        "computeClientPrivateKey": None,
        "computeClientName": public.label,
        "userId": public.userId,
        "processJobsForUsers": None,
        "description": public.description,
        "computeSlots": [slot.model_dump(mode="json") for slot in public.computeSlots],
    }
    if public.timestampLastActiveSec is not None:  # optional there, but not nullable
        d["timestampLastActiveSec"] = public.timestampLastActiveSec
    return d


# ---------------------------------------------------------------- parsing and errors


def wire_status(e: HubError) -> int:
    """The wire protocol knows 400, 401, 404, 413 and 500: a missing role is 401, a conflict 400."""
    if isinstance(e, Forbidden):
        return 401
    if isinstance(e, Conflict):
        return 400
    return e.status_code


def wire_error(status_code: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def _reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send finite numbers")


def load_json(call_name: str, body: bytes) -> Any:
    """The parsed body, or BadRequest saying where the JSON is broken."""
    try:
        return json.loads(body, parse_constant=_reject_json_constant)
    except json.JSONDecodeError as e:
        reason = f"{e.msg} at line {e.lineno} column {e.colno}"
    except UnicodeDecodeError:
        reason = "it is not UTF-8"
    except RecursionError:
        reason = "it is nested too deeply"
    except ValueError as e:  # NaN or Infinity, or an integer with thousands of digits
        reason = str(e)
    raise BadRequest(f"the body of /api/{call_name} is not valid JSON: {reason}")


def parse_body(call: WireCall, body: bytes) -> BaseModel:
    """The call's request model from the raw body, or BadRequest saying what to fix."""
    data = load_json(call.name, body)
    if not isinstance(data, dict):
        raise BadRequest(f"the body of /api/{call.name} must be a JSON object, not {type(data).__name__}")
    expected = f"{call.name}Request"
    given = data.pop("type", None)
    if given != expected:
        shown = repr(given[:100]) if isinstance(given, str) else "missing" if given is None else "not a string"
        raise BadRequest(f"the body's type is {shown}; /api/{call.name} takes type {expected!r}")
    check_strings(data)
    try:
        # Strict, like the prototype's validators: "4" is not a number and "yes" is not a boolean.
        return call.request.model_validate(data, strict=True)
    except ValidationError as e:
        raise BadRequest(f"invalid {expected}: {format_validation_error(e)}") from None


def check_strings(data: Any) -> None:
    """Refuse NUL characters and lone surrogates anywhere: databases cannot store them."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                _check_string(where or "body", k)
                stack.append((f"{where}.{k}" if where else k, v))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", v) for i, v in enumerate(value))
        elif isinstance(value, str):
            _check_string(where, value)


def _check_string(where: str, value: str) -> None:
    if "\x00" in value:
        raise BadRequest(f"{where}: contains a NUL character; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{where}: contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode") from None


def format_validation_error(e: ValidationError) -> str:
    """Where each problem is and what is wrong, without the input values (they may be secrets)."""
    parts = []
    for err in e.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            message = "unknown field (not part of the wire protocol; check its spelling)"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}"[:MAX_ERROR_PART_CHARS] if where else message[:MAX_ERROR_PART_CHARS])
    more = len(parts) - MAX_ERRORS_SHOWN
    return "; ".join(parts[:MAX_ERRORS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def answer_call(ctx: HubContext, call: WireCall, req: BaseModel, api_key: Optional[str], request_base: str = "") -> dict[str, Any]:
    """Run one call in one transaction (rolled back on any error); a call that only reads in a read transaction.
    Runs in the threadpool."""
    with (ctx.read_transaction() if call.reads_only else ctx.transaction()) as s:
        return call.answer(Caller(ctx=ctx, s=s, api_key=api_key, request_base=request_base), req)


# ---------------------------------------------------------------- routes

_CALL_LIST = ", ".join(sorted(CALLS))


def _unknown_call(call_name: str) -> JSONResponse:
    return wire_error(404, f"unknown call {call_name[:100]!r}; the wire protocol has: {_CALL_LIST}")


@router.post(
    "/api/{call_name:path}",
    summary="A call of the original Pairio wire protocol",
    description=(
        'Body: {"type": "<callName>Request", ...}; answer: {"type": "<callName>Response", ...}; '
        f'errors: {{"error": "<message>"}}. Calls: {_CALL_LIST}.'
    ),
    response_model=None,
)
async def wire_call_route(call_name: str, request: Request) -> Response:
    # Async to read the raw body; a call with an on_loop answer reads on the loop, the others run in the threadpool.
    call = CALLS.get(call_name)
    if call is None:
        return _unknown_call(call_name)
    try:
        body = await request.body()
    except StarletteHTTPException as e:  # the body-size middleware's 413 while streaming
        if e.status_code == PayloadTooLarge.status_code:
            return wire_error(e.status_code, str(e.detail))
        raise
    try:
        req = parse_body(call, body)
        ctx = get_ctx(request)
        on_loop = call.on_loop
        answer = await ctx.run_read(lambda conn: on_loop(conn, req)) if on_loop is not None else None
        if answer is None:
            answer = await run_in_threadpool(answer_call, ctx, call, req, bearer_token(request), str(request.base_url))
    except HubError as e:
        return wire_error(wire_status(e), e.message)
    except OperationalError as e:  # the database restarting or refusing connections: as /v1 answers it
        log.warning("wire call %s: %s", call.name, database_unavailable_log(e))
        return wire_error(503, DATABASE_UNAVAILABLE)
    except Exception:  # noqa: BLE001 - the protocol's 500, logged with its traceback
        log.exception("wire call %s failed", call.name)
        return wire_error(500, f"internal error in {call.name}; the hub's log has the details")
    return JSONResponse({"type": f"{call.name}Response", **answer})


@router.api_route(
    "/api/{call_name:path}", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False
)
async def wire_wrong_method(call_name: str, request: Request) -> Response:
    if call_name not in CALLS:
        return _unknown_call(call_name)
    allow = {"Allow": "POST, OPTIONS"}
    if request.method == "OPTIONS":  # CORS preflights never get here: the CORS middleware answers them
        return Response(status_code=204, headers=allow)
    return wire_error(405, f"/api/{call_name} answers POST only, not {request.method}; use POST", headers=allow)


# ---------------------------------------------------------------- original-SDK uploads and additional outputs


ORIGINAL_SDK_UPLOAD_PATH = original_sdk.UPLOAD_PATH + "/"


@router.put(ORIGINAL_SDK_UPLOAD_PATH + "{token}", include_in_schema=False)
async def original_sdk_upload(token: str, request: Request) -> Response:
    """The PUT of a URL from getSignedUploadUrl: exactly the declared bytes; 200 with an empty body, as the original SDK wants."""
    ctx = get_ctx(request)
    try:
        grant, temp = await run_in_threadpool(original_sdk.check_upload, ctx, token)
        try:
            size = await _receive_at_most(request, temp, grant.size)
            await run_in_threadpool(original_sdk.finish_upload, ctx, token, temp, size)
        finally:
            temp.unlink(missing_ok=True)
    except HubError as e:
        return wire_error(wire_status(e), e.message)
    return Response(status_code=200)


async def _receive_at_most(request: Request, path: Path, limit: int) -> int:
    size = 0
    with open(path, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"the upload is larger than the {limit} bytes getSignedUploadUrl was asked for; ask again with the exact size")
            await run_in_threadpool(f.write, chunk)
    return size


@router.get(original_sdk.OTHER_PATH + "/{job_id}/" + original_sdk.OTHER_DIR + "/{name:path}", include_in_schema=False)
async def original_sdk_other_output(job_id: str, name: str, request: Request) -> Response:
    """An additional output a job uploaded with upload_additional_job_output."""
    try:
        path = await run_in_threadpool(original_sdk.other_file, get_ctx(request), job_id, name)
    except HubError as e:
        return JSONResponse({"detail": e.message}, status_code=e.status_code)
    return FileResponse(path, media_type="application/octet-stream", headers={"X-Content-Type-Options": "nosniff"})
