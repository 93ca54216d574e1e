"""FastAPI dependencies: the hub context, a database session, and who is calling."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Optional

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from .context import HubContext
from .core import accounts


def get_ctx(request: Request) -> HubContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


async def _ctx_dependency(request: Request) -> HubContext:
    # async: FastAPI runs a sync dependency in a worker thread, a hand-off each way per request
    return get_ctx(request)


Ctx = Annotated[HubContext, Depends(_ctx_dependency)]


# Declares the key in the OpenAPI document (routes that take one list it under 'security');
# the header is parsed by bearer_token, which also takes the original client's form.
_documented_bearer = HTTPBearer(auto_error=False, description="an API key, or a compute client's or job's private key")


def bearer_token(request: Request, _documented: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_documented_bearer)] = None) -> Optional[str]:
    """The token of ``Authorization: Bearer <token>``; the original client's ``Bearer: <token>`` too."""
    header = request.headers.get("authorization")
    if not header:
        return None
    parts = header.split()
    if len(parts) != 2 or parts[0].rstrip(":").lower() != "bearer":
        return None
    return parts[1]


async def bearer_token_dependency(
    request: Request, _documented: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_documented_bearer)] = None
) -> Optional[str]:
    """``bearer_token`` as a dependency (async: no worker-thread hand-off)."""
    return bearer_token(request)


Token = Annotated[Optional[str], Depends(bearer_token_dependency)]


def get_session(ctx: Ctx, request: Request) -> Iterator[Session]:
    """A transaction per request: GET and HEAD read without taking SQLite's write lock."""
    begin = ctx.read_transaction if request.method in ("GET", "HEAD") else ctx.transaction
    with begin() as session:
        yield session


# scope="function": commit before the response is sent, so a client that sees a 2xx reads its
# own write on the next request, and a failed commit is reported instead of lost.
DbSession = Annotated[Session, Depends(get_session, scope="function")]


def current_user(s: DbSession, token: Token) -> str:
    return accounts.user_for_api_key(s, token)


def optional_user(s: DbSession, token: Token) -> Optional[str]:
    return accounts.user_for_api_key(s, token) if token else None


CurrentUser = Annotated[str, Depends(current_user)]
OptionalUser = Annotated[Optional[str], Depends(optional_user)]
