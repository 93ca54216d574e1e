"""The bridge-facing API: claim, heartbeat, status reports, console output, outputs, resource logs.

Helpers at the top are shared by the other compute tests (test_files, test_claim_concurrency,
test_heartbeat_expiry).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
from sqlalchemy import update

from hub.context import HubContext
from hub.core import accounts
from hub.core import jobs as core_jobs
from hub.db.tables import Job
from pairio.models import PairioApp, PairioJobDefinition, PairioJobRequiredResources

from .conftest import auth
from .hubtools import HELLO_WORLD_SPEC, Seed, count_chars, hello2, returns_within

RES: dict[str, Any] = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}
SLOT: dict[str, Any] = {"numCpus": 8, "numGpus": 0, "memoryGb": 32, "timeSec": 86400, "multiplicity": 100}


# ---------------------------------------------------------------- helpers


def hello1(name: str = "world") -> dict[str, Any]:
    return {"appName": "hello_world", "processorName": "hello_world_1", "parameters": [{"name": "name", "value": name}]}






def submit(api: httpx.Client, seeded: Seed, definition: dict[str, Any], resources: Optional[dict[str, Any]] = None, **kw: Any) -> dict[str, Any]:
    body = {"serviceName": kw.pop("serviceName", seeded.service), "jobDefinition": definition, "requiredResources": resources or RES, **kw}
    r = api.post("/v1/jobs", json=body, headers=auth(seeded.key))
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


@dataclass
class Client:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.key)


def register(api: httpx.Client, seeded: Seed, label: str = "cc", slots: Optional[list[dict[str, Any]]] = None,
             user_key: Optional[str] = None, service: Optional[str] = None) -> Client:
    body = {"serviceName": service or seeded.service, "label": label, "computeSlots": slots or [SLOT]}
    r = api.post("/v1/compute-clients", json=body, headers=auth(user_key or seeded.key))
    assert r.status_code == 201, r.text
    return Client(id=r.json()["computeClient"]["computeClientId"], key=r.json()["computeClientPrivateKey"])


def claim(api: httpx.Client, client: Client, **body: Any) -> list[dict[str, Any]]:
    r = api.post("/v1/compute/claim", json=body, headers=client.headers)
    assert r.status_code == 200, r.text
    return r.json()["jobs"]  # type: ignore[no-any-return]


def report(api: httpx.Client, job_id: str, key: str, status: str, error: Optional[str] = None) -> httpx.Response:
    body: dict[str, Any] = {"status": status}
    if error is not None:
        body["error"] = error
    return api.post(f"/v1/compute/jobs/{job_id}/status", json=body, headers=auth(key))


def upload(api: httpx.Client, job_id: str, name: str, key: str, content: bytes) -> httpx.Response:
    return api.put(f"/v1/compute/jobs/{job_id}/outputs/{name}", content=content, headers=auth(key))


def run_and_complete(api: httpx.Client, job: dict[str, Any], key: str, content: bytes = b"Hello, world!") -> None:
    """What a bridge does with a claimed job: running, upload every output, completed."""
    assert report(api, job["jobId"], key, "running").status_code == 200
    for f in job["jobDefinition"]["outputFiles"]:
        assert upload(api, job["jobId"], f["name"], key, content).status_code == 200
    r = report(api, job["jobId"], key, "completed")
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text


def get_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def events(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return api.get(f"/v1/jobs/{job_id}/events").json()["events"]  # type: ignore[no-any-return]


def create_jobs_directly(ctx: HubContext, seeded: Seed, n: int, prefix: str = "job") -> list[str]:
    """Many pending runnable jobs in one transaction (much faster than n HTTP calls)."""
    ids = []
    with ctx.transaction() as s:
        for i in range(n):
            req = core_jobs.JobCreate(
                serviceName=seeded.service,
                jobDefinition=PairioJobDefinition.model_validate(hello1(f"{prefix}{i}")),
                requiredResources=PairioJobRequiredResources.model_validate(RES),
            )
            job, created = core_jobs.create_job(ctx, s, seeded.user, req)
            assert created
            ids.append(job.job_id)
    return ids


def set_job_columns(ctx: HubContext, job_id: str, **values: Any) -> None:
    with ctx.transaction() as s:
        s.execute(update(Job).where(Job.job_id == job_id).values(**values))


def files_under(path: Path) -> list[str]:
    return sorted(p.name for p in path.rglob("*") if p.is_file()) if path.exists() else []


# ---------------------------------------------------------------- claim


def test_claim_hands_out_the_job_with_its_private_key_and_secrets_once(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded, "laptop")
    job = submit(api, seeded, hello1(), secrets=[{"name": "TOKEN", "value": "s3cr3t-value"}])
    [claimed] = claim(api, cc)
    assert claimed["jobId"] == job["jobId"]
    assert claimed["jobPrivateKey"].startswith("pairiojob_")
    assert claimed["secrets"] == [{"name": "TOKEN", "value": "s3cr3t-value"}]
    assert claimed["status"] == "starting" and claimed["computeClientId"] == cc.id
    assert claimed["computeClientName"] == "laptop" and claimed["computeClientUserId"] == "alice"
    assert claimed["timestampStartingSec"] is not None

    public = get_job(api, job["jobId"])
    assert public["jobPrivateKey"] is None and public["secrets"] is None, "users never see keys or secrets"
    assert public["status"] == "starting"
    assert any(f"claimed by compute client laptop ({cc.id})" in e["message"] for e in events(api, job["jobId"]))
    assert claim(api, cc) == [], "a claimed job is not handed out again"
    assert api.get(f"/v1/compute-clients/{cc.id}").json()["timestampLastActiveSec"] is not None, "a claim is a heartbeat"

    detail = api.get(f"/v1/compute/jobs/{job['jobId']}", headers=cc.headers).json()
    assert detail["secrets"] and detail["jobPrivateKey"] is None and detail["consoleOutputSize"] == 0
    mine = api.get("/v1/compute/jobs", headers=cc.headers).json()["jobs"]
    assert [j["jobId"] for j in mine] == [job["jobId"]]


def test_claim_needs_a_compute_client_key(api: httpx.Client, seeded: Seed) -> None:
    submit(api, seeded, hello1())
    assert api.post("/v1/compute/claim", json={}).status_code == 401
    r = api.post("/v1/compute/claim", json={}, headers=auth(seeded.key))
    assert r.status_code == 401, "a user's API key is not a compute client key"
    r = api.post("/v1/compute/claim", json={}, headers=auth("pairiocc_not-a-real-key"))
    assert r.status_code == 401 and "pairiocc_not-a-real-key" not in r.text
    assert api.post("/v1/compute/heartbeat", json={}, headers=auth("nope")).status_code == 401
    assert get_job(api, api.get("/v1/jobs", params={"serviceName": seeded.service}).json()["jobs"][0]["jobId"])["status"] == "pending"


BAD_CLAIM_BODIES: list[Any] = [
    {"maxJobs": 0}, {"maxJobs": 101}, {"maxJobs": "many"}, {"waitSec": -1}, {"waitSec": 1e9},
    {"capacity": {"numCpus": -1}}, {"capacity": {"memoryGb": "lots"}}, {"capacity": {"disk": 1}},
    {"surprise": True}, [], "claim",
]


def test_claim_rejects_bad_bodies_with_422(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    submit(api, seeded, hello1())
    for body in BAD_CLAIM_BODIES:
        r = api.post("/v1/compute/claim", json=body, headers=cc.headers)
        assert r.status_code == 422, (body, r.text)
        assert "invalid request" in r.json()["detail"]
    r = api.post("/v1/compute/claim", content=b"{not json", headers={**cc.headers, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert get_job(api, api.get("/v1/jobs", params={"serviceName": seeded.service}).json()["jobs"][0]["jobId"])["status"] == "pending"


def test_claim_takes_oldest_first_and_respects_max_jobs(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    ids = [submit(api, seeded, hello1(f"n{i}"))["jobId"] for i in range(5)]
    assert [j["jobId"] for j in claim(api, cc, maxJobs=2)] == ids[:2]
    assert [j["jobId"] for j in claim(api, cc, maxJobs=10)] == ids[2:]


def test_claim_only_takes_runnable_uncanceled_jobs_of_its_own_service(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    with ctx.transaction() as s:
        accounts.create_service(s, "other_service", "alice")
        accounts.add_app(s, "other_service", PairioApp.model_validate(HELLO_WORLD_SPEC))
    submit(api, seeded, hello1("elsewhere"), serviceName="other_service")
    producer = submit(api, seeded, hello2())
    waiting = submit(api, seeded, count_chars(producer["outputFileResults"][0]["url"]))
    assert waiting["isRunnable"] is False
    canceled = submit(api, seeded, hello1("canceled"))
    api.post(f"/v1/jobs/{canceled['jobId']}/cancel", headers=auth(seeded.key))
    cc = register(api, seeded)
    assert [j["jobId"] for j in claim(api, cc, maxJobs=10)] == [producer["jobId"]]


def test_claim_respects_target_compute_clients(api: httpx.Client, seeded: Seed) -> None:
    a, b = register(api, seeded, "a"), register(api, seeded, "b")
    for_b = submit(api, seeded, hello1("b"), targetComputeClientIds=[b.id])
    for_any = submit(api, seeded, hello1("any"))
    assert [j["jobId"] for j in claim(api, a, maxJobs=10)] == [for_any["jobId"]]
    assert [j["jobId"] for j in claim(api, b, maxJobs=10)] == [for_b["jobId"]]


def test_claim_respects_slot_limits_minimums_and_multiplicity(api: httpx.Client, seeded: Seed) -> None:
    slots = [
        {"numCpus": 2, "numGpus": 0, "memoryGb": 4, "timeSec": 600, "multiplicity": 1},
        {"numCpus": 16, "numGpus": 1, "memoryGb": 64, "timeSec": 3600, "minNumGpus": 1, "multiplicity": 1},
    ]
    cc = register(api, seeded, slots=slots)
    too_big = submit(api, seeded, hello1("big"), {"numCpus": 32, "numGpus": 0, "memoryGb": 4, "timeSec": 60})
    too_long = submit(api, seeded, hello1("long"), {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 7200})
    small1 = submit(api, seeded, hello1("s1"))
    small2 = submit(api, seeded, hello1("s2"))
    gpu = submit(api, seeded, hello1("gpu"), {"numCpus": 4, "numGpus": 1, "memoryGb": 8, "timeSec": 60})
    claimed = [j["jobId"] for j in claim(api, cc, maxJobs=10)]
    # small2 fits no free slot: the small slot holds small1 and the GPU slot needs minNumGpus 1.
    assert claimed == [small1["jobId"], gpu["jobId"]]
    assert claim(api, cc, maxJobs=10) == [], "multiplicity counts the client's starting and running jobs"
    report(api, small1["jobId"], cc.key, "failed", "stopped for the test")
    assert [j["jobId"] for j in claim(api, cc, maxJobs=10)] == [small2["jobId"]], "a finished job frees its slot"
    for j in (too_big, too_long):
        assert get_job(api, j["jobId"])["status"] == "pending"


def test_claim_respects_the_capacity_the_bridge_has_free(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    two_cpu = {"numCpus": 2, "numGpus": 0, "memoryGb": 2, "timeSec": 60}
    ids = [submit(api, seeded, hello1(f"c{i}"), two_cpu)["jobId"] for i in range(3)]
    assert claim(api, cc, maxJobs=3, capacity={"numCpus": 1}) == []
    assert claim(api, cc, maxJobs=3, capacity={"numCpus": 8, "memoryGb": 1.5}) == []
    assert [j["jobId"] for j in claim(api, cc, maxJobs=3, capacity={"numCpus": 5, "numGpus": 0})] == ids[:2], "capacity is cumulative"
    assert [j["jobId"] for j in claim(api, cc, maxJobs=3, capacity={"numCpus": 2, "memoryGb": 2})] == ids[2:]


def test_claim_refused_when_the_clients_user_lost_process_jobs(api: httpx.Client, seeded: Seed) -> None:
    roles = {"admin": False, "createJobs": False, "processJobs": True}
    assert api.put(f"/v1/services/{seeded.service}/users/bob", json=roles, headers=auth(seeded.key)).status_code == 200
    cc = register(api, seeded, "bob's", user_key=seeded.other_key)
    submit(api, seeded, hello1())
    api.put(f"/v1/services/{seeded.service}/users/bob", json={**roles, "processJobs": False}, headers=auth(seeded.key))
    r = api.post("/v1/compute/claim", json={}, headers=cc.headers)
    assert r.status_code == 403 and "processJobs" in r.json()["detail"]


def test_claim_wait_sec_is_reduced_to_the_hubs_maximum(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    ctx.settings.claim_max_wait_sec = 0.3
    cc = register(api, seeded)
    t0 = time.monotonic()
    # an answer within a wait far below the 600 s asked for: the hub's maximum cut the long poll short
    assert returns_within(lambda: claim(api, cc, waitSec=600), 60) == []
    print(f"\nclaim answered after {time.monotonic() - t0:.2f} s")  # information only


# ---------------------------------------------------------------- status reports


def test_job_lifecycle_through_the_status_api(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    [claimed] = claim(api, cc)
    job_key = claimed["jobPrivateKey"]
    r = report(api, job["jobId"], job_key, "running")
    assert r.json() == {"jobId": job["jobId"], "status": "running", "canceled": False, "error": None}
    assert get_job(api, job["jobId"])["timestampStartedSec"] is not None
    n_events = len(events(api, job["jobId"]))
    assert report(api, job["jobId"], cc.key, "running").status_code == 200, "repeating a status is idempotent"
    assert len(events(api, job["jobId"])) == n_events, "...and records no new event"
    assert upload(api, job["jobId"], "output", job_key, b"Hello, world!").json()["size"] == 13
    assert report(api, job["jobId"], job_key, "completed").json()["status"] == "completed"
    assert report(api, job["jobId"], job_key, "completed").status_code == 200
    done = get_job(api, job["jobId"])
    assert done["timestampFinishedSec"] is not None and done["error"] is None
    assert done["outputFileResults"][0]["size"] == 13
    statuses = [e["status"] for e in events(api, job["jobId"]) if e["status"]]
    assert statuses == ["pending", "starting", "running", "completed"]


ILLEGAL_TRANSITIONS = [
    ([], "completed", "starting"),
    ([], "pending", "starting"),
    (["running"], "starting", "running"),
    (["running"], "pending", "running"),
    (["failed"], "running", "final"),
    (["failed"], "completed", "final"),
    (["running", "failed"], "starting", "final"),
]


def test_illegal_transitions_are_refused_and_change_nothing(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    for i, (path, new, expected_words) in enumerate(ILLEGAL_TRANSITIONS):
        job = submit(api, seeded, hello1(f"t{i}"))
        claim(api, cc)
        for st in path:
            assert report(api, job["jobId"], cc.key, st).status_code == 200
        before, before_events = get_job(api, job["jobId"]), events(api, job["jobId"])
        r = report(api, job["jobId"], cc.key, new)
        assert r.status_code == 409, (path, new, r.text)
        assert expected_words in r.json()["detail"]
        assert get_job(api, job["jobId"]) == before and events(api, job["jobId"]) == before_events


def test_status_rejects_bad_bodies(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    bad: list[Any] = [
        {"status": "done"}, {}, {"status": "failed", "error": 5}, {"status": "failed", "reason": "x"},
        {"status": "failed", "error": "x" * 100_001}, ["failed"],
    ]
    for body in bad:
        r = api.post(f"/v1/compute/jobs/{job['jobId']}/status", json=body, headers=cc.headers)
        assert r.status_code == 422, (body, r.text)
    r = report(api, job["jobId"], cc.key, "running", error="oops")
    assert r.status_code == 400 and "only accepted with status 'failed'" in r.json()["detail"]
    assert get_job(api, job["jobId"])["status"] == "starting"


def test_completed_needs_every_declared_output(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    claim(api, cc)
    report(api, job["jobId"], cc.key, "running")
    r = report(api, job["jobId"], cc.key, "completed")
    assert r.status_code == 409 and "output" in r.json()["detail"] and "PUT" in r.json()["detail"]
    assert get_job(api, job["jobId"])["status"] == "running"


def test_failed_report_keeps_the_error_without_secrets(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1(), secrets=[{"name": "TOKEN", "value": "hunter2-secret"}])
    claim(api, cc)
    r = report(api, job["jobId"], cc.key, "failed", "exit code 3: could not log in with hunter2-secret")
    assert r.status_code == 200
    failed = get_job(api, job["jobId"])
    assert failed["status"] == "failed" and failed["timestampFinishedSec"] is not None
    assert "exit code 3" in failed["error"] and "hunter2-secret" not in failed["error"]
    assert "hunter2-secret" not in api.get(f"/v1/jobs/{job['jobId']}/events").text
    other = submit(api, seeded, hello1("x"))
    claim(api, cc)
    report(api, other["jobId"], cc.key, "failed")
    assert "without an error message" in get_job(api, other["jobId"])["error"]


def test_a_completed_dependency_makes_its_dependant_runnable(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    producer = submit(api, seeded, hello2())
    consumer = submit(api, seeded, count_chars(producer["outputFileResults"][0]["url"]))
    [claimed] = claim(api, cc, maxJobs=10)
    assert claimed["jobId"] == producer["jobId"]
    run_and_complete(api, claimed, cc.key)
    assert get_job(api, consumer["jobId"])["isRunnable"] is True
    assert [j["jobId"] for j in claim(api, cc)] == [consumer["jobId"]]


def test_a_failed_dependency_fails_its_dependants(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    producer = submit(api, seeded, hello2())
    consumer = submit(api, seeded, count_chars(producer["outputFileResults"][0]["url"]))
    claim(api, cc)
    report(api, producer["jobId"], cc.key, "running")
    report(api, producer["jobId"], cc.key, "failed", "out of memory")
    dependant = get_job(api, consumer["jobId"])
    assert dependant["status"] == "failed"
    assert producer["jobId"] in dependant["error"] and "out of memory" in dependant["error"]


def test_job_calls_need_the_right_key(api: httpx.Client, seeded: Seed) -> None:
    owner, other = register(api, seeded, "owner"), register(api, seeded, "other")
    job = submit(api, seeded, hello1())
    second = submit(api, seeded, hello1("second"))
    [a, b] = claim(api, owner, maxJobs=2)
    path = f"/v1/compute/jobs/{job['jobId']}/status"
    assert api.post(path, json={"status": "running"}).status_code == 401
    r = api.post(path, json={"status": "running"}, headers=auth(b["jobPrivateKey"]))
    assert r.status_code == 401, "another job's key"
    assert b["jobPrivateKey"] not in r.text
    r = api.post(path, json={"status": "running"}, headers=other.headers)
    assert r.status_code == 403 and "not claimed by compute client other" in r.json()["detail"]
    assert api.post(path, json={"status": "running"}, headers=auth(seeded.key)).status_code == 401, "users cannot set status"
    assert api.post("/v1/compute/jobs/nosuchjob/status", json={"status": "running"}, headers=owner.headers).status_code == 404
    assert get_job(api, job["jobId"])["status"] == "starting"
    assert api.get(f"/v1/compute/jobs/{second['jobId']}", headers=other.headers).status_code == 403
    assert a["jobId"] == job["jobId"]


# ---------------------------------------------------------------- heartbeat and cancellation


def test_heartbeat_tells_the_bridge_which_jobs_to_stop(api: httpx.Client, seeded: Seed) -> None:
    cc, other = register(api, seeded, "cc"), register(api, seeded, "other")
    ids = [submit(api, seeded, hello1(f"h{i}"))["jobId"] for i in range(4)]
    claim(api, cc, maxJobs=4)
    keep, cancel, finished, deleted = ids
    api.post(f"/v1/jobs/{cancel}/cancel", headers=auth(seeded.key))
    report(api, finished, cc.key, "failed", "boom")
    assert api.delete(f"/v1/jobs/{deleted}", headers=auth(seeded.key)).status_code == 204
    other_job = submit(api, seeded, hello1("other"))["jobId"]
    claim(api, other)
    r = api.post("/v1/compute/heartbeat", json={"activeJobIds": [keep, finished, deleted, other_job]}, headers=cc.headers)
    assert r.status_code == 200
    assert r.json()["cancelJobIds"] == sorted([cancel, finished, deleted, other_job]), "a canceled job is listed even if not given"
    assert r.json()["heartbeatTimeoutSec"] > 0
    assert api.get("/v1/compute/canceled-jobs", headers=cc.headers).json() == {"jobIds": [cancel]}
    assert api.get(f"/v1/compute-clients/{cc.id}").json()["timestampLastActiveSec"] is not None


def test_heartbeat_rejects_bad_bodies(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    assert api.post("/v1/compute/heartbeat", content=b"[", headers={**cc.headers, "Content-Type": "application/json"}).status_code == 422
    bad: list[dict[str, Any]] = [
        {"activeJobIds": "abc"}, {"activeJobIds": [1]}, {"jobs": []}, {"activeJobIds": ["x" * 101]}, {"activeJobIds": ["j"] * 10_001},
    ]
    for body in bad:
        assert api.post("/v1/compute/heartbeat", json=body, headers=cc.headers).status_code == 422, body


def test_a_canceled_job_reported_failed_says_who_canceled_it(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    assert report(api, job["jobId"], cc.key, "running").json()["canceled"] is False
    api.post(f"/v1/jobs/{job['jobId']}/cancel", headers=auth(seeded.key))
    assert report(api, job["jobId"], cc.key, "running").json()["canceled"] is True, "status answers carry the cancel request"
    report(api, job["jobId"], cc.key, "failed", "killed with SIGTERM")
    error = get_job(api, job["jobId"])["error"]
    assert error.startswith("canceled by alice") and "SIGTERM" in error


def test_a_canceled_job_that_completes_anyway_fails(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    [claimed] = claim(api, cc)
    report(api, job["jobId"], cc.key, "running")
    api.post(f"/v1/jobs/{job['jobId']}/cancel", headers=auth(seeded.key))
    r = report(api, job["jobId"], claimed["jobPrivateKey"], "completed")
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert get_job(api, job["jobId"])["error"].startswith("canceled by alice")


# ---------------------------------------------------------------- console output


def console(api: httpx.Client, job_id: str, key: str, offset: Any, data: bytes) -> httpx.Response:
    return api.post(f"/v1/compute/jobs/{job_id}/console-output", params={"offset": offset}, content=data, headers=auth(key))


def test_console_output_appends_at_offsets_and_tolerates_retries(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    [claimed] = claim(api, cc)
    jid = job["jobId"]
    assert console(api, jid, cc.key, 0, b"hello ").json() == {"consoleOutputSize": 6, "truncated": False}
    assert console(api, jid, cc.key, 0, b"hello ").json()["consoleOutputSize"] == 6, "a retry changes nothing"
    assert console(api, jid, claimed["jobPrivateKey"], 6, b"world\n").json()["consoleOutputSize"] == 12
    assert console(api, jid, cc.key, 11, b"\nagain\n").json()["consoleOutputSize"] == 18, "overlapping retry"
    r = console(api, jid, cc.key, 100, b"lost")
    assert r.status_code == 409 and r.json()["consoleOutputSize"] == 18 and "resend from offset 18" in r.json()["detail"]
    assert api.get(f"/v1/jobs/{jid}/console-output").content == b"hello world\nagain\n"
    assert api.get(f"/v1/compute/jobs/{jid}", headers=cc.headers).json()["consoleOutputSize"] == 18
    for params in ({"offset": -1}, {"offset": "abc"}, {}):
        r = api.post(f"/v1/compute/jobs/{jid}/console-output", params=params, content=b"x", headers=cc.headers)
        assert r.status_code == 422, params
    assert console(api, jid, "wrong-key", 18, b"x").status_code == 401
    assert api.get(f"/v1/jobs/{jid}/console-output").content == b"hello world\nagain\n"


def test_console_output_is_capped(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    ctx.settings.max_console_output_bytes = 10
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    assert console(api, job["jobId"], cc.key, 0, b"0123456789abcdef").json() == {"consoleOutputSize": 10, "truncated": True}
    assert console(api, job["jobId"], cc.key, 16, b"more").json() == {"consoleOutputSize": 10, "truncated": True}
    assert api.get(f"/v1/jobs/{job['jobId']}/console-output").content == b"0123456789"
    assert any("limit of 10 bytes" in e["message"] for e in events(api, job["jobId"]))


def test_console_output_only_for_claimed_jobs_and_a_final_flush(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    pending = submit(api, seeded, hello1("pending"))
    assert console(api, pending["jobId"], cc.key, 0, b"x").status_code == 403, "not this client's job"
    [claimed] = claim(api, cc)
    jid = claimed["jobId"]
    report(api, jid, cc.key, "failed", "crashed")
    assert console(api, jid, cc.key, 0, b"last words\n").status_code == 200, "a final flush after the end is kept"
    set_job_columns(ctx, jid, timestamp_finished_sec=time.time() - 3600)
    r = console(api, jid, cc.key, 11, b"too late")
    assert r.status_code == 409 and "no longer" in r.json()["detail"]
    assert api.get(f"/v1/jobs/{jid}/console-output").content == b"last words\n"


# ---------------------------------------------------------------- output files


def test_outputs_only_declared_ones_with_valid_names(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    claim(api, cc)
    jid = job["jobId"]
    r = upload(api, jid, "other", cc.key, b"x")
    assert r.status_code == 404 and "declares no output 'other'" in r.json()["detail"] and "output" in r.json()["detail"]
    assert upload(api, jid, "..", cc.key, b"x").status_code == 405, "the client resolves '..': PUT /v1/compute/jobs/<id>"
    assert upload(api, jid, "%2e%2e", cc.key, b"x").status_code == 400
    assert upload(api, jid, ".hidden", cc.key, b"x").status_code == 400
    assert upload(api, jid, "..%2F..%2Fescape", cc.key, b"x").status_code == 404, "a slash never reaches the route"
    assert upload(api, jid, "output", "wrong-key", b"x").status_code == 401
    assert upload(api, jid, "output", seeded.key, b"x").status_code == 401
    assert get_job(api, jid)["outputFileResults"][0]["size"] is None
    assert files_under(ctx.settings.files_dir) == [], "nothing written by refused uploads"
    assert upload(api, jid, "output", cc.key, b"starting is fine").status_code == 200


def test_output_upload_replaces_and_is_refused_after_the_job_ended(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    claim(api, cc)
    jid = job["jobId"]
    report(api, jid, cc.key, "running")
    upload(api, jid, "output", cc.key, b"first version")
    assert upload(api, jid, "output", cc.key, b"second").json()["size"] == 6
    report(api, jid, cc.key, "completed")
    r = upload(api, jid, "output", cc.key, b"third")
    assert r.status_code == 409 and "completed" in r.json()["detail"]
    url = get_job(api, jid)["outputFileResults"][0]["url"]
    assert api.get(url).content == b"second"
    assert [n for n in files_under(ctx.settings.files_dir) if n.startswith(".upload")] == [], "no temp files left"


def test_uploads_above_the_json_limit_pass_but_above_the_upload_limit_get_413(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    claim(api, cc)
    big = b"x" * (2 * 1024 * 1024)  # over the 1 MiB JSON limit of the test hub
    assert upload(api, job["jobId"], "output", cc.key, big).json()["size"] == len(big)
    too_big = b"x" * (ctx.settings.max_upload_bytes + 1)
    r = upload(api, job["jobId"], "output", cc.key, too_big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert get_job(api, job["jobId"])["outputFileResults"][0]["size"] == len(big), "a refused upload changes nothing"


# ---------------------------------------------------------------- resource utilization log


def test_resource_log_is_stored_and_validated(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    url = f"/v1/compute/jobs/{job['jobId']}/resource-utilization-log"
    assert api.get(f"/v1/jobs/{job['jobId']}/resource-utilization-log").status_code == 404
    r = api.put(url, content=b'{"t": 1}\nnot json\n', headers=cc.headers)
    assert r.status_code == 400 and "line 2" in r.json()["detail"]
    assert api.put(url, content=b"\xff\xfe", headers=cc.headers).status_code == 400
    r = api.put(url, content=b"x" * (ctx.settings.max_json_body_bytes + 1), headers=cc.headers)
    assert r.status_code == 413
    assert api.put(url, content=b'{"t": 1}\n', headers=auth("bad")).status_code == 401
    assert api.get(f"/v1/jobs/{job['jobId']}/resource-utilization-log").status_code == 404
    log = b'{"t": 1, "cpu": 0.5}\n\n{"t": 2, "cpu": 0.7}\n'
    assert api.put(url, content=log, headers=cc.headers).json() == {"size": len(log)}
    served = api.get(f"/v1/jobs/{job['jobId']}/resource-utilization-log")
    assert served.status_code == 200 and served.content == log


def test_streamed_uploads_over_real_http(ctx: HubContext, seeded: Seed, live_hub: Any) -> None:
    """Chunked uploads (no Content-Length) are streamed to disk, and cut off with 413 past the limit."""
    limit = ctx.settings.max_upload_bytes

    def chunks(total: int, size: int = 256 * 1024) -> Any:
        sent = 0
        while sent < total:
            n = min(size, total - sent)
            sent += n
            yield b"y" * n

    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        cc = register(api, seeded)
        job = submit(api, seeded, hello2())
        claim(api, cc)
        url = f"/v1/compute/jobs/{job['jobId']}/outputs/output"
        r = api.put(url, content=chunks(1536 * 1024), headers=cc.headers)
        assert r.status_code == 200 and r.json()["size"] == 1536 * 1024
        try:
            r = api.put(url, content=chunks(limit + 1024 * 1024), headers=cc.headers)
            assert r.status_code == 413
        except httpx.TransportError:
            pass  # the hub may close the connection while the client is still sending
        assert get_job(api, job["jobId"])["outputFileResults"][0]["size"] == 1536 * 1024
    assert [n for n in files_under(ctx.settings.files_dir) if n.startswith(".upload")] == []


def test_notes_go_on_the_timeline_of_an_active_job_only(api: httpx.Client, seeded: Seed) -> None:
    client = register(api, seeded)
    job = submit(api, seeded, hello1("notes"), secrets=[{"name": "TOKEN", "value": "s3cr3t-value"}])
    (claimed,) = claim(api, client)
    key = claimed["jobPrivateKey"]
    url = f"/v1/compute/jobs/{job['jobId']}/notes"
    assert api.post(url, json={"message": "waiting in the slurm queue: Priority"}, headers=auth(key)).status_code == 204
    assert api.post(url, json={"message": "token is s3cr3t-value\n" + "x" * 5000}, headers=client.headers).status_code == 204
    messages = [e["message"] for e in events(api, job["jobId"])]
    assert "waiting in the slurm queue: Priority" in messages
    leaked = [m for m in messages if m.startswith("token is")]
    assert leaked and "s3cr3t-value" not in leaked[0] and len(leaked[0]) <= 1000
    assert api.post(url, json={"message": "   "}, headers=auth(key)).status_code == 400
    assert api.post(url, json={"message": ""}, headers=auth(key)).status_code == 422
    assert api.post(url, json={"message": "not mine"}, headers=auth(seeded.key)).status_code in (401, 403)
    assert report(api, job["jobId"], key, "failed", "stopped").status_code == 200
    assert api.post(url, json={"message": "too late"}, headers=auth(key)).status_code == 409


def test_notes_of_several_jobs_go_in_one_call_each_taken_or_refused_on_its_own(api: httpx.Client, seeded: Seed) -> None:
    client, other = register(api, seeded, "cc"), register(api, seeded, "other")
    jobs = [submit(api, seeded, hello1(f"notes {i}"), secrets=[{"name": "TOKEN", "value": "s3cr3t-value"}]) for i in range(3)]
    mine = claim(api, client, maxJobs=2)
    (theirs,) = claim(api, other)
    ended = mine[1]
    assert report(api, ended["jobId"], client.key, "failed", "stopped").status_code == 200
    notes = [
        {"jobId": mine[0]["jobId"], "message": "submitted as Slurm job 7"},
        {"jobId": mine[0]["jobId"], "message": "waiting in the slurm queue: Priority (token s3cr3t-value)"},
        {"jobId": ended["jobId"], "message": "too late"},
        {"jobId": theirs["jobId"], "message": "not mine"},
        {"jobId": "nosuchjob", "message": "gone"},
        {"jobId": mine[0]["jobId"], "message": "  "},
    ]
    r = api.post("/v1/compute/notes", json={"notes": notes}, headers=client.headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["added"] == 2
    assert [(n["jobId"], n["statusCode"]) for n in answer["refused"]] == [
        (ended["jobId"], 409), (theirs["jobId"], 403), ("nosuchjob", 404), (mine[0]["jobId"], 400),
    ]
    assert all(n["detail"] for n in answer["refused"])
    messages = [e["message"] for e in events(api, mine[0]["jobId"]) if e.get("message")]
    added = [m for m in messages if m.startswith(("submitted as", "waiting in"))]
    assert len(added) == 2 and added[0] == "submitted as Slurm job 7", added  # in the order sent
    assert added[1].startswith("waiting in the slurm queue: Priority") and "s3cr3t-value" not in added[1], added
    for job in jobs:
        assert not any(e.get("message") in ("too late", "not mine", "gone") for e in events(api, job["jobId"]))


@pytest.mark.parametrize(
    "body",
    [
        {"notes": []},
        {"notes": [{"jobId": "x", "message": ""}]},
        {"notes": [{"jobId": "", "message": "m"}]},
        {"notes": [{"jobId": "x" * 101, "message": "m"}]},
        {"notes": [{"jobId": "x", "message": "m", "extra": 1}]},
        {"notes": [{"jobId": "x", "message": "m"}] * 501},
        {"notes": "x"},
        {},
    ],
)
def test_a_bad_notes_call_is_refused_whole_and_adds_nothing(api: httpx.Client, seeded: Seed, body: dict[str, Any]) -> None:
    client = register(api, seeded)
    job = submit(api, seeded, hello1("bad notes"))
    claim(api, client)
    before = events(api, job["jobId"])
    r = api.post("/v1/compute/notes", json=body, headers=client.headers)
    assert r.status_code == 422 and "detail" in r.json(), r.text
    assert events(api, job["jobId"]) == before


def test_the_notes_call_takes_a_compute_client_key_only(api: httpx.Client, seeded: Seed) -> None:
    client = register(api, seeded)
    job = submit(api, seeded, hello1("keys"))
    (claimed,) = claim(api, client)
    note = {"notes": [{"jobId": job["jobId"], "message": "by whom?"}]}
    for headers in (auth(claimed["jobPrivateKey"]), auth(seeded.key), auth("not-a-key"), {}):
        r = api.post("/v1/compute/notes", json=note, headers=headers)
        assert r.status_code in (401, 403), r.text
    assert not any(e.get("message") == "by whom?" for e in events(api, job["jobId"]))


def test_running_reports_of_several_jobs_go_in_one_call_each_taken_or_refused_on_its_own(api: httpx.Client, seeded: Seed) -> None:
    client, other = register(api, seeded, "cc"), register(api, seeded, "other")
    for i in range(5):
        submit(api, seeded, hello1(f"running {i}"))
    mine = claim(api, client, maxJobs=4, aheadJobs=4)
    (theirs,) = claim(api, other)
    fresh, canceled, ended, again = (j["jobId"] for j in mine)
    api.post(f"/v1/jobs/{canceled}/cancel", headers=auth(seeded.key))
    assert report(api, ended, client.key, "failed", "stopped").status_code == 200
    assert report(api, again, client.key, "running").status_code == 200
    ids = [fresh, canceled, ended, theirs["jobId"], "nosuchjob", again]
    r = api.post("/v1/compute/running", json={"jobIds": ids}, headers=client.headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    taken = {j["jobId"]: j for j in answer["jobs"]}
    assert list(taken) == [fresh, canceled, again]  # a repeat is taken as it is (nothing changes)
    assert all(j["status"] == "running" for j in taken.values())
    assert taken[canceled]["canceled"] and not taken[fresh]["canceled"]
    assert [(n["jobId"], n["statusCode"]) for n in answer["refused"]] == [(ended, 409), (theirs["jobId"], 403), ("nosuchjob", 404)]
    assert get_job(api, fresh)["status"] == "running" and get_job(api, ended)["status"] == "failed"
    assert get_job(api, theirs["jobId"])["status"] == "starting"
    assert [e["status"] for e in events(api, fresh) if e["status"]] == ["pending", "starting", "running"]


@pytest.mark.parametrize(
    "body", [{"jobIds": []}, {"jobIds": [""]}, {"jobIds": ["x" * 101]}, {"jobIds": ["x"] * 501}, {"jobIds": "x"}, {"jobIds": ["x"], "extra": 1}, {}]
)
def test_a_bad_running_call_is_refused_whole_and_changes_nothing(api: httpx.Client, seeded: Seed, body: dict[str, Any]) -> None:
    client = register(api, seeded)
    job = submit(api, seeded, hello1("bad running"))
    claim(api, client)
    r = api.post("/v1/compute/running", json=body, headers=client.headers)
    assert r.status_code == 422 and "detail" in r.json(), r.text
    assert get_job(api, job["jobId"])["status"] == "starting"


def test_the_running_call_takes_a_compute_client_key_only(api: httpx.Client, seeded: Seed) -> None:
    client = register(api, seeded)
    job = submit(api, seeded, hello1("running keys"))
    (claimed,) = claim(api, client)
    for headers in (auth(claimed["jobPrivateKey"]), auth(seeded.key), auth("not-a-key"), {}):
        r = api.post("/v1/compute/running", json={"jobIds": [job["jobId"]]}, headers=headers)
        assert r.status_code in (401, 403), r.text
    assert get_job(api, job["jobId"])["status"] == "starting"


def test_finish_reports_console_tail_resource_log_and_status_in_one_call(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    jid = job["jobId"]
    url = f"/v1/compute/jobs/{jid}/finish"
    assert report(api, jid, cc.key, "running").status_code == 200
    assert console(api, jid, cc.key, 0, b"start\n").status_code == 200
    log = '{"timestampSec": 1, "cpuPercent": 5}\n'
    body = {"status": "failed", "error": "processor exited with code 3", "consoleOffset": 6,
            "consoleBase64": base64.b64encode(b"end\n").decode(), "resourceLog": log}
    # all or nothing: a bad offset, a bad log or a bad body leave the job running with its console as it was
    r = api.post(url, json={**body, "consoleOffset": 100}, headers=cc.headers)
    assert r.status_code == 409 and r.json()["consoleOutputSize"] == 6
    r = api.post(url, json={**body, "resourceLog": "not json\n"}, headers=cc.headers)
    assert r.status_code == 400 and "line 1" in r.json()["detail"]
    for bad in ({"consoleBase64": "***"}, {"consoleBase64": "Zm9v\u00dbYmFy"}, {"consoleOffset": None}, {"status": "running"}, {"extra": 1}):
        r = api.post(url, json={**body, **bad}, headers=cc.headers)
        assert r.status_code in (400, 422), (bad, r.text)
        assert "detail" in r.json()
    assert api.post(url, json=body, headers=auth("bad")).status_code == 401
    assert get_job(api, jid)["status"] == "running"
    assert api.get(f"/v1/jobs/{jid}/console-output").content == b"start\n"
    r = api.post(url, json=body, headers=cc.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"jobId": jid, "status": "failed", "canceled": False, "error": "processor exited with code 3", "consoleOutputSize": 10}
    again = api.post(url, json=body, headers=cc.headers)
    assert again.status_code == 200 and again.json() == r.json(), "a repeat changes nothing"
    assert api.get(f"/v1/jobs/{jid}/console-output").content == b"start\nend\n"
    assert api.get(f"/v1/jobs/{jid}/resource-utilization-log").text == log
    assert get_job(api, jid)["status"] == "failed"
    # a final status the job cannot take is refused like /status refuses it
    assert api.post(url, json={"status": "completed"}, headers=cc.headers).status_code == 409


def test_finish_with_a_claim_fills_the_slot_the_job_frees(api: httpx.Client, seeded: Seed) -> None:
    roles = {"admin": False, "createJobs": False, "processJobs": True}
    assert api.put(f"/v1/services/{seeded.service}/users/bob", json=roles, headers=auth(seeded.key)).status_code == 200
    cc = register(api, seeded, "one slot", slots=[{**SLOT, "multiplicity": 1}], user_key=seeded.other_key)
    first, second, third = (submit(api, seeded, hello1(f"slot {i}")) for i in range(3))
    assert [j["jobId"] for j in claim(api, cc)] == [first["jobId"]]
    assert claim(api, cc) == [], "the one slot is taken"
    failed = {"status": "failed", "error": "exit code 1"}

    def finish(job_id: str, **body: Any) -> httpx.Response:
        return api.post(f"/v1/compute/jobs/{job_id}/finish", json={**failed, **body}, headers=cc.headers)

    # a bad claim refuses the whole call: the job stays as it was
    for bad in ({"maxJobs": 0}, {"waitSec": 5}, {"capacity": {"numCpus": -1}}):
        r = finish(first["jobId"], claim=bad)
        assert r.status_code == 422 and "detail" in r.json(), (bad, r.text)
    assert get_job(api, first["jobId"])["status"] == "starting"

    r = finish(first["jobId"], claim={"maxJobs": 2})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "failed" and answer["consoleOutputSize"] == 0
    (taken,) = answer["claimedJobs"]  # the freed slot holds one job: the second stays pending
    assert taken["jobId"] == second["jobId"] and taken["jobPrivateKey"] and taken["status"] == "starting"
    assert get_job(api, third["jobId"])["status"] == "pending"
    assert report(api, second["jobId"], taken["jobPrivateKey"], "running").status_code == 200, "its key works"

    # a refused report claims nothing
    r = finish(first["jobId"], status="completed", error=None, claim={})
    assert r.status_code == 409
    assert get_job(api, third["jobId"])["status"] == "pending"

    # a claim refused after the report was committed: the report stands, the answer claims nothing
    api.put(f"/v1/services/{seeded.service}/users/bob", json={**roles, "processJobs": False}, headers=auth(seeded.key))
    r = finish(second["jobId"], claim={})
    assert r.status_code == 200, r.text
    assert r.json()["claimedJobs"] == [] and get_job(api, second["jobId"])["status"] == "failed"
    assert get_job(api, third["jobId"])["status"] == "pending"
    # without a claim the answer is as before
    assert "claimedJobs" not in finish(second["jobId"]).json()


def test_a_short_job_is_reported_running_and_finished_in_one_call(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    jobs = [submit(api, seeded, hello1(f"short {i}")) for i in range(3)]
    claimed = claim(api, cc, maxJobs=3)
    assert len(claimed) == 3
    first, second, third = (j["jobId"] for j in jobs)
    claimed_at = get_job(api, first)["timestampStartingSec"]
    url = "/v1/compute/jobs/{}/finish"
    # without startedAgoSec, a job still starting cannot complete: it never ran, as far as the hub knows
    r = api.post(url.format(first), json={"status": "completed"}, headers=cc.headers)
    assert r.status_code == 409 and "starting" in r.json()["detail"]
    r = api.post(url.format(first), json={"status": "completed", "startedAgoSec": 0.25}, headers=cc.headers)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    done = get_job(api, first)
    assert claimed_at <= done["timestampStartedSec"] <= done["timestampFinishedSec"]
    statuses = [e["status"] for e in events(api, first) if e["status"]]
    assert statuses[-3:] == ["starting", "running", "completed"], statuses
    # never before its claim, however long ago the bridge says; a failure the same way; a repeat changes nothing
    r = api.post(url.format(second), json={"status": "failed", "error": "exit 1", "startedAgoSec": 10_000}, headers=cc.headers)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert get_job(api, second)["timestampStartedSec"] >= get_job(api, second)["timestampStartingSec"]
    again = api.post(url.format(second), json={"status": "failed", "error": "exit 1", "startedAgoSec": 1}, headers=cc.headers)
    assert again.status_code == 200 and [e["status"] for e in events(api, second)].count("running") == 1
    # a job already running: the field changes nothing; bad values are refused and lose nothing
    assert report(api, third, cc.key, "running").status_code == 200
    started = get_job(api, third)["timestampStartedSec"]
    for bad in (-1, "soon", 1e12, float("nan")):
        r = api.post(url.format(third), content=json.dumps({"status": "completed", "startedAgoSec": bad}).encode(),
                     headers={**cc.headers, "Content-Type": "application/json"})
        assert r.status_code == 422, (bad, r.text)
    assert get_job(api, third)["status"] == "running"
    r = api.post(url.format(third), json={"status": "completed", "startedAgoSec": 5}, headers=cc.headers)
    assert r.status_code == 200 and get_job(api, third)["timestampStartedSec"] == started
