"""The bridge's own small client for the hub's ``/v1/compute/*`` API, with the compute client key.

    HubApiError
    ├── HubUnreachableError     no answer, or a 5xx, after the retries: try again later
    └── HubRejectedError        a 4xx; ``status_code`` and the hub's ``message``
        ├── HubAuthError        401/403: the key or the user's role is wrong (re-register the bridge)
        └── ConsoleOffsetError  409 on a console append; ``console_output_size`` says where to resume

Every report a bridge makes is idempotent (a repeated status is a no-op, console
bytes are written at an offset, outputs are PUT), so those calls are retried on any
network error or 5xx. A claim is not: a lost answer would leave claimed jobs nobody
runs, so a claim is retried only when the request surely never left; the runner
finds jobs claimed by a lost answer with ``my_active_jobs``.

Every call has a timeout well under the hub's heartbeat expiry (120 s by default), so a
hub that stops answering (stopped, or its machine swapping) never holds the bridge's loop
for long; the first call it leaves unanswered is logged, and so is its first answer after.

The key is sent per request in the Authorization header and never appears in a
message (our messages go through ``redact``). The connections themselves are bridge/hub_http.py's.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import httpx

from pairio.errors import hub_message, redact
from pairio.models import PairioApp, PairioJobData, PairioJobSecret
from pairio.status import JobStatus

from .backend import Capacity
from .hub_http import HubConnectionError, HubResponse, connections_to

log = logging.getLogger(__name__)

RETRY_STATUS_CODES = frozenset({500, 502, 503, 504})
UPLOAD_CHUNK_BYTES = 1024 * 1024
# One attempt's limit: with the retries, an idempotent call gives up after about 35 s.
DEFAULT_TIMEOUT_SEC = 10.0


class HubApiError(Exception):
    """A call to the hub did not succeed."""


class HubUnreachableError(HubApiError):
    """The hub did not answer, or answered with a server error, after the retries allowed."""


class HubRejectedError(HubApiError):
    """The hub refused the call (4xx); repeating it unchanged will not help."""

    def __init__(self, status_code: int, message: str, method: str, path: str, body: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status_code} from {method} {path})")
        self.status_code = status_code
        self.message = message
        self.body = body


class HubAuthError(HubRejectedError):
    """401 or 403: the compute client key is unknown or its user may not process jobs."""


class ConsoleOffsetError(HubRejectedError):
    """The console append's offset is past the end of what the hub has."""

    @property
    def console_output_size(self) -> int:
        return int(self.body.get("consoleOutputSize", 0)) if isinstance(self.body, dict) else 0


@dataclass(frozen=True)
class HeartbeatAnswer:
    cancel_job_ids: list[str]
    heartbeat_timeout_sec: float


@dataclass(frozen=True)
class StatusAnswer:
    status: JobStatus
    canceled: bool
    error: Optional[str]


@dataclass(frozen=True)
class Refusal:
    """One job's part of a call for several that the hub refused (what the call for that job alone would answer)."""

    job_id: str
    status_code: int
    detail: str


MAX_REPORTS_PER_CALL = 500
"""the hub's limit on the jobs one call for several names (notes, 'running' reports)"""


def _refusals(body: dict[str, Any]) -> list[Refusal]:
    return [Refusal(str(r["jobId"]), int(r["statusCode"]), str(r["detail"])) for r in body["refused"]]


@dataclass(frozen=True)
class FinishAnswer(StatusAnswer):
    console_output_size: int = 0
    claimed: Optional[list[PairioJobData]] = None
    """with a claim in the call: the jobs the hub handed out for the freed slot (None: the hub did not say)"""


@dataclass(frozen=True)
class ClaimRequest:
    """What a claim asks for: up to ``max_jobs`` jobs that fit ``capacity``, of what ``runs`` says the bridge runs."""

    max_jobs: int
    capacity: Optional[Capacity] = None
    runs: Optional[dict[str, Any]] = None
    """``apps``, ``containerMode``, ``originalSdkImages``: the hub hands out only such jobs"""
    ahead: int = 0
    """jobs the bridge may hold beyond its slots (claimAheadJobs), when this claim is made while every slot is busy"""

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"maxJobs": self.max_jobs, **(self.runs or {})}
        if self.ahead:
            body["aheadJobs"] = self.ahead
        if self.capacity is not None:
            c = self.capacity
            body["capacity"] = {"numCpus": c.numCpus, "numGpus": c.numGpus, "memoryGb": c.memoryGb}
        return body


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_delay_sec: float = 0.3
    max_delay_sec: float = 4.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so bridges recovering together do not retry in step."""
        return min(self.max_delay_sec, self.initial_delay_sec * 2**attempt) * random.uniform(0.5, 1.0)


def _segment(value: str) -> str:
    return quote(value, safe="")


class HubApi:
    """Calls of one compute client. ``transport`` replaces the network in tests."""

    def __init__(
        self,
        hub_url: str,
        compute_client_key: str,
        *,
        transport: Optional[httpx.BaseTransport] = None,
        timeout: float = DEFAULT_TIMEOUT_SEC,
        retry_policy: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.hub_url = hub_url.rstrip("/")
        self._key = compute_client_key
        self.retry_policy = retry_policy
        # a long poll (claim, waiting heartbeat) may take this much longer than its wait: the hub's last look
        self.long_poll_margin_sec = timeout
        self._http = connections_to(self.hub_url, timeout, transport)
        self._answering_lock = threading.Lock()
        self._closed = False
        self.answering = True
        """False from a call the hub left unanswered (or answered 5xx) until its next answer"""

    def __repr__(self) -> str:
        return f"HubApi(hub_url={self.hub_url!r})"

    def close(self) -> None:
        self._closed = True  # calls still in flight (a waiting heartbeat) fail now: not the hub's doing
        self._http.close()

    # ---------------------------------------------------------------- transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        json: Any = None,
        params: Any = None,
        content: Any = None,
        content_factory: Any = None,
        timeout: Optional[float] = None,
        auth: bool = True,
    ) -> HubResponse:
        """One call with retries; ``content_factory()`` makes a fresh body per attempt (a streamed file)."""
        headers = {"Authorization": f"Bearer {self._key}"} if auth else {}
        attempt = 0
        while True:
            last_attempt = attempt + 1 >= self.retry_policy.max_attempts
            body = content_factory() if content_factory is not None else content
            try:
                response = self._http.request(method, path, json=json, params=params, content=body, headers=headers, timeout=timeout)
            except HubConnectionError as e:
                self._set_answering(False, f"{e.kind} on {method} {path}")
                if (idempotent or e.surely_not_sent) and not last_attempt:
                    time.sleep(self.retry_policy.delay(attempt))
                    attempt += 1
                    continue
                detail = redact(str(e), self._key) or e.kind
                raise HubUnreachableError(
                    f"could not reach the hub at {self.hub_url} for {method} {path} ({e.kind}: {detail})"
                ) from None
            finally:
                if hasattr(body, "close"):
                    body.close()
            self._set_answering(response.status_code not in RETRY_STATUS_CODES, f"HTTP {response.status_code} from {method} {path}")
            if response.status_code in RETRY_STATUS_CODES:
                if idempotent and not last_attempt:
                    time.sleep(self.retry_policy.delay(attempt))
                    attempt += 1
                    continue
                raise HubUnreachableError(
                    f"the hub at {self.hub_url} answered {method} {path} with HTTP {response.status_code}: "
                    f"{redact(hub_message(response), self._key)}"
                )
            if response.is_error:
                raise self._rejected(response, method, path)
            return response

    def _set_answering(self, answering: bool, detail: str) -> None:
        """Log the hub's changes between answering and not, once each (calls come from several threads)."""
        with self._answering_lock:
            if answering == self.answering or self._closed:
                return
            self.answering = answering
        if answering:
            log.info("the hub at %s answers again", self.hub_url)
        else:
            log.warning("the hub at %s is not answering (%s); retrying, and running jobs go on", self.hub_url, detail)

    def _rejected(self, response: HubResponse, method: str, path: str) -> HubRejectedError:
        message = redact(hub_message(response), self._key)
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status in (401, 403):
            return HubAuthError(
                status, f"{message}; check the compute client key in bridge.json, or register the bridge again", method, path, body
            )
        if status == 409 and isinstance(body, dict) and "consoleOutputSize" in body:
            return ConsoleOffsetError(status, message, method, path, body)
        return HubRejectedError(status, message, method, path, body)

    @staticmethod
    def _json(response: HubResponse) -> Any:
        try:
            return response.json()
        except ValueError:
            raise HubUnreachableError(
                f"the answer to {response.method} {response.path} is not JSON; is hubUrl a Pairio hub?"
            ) from None

    # ---------------------------------------------------------------- the compute client

    def heartbeat(
        self, active_job_ids: list[str], *, wait_sec: float = 0.0, stopping_job_ids: Sequence[str] = (),
        bridge_info: Optional[dict[str, Any]] = None,
    ) -> HeartbeatAnswer:
        """Say the bridge lives; with ``wait_sec``, the hub answers early when a job not in ``stopping_job_ids`` must stop.

        ``bridge_info``: where and how the bridge runs (``bridge.runner.bridge_info``), sent when it changed."""
        payload: dict[str, Any] = {"activeJobIds": active_job_ids}
        if bridge_info is not None:
            payload["bridge"] = bridge_info
        timeout = None
        if wait_sec > 0:
            payload.update(waitSec=wait_sec, stoppingJobIds=list(stopping_job_ids))
            timeout = wait_sec + self.long_poll_margin_sec
        body = self._json(self._request("POST", "/v1/compute/heartbeat", json=payload, timeout=timeout))
        return HeartbeatAnswer(cancel_job_ids=list(body["cancelJobIds"]), heartbeat_timeout_sec=float(body["heartbeatTimeoutSec"]))

    def claim(
        self, max_jobs: int, wait_sec: float, capacity: Optional[Capacity], runs: Optional[dict[str, Any]] = None, ahead: int = 0,
    ) -> list[PairioJobData]:
        """Claim up to ``max_jobs`` jobs, waiting up to ``wait_sec`` for one (not retried once sent; see the module doc).

        ``runs``: what the bridge can run (``apps``, ``containerMode``, ``originalSdkImages``); the hub hands out only such jobs.
        ``ahead``: jobs it may hold beyond its slots (``ClaimRequest.ahead``)."""
        body = {**ClaimRequest(max_jobs, capacity, runs, ahead).body(), "waitSec": wait_sec}
        response = self._request("POST", "/v1/compute/claim", json=body, idempotent=False, timeout=wait_sec + self.long_poll_margin_sec)
        return [job_data(j) for j in self._json(response)["jobs"]]

    def my_active_jobs(self) -> list[PairioJobData]:
        """The jobs the hub thinks this client is starting or running."""
        return [job_data(j) for j in self._json(self._request("GET", "/v1/compute/jobs"))["jobs"]]

    def get_job(self, job_id: str) -> tuple[PairioJobData, int]:
        """The job and the size of the console output the hub has."""
        body = self._json(self._request("GET", f"/v1/compute/jobs/{_segment(job_id)}"))
        return job_data(body), int(body.get("consoleOutputSize", 0))

    # ---------------------------------------------------------------- one job

    def set_status(
        self, job_id: str, status: JobStatus, error: Optional[str] = None, *, image_digest: Optional[str] = None
    ) -> StatusAnswer:
        payload: dict[str, Any] = {"status": status.value}
        if error is not None:
            payload["error"] = error
        if image_digest is not None:
            payload["imageDigest"] = image_digest
        body = self._json(self._request("POST", f"/v1/compute/jobs/{_segment(job_id)}/status", json=payload))
        return StatusAnswer(status=JobStatus(body["status"]), canceled=bool(body["canceled"]), error=body.get("error"))

    def report_running(self, job_ids: Sequence[str]) -> tuple[dict[str, StatusAnswer], list[Refusal]]:
        """'running' for several jobs in one call: the hub's answer for each it took (by job id) and the ones it
        refused. An older hub has no such call: HubRejectedError with status 404 or 405."""
        body = self._json(self._request("POST", "/v1/compute/running", json={"jobIds": list(job_ids)}))
        answers = {
            str(r["jobId"]): StatusAnswer(status=JobStatus(r["status"]), canceled=bool(r["canceled"]), error=r.get("error"))
            for r in body["jobs"]
        }
        return answers, _refusals(body)

    def release(self, job_id: str, reason: str) -> StatusAnswer:
        """Give back a job claimed and not started (pending again at the hub; failed there if its user canceled it).
        Retried like a status report: a repeat after a lost answer is refused (403: the job is not this client's)."""
        body = self._json(self._request("POST", f"/v1/compute/jobs/{_segment(job_id)}/release", json={"reason": reason}))
        return StatusAnswer(status=JobStatus(body["status"]), canceled=bool(body["canceled"]), error=body.get("error"))

    def finish(
        self, job_id: str, status: JobStatus, error: Optional[str] = None, *, image_digest: Optional[str] = None,
        console: Optional[tuple[int, bytes]] = None, resource_log: Optional[bytes] = None, claim: Optional[ClaimRequest] = None,
        started_ago: Optional[float] = None,
    ) -> FinishAnswer:
        """A finished job's console tail (offset, bytes), resource log and final status in one call (idempotent).

        With ``claim``, the hub also claims jobs for the slot the job frees (``FinishAnswer.claimed``); such a call
        is not retried once sent, as a claim is not (a lost answer may have claimed jobs: see ``my_active_jobs``).
        ``started_ago``: the job's 'running' report was not sent; it ran from that many seconds before this call.
        Raises ConsoleOffsetError as ``append_console_output`` does; a hub without the call answers 404/405, and
        one without claims or startedAgoSec in it 422.
        """
        payload: dict[str, Any] = {"status": status.value}
        if error is not None:
            payload["error"] = error
        if image_digest is not None:
            payload["imageDigest"] = image_digest
        if console is not None:
            payload.update(consoleOffset=console[0], consoleBase64=base64.b64encode(console[1]).decode("ascii"))
        if resource_log is not None:
            payload["resourceLog"] = resource_log.decode("utf-8", errors="replace")
        if claim is not None:
            payload["claim"] = claim.body()
        if started_ago is not None:
            payload["startedAgoSec"] = round(started_ago, 3)
        path = f"/v1/compute/jobs/{_segment(job_id)}/finish"
        body = self._json(self._request("POST", path, json=payload, idempotent=claim is None))
        claimed = body.get("claimedJobs")
        return FinishAnswer(
            status=JobStatus(body["status"]), canceled=bool(body["canceled"]), error=body.get("error"),
            console_output_size=int(body.get("consoleOutputSize", 0)),
            claimed=[job_data(j) for j in claimed] if claimed is not None else None,
        )

    def add_note(self, job_id: str, message: str) -> None:
        """A line on the job's timeline (e.g. why it waits in the cluster's queue)."""
        self._request("POST", f"/v1/compute/jobs/{_segment(job_id)}/notes", json={"message": message})

    def add_notes(self, notes: Sequence[tuple[str, str]]) -> list[Refusal]:
        """Lines on the timelines of several jobs (job id, message) in one call; the ones the hub refused. An older
        hub has no such call: HubRejectedError with status 404 or 405."""
        response = self._request("POST", "/v1/compute/notes", json={"notes": [{"jobId": j, "message": m} for j, m in notes]})
        return _refusals(self._json(response))

    def append_console_output(self, job_id: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` of the job's console output; returns the hub's new size."""
        response = self._request(
            "POST", f"/v1/compute/jobs/{_segment(job_id)}/console-output", params={"offset": offset}, content=data
        )
        return int(self._json(response)["consoleOutputSize"])

    def upload_output(self, job_id: str, output_name: str, path: Path) -> int:
        """Stream the file at ``path`` as the job's output ``output_name``; returns the size stored."""
        response = self._request(
            "PUT", f"/v1/compute/jobs/{_segment(job_id)}/outputs/{_segment(output_name)}",
            content_factory=lambda: _FileChunks(path), timeout=600.0,
        )
        return int(self._json(response)["size"])

    def upload_resource_log(self, job_id: str, data: bytes) -> None:
        self._request("PUT", f"/v1/compute/jobs/{_segment(job_id)}/resource-utilization-log", content=data)

    # ---------------------------------------------------------------- apps (public)

    def get_app(self, service_name: str, app_name: str) -> PairioApp:
        body = self._json(
            self._request("GET", f"/v1/services/{_segment(service_name)}/apps/{_segment(app_name)}", auth=False)
        )
        return PairioApp.model_validate(body["appSpecification"])

    def list_apps(self, service_name: str) -> list[PairioApp]:
        body = self._json(self._request("GET", f"/v1/services/{_segment(service_name)}/apps", auth=False))
        return [PairioApp.model_validate(app["appSpecification"]) for app in body["serviceApps"]]


def job_data(raw: dict[str, Any]) -> PairioJobData:
    """A job from the hub, its secrets taken as they are: the runner checks their names itself and fails
    a job with a refused one (with the rule's message), where a validation error would lose a whole claim."""
    raw = dict(raw)
    secrets = raw.pop("secrets", None)
    job = PairioJobData.model_validate(raw)
    if not secrets:
        return job
    taken = [PairioJobSecret.model_construct(name=str(s.get("name", "")), value=str(s.get("value", ""))) for s in secrets]
    return job.model_copy(update={"secrets": taken})


class _FileChunks:
    """A file as an iterator of chunks that closes itself, so each retry streams it afresh."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._file.read(UPLOAD_CHUNK_BYTES):
            yield chunk

    def close(self) -> None:
        self._file.close()
