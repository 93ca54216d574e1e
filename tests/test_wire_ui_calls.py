"""The original wire protocol's web-UI and job-side calls, over real HTTP, with the original's request shapes.

Answers are parsed by the original package's own pydantic models (pairio==0.5.9 in
.venv-original, run in a subprocess) where it has them, and checked for exactly the
original's fields everywhere (its web UI discards answers with extra fields; the
Python package's models ignore extras, so they check types and required fields).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from hub.context import HubContext
from hub.core import compute
from pairio.models import PairioComputeClientComputeSlot

from .hubtools import HELLO_WORLD_SPEC, LiveHub, Seed
from .test_original_pairio import original_bin  # noqa: F401 - the fixture
from .test_wire_protocol import COMPUTE_CLIENT_KEYS, PROCESSOR_KEYS, SERVICE_APP_KEYS, error, greeting, job_request, ok

# The spec.json form the original SDK writes: defaultValue, no "required", no extras.
ORIGINAL_SPEC: dict[str, Any] = {
    "name": "echo_app",
    "description": "echoes",
    "processors": [
        {
            "name": "echo",
            "description": "echo a word",
            "label": "Echo",
            "image": "",
            "executable": "/app/main.py",
            "inputs": [{"name": "input", "description": "a file"}],
            "outputs": [{"name": "output", "description": ""}],
            "parameters": [
                {"name": "word", "type": "str", "description": "the word", "defaultValue": "hi"},
                {"name": "times", "type": "int", "description": "how often"},
            ],
            "attributes": [{"name": "wip", "value": True}],
        }
    ],
}


@pytest.fixture
def hub(live_hub: LiveHub) -> httpx.Client:
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        yield client


def send(api: httpx.Client, name: str, key: Optional[str] = None, **fields: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return api.post(f"/api/{name}", json={"type": f"{name}Request", **fields}, headers=headers)


def parse_with_original(original_bin: Path, model: str, items: list[dict[str, Any]]) -> None:  # noqa: F811
    """Validate each item with the original package's model ``model`` (e.g. pairio_types.PairioServiceApp)."""
    module, cls = model.rsplit(".", 1)
    script = (
        "import json, sys\n"
        f"from pairio.common.{module} import {cls}\n"
        f"for x in json.load(sys.stdin): {cls}(**x)\n"
    )
    result = subprocess.run(
        [str(original_bin / "python"), "-I", "-c", script],
        input=json.dumps(items), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_services_and_users_are_managed_with_the_originals_calls(hub: httpx.Client, seeded: Seed) -> None:
    ok(send(hub, "addService", seeded.key, serviceName="svc2", userId="alice"), "addService")
    service = ok(send(hub, "getService", serviceName="svc2"), "getService")["service"]
    assert service == {"serviceName": "svc2", "userId": "alice", "users": [
        {"userId": "alice", "admin": True, "createJobs": True, "processJobs": True}]}

    bob = {"userId": "bob", "admin": False, "createJobs": True, "processJobs": False}
    ok(send(hub, "setServiceInfo", seeded.key, serviceName="svc2", users=[bob]), "setServiceInfo")
    users = ok(send(hub, "getService", serviceName="svc2"), "getService")["service"]["users"]
    assert bob in users and users[0]["userId"] == "alice"  # the owner stays
    ok(send(hub, "setServiceInfo", seeded.key, serviceName="svc2", users=[]), "setServiceInfo")
    assert [u["userId"] for u in ok(send(hub, "getService", serviceName="svc2"), "getService")["service"]["users"]] == ["alice"]

    assert "Nothing to update" in error(send(hub, "setServiceInfo", seeded.key, serviceName="svc2"), 400)
    assert "exists already" in error(send(hub, "addService", seeded.key, serviceName="svc2", userId="alice"), 400)
    assert "userId does not match" in error(send(hub, "addService", seeded.key, serviceName="svc3", userId="bob"), 401)
    assert "no API key" in error(send(hub, "addService", serviceName="svc3", userId="alice"), 401)
    assert "admin" in error(send(hub, "setServiceInfo", seeded.other_key, serviceName="svc2", users=[bob]), 401)
    assert "no service 'nope'" in error(send(hub, "setServiceInfo", seeded.key, serviceName="nope", users=[]), 404)
    assert "unknown field" in error(send(hub, "addService", seeded.key, serviceName="x", userId="alice", extra=1), 400)

    # A reset replaces the user's keys: the old one stops working.
    new_key = ok(send(hub, "resetUserApiKey", seeded.key, userId="alice"), "resetUserApiKey")
    assert set(new_key) == {"type", "apiKey"} and new_key["apiKey"] != seeded.key
    assert "not valid" in error(send(hub, "resetUserApiKey", seeded.key, userId="alice"), 401)
    assert "userId does not match" in error(send(hub, "resetUserApiKey", new_key["apiKey"], userId="bob"), 401)
    ok(send(hub, "addService", new_key["apiKey"], serviceName="svc3", userId="alice"), "addService")


def test_apps_are_added_updated_and_deleted_with_original_specs(hub: httpx.Client, seeded: Seed, original_bin: Path) -> None:  # noqa: F811
    service_app = {
        "serviceName": seeded.service, "appName": "echo_app",
        "appSpecificationUri": "https://github.com/x/y/blob/main/spec.json", "appSpecificationCommit": "",
        "appSpecification": ORIGINAL_SPEC,
    }
    assert "admin" in error(send(hub, "addServiceApp", seeded.other_key, serviceApp=service_app), 401)
    ok(send(hub, "addServiceApp", seeded.key, serviceApp=service_app), "addServiceApp")
    app = ok(send(hub, "getServiceApp", serviceName=seeded.service, appName="echo_app"), "getServiceApp")["serviceApp"]
    assert set(app) == SERVICE_APP_KEYS
    assert app["appSpecification"] == ORIGINAL_SPEC  # the original form comes back unchanged

    changed = json.loads(json.dumps(ORIGINAL_SPEC))
    changed["processors"][0]["parameters"][0]["defaultValue"] = "hello"
    ok(send(hub, "setServiceAppInfo", seeded.key, serviceName=seeded.service, appName="echo_app", appSpecification=changed),
       "setServiceAppInfo")
    apps = ok(send(hub, "getServiceApps", serviceName=seeded.service), "getServiceApps")["serviceApps"]
    assert [a["appName"] for a in apps] == ["echo_app", "hello_world"]
    assert apps[0]["appSpecification"] == changed
    for a in apps:
        assert set(a) == SERVICE_APP_KEYS
        assert all(set(p) == PROCESSOR_KEYS for p in a["appSpecification"]["processors"])
    parse_with_original(original_bin, "pairio_types.PairioServiceApp", apps)

    bad_cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("setServiceAppInfo", {"serviceName": seeded.service, "appName": "echo_app"}, 400, "Nothing to update"),
        ("setServiceAppInfo", {"serviceName": seeded.service, "appName": "echo_app",
                               "appSpecification": {**ORIGINAL_SPEC, "name": "other"}}, 400, "differs from the spec's name"),
        ("setServiceAppInfo", {"serviceName": seeded.service, "appName": "nope", "appSpecification": ORIGINAL_SPEC}, 404, "no app"),
        ("addServiceApp", {"serviceApp": {**service_app, "appSpecification": {"name": "echo_app", "processors": 3}}}, 400,
         "invalid app spec"),
        ("deleteServiceApp", {"serviceName": seeded.service, "appName": "nope"}, 404, "no app 'nope'"),
    ]
    for name, fields, status, fragment in bad_cases:
        assert fragment in error(send(hub, name, seeded.key, **fields), status), name
    assert "admin" in error(send(hub, "deleteServiceApp", seeded.other_key, serviceName=seeded.service, appName="echo_app"), 401)

    ok(send(hub, "deleteServiceApp", seeded.key, serviceName=seeded.service, appName="echo_app"), "deleteServiceApp")
    assert "no app 'echo_app'" in error(send(hub, "getServiceApp", serviceName=seeded.service, appName="echo_app"), 404)


def test_compute_clients_are_created_shown_and_deleted(hub: httpx.Client, seeded: Seed, original_bin: Path) -> None:  # noqa: F811
    created = ok(send(hub, "createComputeClient", seeded.key, serviceNames=[seeded.service], computeClientName="lab",
                      userId="alice"), "createComputeClient")
    assert set(created) == {"type", "computeClientId", "computeClientPrivateKey"}
    cc_id, cc_key = created["computeClientId"], created["computeClientPrivateKey"]

    resp = send(hub, "getComputeClients", serviceName=seeded.service)
    clients = ok(resp, "getComputeClients")["computeClients"]
    assert cc_key not in resp.text
    assert [set(c) for c in clients] == [COMPUTE_CLIENT_KEYS]
    default = PairioComputeClientComputeSlot(numCpus=4, numGpus=0, memoryGb=8, timeSec=3600).model_dump(mode="json")
    assert clients[0] | {"computeSlots": None} == {
        "serviceNames": [seeded.service], "computeClientId": cc_id, "computeClientPrivateKey": None,
        "computeClientName": "lab", "userId": "alice", "processJobsForUsers": None, "description": "", "computeSlots": None,
    }
    assert clients[0]["computeSlots"] == [default]
    parse_with_original(original_bin, "PairioJob.ComputeClientComputeSlot", clients[0]["computeSlots"])
    ok(send(hub, "pingComputeClients", serviceName=seeded.service), "pingComputeClients")
    assert "no service 'nope'" in error(send(hub, "pingComputeClients", serviceName="nope"), 404)

    bad_cases: list[tuple[Optional[str], str, dict[str, Any], int, str]] = [
        (seeded.key, "createComputeClient", {"serviceNames": [], "computeClientName": "x", "userId": "alice"}, 400, "exactly one"),
        (seeded.other_key, "createComputeClient", {"serviceNames": [seeded.service], "computeClientName": "x", "userId": "bob"},
         401, "processJobs"),
        (None, "createComputeClient", {"serviceNames": [seeded.service], "computeClientName": "x", "userId": "alice"}, 401,
         "no API key"),
        (seeded.other_key, "deleteComputeClient", {"computeClientId": cc_id}, 401, "owner"),
        (seeded.key, "deleteComputeClient", {"computeClientId": "nope"}, 404, "no compute client"),
    ]
    for key, name, fields, status, fragment in bad_cases:
        assert fragment in error(send(hub, name, key, **fields), status), name

    # setComputeClientInfo changes name, description and slots; the one service stays.
    slot = {"numCpus": 2, "numGpus": 1, "memoryGb": 16, "timeSec": 600, "minNumCpus": 0, "minNumGpus": 0,
            "minMemoryGb": 0, "minTimeSec": 0, "multiplicity": 2}
    ok(send(hub, "setComputeClientInfo", seeded.key, computeClientId=cc_id, serviceNames=[seeded.service],
            computeClientName="lab2", description="the lab's box", computeSlots=[slot], processJobsForUsers=None),
       "setComputeClientInfo")
    client = ok(send(hub, "getComputeClient", computeClientId=cc_id), "getComputeClient")["computeClient"]
    assert (client["computeClientName"], client["description"], client["computeSlots"]) == ("lab2", "the lab's box", [slot])
    info_cases: list[tuple[Optional[str], dict[str, Any], int, str]] = [
        (seeded.key, {}, 400, "Nothing to update"),
        (seeded.key, {"serviceNames": ["other"]}, 400, "serves one service"),
        (seeded.key, {"processJobsForUsers": ["bob"]}, 400, "not supported"),
        (seeded.key, {"computeSlots": []}, 400, "at least one compute slot"),
        (seeded.key, {"computeSlots": [{**slot, "extra": 1}]}, 400, "unknown field"),
        (seeded.other_key, {"description": "mine"}, 401, "owner"),
        (None, {"description": "mine"}, 401, "no API key"),
    ]
    for key, fields, status, fragment in info_cases:
        assert fragment in error(send(hub, "setComputeClientInfo", key, computeClientId=cc_id, **fields), status), fields
    assert "no compute client" in error(send(hub, "setComputeClientInfo", seeded.key, computeClientId="nope", description=""), 404)

    ok(send(hub, "deleteComputeClient", seeded.key, computeClientId=cc_id), "deleteComputeClient")
    assert ok(send(hub, "getComputeClients", serviceName=seeded.service), "getComputeClients")["computeClients"] == []


def test_set_job_status_takes_the_job_key_in_both_header_forms(
    hub: httpx.Client, seeded: Seed, ctx: HubContext, original_bin: Path  # noqa: F811
) -> None:
    created = ok(send(hub, "createComputeClient", seeded.key, serviceNames=[seeded.service], computeClientName="lab",
                      userId="alice"), "createComputeClient")
    cc_id, cc_key = created["computeClientId"], created["computeClientPrivateKey"]
    job_id = ok(send(hub, "createJob", seeded.key, **job_request(seeded, greeting())), "createJob")["job"]["jobId"]
    [claimed] = compute.claim_jobs(ctx, cc_key, 1)
    job_key = claimed.job.jobPrivateKey
    assert job_key

    def set_status(status: str, key: Optional[str] = job_key, colon: bool = False, **extra: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer{':' if colon else ''} {key}"} if key else {}
        body = {"type": "setJobStatusRequest", "jobId": job_id, "computeClientId": cc_id, "status": status, **extra}
        return hub.post("/api/setJobStatus", json=body, headers=headers)

    assert "no key" in error(set_status("running", key=None), 401)
    assert "neither" in error(set_status("running", key="pairio_wrong"), 401)
    assert "not 'other'" in error(set_status("running", computeClientId="other"), 401)
    assert "'error' is only accepted" in error(set_status("running", error="x"), 400)
    assert ok(set_status("starting"), "setJobStatus") == {"type": "setJobStatusResponse"}  # the current status: no change
    ok(set_status("running", colon=True), "setJobStatus")
    assert "unknown field" in error(set_status("completed", extra=1), 400)
    assert "not uploaded" in error(set_status("completed"), 400)  # the hub's rule, as over REST
    put = hub.put(f"/v1/compute/jobs/{job_id}/outputs/output", content=b"hello", headers={"Authorization": f"Bearer {job_key}"})
    assert put.status_code in (200, 201, 204), put.text
    ok(set_status("completed"), "setJobStatus")
    job = ok(send(hub, "getJob", jobId=job_id, includePrivateKey=False), "getJob")["job"]
    assert job["status"] == "completed" and job["jobPrivateKey"] is None
    parse_with_original(original_bin, "PairioJob.PairioJob", [job])
    assert error(set_status("failed", error="late"), 400)  # a terminal status never changes
    assert "no job" in error(hub.post("/api/setJobStatus", json={
        "type": "setJobStatusRequest", "jobId": "nope", "computeClientId": cc_id, "status": "running"},
        headers={"Authorization": f"Bearer {job_key}"}), 404)


def test_the_original_spec_form_survives_a_round_trip_of_the_seed_app(hub: httpx.Client, seeded: Seed) -> None:
    app = ok(send(hub, "getServiceApp", serviceName=seeded.service, appName="hello_world"), "getServiceApp")["serviceApp"]
    service_app = {**app, "appName": "hello_world"}
    ok(send(hub, "addServiceApp", seeded.key, serviceApp=service_app), "addServiceApp")
    again = ok(send(hub, "getServiceApp", serviceName=seeded.service, appName="hello_world"), "getServiceApp")["serviceApp"]
    assert again == app
    assert [p["name"] for p in again["appSpecification"]["processors"]] == [p["name"] for p in HELLO_WORLD_SPEC["processors"]]
