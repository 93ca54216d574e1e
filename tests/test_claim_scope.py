"""Claims that name what the bridge runs (apps, container mode, original-SDK images), over real HTTP;
the bridge's description in its heartbeat; jobs that failed before their processor ran and the cache."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hub.core import accounts
from hub.core import jobs as core_jobs
from hub.core.compute import CLAIM_SCAN_LIMIT
from pairio.models import PairioApp, PairioJobDefinition, PairioJobRequiredResources

from .conftest import auth
from .hubtools import LiveHub, Seed
from .test_compute_api import RES, Client, claim, hello1, register, report, submit
from .test_wire_protocol import COMPUTE_CLIENT_KEYS, call, ok

IMAGED_SPEC: dict[str, Any] = {
    "name": "imaged",
    "description": "processors with and without an image",
    "processors": [
        {"name": "with_image", "description": "", "image": "docker.io/library/python:3.12", "executable": "/app/main.py",
         "parameters": [{"name": "n", "type": "int", "default": 0}]},
        {"name": "no_image", "description": "", "executable": "/app/main.py", "parameters": [{"name": "n", "type": "int", "default": 0}]},
        {"name": "original", "description": "", "image": "docker.io/me/old:1", "executable": "/app/main.py", "originalSdk": True,
         "parameters": [{"name": "n", "type": "int", "default": 0}]},
    ],
}


@pytest.fixture
def http(live_hub: LiveHub) -> httpx.Client:
    with httpx.Client(base_url=live_hub.url, timeout=60) as client:
        yield client


@pytest.fixture
def with_imaged_app(live_hub: LiveHub, seeded: Seed) -> Seed:
    with live_hub.ctx.transaction() as s:
        accounts.add_app(s, seeded.service, PairioApp.model_validate(IMAGED_SPEC))
    return seeded


def imaged(processor: str, n: int = 0) -> dict[str, Any]:
    return {"appName": "imaged", "processorName": processor, "parameters": [{"name": "n", "value": n}]}


def status_of(http: httpx.Client, job_id: str) -> str:
    r = http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def claimed_ids(http: httpx.Client, client: Client, **body: Any) -> list[str]:
    return [j["jobId"] for j in claim(http, client, maxJobs=100, **body)]


# ---------------------------------------------------------------- apps


def test_a_claim_naming_apps_takes_only_their_jobs_and_leaves_the_others_pending(http: httpx.Client, with_imaged_app: Seed) -> None:
    seeded = with_imaged_app
    other = submit(http, seeded, imaged("no_image"))["jobId"]  # the oldest
    hello = submit(http, seeded, hello1())["jobId"]
    cc = register(http, seeded)
    assert claimed_ids(http, cc, apps=["hello_world"], containerMode="none") == [hello]
    assert status_of(http, other) == "pending"  # skipped, not failed
    assert claimed_ids(http, cc, apps=["hello_world"], containerMode="none") == []
    assert claimed_ids(http, cc, apps=["imaged", "hello_world"]) == [other]


def test_a_claim_without_apps_takes_any_job_as_before(http: httpx.Client, with_imaged_app: Seed) -> None:
    seeded = with_imaged_app
    ids = [submit(http, seeded, imaged("no_image"))["jobId"], submit(http, seeded, hello1())["jobId"]]
    assert claimed_ids(http, register(http, seeded)) == ids


def test_jobs_of_several_apps_come_oldest_first(http: httpx.Client, with_imaged_app: Seed) -> None:
    seeded = with_imaged_app
    ids = []
    for i in range(3):
        ids.append(submit(http, seeded, hello1(f"n{i}"))["jobId"])
        ids.append(submit(http, seeded, imaged("no_image", i))["jobId"])
    cc = register(http, seeded)
    assert [j["jobId"] for j in claim(http, cc, maxJobs=1, apps=["hello_world", "imaged"])] == ids[:1]
    assert claimed_ids(http, cc, apps=["imaged", "hello_world"]) == ids[1:]


def test_an_empty_app_list_claims_nothing(http: httpx.Client, seeded: Seed) -> None:
    job_id = submit(http, seeded, hello1())["jobId"]
    cc = register(http, seeded)
    assert claimed_ids(http, cc, apps=[], containerMode="none") == []
    assert claimed_ids(http, cc, apps=["no_such_app"]) == []
    assert status_of(http, job_id) == "pending"


def test_jobs_of_other_apps_beyond_the_scan_limit_do_not_hide_a_runnable_one(live_hub: LiveHub, http: httpx.Client, with_imaged_app: Seed) -> None:
    """Each app's jobs are walked by their own index: many pending jobs of an app the bridge lacks cost its claim nothing."""
    seeded = with_imaged_app
    with live_hub.ctx.transaction() as s:
        for i in range(CLAIM_SCAN_LIMIT + 50):
            req = core_jobs.JobCreate(
                serviceName=seeded.service, jobDefinition=PairioJobDefinition.model_validate(hello1(f"bulk{i}")),
                requiredResources=PairioJobRequiredResources.model_validate(RES),
            )
            core_jobs.create_job(live_hub.ctx, s, seeded.user, req)
    wanted = submit(http, seeded, imaged("no_image"))["jobId"]
    assert claimed_ids(http, register(http, seeded), apps=["imaged"]) == [wanted]


def test_a_waiting_claim_naming_apps_wakes_only_for_its_apps(http: httpx.Client, live_hub: LiveHub, with_imaged_app: Seed) -> None:
    seeded = with_imaged_app
    cc = register(http, seeded)
    other = submit(http, seeded, hello1())["jobId"]
    mine = submit(http, seeded, imaged("no_image"))["jobId"]
    assert claimed_ids(http, cc, apps=["imaged"], waitSec=5) == [mine]
    assert status_of(http, other) == "pending"


# ---------------------------------------------------------------- container modes


def test_a_container_bridge_takes_only_processors_with_an_image(http: httpx.Client, with_imaged_app: Seed) -> None:
    seeded = with_imaged_app
    no_image = submit(http, seeded, imaged("no_image"))["jobId"]
    hello = submit(http, seeded, hello1())["jobId"]  # hello_world's processors have no image
    original = submit(http, seeded, imaged("original"))["jobId"]
    with_image = submit(http, seeded, imaged("with_image"))["jobId"]
    cc = register(http, seeded)
    assert claimed_ids(http, cc, containerMode="podman", originalSdkImages=False) == [with_image]
    assert claimed_ids(http, cc, containerMode="apptainer") == [original]
    assert {status_of(http, j) for j in (no_image, hello)} == {"pending"}


def test_a_bridge_without_containers_takes_no_original_sdk_image(http: httpx.Client, with_imaged_app: Seed) -> None:
    seeded = with_imaged_app
    original = submit(http, seeded, imaged("original"))["jobId"]
    with_image = submit(http, seeded, imaged("with_image"))["jobId"]
    no_image = submit(http, seeded, imaged("no_image"))["jobId"]
    cc = register(http, seeded)
    assert claimed_ids(http, cc, containerMode="none", apps=["imaged"]) == [with_image, no_image]
    assert status_of(http, original) == "pending"


@pytest.mark.parametrize(
    "body",
    [
        {"apps": "hello_world"},
        {"apps": ["hello world"]},
        {"apps": [""]},
        {"apps": [1]},
        {"apps": ["a"] * 501},
        {"containerMode": "kubernetes"},
        {"containerMode": 1},
        {"originalSdkImages": "yes"},
        {"originalSdkImages": 1},
        {"runs": ["hello_world"]},
    ],
)
def test_bad_claim_fields_are_refused(http: httpx.Client, seeded: Seed, body: dict[str, Any]) -> None:
    cc = register(http, seeded)
    r = http.post("/v1/compute/claim", json={"maxJobs": 1, **body}, headers=cc.headers)
    assert r.status_code == 422, r.text


# ---------------------------------------------------------------- the bridge's description


BRIDGE_INFO = {"host": "node7", "backend": "ssh", "remoteHost": "lab1.example.org", "containerMode": "none", "apps": ["hello_world"], "version": "1.2.3"}


def test_the_heartbeat_describes_the_bridge_on_its_compute_client(http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded, label="laptop")
    assert http.get(f"/v1/compute-clients/{cc.id}").json()["bridgeInfo"] is None
    assert "has not described itself" in http.get(f"/compute-client/{cc.id}").text
    r = http.post("/v1/compute/heartbeat", json={"activeJobIds": [], "bridge": BRIDGE_INFO}, headers=cc.headers)
    assert r.status_code == 200, r.text
    info = http.get(f"/v1/compute-clients/{cc.id}").json()["bridgeInfo"]
    reported = info.pop("timestampReportedSec")
    assert info == BRIDGE_INFO
    # a heartbeat without it keeps it; the same one again changes nothing
    assert http.post("/v1/compute/heartbeat", json={"activeJobIds": []}, headers=cc.headers).status_code == 200
    assert http.post("/v1/compute/heartbeat", json={"activeJobIds": [], "bridge": BRIDGE_INFO}, headers=cc.headers).status_code == 200
    assert http.get(f"/v1/compute-clients/{cc.id}").json()["bridgeInfo"]["timestampReportedSec"] == reported
    changed = {**BRIDGE_INFO, "apps": ["hello_world", "imaged"]}
    assert http.post("/v1/compute/heartbeat", json={"activeJobIds": [], "bridge": changed}, headers=cc.headers).status_code == 200
    listed = http.get("/v1/compute-clients", params={"serviceName": seeded.service}).json()["computeClients"]
    assert listed[0]["bridgeInfo"]["apps"] == ["hello_world", "imaged"]
    page = http.get(f"/compute-client/{cc.id}")
    assert page.status_code == 200
    for shown in ("node7", "ssh on", "lab1.example.org", "1.2.3", ">imaged</a>", ">hello_world</a>", "none"):
        assert shown in page.text, shown
    # the original wire protocol's compute client keeps exactly its fields
    client = ok(call(http, "getComputeClient", computeClientId=cc.id), "getComputeClient")["computeClient"]
    assert set(client) - {"timestampLastActiveSec"} == COMPUTE_CLIENT_KEYS  # optional there, present once it beat


@pytest.mark.parametrize(
    "change",
    [
        {"backend": "cloud"},
        {"containerMode": "kubernetes"},
        {"host": ""},
        {"host": "a\nb"},
        {"host": "h" * 256},
        {"apps": ["not an app"]},
        {"version": "1.0; rm -rf"},
        {"extra": 1},
        {"backend": None},
    ],
)
def test_a_bad_bridge_description_is_refused(http: httpx.Client, seeded: Seed, change: dict[str, Any]) -> None:
    cc = register(http, seeded)
    r = http.post("/v1/compute/heartbeat", json={"activeJobIds": [], "bridge": {**BRIDGE_INFO, **change}}, headers=cc.headers)
    assert r.status_code == 422, r.text


# ---------------------------------------------------------------- the cache


def test_a_job_that_failed_before_its_processor_ran_is_not_served_from_the_cache(http: httpx.Client, seeded: Seed) -> None:
    first = submit(http, seeded, hello1("cache"))["jobId"]
    cc = register(http, seeded)
    [job] = claim(http, cc)
    assert job["jobId"] == first
    error = "this bridge has no command for app 'hello_world'"
    assert report(http, first, cc.key, "failed", error).status_code == 200
    again = submit(http, seeded, hello1("cache"))
    assert again["jobId"] != first and again["status"] == "pending"
    assert status_of(http, first) == "failed"  # kept, with its error, for the record


def test_a_job_whose_processor_failed_is_still_served_from_the_cache(http: httpx.Client, seeded: Seed) -> None:
    first = submit(http, seeded, hello1("ran"))["jobId"]
    canceled = submit(http, seeded, hello1("canceled"))["jobId"]
    assert http.post(f"/v1/jobs/{canceled}/cancel", headers=auth(seeded.key)).status_code in (200, 204)
    cc = register(http, seeded)
    [job] = claim(http, cc)
    assert report(http, job["jobId"], cc.key, "running").status_code == 200
    assert report(http, job["jobId"], cc.key, "failed", "the processor exited with code 1").status_code == 200
    assert submit(http, seeded, hello1("ran"))["jobId"] == first
    assert submit(http, seeded, hello1("canceled"))["jobId"] == canceled
