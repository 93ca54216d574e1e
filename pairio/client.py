"""The Pairio client: ``PairioClient`` talks to a hub's REST API (``/v1``) over httpx.

The module-level functions (``submit_job``, ``get_job``, ...) use a default client
configured from ``PAIRIO_API_URL`` / ``PAIRIO_API_KEY`` or ``pairio login`` (see
``pairio.config``).

Retries: transient failures (connection errors, timeouts, 502/503/504) are retried
with exponential backoff only where repeating the call cannot do anything twice:
reads, find-by-definition and cancel (cancelling twice is the same as once). Job
creation is retried like a read when ``skip_cache`` is false: a repeat finds the job
the first attempt made (a cache hit) instead of making a second one. With
``skip_cache`` every attempt makes a new job, so creation, like deletion, is then
retried only when the request surely never reached the hub (the connection was not
established).
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypedDict, Union, Unpack
from urllib.parse import quote

import httpx

from .config import resolve_client_settings
from .errors import (
    MissingApiKeyError,
    PairioConnectionError,
    PairioResponseError,
    error_for_response,
    redact,
)
from .job import PairioJob
from .models import (
    PairioApp,
    PairioComputeClient,
    PairioJobDefinition,
    PairioJobEvent,
    PairioJobInputFile,
    PairioJobOutputFile,
    PairioJobParameter,
    PairioJobRequiredResources,
    PairioJobSecret,
    PairioService,
    PairioServiceApp,
)

# Scripts written for the original Pairio import the job models from here:
#   from pairio.client import submit_job, PairioJobDefinition, PairioJobRequiredResources, ...
__all__ = [
    "submit_job", "get_job", "find_jobs", "cancel_job", "delete_jobs", "PairioClient", "RetryPolicy", "JobFilters",
    "default_client", "set_default_client", "PairioJob", "PairioJobDefinition", "PairioJobRequiredResources",
    "PairioJobInputFile", "PairioJobOutputFile", "PairioJobParameter", "PairioJobSecret",
]
from .status import JobStatus

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_PAGE_SIZE = 100
RETRY_STATUS_CODES = frozenset({502, 503, 504})
# Failures that happen before the request leaves: the hub cannot have acted on it.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

JobDefinitionLike = Union[PairioJobDefinition, dict[str, Any]]
RequiredResourcesLike = Union[PairioJobRequiredResources, dict[str, Any]]
SecretsLike = Union[Sequence[PairioJobSecret], dict[str, str], None]
StatusLike = Union[JobStatus, str]


class JobFilters(TypedDict, total=False):
    """Filters of ``find_jobs``; a job matches when it matches every filter given."""

    service_name: str
    user_id: str
    app_name: str
    processor_name: str
    compute_client_id: str
    batch_id: str
    tags: Sequence[str]
    """every tag listed must be on the job"""
    input_file_url: str
    output_file_url: str
    status: Union[StatusLike, Sequence[StatusLike]]
    """one status or several (any of them)"""


_FILTER_QUERY_NAMES = {
    "service_name": "serviceName", "user_id": "userId", "app_name": "appName", "processor_name": "processorName",
    "compute_client_id": "computeClientId", "batch_id": "batchId", "input_file_url": "inputFileUrl",
    "output_file_url": "outputFileUrl",
}


def _filter_params(filters: JobFilters) -> list[tuple[str, str]]:
    unknown = set(filters) - set(JobFilters.__annotations__)
    if unknown:
        raise TypeError(f"unknown job filter(s) {sorted(unknown)}; use any of {sorted(JobFilters.__annotations__)}")
    params = [(query_name, str(filters[name])) for name, query_name in _FILTER_QUERY_NAMES.items() if filters.get(name)]  # type: ignore[literal-required]
    params += [("tag", t) for t in filters.get("tags", ())]
    params += [("status", JobStatus(s).value) for s in _as_list(filters.get("status"))]
    return params


class Retry(enum.Enum):
    """When a call may be repeated after a transient failure."""

    IDEMPOTENT = "idempotent"
    """Repeating it is harmless: retry on any transport error and on 502/503/504."""
    IF_NOT_SENT = "if-not-sent"
    """Repeating it could act twice: retry only when the connection was never made."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    initial_delay_sec: float = 0.5
    max_delay_sec: float = 8.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so many clients recovering at once do not retry in step."""
        base = min(self.max_delay_sec, self.initial_delay_sec * 2.0**attempt)
        return base * (0.5 + random.random() / 2)


class PairioClient:
    """A connection to one Pairio hub as one user.

    ``url`` and ``api_key`` default to ``PAIRIO_API_URL`` / ``PAIRIO_API_KEY`` or what
    ``pairio login`` saved. ``transport`` replaces the network (tests pass
    ``httpx.ASGITransport``-style transports to call a hub in-process).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        transport: Optional[httpx.BaseTransport] = None,
        timeout: Union[float, httpx.Timeout] = DEFAULT_TIMEOUT,
        retry_policy: RetryPolicy = RetryPolicy(),
    ) -> None:
        settings = resolve_client_settings(url, api_key)
        self.url = settings.url
        self._api_key = settings.api_key
        self.retry_policy = retry_policy
        # The key is added per request, only to requests for this hub, never as a
        # client-wide header that would follow absolute URLs to other hosts.
        self._http = httpx.Client(base_url=self.url, transport=transport, timeout=timeout)

    @property
    def has_api_key(self) -> bool:
        return bool(self._api_key)

    def __repr__(self) -> str:
        return f"PairioClient(url={self.url!r}, api_key={'<set>' if self._api_key else None})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PairioClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- transport

    def _auth_headers(self, required: bool) -> dict[str, str]:
        if self._api_key:
            return {"Authorization": f"Bearer {self._api_key}"}
        if required:
            raise MissingApiKeyError(self.url)
        return {}

    def _request(
        self,
        method: str,
        url: str,
        *,
        retry: Retry,
        auth_required: bool = False,
        send_key: bool = True,
        json: Any = None,
        params: Any = None,
        headers: Optional[dict[str, str]] = None,
        accept_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """``accept_statuses``: error statuses that are answers here (e.g. 416 for a range past the end)."""
        headers = {**(self._auth_headers(auth_required) if send_key else {}), **(headers or {})}
        attempt = 0
        while True:
            last_attempt = attempt + 1 >= self.retry_policy.max_attempts
            try:
                response = self._http.request(method, url, json=json, params=params, headers=headers)
            except httpx.TransportError as e:
                retryable = retry is Retry.IDEMPOTENT or isinstance(e, _NOT_SENT_ERRORS)
                if retryable and not last_attempt:
                    time.sleep(self.retry_policy.delay(attempt))
                    attempt += 1
                    continue
                detail = redact(str(e), self._api_key) or type(e).__name__
                raise PairioConnectionError(
                    f"could not reach the Pairio hub at {self.url} ({type(e).__name__}: {detail}) "
                    f"after {attempt + 1} attempt(s); check that the hub is running and that "
                    "PAIRIO_API_URL (or 'pairio login --url') points at it"
                ) from None
            if response.status_code in RETRY_STATUS_CODES and retry is Retry.IDEMPOTENT and not last_attempt:
                response.close()
                time.sleep(self.retry_policy.delay(attempt))
                attempt += 1
                continue
            if response.is_error and response.status_code not in accept_statuses:
                raise error_for_response(response, self._api_key)
            return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise PairioResponseError(
                f"the hub's answer to {response.request.method} {response.request.url.path} is not JSON "
                f"(content type {response.headers.get('content-type', 'none')}); is the URL a Pairio hub?"
            ) from None

    def _job(self, response: httpx.Response) -> PairioJob:
        return PairioJob.from_hub(self._json(response), self)

    # ---------------------------------------------------------------- users

    def me(self) -> str:
        """The user id the API key belongs to (a cheap way to check a key)."""
        return str(self._json(self._request("GET", "/v1/me", retry=Retry.IDEMPOTENT, auth_required=True))["userId"])

    # ---------------------------------------------------------------- jobs

    def submit_job(
        self,
        service_name: str,
        job_definition: JobDefinitionLike,
        required_resources: RequiredResourcesLike,
        *,
        tags: Sequence[str] = (),
        skip_cache: bool = False,
        rerun_failing: bool = False,
        delete_failing: bool = False,
        batch_id: Optional[str] = None,
        target_compute_client_ids: Optional[Sequence[str]] = None,
        secrets: SecretsLike = None,
        job_dependencies: Optional[Sequence[str]] = None,
    ) -> PairioJob:
        """Queue a job, or get the existing job with the same definition (see the README's cache rules).

        The options after ``required_resources`` are keyword-only, so a flag can never be
        passed by position into the wrong place (``skip_cache`` for ``rerun_failing``).
        """
        body = {
            "serviceName": service_name,
            "jobDefinition": _dump(job_definition),
            "requiredResources": _dump(required_resources),
            "tags": list(tags),
            "batchId": batch_id,
            "targetComputeClientIds": list(target_compute_client_ids) if target_compute_client_ids is not None else None,
            "secrets": _secrets_body(secrets),
            "jobDependencies": list(job_dependencies or []),
            "skipCache": skip_cache,
            "rerunFailing": rerun_failing,
            "deleteFailing": delete_failing,
        }
        retry = Retry.IF_NOT_SENT if skip_cache else Retry.IDEMPOTENT
        return self._job(self._request("POST", "/v1/jobs", json=body, retry=retry, auth_required=True))

    def submit_jobs(self, requests: Sequence["JobRequest"], *, batch_id: Optional[str] = None) -> list[PairioJob]:
        """Queue many jobs, one request per ``MAX_JOBS_PER_REQUEST`` of them; each is a ``JobRequest`` with its own
        definition, resources and tags, and the cache rules of ``submit_job``. ``batch_id`` is given to every
        request without one, so ``wait_for_jobs`` and ``pairio jobs wait --batch`` follow them together.

        Each request to the hub is all or nothing: a job it refuses fails the request, naming the job
        (``jobs[i]``); requests sent before it stand.
        """
        bodies = [r.body(batch_id) for r in requests]
        jobs: list[PairioJob] = []
        for start in range(0, len(bodies), MAX_JOBS_PER_REQUEST):
            chunk = bodies[start : start + MAX_JOBS_PER_REQUEST]
            retry = Retry.IF_NOT_SENT if any(b["skipCache"] for b in chunk) else Retry.IDEMPOTENT
            answer = self._json(self._request("POST", "/v1/jobs/batch", json={"jobs": chunk}, retry=retry, auth_required=True))
            jobs += [PairioJob.from_hub(data, self) for data in answer["jobs"]]
        return jobs

    def get_job(self, job_id: str) -> PairioJob:
        return self._job(self._request("GET", f"/v1/jobs/{_segment(job_id)}", retry=Retry.IDEMPOTENT))

    def get_job_events(self, job_id: str) -> list[PairioJobEvent]:
        body = self._json(self._request("GET", f"/v1/jobs/{_segment(job_id)}/events", retry=Retry.IDEMPOTENT))
        return [PairioJobEvent.model_validate(e) for e in body["events"]]

    def find_job_by_definition(self, service_name: str, job_definition: JobDefinitionLike) -> Optional[PairioJob]:
        """The most recent job in the service with this definition, or None."""
        body = {"serviceName": service_name, "jobDefinition": _dump(job_definition)}
        result = self._json(self._request("POST", "/v1/jobs/find-by-definition", json=body, retry=Retry.IDEMPOTENT))
        return PairioJob.from_hub(result["job"], self) if result.get("found") else None

    def iter_jobs(self, *, page_size: int = DEFAULT_PAGE_SIZE, **filters: Unpack[JobFilters]) -> Iterator[PairioJob]:
        """Jobs matching every filter given, newest first, fetched a page at a time as you iterate."""
        params = _filter_params(filters)
        cursor: Optional[str] = None
        while True:
            page_params = params + [("limit", str(page_size))] + ([("cursor", cursor)] if cursor else [])
            page = self._json(self._request("GET", "/v1/jobs", params=page_params, retry=Retry.IDEMPOTENT))
            for data in page["jobs"]:
                yield PairioJob.from_hub(data, self)
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def find_jobs(self, *, limit: Optional[int] = None, **filters: Unpack[JobFilters]) -> list[PairioJob]:
        """Jobs matching every filter given, newest first: all of them, or the first ``limit``."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 (or None for all matching jobs)")
        jobs: list[PairioJob] = []
        for job in self.iter_jobs(page_size=min(limit or DEFAULT_PAGE_SIZE, DEFAULT_PAGE_SIZE), **filters):
            jobs.append(job)
            if limit is not None and len(jobs) >= limit:
                break
        return jobs

    def cancel_job(self, job_id: str) -> PairioJob:
        """Stop a job; cancelling a finished or already cancelled job changes nothing."""
        return self._job(self._request("POST", f"/v1/jobs/{_segment(job_id)}/cancel", retry=Retry.IDEMPOTENT, auth_required=True))

    def delete_jobs(self, job_ids: Sequence[str]) -> None:
        """Delete jobs and their files, all or none; jobs waiting on them fail."""
        if isinstance(job_ids, str):
            job_ids = [job_ids]
        self._request("POST", "/v1/jobs/delete", json={"jobIds": list(job_ids)}, retry=Retry.IF_NOT_SENT, auth_required=True)

    def get_console_output(self, job_id: str, *, console_output_url: Optional[str] = None) -> str:
        """What the job printed so far.

        The hub serves it at ``/v1/jobs/<id>/console-output``; that path is asked of
        this client's hub (with its key). A ``console_output_url`` somewhere else is
        fetched as given, without the key.
        """
        hub_path = f"/v1/jobs/{_segment(job_id)}/console-output"
        if console_output_url is None or console_output_url.endswith(hub_path):
            return self._request("GET", hub_path, retry=Retry.IDEMPOTENT).text
        return self._request("GET", console_output_url, retry=Retry.IDEMPOTENT, send_key=False).text

    def get_console_output_since(self, job_id: str, offset: int) -> bytes:
        """The bytes the job printed after the first ``offset`` (b"" when nothing new): for following a job's output."""
        response = self._request(
            "GET", f"/v1/jobs/{_segment(job_id)}/console-output", retry=Retry.IDEMPOTENT,
            headers={"Range": f"bytes={offset}-"}, accept_statuses=(416,),
        )
        if response.status_code == 416:
            return b""
        if response.status_code == 200:  # a hub that ignored the range sends it all
            return response.content[offset:]
        return response.content

    # ---------------------------------------------------------------- services, apps, compute clients

    def list_services(self, user_id: Optional[str] = None) -> list[PairioService]:
        params = {"userId": user_id} if user_id else None
        body = self._json(self._request("GET", "/v1/services", params=params, retry=Retry.IDEMPOTENT))
        return [PairioService.model_validate(x) for x in body["services"]]

    def get_service(self, service_name: str) -> PairioService:
        body = self._json(self._request("GET", f"/v1/services/{_segment(service_name)}", retry=Retry.IDEMPOTENT))
        return PairioService.model_validate(body)

    def list_apps(self, service_name: str) -> list[PairioServiceApp]:
        body = self._json(self._request("GET", f"/v1/services/{_segment(service_name)}/apps", retry=Retry.IDEMPOTENT))
        return [PairioServiceApp.model_validate(x) for x in body["serviceApps"]]

    def get_app(self, service_name: str, app_name: str) -> PairioServiceApp:
        path = f"/v1/services/{_segment(service_name)}/apps/{_segment(app_name)}"
        return PairioServiceApp.model_validate(self._json(self._request("GET", path, retry=Retry.IDEMPOTENT)))

    def put_app(self, service_name: str, app: Union[PairioApp, dict[str, Any]]) -> PairioServiceApp:
        """Register or replace an app from its spec (service admins only); repeating it is harmless."""
        spec = app if isinstance(app, PairioApp) else PairioApp.model_validate(app)
        path = f"/v1/services/{_segment(service_name)}/apps/{_segment(spec.name)}"
        response = self._request("PUT", path, json=spec.model_dump(mode="json"), retry=Retry.IDEMPOTENT, auth_required=True)
        return PairioServiceApp.model_validate(self._json(response))

    def list_compute_clients(self, service_name: Optional[str] = None) -> list[PairioComputeClient]:
        params = {"serviceName": service_name} if service_name else None
        body = self._json(self._request("GET", "/v1/compute-clients", params=params, retry=Retry.IDEMPOTENT))
        return [PairioComputeClient.model_validate(x) for x in body["computeClients"]]


MAX_JOBS_PER_REQUEST = 500
"""submit_jobs sends at most this many jobs per request (the hub takes up to 1000)"""


@dataclass(frozen=True)
class JobRequest:
    """One job for ``submit_jobs``: the arguments of ``submit_job``."""

    service_name: str
    job_definition: "JobDefinitionLike"
    required_resources: "RequiredResourcesLike"
    tags: Sequence[str] = ()
    skip_cache: bool = False
    rerun_failing: bool = False
    delete_failing: bool = False
    batch_id: Optional[str] = None
    target_compute_client_ids: Optional[Sequence[str]] = None
    secrets: "SecretsLike" = None
    job_dependencies: Optional[Sequence[str]] = None

    def body(self, default_batch_id: Optional[str] = None) -> dict[str, Any]:
        return {
            "serviceName": self.service_name,
            "jobDefinition": _dump(self.job_definition),
            "requiredResources": _dump(self.required_resources),
            "tags": list(self.tags),
            "batchId": self.batch_id or default_batch_id,
            "targetComputeClientIds": list(self.target_compute_client_ids) if self.target_compute_client_ids is not None else None,
            "secrets": _secrets_body(self.secrets),
            "jobDependencies": list(self.job_dependencies or []),
            "skipCache": self.skip_cache,
            "rerunFailing": self.rerun_failing,
            "deleteFailing": self.delete_failing,
        }


def _dump(model: Union[PairioJobDefinition, PairioJobRequiredResources, dict[str, Any]]) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def _secrets_body(secrets: SecretsLike) -> Optional[list[dict[str, str]]]:
    if secrets is None:
        return None
    if isinstance(secrets, dict):
        return [{"name": k, "value": v} for k, v in secrets.items()]
    return [s.model_dump() if isinstance(s, PairioJobSecret) else dict(s) for s in secrets]


def _as_list(value: Union[StatusLike, Sequence[StatusLike], None]) -> list[StatusLike]:
    if value is None:
        return []
    if isinstance(value, (str, JobStatus)):
        return [value]
    return list(value)


def _segment(value: str) -> str:
    """A path segment for a URL: ids and names are restricted, but never let one add a path."""
    return quote(value, safe="")


# ---------------------------------------------------------------- the default client and module-level functions

_configured_default: Optional[PairioClient] = None
_resolved_defaults: dict[tuple[str, Optional[str]], PairioClient] = {}


def set_default_client(client: Optional[PairioClient]) -> None:
    """Make ``client`` the one the module-level functions use (None: back to env and config file)."""
    global _configured_default
    _configured_default = client


def default_client() -> PairioClient:
    """The client of the module-level functions: the one set, else one for the current env and config file."""
    if _configured_default is not None:
        return _configured_default
    settings = resolve_client_settings()
    # Keyed by URL and key, so changing PAIRIO_API_URL or PAIRIO_API_KEY mid-session takes effect.
    key = (settings.url, settings.api_key)
    if key not in _resolved_defaults:
        _resolved_defaults[key] = PairioClient(settings.url, settings.api_key)
    return _resolved_defaults[key]


def submit_job(
    service_name: str,
    job_definition: JobDefinitionLike,
    required_resources: RequiredResourcesLike,
    *,
    tags: Sequence[str] = (),
    skip_cache: bool = False,
    rerun_failing: bool = False,
    delete_failing: bool = False,
    batch_id: Optional[str] = None,
    target_compute_client_ids: Optional[Sequence[str]] = None,
    secrets: SecretsLike = None,
    job_dependencies: Optional[Sequence[str]] = None,
) -> PairioJob:
    """Queue a job on the default hub, or get the existing job with the same definition."""
    return default_client().submit_job(
        service_name=service_name, job_definition=job_definition, required_resources=required_resources,
        tags=tags, skip_cache=skip_cache, rerun_failing=rerun_failing, delete_failing=delete_failing,
        batch_id=batch_id, target_compute_client_ids=target_compute_client_ids, secrets=secrets,
        job_dependencies=job_dependencies,
    )


def submit_jobs(requests: Sequence[JobRequest], *, batch_id: Optional[str] = None) -> list[PairioJob]:
    """Queue many jobs in few requests (see ``PairioClient.submit_jobs``)."""
    return default_client().submit_jobs(requests, batch_id=batch_id)


def get_job(job_id: str) -> PairioJob:
    return default_client().get_job(job_id)


def find_jobs(*, limit: Optional[int] = None, **filters: Unpack[JobFilters]) -> list[PairioJob]:
    """Jobs matching every filter given (``service_name``, ``status``, ``tags``, ...), newest first."""
    return default_client().find_jobs(limit=limit, **filters)


def cancel_job(job_id: str) -> PairioJob:
    return default_client().cancel_job(job_id)


def delete_jobs(job_ids: Sequence[str]) -> None:
    default_client().delete_jobs(job_ids)
