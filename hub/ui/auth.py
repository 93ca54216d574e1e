"""Web UI logins: session cookies and CSRF tokens.

Logging in trades an API key for a session: the browser's cookie holds a random
token (HttpOnly, SameSite=Lax, Secure behind https) and the hub stores only its
hash, the user, the key used (revoking that key ends the session) and the
session's CSRF token. Every state-changing form carries that CSRF token; the
login form, which comes before any session, uses a double-submit cookie. A
request whose ``Origin`` names another site is refused as well.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Optional
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..context import now_sec
from ..core import accounts
from ..db.tables import ApiKey, UiSession
from ..deps import DbSession, get_ctx
from ..errors import BadRequest, Forbidden, PayloadTooLarge, Unauthorized
from ..security import hash_secret, secrets_equal

SESSION_COOKIE = "pairio_session"
LOGIN_CSRF_COOKIE = "pairio_login_csrf"
SESSION_TTL_SEC = 14 * 24 * 3600
MAX_FORM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Viewer:
    """The logged-in user of a request, and the CSRF token their forms must carry."""

    user_id: str
    csrf_token: str
    api_key_id: str


def _session_token(request: Request) -> Optional[str]:
    token = request.cookies.get(SESSION_COOKIE)
    return token if token and len(token) <= 200 else None


def viewer_for(s: Session, request: Request) -> Optional[Viewer]:
    token = _session_token(request)
    if not token:
        return None
    row = s.get(UiSession, hash_secret(token))
    if row is None or row.expires_sec < now_sec():
        return None
    key = s.get(ApiKey, row.api_key_id)
    if key is None or key.revoked:
        return None
    return Viewer(user_id=row.user_id, csrf_token=row.csrf_token, api_key_id=row.api_key_id)


def optional_viewer(request: Request, s: DbSession) -> Optional[Viewer]:
    return viewer_for(s, request)


OptionalViewer = Annotated[Optional[Viewer], Depends(optional_viewer)]


def is_https(request: Request) -> bool:
    """Whether the browser reached us over https (directly, or through a proxy that says so)."""
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if forwarded == "https":
        return True
    return bool(get_ctx(request).settings.public_url.lower().startswith("https://"))


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int, *, samesite: str = "lax") -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite=samesite,  # type: ignore[arg-type]
        secure=is_https(request),
    )


def login(s: Session, request: Request, response: Response, plain_key: str) -> Viewer:
    """Check the key and start a session; the cookie goes on ``response``."""
    key = accounts.api_key_for(s, plain_key.strip())
    now = now_sec()
    s.execute(delete(UiSession).where(UiSession.expires_sec < now))  # old sessions go away as new ones come
    token = secrets.token_urlsafe(32)
    row = UiSession(
        session_hash=hash_secret(token), user_id=key.user_id, api_key_id=key.key_id,
        csrf_token=secrets.token_urlsafe(32), created_sec=now, expires_sec=now + SESSION_TTL_SEC,
    )
    s.add(row)
    set_cookie(request, response, SESSION_COOKIE, token, SESSION_TTL_SEC)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return Viewer(user_id=row.user_id, csrf_token=row.csrf_token, api_key_id=row.api_key_id)


def logout(s: Session, request: Request, response: Response) -> None:
    token = _session_token(request)
    if token:
        s.execute(delete(UiSession).where(UiSession.session_hash == hash_secret(token)))
    response.delete_cookie(SESSION_COOKIE, path="/")


def login_csrf_token(request: Request) -> tuple[str, bool]:
    """The login form's token: the one already in the browser's cookie, or a new one (True: set the cookie)."""
    existing = request.cookies.get(LOGIN_CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing, False
    return secrets.token_urlsafe(32), True


# ---------------------------------------------------------------- forms and CSRF


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (the first value of each name)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", ""):  # an empty post has no type
        raise BadRequest("send the form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"the form is larger than {MAX_FORM_BYTES} bytes")
    fields: dict[str, str] = {}
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=5000)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form is not valid UTF-8 url-encoded data") from None
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


FormFields = Annotated[dict[str, str], Depends(form_fields)]


def check_same_origin(request: Request) -> None:
    """Refuse a cross-site form post: browsers send ``Origin`` with every POST."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # old browsers and non-browser clients; the CSRF token still protects
    allowed = {request.headers.get("host", "").lower()}
    forwarded_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    if forwarded_host:
        allowed.add(forwarded_host.lower())
    public = urlsplit(get_ctx(request).settings.public_url)
    if public.netloc:
        allowed.add(public.netloc.lower())
    if origin == "null" or urlsplit(origin).netloc.lower() not in allowed:
        raise Forbidden("this form was posted from another site; open the page on the hub and try again")


def require_viewer(s: Session, request: Request, fields: dict[str, str]) -> Viewer:
    """The logged-in user of a state-changing form post, after checking its origin and CSRF token."""
    check_same_origin(request)
    viewer = viewer_for(s, request)
    if viewer is None:
        raise Unauthorized("log in first (Settings → Log in with an API key)")
    token = fields.get("csrf_token", "")
    if not token or not secrets_equal(token, viewer.csrf_token):
        raise Forbidden("the form's security token is missing or stale; reload the page and try again")
    return viewer


def check_login_csrf(request: Request, fields: dict[str, str]) -> None:
    check_same_origin(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    token = fields.get("csrf_token", "")
    if not cookie or not token or not secrets_equal(cookie, token):
        raise Forbidden("the login form's security token is missing or stale (are cookies enabled?); reload the page and try again")
