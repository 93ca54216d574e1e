"""UI: settings (log in with an API key, create and revoke your keys, log out)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from ..core import accounts
from ..deps import DbSession
from ..errors import HubError
from . import auth
from .auth import FormFields, OptionalViewer, Viewer
from .common import notice_of, router, see_other
from .render import render

NO_STORE = {"Cache-Control": "no-store"}


def _settings(request: Request, s: DbSession, viewer: Viewer | None, *, status_code: int = 200, error: str = "", new_key: str = "") -> HTMLResponse:
    if viewer is None:
        token, fresh = auth.login_csrf_token(request)
        response = render(
            request, "login.html", viewer=None, status_code=status_code, login_csrf=token, error=error,
            next_path=_safe_next(request.query_params.get("next", "")), notice=notice_of(request), title="Log in", headers=NO_STORE,
        )
        if fresh:
            auth.set_cookie(request, response, auth.LOGIN_CSRF_COOKIE, token, 3600, samesite="strict")
        return response
    keys = accounts.list_api_keys(s, viewer.user_id)
    return render(
        request, "settings.html", viewer=viewer, keys=keys, new_key=new_key, error=error, status_code=status_code,
        services=accounts.list_services(s, viewer.user_id), notice=notice_of(request), title="Settings", headers=NO_STORE,
    )


def _safe_next(path: str) -> str:
    """Where to go after logging in: a path on this hub only (never another site)."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path and len(path) < 2000:
        return path
    return "/settings"


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    return _settings(request, s, viewer)


@router.post("/login")
def login(request: Request, s: DbSession, fields: FormFields) -> Response:
    auth.check_login_csrf(request, fields)
    response = see_other(_safe_next(fields.get("next", "")), "logged-in")
    try:
        auth.login(s, request, response, fields.get("apiKey", ""))
    except HubError as e:
        return _settings(request, s, None, status_code=e.status_code, error=e.message)
    return response


@router.post("/logout")
def logout(request: Request, s: DbSession, fields: FormFields) -> RedirectResponse:
    auth.require_viewer(s, request, fields)
    response = see_other("/settings", "logged-out")
    auth.logout(s, request, response)
    return response


@router.post("/settings/api-keys")
def create_key(request: Request, s: DbSession, fields: FormFields) -> HTMLResponse:
    """Make a key and show it this once (the page is not cached; the hub keeps only its hash)."""
    viewer = auth.require_viewer(s, request, fields)
    label = fields.get("label", "").strip()[:200]
    _, plain = accounts.create_api_key(s, viewer.user_id, label)
    s.flush()
    return _settings(request, s, viewer, new_key=plain)


@router.post("/settings/api-keys/{key_id}/revoke")
def revoke_key(key_id: str, request: Request, s: DbSession, fields: FormFields) -> RedirectResponse:
    viewer = auth.require_viewer(s, request, fields)
    accounts.revoke_api_key(s, viewer.user_id, key_id)
    response = see_other("/settings", "key-revoked")
    if key_id == viewer.api_key_id:
        auth.logout(s, request, response)  # the session stood on this key
    return response
