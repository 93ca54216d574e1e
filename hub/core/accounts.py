"""Users, API keys, services with roles, apps and compute clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pydantic import ValidationError
from sqlalchemy import Select, and_, bindparam, func, select
from sqlalchemy.orm import Session

from pairio.models import (
    PairioApp,
    PairioBridgeInfo,
    PairioComputeClient,
    PairioComputeClientComputeSlot,
    PairioService,
    PairioServiceApp,
    PairioServiceUser,
)
from pairio.names import check_name
from pairio.status import TERMINAL_STATUSES

from ..context import now_sec
from ..db.tables import ApiKey, ComputeClient, Job, Service, ServiceApp, ServiceUser, User
from ..errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from ..security import hash_secret, new_id, new_secret
from .definition import spec_hash
from .slot_fit import forget_service_clients

API_KEY_PREFIX = "pairio"
COMPUTE_CLIENT_KEY_PREFIX = "pairiocc"
# The original Pairio gave a newly registered compute client one slot of this size (createComputeClient,
# and its /register_compute_client page).
ORIGINAL_DEFAULT_SLOT = PairioComputeClientComputeSlot(numCpus=4, numGpus=0, memoryGb=8, timeSec=3600)


def _valid_name(value: str, what: str) -> str:
    try:
        return check_name(value, what)
    except ValueError as e:
        raise BadRequest(str(e)) from None


# ---------------------------------------------------------------- users and keys


def create_user(s: Session, user_id: str) -> User:
    _valid_name(user_id, "user name")
    if s.get(User, user_id) is not None:
        raise Conflict(f"user {user_id!r} exists already")
    user = User(user_id=user_id, created_sec=now_sec())
    s.add(user)
    return user


def get_user(s: Session, user_id: str) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id!r}")
    return user


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.user_id)))


def create_api_key(s: Session, user_id: str, label: str = "") -> tuple[ApiKey, str]:
    """Make a key for the user; the plain key is returned once and only its hash is stored."""
    get_user(s, user_id)
    plain = new_secret(API_KEY_PREFIX)
    key = ApiKey(key_id=new_id(12), user_id=user_id, key_hash=hash_secret(plain), label=label, created_sec=now_sec())
    s.add(key)
    return key, plain


def revoke_api_key(s: Session, user_id: str, key_id: str) -> None:
    key = s.get(ApiKey, key_id)
    if key is None or key.user_id != user_id:
        raise NotFound(f"no API key {key_id!r} for user {user_id!r}")
    key.revoked = True


def list_api_keys(s: Session, user_id: str) -> list[ApiKey]:
    return list(s.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_sec)))


def user_for_api_key(s: Session, plain_key: Optional[str]) -> str:
    """The user id a key belongs to; Unauthorized (without echoing the key) otherwise."""
    return api_key_for(s, plain_key).user_id


def api_key_for(s: Session, plain_key: Optional[str]) -> ApiKey:
    """The valid (known, unrevoked) key row of a plain key; Unauthorized (without echoing the key) otherwise."""
    if not plain_key:
        raise Unauthorized(
            "no API key: send 'Authorization: Bearer <key>'; get a key with 'pairio admin create-api-key USER'"
        )
    key = s.scalars(select(ApiKey).where(ApiKey.key_hash == hash_secret(plain_key))).first()
    if key is None or key.revoked:
        raise Unauthorized("the API key is not valid (unknown or revoked); check PAIRIO_API_KEY")
    return key


# ---------------------------------------------------------------- services and roles


@dataclass(frozen=True)
class Roles:
    admin: bool
    create_jobs: bool
    process_jobs: bool


def get_service_row(s: Session, service_name: str) -> Service:
    service = s.get(Service, service_name)
    if service is None:
        raise NotFound(f"no service {service_name!r}; list services with 'pairio admin list-services'")
    return service


def create_service(s: Session, service_name: str, owner_user_id: str) -> Service:
    _valid_name(service_name, "service name")
    get_user(s, owner_user_id)
    if s.get(Service, service_name) is not None:
        raise Conflict(f"service {service_name!r} exists already")
    service = Service(service_name=service_name, owner_user_id=owner_user_id, created_sec=now_sec())
    s.add(service)
    s.flush()
    s.add(ServiceUser(service_name=service_name, user_id=owner_user_id, admin=True, create_jobs=True, process_jobs=True))
    return service


def set_service_user(
    s: Session, service_name: str, user_id: str, *, admin: bool, create_jobs: bool, process_jobs: bool
) -> ServiceUser:
    get_service_row(s, service_name)
    get_user(s, user_id)
    su = s.get(ServiceUser, (service_name, user_id))
    if su is None:
        su = ServiceUser(service_name=service_name, user_id=user_id)
        s.add(su)
    su.admin, su.create_jobs, su.process_jobs = admin, create_jobs, process_jobs
    return su


def remove_service_user(s: Session, service_name: str, user_id: str) -> None:
    service = get_service_row(s, service_name)
    if service.owner_user_id == user_id:
        raise Conflict("the owner of a service cannot be removed from it")
    su = s.get(ServiceUser, (service_name, user_id))
    if su is not None:
        s.delete(su)


def _roles_statement() -> Select[tuple[str, Optional[bool], Optional[bool], Optional[bool]]]:
    services, users = Service.__table__.c, ServiceUser.__table__.c
    return (
        select(services.owner_user_id, users.admin, users.create_jobs, users.process_jobs)
        .select_from(
            Service.__table__.outerjoin(
                ServiceUser.__table__, and_(users.service_name == services.service_name, users.user_id == bindparam("user_id"))
            )
        )
        .where(services.service_name == bindparam("service_name"))
    )


_ROLES = _roles_statement()  # built once: every claim and job creation asks


def roles_of(s: Session, service_name: str, user_id: str) -> Roles:
    """The user's roles in the service, read by one statement (the caller's pending changes flushed first)."""
    if s.autoflush:
        s.flush()  # a Core statement does not flush by itself; nothing to do when the session is clean
    row = s.execute(_ROLES, {"service_name": service_name, "user_id": user_id}).first()
    if row is None:
        raise NotFound(f"no service {service_name!r}; list services with 'pairio admin list-services'")
    owner, admin, create_jobs, process_jobs = row
    if owner == user_id:
        return Roles(admin=True, create_jobs=True, process_jobs=True)
    if admin is None:  # no service_users row
        return Roles(False, False, False)
    return Roles(admin=bool(admin), create_jobs=bool(create_jobs or admin), process_jobs=bool(process_jobs))


def require_role(s: Session, service_name: str, user_id: str, role: str) -> None:
    roles = roles_of(s, service_name, user_id)
    if not getattr(roles, role):
        flag = {"admin": "--admin", "create_jobs": "--create-jobs", "process_jobs": "--process-jobs"}[role]
        raise Forbidden(
            f"user {user_id!r} lacks the {role.replace('_j', 'J')} role in service {service_name!r}; "
            f"a service admin can grant it with 'pairio admin add-service-user {service_name} {user_id} {flag}'"
        )


def service_public(s: Session, service: Service) -> PairioService:
    users = s.scalars(select(ServiceUser).where(ServiceUser.service_name == service.service_name).order_by(ServiceUser.user_id))
    return PairioService(
        serviceName=service.service_name,
        userId=service.owner_user_id,
        users=[
            PairioServiceUser(userId=u.user_id, admin=u.admin, createJobs=u.create_jobs, processJobs=u.process_jobs)
            for u in users
        ],
        timestampCreatedSec=service.created_sec,
    )


def list_services(s: Session, user_id: Optional[str] = None) -> list[Service]:
    q = select(Service).order_by(Service.service_name)
    if user_id:
        q = q.where(
            (Service.owner_user_id == user_id)
            | Service.service_name.in_(select(ServiceUser.service_name).where(ServiceUser.user_id == user_id))
        )
    return list(s.scalars(q))


def delete_service(s: Session, service_name: str, user_id: str) -> None:
    """Delete a service with its apps, compute clients and roles; only its owner may, and only when no job waits or runs.

    Finished jobs stay (their pages, files and the usage statistics keep working);
    unfinished ones would be orphans that no compute client could ever run.
    """
    service = get_service_row(s, service_name)
    if service.owner_user_id != user_id:
        raise Forbidden(f"only the owner of service {service_name!r} ({service.owner_user_id}) may delete it")
    unfinished = s.scalar(
        select(func.count()).select_from(Job).where(Job.service_name == service_name, Job.status.not_in([x.value for x in TERMINAL_STATUSES]))
    )
    if unfinished:
        raise Conflict(
            f"service {service_name!r} has {unfinished} unfinished jobs; cancel them (or wait until they finish) "
            "before deleting the service"
        )
    for table in (ServiceApp, ComputeClient, ServiceUser):
        for row in s.scalars(select(table).where(table.service_name == service_name)):
            s.delete(row)
    s.flush()
    s.delete(service)


# ---------------------------------------------------------------- apps


def parse_app_spec(spec: object) -> PairioApp:
    try:
        return PairioApp.model_validate(spec, strict=True)  # as the schema says: 0 is not a boolean
    except ValidationError as e:
        raise BadRequest(f"invalid app spec: {e}") from None


def add_app(s: Session, service_name: str, app: PairioApp) -> ServiceApp:
    """Register or replace an app in a service."""
    get_service_row(s, service_name)
    now = now_sec()
    row = s.get(ServiceApp, (service_name, app.name))
    spec = app.model_dump(mode="json")
    if row is None:
        row = ServiceApp(service_name=service_name, app_name=app.name, created_sec=now, spec=spec, spec_hash=spec_hash(app), updated_sec=now)
        s.add(row)
    else:
        row.spec, row.spec_hash, row.updated_sec = spec, spec_hash(app), now
    return row


def get_app(s: Session, service_name: str, app_name: str) -> ServiceApp:
    row = s.get(ServiceApp, (service_name, app_name))
    if row is None:
        get_service_row(s, service_name)
        names = ", ".join(a.app_name for a in list_apps(s, service_name)) or "none"
        raise NotFound(
            f"service {service_name!r} has no app {app_name!r} (apps: {names}); "
            f"register it with 'pairio admin add-app {service_name} spec.json'"
        )
    return row


def list_apps(s: Session, service_name: Optional[str] = None, app_name: Optional[str] = None) -> list[ServiceApp]:
    q = select(ServiceApp).order_by(ServiceApp.service_name, ServiceApp.app_name)
    if service_name:
        q = q.where(ServiceApp.service_name == service_name)
    if app_name:
        q = q.where(ServiceApp.app_name == app_name)
    return list(s.scalars(q))


def remove_app(s: Session, service_name: str, app_name: str) -> None:
    s.delete(get_app(s, service_name, app_name))


def app_public(row: ServiceApp) -> PairioServiceApp:
    return PairioServiceApp(
        serviceName=row.service_name,
        appName=row.app_name,
        appSpecification=PairioApp.model_validate(row.spec),
        appSpecificationHash=row.spec_hash,
        timestampCreatedSec=row.created_sec,
        timestampUpdatedSec=row.updated_sec,
    )


# ---------------------------------------------------------------- compute clients


def register_compute_client(
    s: Session,
    service_name: str,
    user_id: str,
    label: str,
    compute_slots: list[PairioComputeClientComputeSlot],
    description: str = "",
) -> tuple[ComputeClient, str]:
    """Create a compute client for a user with processJobs; returns it and its private key (shown once)."""
    require_role(s, service_name, user_id, "process_jobs")
    if not label or len(label) > 200:
        raise BadRequest("a compute client needs a label of 1-200 characters")
    if not compute_slots:
        raise BadRequest("a compute client needs at least one compute slot (numCpus, numGpus, memoryGb, timeSec)")
    plain = new_secret(COMPUTE_CLIENT_KEY_PREFIX)
    cc = ComputeClient(
        compute_client_id=new_id(),
        service_name=service_name,
        user_id=user_id,
        label=label,
        description=description,
        private_key_hash=hash_secret(plain),
        compute_slots=[slot.model_dump() for slot in compute_slots],
        created_sec=now_sec(),
    )
    s.add(cc)
    forget_service_clients(service_name, s)
    return cc, plain


_COMPUTE_CLIENT_BY_KEY_HASH = select(ComputeClient).where(ComputeClient.private_key_hash == bindparam("key_hash"))


def compute_client_for_key(s: Session, plain_key: Optional[str]) -> ComputeClient:
    if not plain_key:
        raise Unauthorized("no compute client key: send 'Authorization: Bearer <compute client private key>'")
    cc = s.scalars(_COMPUTE_CLIENT_BY_KEY_HASH, {"key_hash": hash_secret(plain_key)}).first()
    if cc is None:
        raise Unauthorized("unknown compute client key; register the bridge again with 'pairio-bridge register'")
    return cc


def get_compute_client(s: Session, compute_client_id: str) -> ComputeClient:
    cc = s.get(ComputeClient, compute_client_id)
    if cc is None:
        raise NotFound(f"no compute client {compute_client_id!r}")
    return cc


def list_compute_clients(s: Session, service_name: Optional[str] = None) -> list[ComputeClient]:
    q = select(ComputeClient).order_by(ComputeClient.created_sec)
    if service_name:
        q = q.where(ComputeClient.service_name == service_name)
    return list(s.scalars(q))


def delete_compute_client(s: Session, compute_client_id: str, user_id: str) -> None:
    cc = get_compute_client(s, compute_client_id)
    if cc.user_id != user_id and not roles_of(s, cc.service_name, user_id).admin:
        raise Forbidden("only the compute client's owner or a service admin may delete it")
    s.delete(cc)
    forget_service_clients(cc.service_name, s)


def update_compute_client(
    s: Session,
    compute_client_id: str,
    user_id: str,
    *,
    label: Optional[str] = None,
    description: Optional[str] = None,
    compute_slots: Optional[list[PairioComputeClientComputeSlot]] = None,
) -> ComputeClient:
    """Change what is given (None: unchanged); the same people as for deleting may do it."""
    cc = get_compute_client(s, compute_client_id)
    if cc.user_id != user_id and not roles_of(s, cc.service_name, user_id).admin:
        raise Forbidden("only the compute client's owner or a service admin may change it")
    if label is not None:
        if not label or len(label) > 200:
            raise BadRequest("a compute client needs a label of 1-200 characters")
        cc.label = label
    if description is not None:
        cc.description = description
    if compute_slots is not None:
        if not compute_slots:
            raise BadRequest("a compute client needs at least one compute slot (numCpus, numGpus, memoryGb, timeSec)")
        cc.compute_slots = [slot.model_dump() for slot in compute_slots]
    forget_service_clients(cc.service_name, s)  # its slots and label: creation notes and waiting reasons use them
    return cc


def compute_client_public(cc: ComputeClient) -> PairioComputeClient:
    return PairioComputeClient(
        computeClientId=cc.compute_client_id,
        computeClientPrivateKey=None,
        serviceName=cc.service_name,
        label=cc.label,
        description=cc.description,
        userId=cc.user_id,
        computeSlots=[PairioComputeClientComputeSlot.model_validate(x) for x in cc.compute_slots],
        timestampCreatedSec=cc.created_sec,
        timestampLastActiveSec=cc.last_active_sec,
        bridgeInfo=PairioBridgeInfo.model_validate(cc.bridge_info) if cc.bridge_info else None,
    )
