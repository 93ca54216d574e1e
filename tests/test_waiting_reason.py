"""Why a job waits: ``waitingReason`` and ``queuePosition`` of ``GET /v1/jobs/{id}``, the job page,
and the creation event of a job no compute slot fits; a real hub over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pairio import PairioClient
from pairio.waiting import WaitingCode

from .hubtools import LiveHub, Seed
from .test_compute_api import Client, claim, events, get_job, hello1, register, report, submit
from .test_wire_protocol import call as wire_call
from .test_wire_protocol import get_job as wire_get_job

ONE_CPU_SLOT: dict[str, Any] = {"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 3600, "multiplicity": 1}
SMALL_SLOT: dict[str, Any] = {"numCpus": 2, "numGpus": 0, "memoryGb": 8, "timeSec": 3600, "multiplicity": 4}
RES: dict[str, Any] = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}


@pytest.fixture
def http(live_hub: LiveHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_hub.url, timeout=60) as client:
        yield client


def heartbeat(http: httpx.Client, cc: Client) -> None:
    assert http.post("/v1/compute/heartbeat", json={}, headers=cc.headers).status_code == 200


def reason_of(http: httpx.Client, job_id: str) -> dict[str, Any]:
    reason = get_job(http, job_id)["waitingReason"]
    assert reason is not None, f"job {job_id} has no waiting reason"
    return reason  # type: ignore[no-any-return]


def test_a_job_no_slot_fits_gets_an_event_at_creation_and_says_so_while_pending(http: httpx.Client, seeded: Seed) -> None:
    register(http, seeded, "small", slots=[SMALL_SLOT, {**SMALL_SLOT, "numCpus": 1, "memoryGb": 16}])
    job = submit(http, seeded, hello1("big"), {"numCpus": 64, "numGpus": 0, "memoryGb": 4, "timeSec": 60})
    messages = [e["message"] for e in events(http, job["jobId"])]
    assert messages[0].startswith("created by alice")
    note = messages[1]
    assert "no compute slot of service 'hello_world_service' fits this job" in note, note
    assert "compute client 'small' (2 CPUs, 0 GPUs, 8 GB, 3600 s)" in note and "numCpus: asks 64, the slot has 2 CPUs" in note, note
    assert "stays pending" in note
    detail = get_job(http, job["jobId"])
    assert detail["status"] == "pending"
    reason = detail["waitingReason"]
    assert reason["code"] == WaitingCode.NO_SLOT_FITS.value
    assert reason["largestSlot"]["numCpus"] == 2 and reason["largestSlotComputeClient"] == "small"
    assert reason["doesNotFit"] == ["numCpus: asks 64, the slot has 2 CPUs"]
    assert detail["queuePosition"] == 1  # it is pending and runnable: the position says where it stands, the reason why
    page = http.get(f"/job/{job['jobId']}")
    assert page.status_code == 200
    assert 'id="job-waiting-reason" data-code="no_slot_fits"' in page.text and "numCpus: asks 64, the slot has 2 CPUs" in page.text


def test_a_client_registered_right_after_a_creation_is_seen_by_the_next_creation(http: httpx.Client, seeded: Seed) -> None:
    """The hub remembers a service's compute clients for a moment when creating jobs, "none" included; registering
    or changing a client makes the next creation read them afresh, so its note is not missed."""
    first = submit(http, seeded, hello1("first"), {"numCpus": 64, "numGpus": 0, "memoryGb": 4, "timeSec": 60})
    assert [e["message"] for e in events(http, first["jobId"])][1:] == []  # no client yet: nothing to say
    cc = register(http, seeded, "small", slots=[SMALL_SLOT])
    second = submit(http, seeded, hello1("second"), {"numCpus": 64, "numGpus": 0, "memoryGb": 4, "timeSec": 60})
    assert "numCpus: asks 64, the slot has 2 CPUs" in events(http, second["jobId"])[1]["message"]
    changed = wire_call(http, "setComputeClientInfo", seeded.key, computeClientId=cc.id, computeSlots=[{**SMALL_SLOT, "numCpus": 128}])
    assert changed.status_code == 200, changed.text
    third = submit(http, seeded, hello1("third"), {"numCpus": 64, "numGpus": 0, "memoryGb": 4, "timeSec": 60})
    assert [e["message"] for e in events(http, third["jobId"])][1:] == []  # it fits now


def test_a_job_that_fits_gets_no_such_event_and_a_job_with_no_client_says_none_is_online(http: httpx.Client, seeded: Seed) -> None:
    job = submit(http, seeded, hello1("lonely"), RES)
    assert [e["message"] for e in events(http, job["jobId"])] == ["created by alice"]  # no client registered: nothing to judge yet
    reason = reason_of(http, job["jobId"])
    assert reason["code"] == WaitingCode.NO_COMPUTE_CLIENT_ONLINE.value and "there is no compute client" in reason["message"]
    register(http, seeded, "quiet", slots=[SMALL_SLOT])
    reason = reason_of(http, job["jobId"])
    assert reason["code"] == WaitingCode.NO_COMPUTE_CLIENT_ONLINE.value
    assert "'quiet' never heard from" in reason["message"], reason["message"]
    # right after the registration (the hub remembers a service's clients for a moment): still said
    too_big = submit(http, seeded, hello1("too big"), {**RES, "numCpus": 3})
    assert "numCpus: asks 3, the slot has 2 CPUs" in events(http, too_big["jobId"])[1]["message"]
    fits = submit(http, seeded, hello1("fits"), RES)
    assert [e["message"] for e in events(http, fits["jobId"])] == ["created by alice"]


def test_a_waiting_reason_follows_each_change_of_the_services_clients_at_once(http: httpx.Client, seeded: Seed) -> None:
    """The hub remembers a service's compute clients for a moment for waiting reasons too (hub/core/slot_fit.py);
    a heartbeat, a new label, new slots or a deletion made through this hub shows in the very next read."""
    job = submit(http, seeded, hello1("watched"), RES)
    assert "there is no compute client" in reason_of(http, job["jobId"])["message"]
    cc = register(http, seeded, "quiet", slots=[SMALL_SLOT])
    assert "'quiet' never heard from" in reason_of(http, job["jobId"])["message"]
    heartbeat(http, cc)  # offline is said only from a fresh read: the heartbeat counts at once
    assert reason_of(http, job["jobId"])["code"] == WaitingCode.NOT_CLAIMED_YET.value
    assert "'quiet' has a free slot" in reason_of(http, job["jobId"])["message"]
    renamed = wire_call(http, "setComputeClientInfo", seeded.key, computeClientId=cc.id, computeClientName="loud")
    assert renamed.status_code == 200, renamed.text
    assert "'loud' has a free slot" in reason_of(http, job["jobId"])["message"]
    shrunk = wire_call(http, "setComputeClientInfo", seeded.key, computeClientId=cc.id, computeSlots=[{**SMALL_SLOT, "memoryGb": 0.5}])
    assert shrunk.status_code == 200, shrunk.text
    assert reason_of(http, job["jobId"])["code"] == WaitingCode.NO_SLOT_FITS.value
    assert http.delete(f"/v1/compute-clients/{cc.id}", headers={"Authorization": f"Bearer {seeded.key}"}).status_code == 204
    assert "there is no compute client" in reason_of(http, job["jobId"])["message"]


def test_all_busy_counts_the_jobs_ahead_and_the_queue_position(http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded, "one", slots=[ONE_CPU_SLOT])
    heartbeat(http, cc)
    first = submit(http, seeded, hello1("first"), RES)
    reason = reason_of(http, first["jobId"])
    assert reason["code"] == WaitingCode.NOT_CLAIMED_YET.value and "'one' has a free slot" in reason["message"]
    assert get_job(http, first["jobId"])["queuePosition"] == 1
    [claimed] = claim(http, cc, maxJobs=1)
    assert claimed["jobId"] == first["jobId"]
    others = [submit(http, seeded, hello1(f"next{i}"), RES) for i in range(3)]
    for i, job in enumerate(others):
        detail = get_job(http, job["jobId"])
        assert detail["queuePosition"] == i + 1
        assert detail["waitingReason"]["code"] == WaitingCode.ALL_SLOTS_BUSY.value
        assert detail["waitingReason"]["jobsAhead"] == i
        assert f"all 1 compute slot(s) that fit it are busy (on 1 online compute client(s)); {i} job(s)" in detail["waitingReason"]["message"]
    page = http.get(f"/job/{others[2]['jobId']}").text
    assert 'data-code="all_slots_busy"' in page and "2 job(s) that fit them are ahead of it" in page
    assert 'id="job-queue-position"' in page and "Queue position <strong>3</strong>" in page
    # the claimed job is being prepared; it has no queue position
    started = get_job(http, first["jobId"])
    assert started["waitingReason"]["code"] == WaitingCode.PREPARING.value and started["queuePosition"] is None
    # lists leave the reason out (it costs queries per job)
    listed = http.get("/v1/jobs", params={"serviceName": seeded.service}).json()["jobs"]
    assert listed and all("waitingReason" not in j and "queuePosition" not in j for j in listed)


def test_a_bridges_queue_note_is_the_reason_until_the_job_starts(http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded, "slurm-like", slots=[SMALL_SLOT])
    job = submit(http, seeded, hello1("queued"), RES)
    [claimed] = claim(http, cc)
    key = claimed["jobPrivateKey"]
    assert report(http, job["jobId"], key, "running").status_code == 200
    assert get_job(http, job["jobId"])["waitingReason"] is None
    note = http.post(f"/v1/compute/jobs/{job['jobId']}/notes", json={"message": "waiting in the slurm queue: Resources"}, headers=cc.headers)
    assert note.status_code == 204, note.text
    reason = reason_of(http, job["jobId"])
    assert reason["code"] == WaitingCode.BACKEND_QUEUE.value and reason["backendReason"] == "Resources"
    assert reason["message"] == "waiting in the slurm queue: Resources"
    assert 'data-code="backend_queue"' in http.get(f"/job/{job['jobId']}").text
    http.post(f"/v1/compute/jobs/{job['jobId']}/notes", json={"message": "started on the slurm backend"}, headers=cc.headers)
    assert get_job(http, job["jobId"])["waitingReason"] is None
    assert report(http, job["jobId"], key, "completed").status_code == 200
    final = get_job(http, job["jobId"])
    assert final["waitingReason"] is None and final["queuePosition"] is None


def test_dependencies_are_the_reason_and_the_client_reads_it(http: httpx.Client, seeded: Seed, live_hub: LiveHub) -> None:
    first = submit(http, seeded, hello1("dep"), RES)
    second = submit(http, seeded, hello1("dependant"), RES, jobDependencies=[first["jobId"]])
    reason = reason_of(http, second["jobId"])
    assert reason["code"] == WaitingCode.WAITING_FOR_DEPENDENCIES.value
    assert reason["unfinishedDependencies"] == [first["jobId"]] and first["jobId"] in reason["message"]
    assert get_job(http, second["jobId"])["queuePosition"] is None
    with PairioClient(live_hub.url, seeded.key) as client:
        job = client.get_job(second["jobId"])
        assert job.waitingReason is not None and job.waitingReason.code is WaitingCode.WAITING_FOR_DEPENDENCIES
        assert client.get_job(first["jobId"]).queuePosition == 1


def test_targeted_jobs_judge_only_their_targets(http: httpx.Client, seeded: Seed) -> None:
    big = register(http, seeded, "big", slots=[{**SMALL_SLOT, "numCpus": 64}])
    small = register(http, seeded, "small", slots=[SMALL_SLOT])
    heartbeat(http, big)
    job = submit(http, seeded, hello1("targeted"), {**RES, "numCpus": 32}, targetComputeClientIds=[small.id])
    assert any("no compute slot" in e["message"] for e in events(http, job["jobId"]))
    assert reason_of(http, job["jobId"])["code"] == WaitingCode.NO_SLOT_FITS.value
    anywhere = submit(http, seeded, hello1("anywhere"), {**RES, "numCpus": 32})
    assert not any("no compute slot" in e["message"] for e in events(http, anywhere["jobId"]))
    assert reason_of(http, anywhere["jobId"])["code"] == WaitingCode.NOT_CLAIMED_YET.value


def test_the_wire_protocol_job_keeps_its_fields(http: httpx.Client, seeded: Seed) -> None:
    job = submit(http, seeded, hello1("wire"), RES)
    wire = wire_get_job(http, job["jobId"])
    assert wire["jobId"] == job["jobId"]
    assert "waitingReason" not in wire and "queuePosition" not in wire


def test_a_job_of_an_app_no_online_bridge_runs_says_so(http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded, "other apps", slots=[SMALL_SLOT])
    info = {"host": "node7", "backend": "local", "containerMode": "none", "apps": ["some_other_app"], "version": "1"}
    assert http.post("/v1/compute/heartbeat", json={"activeJobIds": [], "bridge": info}, headers=cc.headers).status_code == 200
    job = submit(http, seeded, hello1("unrun"), RES)
    reason = reason_of(http, job["jobId"])
    assert reason["code"] == WaitingCode.NO_COMPUTE_CLIENT_RUNS_APP.value, reason
    assert "'other apps': some_other_app" in reason["message"] and "pairio-bridge apps add" in reason["message"]
    # once its bridge says it runs the app, the job waits only for the claim
    info["apps"] = ["some_other_app", "hello_world"]
    assert http.post("/v1/compute/heartbeat", json={"activeJobIds": [], "bridge": info}, headers=cc.headers).status_code == 200
    assert reason_of(http, job["jobId"])["code"] == WaitingCode.NOT_CLAIMED_YET.value
