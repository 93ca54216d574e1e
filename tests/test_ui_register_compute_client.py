"""The page the original ``pairio register-compute-client`` sends its user to, served by this hub over real HTTP.

``/register_compute_client/<service>/<name>``: a GET shows what will be registered; the form
(session + CSRF token) registers the compute client and shows the code the original client
decodes (base64 of JSON ``{computeClientName, computeClientId, computeClientPrivateKey}``).
The original client itself reads the code in tests/test_original_compute_client.py.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from hub.context import HubContext
from hub.db.tables import ComputeClient

from .hubtools import LiveHub, Seed
from .test_ui_pages import csrf_of, log_in


@pytest.fixture
def browser(live_hub: LiveHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        yield client


def path_of(service: str, name: str) -> str:
    return f"/register_compute_client/{service}/{name}"


def code_on(page: str) -> dict[str, str]:
    match = re.search(r'<code id="registration-code"[^>]*>([^<]+)</code>', page)
    assert match, page
    return dict(json.loads(base64.b64decode(match.group(1))))


def client_count(ctx: HubContext) -> int:
    with ctx.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(ComputeClient)) or 0)


def test_the_page_registers_the_client_and_shows_the_code_once(browser: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    path = path_of(seeded.service, "lab-machine.example.org")
    anonymous = browser.get(path)
    assert anonymous.status_code == 401 and "Log in first" in anonymous.text
    assert "/settings?next=" in anonymous.text  # the login link comes back here

    token = log_in(browser, seeded.key)
    form = browser.get(path)
    assert form.status_code == 200 and "lab-machine.example.org" in form.text and seeded.service in form.text
    assert 'id="registration-code"' not in form.text and "4 CPUs" in form.text  # the original's default slot
    assert client_count(ctx) == 0  # a GET registers nothing: a link alone cannot make a client
    assert browser.post(path, data={}).status_code == 403  # no CSRF token
    assert client_count(ctx) == 0

    done = browser.post(path, data={"csrf_token": token})
    assert done.status_code == 200, done.text
    assert done.headers["cache-control"] == "no-store"
    assert "pairio register-compute-client" in done.text and "Code:" in done.text  # where to paste it
    code = code_on(done.text)
    assert set(code) == {"computeClientName", "computeClientId", "computeClientPrivateKey"}
    assert code["computeClientName"] == "lab-machine.example.org"
    # the client exists, serves the service, with the original's default slot, and its key works
    client = browser.post(
        "/api/getComputeClient", json={"type": "getComputeClientRequest", "computeClientId": code["computeClientId"]}
    ).json()["computeClient"]
    assert client["computeClientName"] == "lab-machine.example.org" and client["serviceNames"] == [seeded.service]
    assert client["userId"] == seeded.user and client["computeClientPrivateKey"] is None
    [slot] = client["computeSlots"]
    assert (slot["numCpus"], slot["numGpus"], slot["memoryGb"], slot["timeSec"]) == (4, 0, 8, 3600)
    polled = browser.post(
        "/api/getRunnableJobsForComputeClient",
        json={"type": "getRunnableJobsForComputeClientRequest", "computeClientId": code["computeClientId"]},
        headers={"Authorization": f"Bearer {code['computeClientPrivateKey']}"},
    )
    assert polled.status_code == 200, polled.text
    # the key is shown once: its page, and the service's, never show it
    for page in (f"/compute-client/{code['computeClientId']}", f"/service/{seeded.service}"):
        assert code["computeClientPrivateKey"] not in browser.get(page).text


def test_a_user_who_may_not_process_the_services_jobs_is_refused(browser: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    token = log_in(browser, seeded.other_key)
    path = path_of(seeded.service, "bobs-machine")
    for refused in (browser.get(path), browser.post(path, data={"csrf_token": token})):
        assert refused.status_code == 403, refused.text
        assert "lacks the processJobs role" in refused.text and "pairio admin add-service-user" in refused.text
    assert client_count(ctx) == 0


def test_an_unknown_service_and_bad_names_are_error_pages(browser: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    token = log_in(browser, seeded.key)
    for response in (browser.get(path_of("no_such_service", "m1")), browser.post(path_of("no_such_service", "m1"), data={"csrf_token": token})):
        assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
        assert "Not found" in response.text and "no_such_service" in response.text
    for bad in ("x" * 201, "%20padded", "bell%07", "tab%09name"):
        for response in (browser.get(path_of(seeded.service, bad)), browser.post(path_of(seeded.service, bad), data={"csrf_token": token})):
            assert response.status_code == 400, (bad, response.text)
            assert "compute client name" in response.text and "--compute-client-name" in response.text
    assert client_count(ctx) == 0
