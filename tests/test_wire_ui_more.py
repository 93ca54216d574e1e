"""The rest of the original web UI's wire calls (deleteService, addUser, setUserInfo) and the old
compute client's getPubsubSubscription, over real HTTP with the original's request shapes.

getPubsubSubscription is also asked by the original package's own function (pairio==0.5.9 in
.venv-original), so the answer is read exactly as the old compute client reads it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from hub.context import HubContext

from .hubtools import LiveHub, Seed
from .test_original_pairio import original_bin, original_env  # noqa: F401 - the fixture
from .test_ui_pages import log_in
from .test_wire_protocol import COMPUTE_CLIENT_KEYS, error, greeting, job_request, ok
from .test_wire_ui_calls import ORIGINAL_SPEC, parse_with_original


@pytest.fixture
def hub(live_hub: LiveHub) -> httpx.Client:
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        yield client


def send(api: httpx.Client, call: str, key: Optional[str] = None, **fields: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return api.post(f"/api/{call}", json={"type": f"{call}Request", **fields}, headers=headers)


def new_client(api: httpx.Client, key: str, service: str, user: str = "alice") -> tuple[str, str]:
    created = ok(send(api, "createComputeClient", key, serviceNames=[service], computeClientName="lab", userId=user),
                 "createComputeClient")
    return created["computeClientId"], created["computeClientPrivateKey"]


def test_delete_service_takes_its_apps_clients_and_roles_with_it(hub: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    ok(send(hub, "addService", seeded.key, serviceName="svc2", userId="alice"), "addService")
    ok(send(hub, "setServiceInfo", seeded.key, serviceName="svc2",
            users=[{"userId": "bob", "admin": True, "createJobs": True, "processJobs": True}]), "setServiceInfo")
    app = {"serviceName": "svc2", "appName": "echo_app", "appSpecificationUri": "", "appSpecificationCommit": "",
           "appSpecification": ORIGINAL_SPEC}
    ok(send(hub, "addServiceApp", seeded.key, serviceApp=app), "addServiceApp")
    cc_id, _ = new_client(hub, seeded.key, "svc2")

    # Only the owner may delete a service: an admin of it may not (the original's rule).
    assert "only the owner" in error(send(hub, "deleteService", seeded.other_key, serviceName="svc2"), 401)
    assert "no API key" in error(send(hub, "deleteService", serviceName="svc2"), 401)
    assert "no service 'nope'" in error(send(hub, "deleteService", seeded.key, serviceName="nope"), 404)
    assert "unknown field" in error(send(hub, "deleteService", seeded.key, serviceName="svc2", userId="alice"), 400)

    assert ok(send(hub, "deleteService", seeded.key, serviceName="svc2"), "deleteService") == {"type": "deleteServiceResponse"}
    assert "no service 'svc2'" in error(send(hub, "getService", serviceName="svc2"), 404)
    assert ok(send(hub, "getServiceApps", serviceName="svc2"), "getServiceApps")["serviceApps"] == []
    assert "no compute client" in error(send(hub, "getComputeClient", computeClientId=cc_id), 404)
    # The name is free again, and the new service starts with no users but its owner.
    ok(send(hub, "addService", seeded.other_key, serviceName="svc2", userId="bob"), "addService")
    assert [u["userId"] for u in ok(send(hub, "getService", serviceName="svc2"), "getService")["service"]["users"]] == ["bob"]


def test_delete_service_refuses_while_jobs_wait_or_run(hub: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    job = ok(send(hub, "createJob", seeded.key, **job_request(seeded, greeting())), "createJob")["job"]
    message = error(send(hub, "deleteService", seeded.key, serviceName=seeded.service), 400)
    assert "1 unfinished jobs" in message and "cancel them" in message
    ok(send(hub, "cancelJob", seeded.key, jobId=job["jobId"]), "cancelJob")  # a pending job fails at once
    ok(send(hub, "deleteService", seeded.key, serviceName=seeded.service), "deleteService")
    assert ok(send(hub, "getServices"), "getServices")["services"] == []
    # Finished jobs stay readable: their pages, files and the usage statistics keep working.
    kept = ok(send(hub, "getJob", jobId=job["jobId"], includePrivateKey=False), "getJob")["job"]
    assert kept["status"] == "failed" and kept["serviceName"] == seeded.service
    assert hub.get(f"/job/{job['jobId']}").status_code == 200
    with httpx.Client(base_url=str(hub.base_url), timeout=30) as browser:  # bob, logged in, is no admin of a gone service
        log_in(browser, seeded.other_key)
        page = browser.get(f"/job/{job['jobId']}")
        assert page.status_code == 200 and 'id="delete-button"' not in page.text


def test_get_services_for_a_user_lists_only_what_it_owns(hub: httpx.Client, seeded: Seed) -> None:
    ok(send(hub, "setServiceInfo", seeded.key, serviceName=seeded.service,
            users=[{"userId": "bob", "admin": False, "createJobs": True, "processJobs": False}]), "setServiceInfo")
    ok(send(hub, "addService", seeded.other_key, serviceName="bobs", userId="bob"), "addService")
    owned = ok(send(hub, "getServices", userId="bob"), "getServices")["services"]
    assert [x["serviceName"] for x in owned] == ["bobs"]  # a role in alice's service is not ownership
    assert [x["serviceName"] for x in ok(send(hub, "getServices"), "getServices")["services"]] == ["bobs", seeded.service]


def test_add_user_and_set_user_info(hub: httpx.Client, seeded: Seed) -> None:
    assert ok(send(hub, "addUser", seeded.key, userId="alice"), "addUser") == {"type": "addUserResponse"}
    assert "userId does not match" in error(send(hub, "addUser", seeded.key, userId="carol"), 401)
    assert "no API key" in error(send(hub, "addUser", userId="alice"), 401)
    # The prototype's validator wanted a field "user": that shape is refused, saying which field is wrong.
    assert "user: unknown field" in error(send(hub, "addUser", seeded.key, userId="alice", user={"userId": "alice"}), 400)

    assert ok(send(hub, "setUserInfo", seeded.key, userId="alice"), "setUserInfo") == {"type": "setUserInfoResponse"}
    message = error(send(hub, "setUserInfo", seeded.key, userId="alice", name="Alice", email="a@example.org"), 400)
    assert "keeps no user name or email" in message
    assert "userId does not match" in error(send(hub, "setUserInfo", seeded.other_key, userId="alice"), 401)


def original_pubsub_subscription(original_bin: Path, hub_url: str, cc_id: str, cc_key: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    script = (
        "import json, sys\n"
        "from pairio.common.api_requests import get_pubsub_subscription\n"
        "print(json.dumps(get_pubsub_subscription(compute_client_id=sys.argv[1], compute_client_private_key=sys.argv[2])))\n"
    )
    return subprocess.run(
        [str(original_bin / "python"), "-I", "-c", script, cc_id, cc_key], capture_output=True, text=True, timeout=60,
        check=False, env=original_env(original_bin, PAIRIO_API_URL=hub_url),
    )


def test_get_pubsub_subscription_as_the_old_compute_client_asks(
    hub: httpx.Client, live_hub: LiveHub, seeded: Seed, original_bin: Path  # noqa: F811
) -> None:
    cc_id, cc_key = new_client(hub, seeded.key, seeded.service)
    before = ok(send(hub, "getComputeClient", computeClientId=cc_id), "getComputeClient")["computeClient"]
    assert "timestampLastActiveSec" not in before

    result = original_pubsub_subscription(original_bin, live_hub.url, cc_id, cc_key)
    assert result.returncode == 0, result.stderr
    subscription = json.loads(result.stdout.strip().splitlines()[-1])
    assert subscription == {"pubnubSubscribeKey": "pairio-hub-has-no-pubsub", "pubnubChannel": "pairio-compute-clients",
                            "pubnubUser": cc_id}

    after = ok(send(hub, "getComputeClient", computeClientId=cc_id), "getComputeClient")["computeClient"]
    assert set(after) == COMPUTE_CLIENT_KEYS | {"timestampLastActiveSec"}  # the call stamps the client's last activity
    assert isinstance(after["timestampLastActiveSec"], float)

    other_id, other_key = new_client(hub, seeded.key, seeded.service)
    cases: list[tuple[Optional[str], dict[str, Any], int, str]] = [
        (cc_key, {}, 400, "computeClientId is missing"),
        (cc_key, {"computeClientId": other_id}, 401, "not " + repr(other_id)),
        (None, {"computeClientId": cc_id}, 401, "no compute client key"),
        (seeded.key, {"computeClientId": cc_id}, 401, "unknown compute client key"),  # a user's key is not a client's
        (other_key, {"computeClientId": cc_id, "extra": 1}, 400, "unknown field"),
    ]
    for key, fields, status, fragment in cases:
        assert fragment in error(send(hub, "getPubsubSubscription", key, **fields), status), fields


def test_every_ui_call_answers_exactly_the_originals_fields(hub: httpx.Client, seeded: Seed, original_bin: Path) -> None:  # noqa: F811
    """One pass over the web UI's read calls: each answer has exactly the original's keys, and the
    original package's models accept what it has models for."""
    cc_id, _ = new_client(hub, seeded.key, seeded.service)
    job = ok(send(hub, "createJob", seeded.key, **job_request(seeded, greeting())), "createJob")["job"]

    service_keys = {"serviceName", "userId", "users"}
    user_keys = {"userId", "admin", "createJobs", "processJobs"}
    services = ok(send(hub, "getServices"), "getServices")["services"]
    assert [set(x) for x in services] == [service_keys] and all(set(u) == user_keys for u in services[0]["users"])
    assert set(ok(send(hub, "getService", serviceName=seeded.service), "getService")["service"]) == service_keys

    clients = ok(send(hub, "getComputeClients", serviceName=seeded.service), "getComputeClients")["computeClients"]
    assert [set(c) for c in clients] == [COMPUTE_CLIENT_KEYS]
    client = ok(send(hub, "getComputeClient", computeClientId=cc_id), "getComputeClient")["computeClient"]
    assert client["computeClientName"] == "lab" and client["serviceNames"] == [seeded.service]
    parse_with_original(original_bin, "PairioJob.ComputeClientComputeSlot", client["computeSlots"])

    apps = ok(send(hub, "getServiceApps", serviceName=seeded.service), "getServiceApps")["serviceApps"]
    parse_with_original(original_bin, "pairio_types.PairioServiceApp", apps)
    defaults = [p.get("defaultValue") for a in apps for pr in a["appSpecification"]["processors"] for p in pr["parameters"]]
    assert "world" in defaults  # the seed's defaults come back as the original's defaultValue

    jobs = ok(send(hub, "findJobs", serviceName=seeded.service, limit=100), "findJobs")["jobs"]
    assert [j["jobId"] for j in jobs] == [job["jobId"]]
    parse_with_original(original_bin, "PairioJob.PairioJob", jobs)
    found = ok(send(hub, "findJobByDefinition", serviceName=seeded.service, jobDefinition=job["jobDefinition"]),
               "findJobByDefinition")
    assert set(found) == {"type", "found", "job"} and found["job"]["jobId"] == job["jobId"]

    stats = ok(send(hub, "computeUserStats", userId="alice"), "computeUserStats")
    assert set(stats) == {"type", "userStats"}
    assert set(stats["userStats"]) == {"userId", "consumed", "provided", "consumedDeleted", "providedDeleted"}


@pytest.mark.parametrize("name", ["deleteService", "addUser", "setUserInfo", "getPubsubSubscription"])
def test_the_new_calls_check_their_type(name: str) -> None:
    """Served, and each refuses another call's type (no database needed)."""
    from hub.errors import BadRequest
    from hub.routes.wire import CALLS, parse_body

    assert name in CALLS
    with pytest.raises(BadRequest, match=f"takes type '{name}Request'"):
        parse_body(CALLS[name], b'{"type": "someOtherRequest"}')
