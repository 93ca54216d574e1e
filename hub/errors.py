"""Errors raised by the hub's core; the REST and wire-protocol layers map them to HTTP.

    HubError
    ├── BadRequest      400/422: the request is malformed or breaks a rule
    ├── Unauthorized    401: no key, or a key the hub does not know
    ├── Forbidden       403 (401 in the wire protocol): the key's user lacks a role
    ├── NotFound        404
    ├── Conflict        409: the request is valid but the current state forbids it
    └── PayloadTooLarge 413
"""

from __future__ import annotations


class HubError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HubError):
    status_code = 400


class Unauthorized(HubError):
    status_code = 401


class Forbidden(HubError):
    status_code = 403


class NotFound(HubError):
    status_code = 404


class Conflict(HubError):
    status_code = 409


class PayloadTooLarge(HubError):
    status_code = 413


DATABASE_UNAVAILABLE = "the hub's database is unavailable (restarting, or refusing connections); try again in a moment"
"""The answer (503) to a request that met the database unreachable: REST and wire protocol alike."""


def database_unavailable_log(exc: Exception) -> str:
    """The log line's text for such a request: the driver's message, shortened."""
    orig = getattr(exc, "orig", None)
    return "database unavailable: " + str(orig or exc).strip()[:300]
