"""UI: registering an original Pairio compute client (``pairio register-compute-client`` of pairio 0.5.9).

That command prints a link to ``/register_compute_client/<service>/<name>`` on the original site
and asks for the code the page shows; a site moving to this hub opens the same path here. The
page (GET) says what will be registered; its form (POST, with the session's CSRF token) registers
the compute client, as the wire call createComputeClient does, and shows the code: base64 of the
JSON ``{computeClientName, computeClientId, computeClientPrivateKey}``. A GET never registers,
so a link alone cannot make a logged-in user create a client.
"""

from __future__ import annotations

import base64
import json
import unicodedata

from fastapi import Request
from fastapi.responses import HTMLResponse

from ..core import accounts
from ..deps import DbSession
from ..errors import BadRequest, Unauthorized
from .auth import FormFields, OptionalViewer, require_viewer
from .common import router
from .render import render

PATH = "/register_compute_client/{service_name}/{compute_client_name}"
MAX_NAME_CHARS = 200
NO_STORE = {"Cache-Control": "no-store"}


def checked_client_name(name: str) -> str:
    """The name the original client sends (by default its host name): 1-200 printable characters."""
    if not name.strip() or len(name) > MAX_NAME_CHARS or name != name.strip():
        raise BadRequest(
            f"the compute client name must be 1-{MAX_NAME_CHARS} characters without leading or trailing spaces; "
            "run 'pairio register-compute-client --compute-client-name NAME' again with another name"
        )
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise BadRequest(
            "the compute client name has control or invisible characters; "
            "run 'pairio register-compute-client --compute-client-name NAME' again with a plain name"
        )
    return name


def registration_code(name: str, compute_client_id: str, private_key: str) -> str:
    """What ``pairio register-compute-client`` decodes and saves in pairio-compute-client.yaml."""
    payload = {"computeClientName": name, "computeClientId": compute_client_id, "computeClientPrivateKey": private_key}
    return base64.b64encode(json.dumps(payload).encode()).decode()


@router.get(PATH, response_class=HTMLResponse)
def registration_page(
    service_name: str, compute_client_name: str, request: Request, s: DbSession, viewer: OptionalViewer
) -> HTMLResponse:
    name = checked_client_name(compute_client_name)
    accounts.get_service_row(s, service_name)
    if viewer is None:
        raise Unauthorized("log in to register a compute client (Settings → Log in with an API key)")
    accounts.require_role(s, service_name, viewer.user_id, "process_jobs")
    return render(
        request, "register_compute_client.html", viewer=viewer, service_name=service_name, name=name, code="",
        compute_client_id="", slot=accounts.ORIGINAL_DEFAULT_SLOT, title="Register a compute client", headers=NO_STORE,
    )


@router.post(PATH, response_class=HTMLResponse)
def register(service_name: str, compute_client_name: str, request: Request, s: DbSession, fields: FormFields) -> HTMLResponse:
    viewer = require_viewer(s, request, fields)
    name = checked_client_name(compute_client_name)
    cc, key = accounts.register_compute_client(s, service_name, viewer.user_id, name, [accounts.ORIGINAL_DEFAULT_SLOT])
    s.flush()
    # The key is in the code, shown this once: the hub keeps only its hash, and the page is not cached.
    return render(
        request, "register_compute_client.html", viewer=viewer, service_name=service_name, name=name,
        code=registration_code(name, cc.compute_client_id, key), compute_client_id=cc.compute_client_id,
        hub_url=str(request.base_url).rstrip("/"),
        title="Compute client registered", headers=NO_STORE,
    )
