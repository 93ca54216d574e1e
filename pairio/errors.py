"""Errors the Pairio client raises. Every message says what went wrong and, where it can, how to fix it.

    PairioError
    ├── PairioConfigError          the client is not set up: no API key, a bad URL, an unreadable config file
    │   └── MissingApiKeyError     a call that needs a key was made without one
    ├── PairioConnectionError      the hub could not be reached (after the retries allowed for the call)
    ├── PairioResponseError        the hub answered something that is not the JSON it should send
    ├── UnknownOutputError         ``job.get_output(name)`` with a name the job does not have (also a ValueError)
    ├── JobWaitTimeoutError        ``job.wait_until_done(wait_sec)`` ran out of time (also a TimeoutError)
    └── PairioHTTPError            the hub answered with an error status; ``.message`` is the hub's own message
        ├── BadRequestError        400, 422: the request is malformed or breaks a rule
        ├── AuthenticationError    401: no key, or a key the hub does not know
        ├── PermissionDeniedError  403: the key's user lacks a role in the service
        ├── NotFoundError          404
        ├── ConflictError          409
        ├── PayloadTooLargeError   413
        └── ServerError            5xx

HTTP errors carry the ``request`` and ``response`` (httpx objects). The API key is
never part of a message or a repr: httpx masks the Authorization header in its
reprs, and any text the client builds goes through ``redact`` first.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

import httpx

from .status import JobStatus


class PairioError(Exception):
    """Base class of every error the Pairio client raises."""


class PairioConfigError(PairioError):
    """The client is not set up well enough to make the call."""


class MissingApiKeyError(PairioConfigError):
    def __init__(self, url: str) -> None:
        super().__init__(
            f"no Pairio API key for the hub at {url}. Give one with 'pairio login --url {url}' (asks for it), "
            "'export PAIRIO_API_KEY=<key>', or PairioClient(api_key=...). Keys come from the hub's administrator, "
            "who makes them on the hub's machine: 'pairio admin create-user NAME' (a new user) or "
            "'pairio admin create-api-key USER' (an existing one)."
        )
        self.url = url


class PairioConnectionError(PairioError):
    """The hub did not answer (connection refused, DNS failure, timeout, dropped connection)."""


class PairioResponseError(PairioError):
    """The hub's answer could not be understood (not JSON, or not the expected shape)."""


class UnknownOutputError(PairioError, ValueError):
    def __init__(self, job_id: str, name: str, valid_names: list[str]) -> None:
        valid = ", ".join(repr(n) for n in valid_names) or "none"
        super().__init__(f"job {job_id} has no output {name!r}; its outputs are: {valid}")
        self.job_id = job_id
        self.name = name
        self.valid_names = valid_names


class JobsWaitTimeoutError(PairioError, TimeoutError):
    def __init__(self, unfinished: list[str], total: int, wait_sec: float) -> None:
        shown = ", ".join(unfinished[:10]) + (f" and {len(unfinished) - 10} more" if len(unfinished) > 10 else "")
        super().__init__(
            f"{len(unfinished)} of {total} jobs are unfinished after waiting {wait_sec:g} s ({shown}); "
            "wait again to keep waiting, or cancel them"
        )
        self.unfinished = unfinished
        self.total = total
        self.wait_sec = wait_sec


class JobWaitTimeoutError(PairioError, TimeoutError):
    def __init__(self, job_id: str, status: JobStatus, wait_sec: float) -> None:
        super().__init__(
            f"job {job_id} is still {status} after waiting {wait_sec:g} s; call wait_until_done() again "
            "to keep waiting, or job.cancel() to stop it"
        )
        self.job_id = job_id
        self.status = status
        self.wait_sec = wait_sec


class PairioHTTPError(PairioError):
    """The hub answered with an error status. ``message`` is the hub's ``detail``."""

    def __init__(self, status_code: int, message: str, request: httpx.Request, response: httpx.Response) -> None:
        # The URL is shown without its query string: it is never needed to understand
        # the error and keeps anything a caller put there out of logs.
        super().__init__(f"{message} (HTTP {status_code} from {request.method} {request.url.path})")
        self.status_code = status_code
        self.message = message
        self.request = request
        self.response = response


class BadRequestError(PairioHTTPError):
    """400 or 422: fix the request as the message says."""


class AuthenticationError(PairioHTTPError):
    """401: the API key is missing, unknown or revoked."""


class PermissionDeniedError(PairioHTTPError):
    """403: the user lacks a role in the service (the message says which and who can grant it)."""


class NotFoundError(PairioHTTPError):
    """404: no such job, service, app or compute client."""


class ConflictError(PairioHTTPError):
    """409: the request is valid but the current state forbids it."""


class PayloadTooLargeError(PairioHTTPError):
    """413: the request body is over the hub's limit."""


class ServerError(PairioHTTPError):
    """5xx: the hub (or a proxy in front of it) failed; the call may be retried later."""


_ERRORS_BY_STATUS: dict[int, type[PairioHTTPError]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
}


def redact(text: str, *secrets: Optional[str]) -> str:
    """Text with every given secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class AnswerWithBody(Protocol):
    """What ``hub_message`` reads of an answer: httpx's responses, and the bridge's own (bridge/hub_http.py)."""

    @property
    def text(self) -> str: ...

    @property
    def reason_phrase(self) -> str: ...

    def json(self) -> Any: ...


def hub_message(response: AnswerWithBody) -> str:
    """The hub's error message: ``detail`` of a JSON body, else the start of the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error"))  # the wire protocol says "error"
        if isinstance(detail, str):
            return detail
        if detail is not None:
            return str(detail)[:1000]
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase or "no message"


def error_for_response(response: httpx.Response, *secrets: Optional[str]) -> PairioHTTPError:
    """The typed exception for an error response, with secrets redacted from the hub's message."""
    status = response.status_code
    cls = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else PairioHTTPError)
    return cls(status, redact(hub_message(response), *secrets), response.request, response)
