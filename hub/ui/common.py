"""What every UI route shares: the routers, the UI marker for HTML errors, redirects after posts."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

# Messages shown after a form post redirects; the URL names one, so no user text is reflected.
NOTICES = {
    "canceled": "Cancel requested. A running job stops within seconds of its compute client hearing.",
    "deleted": "The job was deleted.",
    "rerun": "This is a new run of the job.",
    "submitted": "Job submitted.",
    "cached": "A job with this definition existed already, so this is it (tick 'skip cache' to run it again).",
    "logged-in": "You are logged in.",
    "logged-out": "You are logged out.",
    "key-revoked": "The API key was revoked.",
    "roles-saved": "Roles saved.",
    "user-removed": "The user was removed from the service.",
}


def mark_ui(request: Request) -> None:
    """Errors of UI routes are shown as pages, not JSON (see hub.app)."""
    request.state.ui = True


# Pages (HTML errors) and the JSON the pages' scripts poll (JSON errors).
router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_ui)])
json_router = APIRouter(include_in_schema=False)


def notice_of(request: Request) -> Optional[str]:
    return NOTICES.get(request.query_params.get("notice", ""))


def see_other(path: str, notice: Optional[str] = None) -> RedirectResponse:
    """Redirect after a post (303, so the browser GETs the page)."""
    if notice:
        path += ("&" if "?" in path else "?") + "notice=" + quote(notice)
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})
