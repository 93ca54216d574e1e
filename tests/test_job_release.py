"""``POST /v1/compute/jobs/{id}/release``: a bridge gives back a job it claimed ahead and could not start."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from hub.context import HubContext

from .conftest import auth
from .hubtools import LiveHub, Seed, hello2
from .test_compute_api import Client, claim, events, get_job, register, report, submit


def release(api: httpx.Client, job_id: str, key: str, reason: str = "no slot freed within 30 s") -> httpx.Response:
    return api.post(f"/v1/compute/jobs/{job_id}/release", json={"reason": reason}, headers=auth(key))


def test_a_released_job_is_pending_again_for_any_compute_client(api: httpx.Client, seeded: Seed) -> None:
    first, second = register(api, seeded, "first"), register(api, seeded, "second")
    job = submit(api, seeded, hello2())
    [claimed] = claim(api, first)
    r = release(api, job["jobId"], first.key, "claimed ahead;   no slot freed\nwithin 30 s")
    assert r.status_code == 200, r.text
    assert r.json() == {"jobId": job["jobId"], "status": "pending", "canceled": False, "error": None}
    after = get_job(api, job["jobId"])
    assert after["status"] == "pending" and after["computeClientId"] is None
    last = events(api, job["jobId"])[-1]
    assert last["status"] == "pending"
    assert "first" in last["message"] and "claimed ahead; no slot freed within 30 s" in last["message"]
    # the old job key is void; the next claim gets the job, with a new key
    assert report(api, job["jobId"], claimed["jobPrivateKey"], "running").status_code == 401
    [again] = claim(api, second)
    assert again["jobId"] == job["jobId"] and again["jobPrivateKey"] != claimed["jobPrivateKey"]
    assert report(api, job["jobId"], second.key, "running").status_code == 200


def test_only_a_starting_job_of_ones_own_can_be_released(api: httpx.Client, seeded: Seed) -> None:
    owner, other = register(api, seeded, "owner"), register(api, seeded, "other")
    job = submit(api, seeded, hello2())
    [claimed] = claim(api, owner)
    assert release(api, job["jobId"], other.key).status_code == 403
    assert release(api, job["jobId"], claimed["jobPrivateKey"]).status_code == 403  # the job's own key: not its to give back
    assert release(api, "no-such-job", owner.key).status_code == 404
    assert release(api, job["jobId"], "not a key").status_code == 401
    assert report(api, job["jobId"], owner.key, "running").status_code == 200
    r = release(api, job["jobId"], owner.key)
    assert r.status_code == 409 and "running" in r.json()["detail"] and "report its end" in r.json()["detail"]
    assert get_job(api, job["jobId"])["status"] == "running"
    # a second release of a job already given back: not this client's any more
    job2 = submit(api, seeded, hello2(name="again"))
    claim(api, owner)
    assert release(api, job2["jobId"], owner.key).status_code == 200
    assert release(api, job2["jobId"], owner.key).status_code == 403


def test_a_released_job_its_user_canceled_fails_as_canceled(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    claim(api, cc)
    api.post(f"/v1/jobs/{job['jobId']}/cancel", headers=auth(seeded.key))
    r = release(api, job["jobId"], cc.key)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert get_job(api, job["jobId"])["error"].startswith("canceled by alice")


def test_release_rejects_bad_bodies(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    claim(api, cc)
    for body in ({"reason": 5}, {"reason": "x" * 10_001}, {"extra": 1}, [1]):
        r = api.post(f"/v1/compute/jobs/{job['jobId']}/release", json=body, headers=cc.headers)
        assert r.status_code == 422, (body, r.text)
    assert get_job(api, job["jobId"])["status"] == "starting"


def test_a_claim_takes_jobs_beyond_the_slots_only_as_far_as_it_asks_ahead(api: httpx.Client, seeded: Seed) -> None:
    one_slot = [{"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 3600, "multiplicity": 1}]
    cc = register(api, seeded, slots=one_slot)
    jobs = [submit(api, seeded, hello2(name=f"n{i}")) for i in range(4)]
    assert [j["jobId"] for j in claim(api, cc, maxJobs=3)] == [jobs[0]["jobId"]]  # one slot: one job
    assert claim(api, cc) == []
    # ahead of a free slot: as many as aheadJobs, counting those it holds already
    assert [j["jobId"] for j in claim(api, cc, maxJobs=3, aheadJobs=1)] == [jobs[1]["jobId"]]
    assert claim(api, cc, aheadJobs=1) == []
    assert [j["jobId"] for j in claim(api, cc, maxJobs=3, aheadJobs=2)] == [jobs[2]["jobId"]]
    # a job given back frees its place ahead
    assert release(api, jobs[1]["jobId"], cc.key).status_code == 200
    assert [j["jobId"] for j in claim(api, cc, aheadJobs=2)] == [jobs[1]["jobId"]]
    for body in ({"aheadJobs": -1}, {"aheadJobs": 65}, {"aheadJobs": "two"}):
        r = api.post("/v1/compute/claim", json=body, headers=cc.headers)
        assert r.status_code == 422, (body, r.text)



ONE_SLOT = [{"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 3600, "multiplicity": 1}]


@contextmanager
def waiting_claims(live_hub: LiveHub, client: Client, apps: list[str]) -> Iterator[None]:
    """``client`` long-polls claims for ``apps`` over real HTTP (in a thread) until the block ends; none gets a job."""
    stop = threading.Event()
    answers: list[httpx.Response] = []

    def poll() -> None:
        with httpx.Client(base_url=live_hub.url, timeout=60) as http:
            while not stop.is_set():
                answers.append(http.post("/v1/compute/claim", json={"apps": apps, "waitSec": 0.3}, headers=client.headers))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert answers and all(r.status_code == 200 and r.json()["jobs"] == [] for r in answers)


def test_no_job_is_claimed_ahead_while_another_client_that_runs_its_app_waits_in_a_claim(
    api: httpx.Client, seeded: Seed, live_hub: LiveHub, ctx: HubContext
) -> None:
    busy, other_app = register(api, seeded, "busy", slots=ONE_SLOT), register(api, seeded, "other-app", slots=ONE_SLOT)
    # a client of the same app that waits because the pending job does not fit it (it would wait for one that does)
    small = register(api, seeded, "small", slots=[{**ONE_SLOT[0], "memoryGb": 0.5}])
    jobs = [submit(api, seeded, hello2(name=f"n{i}")) for i in range(2)]
    assert [j["jobId"] for j in claim(api, busy, apps=["hello_world"])] == [jobs[0]["jobId"]]  # its one slot is busy
    registry = ctx.claim_waiters

    with waiting_claims(live_hub, small, ["hello_world"]):
        wait_until(lambda: registry.others_waiting(seeded.service, busy.id, frozenset({"hello_world"})), "the waiting claim")
        assert claim(api, busy, apps=["hello_world"], aheadJobs=1) == []  # left pending for the waiting client
        assert claim(api, busy, aheadJobs=1) == []  # a claim for any app: the same
    wait_until(lambda: not registry.others_waiting(seeded.service, busy.id, None), "the waiting claim to end")

    with waiting_claims(live_hub, other_app, ["another_app"]):  # waits for another app's jobs: no reason to hold back
        wait_until(lambda: registry.others_waiting(seeded.service, busy.id, None), "the other app's waiting claim")
        assert not registry.others_waiting(seeded.service, busy.id, frozenset({"hello_world"}))
        assert [j["jobId"] for j in claim(api, busy, apps=["hello_world"], aheadJobs=1)] == [jobs[1]["jobId"]]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
