"""Claims over real HTTP: racing compute clients never share a job; long-polls wake at once and hold no threads."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import httpx
import pytest
from sqlalchemy import func, select

from hub.context import HubContext
from hub.core import accounts
from hub.core import jobs as jobs_core
from hub.db.tables import Job
from pairio.models import PairioComputeClientComputeSlot

from .conftest import auth
from .hubtools import LiveHub, Seed
from .test_compute_api import (
    RES,
    Client,
    claim,
    count_chars,
    create_jobs_directly,
    hello1,
    hello2,
    register,
    run_and_complete,
    submit,
)

NUM_CLAIMERS = 20
NUM_JOBS = 500
LONG_WAIT_SEC = 600.0
"""how long a waiting claim or heartbeat would wait: far beyond ANSWER_TIMEOUT_SEC, so an answer within that came early"""
ANSWER_TIMEOUT_SEC = 60.0
"""a bound for an early answer that never comes, not a measure"""


def register_directly(ctx: HubContext, seeded: Seed, n: int) -> list[Client]:
    """Compute clients made in one transaction (faster than n HTTP calls)."""
    slot = PairioComputeClientComputeSlot(numCpus=8, numGpus=0, memoryGb=32, timeSec=3600, multiplicity=NUM_JOBS)
    with ctx.transaction() as s:
        made = [accounts.register_compute_client(s, seeded.service, seeded.user, f"cc{i}", [slot]) for i in range(n)]
        return [Client(id=cc.compute_client_id, key=key) for cc, key in made]


def claim_until_empty(url: str, client: Client, start: threading.Barrier) -> list[str]:
    got: list[str] = []
    rng = random.Random(client.id)
    with httpx.Client(base_url=url, timeout=60) as http:
        start.wait()
        while True:
            r = http.post("/v1/compute/claim", json={"maxJobs": rng.randint(1, 8)}, headers=client.headers)
            assert r.status_code == 200, r.text
            jobs = r.json()["jobs"]
            if not jobs:
                return got
            got.extend(j["jobId"] for j in jobs)


def test_twenty_racing_claimers_never_get_the_same_job(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    clients = register_directly(ctx, seeded, NUM_CLAIMERS)
    job_ids = create_jobs_directly(ctx, seeded, NUM_JOBS)
    start = threading.Barrier(NUM_CLAIMERS)
    with ThreadPoolExecutor(NUM_CLAIMERS) as pool:
        results = list(pool.map(lambda c: claim_until_empty(live_hub.url, c, start), clients))

    claimed = [job_id for got in results for job_id in got]
    assert len(claimed) == len(set(claimed)), "a job was handed to two compute clients"
    assert sorted(claimed) == sorted(job_ids), "every job was claimed"
    with ctx.read_transaction() as s:
        owner = {job_id: cc for job_id, cc in s.execute(select(Job.job_id, Job.compute_client_id))}
        statuses = set(s.scalars(select(Job.status)))
    assert statuses == {"starting"}
    for client, got in zip(clients, results):
        assert all(owner[j] == client.id for j in got), "the hub's record matches what each client was told"
    assert sum(1 for got in results if got) > 1, "the work was spread over several claimers"


RACING_SUBMITTERS = 12


def submit_at_once(url: str, seeded: Seed, name: str, start: threading.Barrier) -> tuple[int, str]:
    with httpx.Client(base_url=url, timeout=60) as http:
        http.get("/healthz")  # connected before the race starts
        start.wait()
        r = http.post("/v1/jobs", json={"serviceName": seeded.service, "jobDefinition": hello1(name), "requiredResources": RES},
                      headers=auth(seeded.key))
        assert r.status_code in (200, 201), r.text
        return r.status_code, r.json()["jobId"]


def test_racing_submissions_of_one_definition_create_one_job(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    """Submissions of the same definition at the same moment are serialized by the hub (an advisory lock held to
    the end of the creating transaction on PostgreSQL, the write lock on SQLite): one creates the job, the others
    get it from the cache."""
    with ThreadPoolExecutor(RACING_SUBMITTERS) as pool:
        for round_ in range(5):
            name = f"race {round_}"
            start = threading.Barrier(RACING_SUBMITTERS)
            answers = list(pool.map(submit_at_once, *zip(*[(live_hub.url, seeded, name, start)] * RACING_SUBMITTERS)))
            assert sorted(status for status, _ in answers) == [200] * (RACING_SUBMITTERS - 1) + [201], answers
            assert len({job_id for _, job_id in answers}) == 1, answers
    with ctx.read_transaction() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 5


def _spy_on_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> list[Optional[str]]:
    """What each creation's one-round-trip write gave (PostgreSQL): the job's id, or None when it wrote nothing."""
    given: list[Optional[str]] = []
    write = jobs_core.create_new_job_in_one_round_trip

    def spied(*args: Any, **kwargs: Any) -> Any:
        job = write(*args, **kwargs)
        given.append(None if job is None else job.job_id)
        return job

    monkeypatch.setattr(jobs_core, "create_new_job_in_one_round_trip", spied)
    return given


def _read_before_anothers_commit(monkeypatch: pytest.MonkeyPatch, caller: Optional[str] = None) -> None:
    """Creations read as if just before another request committed: no job with the definition yet (and, with
    ``caller``, as that user): the write must find out by itself."""
    read = jobs_core.caller_and_cached

    def stale(conn: Any, token: str, req: Any, prepared: Any) -> Any:
        found = read(conn, token, req, prepared)
        return None if found is None else (caller or found[0], found[1], None)

    monkeypatch.setattr(jobs_core, "caller_and_cached", stale)


def test_a_creation_that_finds_the_definition_created_meanwhile_returns_that_job(
    ctx: HubContext, seeded: Seed, live_hub: LiveHub, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On PostgreSQL the write sends its inserts with its checks, presuming the read's answer still holds; when a
    job of the definition was committed meanwhile, that write is rolled back and made again: the existing job."""
    with httpx.Client(base_url=live_hub.url, timeout=60) as api:
        first = submit(api, seeded, hello1("meanwhile"))
        _read_before_anothers_commit(monkeypatch)
        one_round_trip = _spy_on_one_round_trip(monkeypatch)
        r = api.post("/v1/jobs", json={"serviceName": seeded.service, "jobDefinition": hello1("meanwhile"), "requiredResources": RES},
                     headers=auth(seeded.key))
    assert r.status_code == 200, r.text
    assert r.json()["jobId"] == first["jobId"]
    assert one_round_trip == ([None] if ctx.writes_in_one_round_trip else [])  # its checks refused: it wrote nothing
    with ctx.read_transaction() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_new_job_on_postgresql_is_written_in_one_round_trip_and_wakes_a_waiting_claim(
    ctx: HubContext, seeded: Seed, live_hub: LiveHub, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The usual creation on PostgreSQL: checks, inserts and COMMIT in one round trip. The job is whole (its tags,
    outputs and first event), the same as read back, and a claim waiting for work gets it."""
    assert ctx.writes_in_one_round_trip
    ctx.settings.claim_max_wait_sec = LONG_WAIT_SEC
    definition = hello2("one round trip")
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        submit(api, seeded, hello1("first"))  # the app's first creation (the hub checks its definition against the app)
        cc = register(api, seeded)
        claim(api, cc)
        one_round_trip = _spy_on_one_round_trip(monkeypatch)
        thread, out = start_waiting_claim(live_hub.url, cc, LONG_WAIT_SEC)
        r = api.post("/v1/jobs", json={"serviceName": seeded.service, "jobDefinition": definition, "requiredResources": RES,
                                       "tags": ["a", "b"]}, headers=auth(seeded.key))
        thread.join(timeout=ANSWER_TIMEOUT_SEC)
        assert r.status_code == 201, r.text
        created = r.json()
        read_back = api.get(f"/v1/jobs/{created['jobId']}", headers=auth(seeded.key)).json()
        again = api.post("/v1/jobs", json={"serviceName": seeded.service, "jobDefinition": definition, "requiredResources": RES,
                                           "tags": ["a"]}, headers=auth(seeded.key))
    assert one_round_trip == [created["jobId"]]  # the cache hit after it needs no write
    assert again.status_code == 200 and again.json()["jobId"] == created["jobId"]
    claimed_since = {"status", "timestampStartingSec", "computeClientId", "computeClientName", "computeClientUserId"}
    assert {k: v for k, v in read_back.items() if k in created and k not in claimed_since} == {
        k: v for k, v in created.items() if k not in claimed_since
    }
    assert created["tags"] == ["a", "b"] and len(created["outputFileUrlList"]) == 1 and created["isRunnable"]
    assert "response" in out, "woken by the new job, not by the timeout: no answer yet"
    assert [j["jobId"] for j in out["response"].json()["jobs"]] == [created["jobId"]]
    with ctx.read_transaction() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 2
    events = httpx.get(f"{live_hub.url}/v1/jobs/{created['jobId']}/events", headers=auth(seeded.key)).json()
    assert any("created by" in (e.get("message") or "") for e in events["events"]), events


def test_a_creation_whose_role_went_meanwhile_is_refused_and_writes_nothing(
    ctx: HubContext, seeded: Seed, live_hub: LiveHub, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _read_before_anothers_commit(monkeypatch, caller=seeded.other_user)  # bob: no role in alice's service
    one_round_trip = _spy_on_one_round_trip(monkeypatch)
    with httpx.Client(base_url=live_hub.url, timeout=60) as api:
        r = api.post("/v1/jobs", json={"serviceName": seeded.service, "jobDefinition": hello1("no role"), "requiredResources": RES},
                     headers=auth(seeded.key))
    assert r.status_code == 403, r.text
    assert "lacks the createJobs role" in r.text
    assert one_round_trip == ([None] if ctx.writes_in_one_round_trip else [])
    with ctx.read_transaction() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def waiting_claim(url: str, client: Client, wait_sec: float, out: dict[str, Any]) -> None:
    with httpx.Client(base_url=url, timeout=wait_sec + 30) as http:
        r = http.post("/v1/compute/claim", json={"waitSec": wait_sec}, headers=client.headers)
        out["returned_at"] = time.monotonic()
        out["response"] = r


def start_waiting_claim(url: str, client: Client, wait_sec: float) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=waiting_claim, args=(url, client, wait_sec, out), daemon=True)
    thread.start()
    time.sleep(0.5)  # let it find nothing and start waiting
    assert "response" not in out, "the claim should be waiting"
    return thread, out


def test_a_waiting_claim_returns_as_soon_as_a_job_is_created(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    ctx.settings.claim_max_wait_sec = LONG_WAIT_SEC
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        cc = register(api, seeded)
        thread, out = start_waiting_claim(live_hub.url, cc, LONG_WAIT_SEC)
        created_at = time.monotonic()
        job = submit(api, seeded, hello1())
        thread.join(timeout=ANSWER_TIMEOUT_SEC)
    assert "response" in out, f"woken by the new job, not by the {LONG_WAIT_SEC:g} s timeout: no answer yet"
    print(f"\njob created -> claim answered: {out['returned_at'] - created_at:.2f} s")  # information only
    assert out["response"].status_code == 200
    assert [j["jobId"] for j in out["response"].json()["jobs"]] == [job["jobId"]]


def test_a_waiting_claim_returns_as_soon_as_a_dependency_completes(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    ctx.settings.claim_max_wait_sec = LONG_WAIT_SEC
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        runner, waiter = register(api, seeded, "runner"), register(api, seeded, "waiter")
        producer = submit(api, seeded, hello2())
        consumer = submit(api, seeded, count_chars(producer["outputFileResults"][0]["url"]))
        [claimed] = claim(api, runner)
        thread, out = start_waiting_claim(live_hub.url, waiter, LONG_WAIT_SEC)
        completed_at = time.monotonic()
        run_and_complete(api, claimed, runner.key)
        thread.join(timeout=ANSWER_TIMEOUT_SEC)
    assert "response" in out, f"woken by the completed dependency, not by the {LONG_WAIT_SEC:g} s timeout: no answer yet"
    print(f"\ndependency completed -> claim answered: {out['returned_at'] - completed_at:.2f} s")  # information only
    assert [j["jobId"] for j in out["response"].json()["jobs"]] == [consumer["jobId"]]


def test_many_waiting_claims_hold_no_worker_threads(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    # More waiting claims than the 40 worker threads: if each held one, the requests below would
    # queue behind them until the claims time out (ten minutes; the client gives up after 30 s), so
    # the claims would have answered first. No clock is read: the order of events says it, however
    # busy the machine is.
    num_waiting, wait_sec = 50, LONG_WAIT_SEC
    ctx.settings.claim_max_wait_sec = wait_sec
    clients = register_directly(ctx, seeded, num_waiting)
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        outs: list[dict[str, Any]] = [{} for _ in clients]
        threads = [threading.Thread(target=waiting_claim, args=(live_hub.url, c, wait_sec, o), daemon=True) for c, o in zip(clients, outs)]
        for t in threads:
            t.start()
        time.sleep(0.6)
        assert not any("response" in o for o in outs), "all claims are waiting"
        for _ in range(5):
            assert api.get("/v1/services").status_code == 200
            assert api.post("/v1/compute/heartbeat", json={}, headers=clients[0].headers).status_code == 200
        assert not any("response" in o for o in outs), "the requests above were answered while every claim still waited"
        jobs = {submit(api, seeded, hello1(f"claim {i}"))["jobId"] for i in range(num_waiting)}
        for t in threads:
            t.join(timeout=ANSWER_TIMEOUT_SEC)
    assert all("response" in o for o in outs), "every claim woken by a new job, not by its timeout"
    assert all(o["response"].status_code == 200 for o in outs)
    claimed = [j["jobId"] for o in outs for j in o["response"].json()["jobs"]]
    assert sorted(claimed) == sorted(jobs), "each new job woke one waiting claim, and went to exactly one"


def test_a_claim_whose_bridge_hung_up_takes_no_job(seeded: Seed, live_hub: LiveHub) -> None:
    # Otherwise the job would sit in 'starting' with nobody to run it until heartbeat expiry.
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        cc = register(api, seeded)
        with httpx.Client(base_url=live_hub.url, timeout=0.3) as impatient:
            try:
                impatient.post("/v1/compute/claim", json={"waitSec": 20}, headers=cc.headers)
                raise AssertionError("the claim should still be waiting")
            except httpx.ReadTimeout:
                pass
        time.sleep(0.1)
        job = submit(api, seeded, hello1())
        time.sleep(0.3)
        assert api.get(f"/v1/jobs/{job['jobId']}").json()["status"] == "pending"


def waiting_heartbeat(url: str, client: Client, body: dict[str, Any], out: dict[str, Any]) -> None:
    with httpx.Client(base_url=url, timeout=body["waitSec"] + 30) as http:
        r = http.post("/v1/compute/heartbeat", json=body, headers=client.headers)
        out["returned_at"] = time.monotonic()
        out["response"] = r


def test_a_waiting_heartbeat_returns_as_soon_as_one_of_its_jobs_is_canceled(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    # No re-reads of the database while waiting: only the notify can answer it early.
    ctx.settings.claim_recheck_interval_sec = LONG_WAIT_SEC
    ctx.settings.heartbeat_timeout_sec = 4 * LONG_WAIT_SEC  # a heartbeat may wait a quarter of it
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        cc, other = register(api, seeded, "cc"), register(api, seeded, "other")
        stopping, running = (submit(api, seeded, hello1(f"h{i}"))["jobId"] for i in range(2))
        assert len(claim(api, cc, maxJobs=2)) == 2
        elsewhere = submit(api, seeded, hello1("elsewhere"))["jobId"]
        assert len(claim(api, other)) == 1
        api.post(f"/v1/jobs/{stopping}/cancel", headers=auth(seeded.key)).raise_for_status()
        out: dict[str, Any] = {}
        body = {"activeJobIds": [stopping, running], "stoppingJobIds": [stopping], "waitSec": LONG_WAIT_SEC}
        thread = threading.Thread(target=waiting_heartbeat, args=(live_hub.url, cc, body, out), daemon=True)
        thread.start()
        time.sleep(0.5)
        assert "response" not in out, "a job the bridge is stopping already does not answer the heartbeat early"
        api.post(f"/v1/jobs/{elsewhere}/cancel", headers=auth(seeded.key)).raise_for_status()
        time.sleep(0.5)
        assert "response" not in out, "another client's cancel does not answer this client's heartbeat"
        canceled_at = time.monotonic()
        api.post(f"/v1/jobs/{running}/cancel", headers=auth(seeded.key)).raise_for_status()
        thread.join(timeout=ANSWER_TIMEOUT_SEC)
    assert "response" in out, f"woken by the cancel, not by the {LONG_WAIT_SEC:g} s wait: no answer yet"
    print(f"\ncancel -> heartbeat answered: {out['returned_at'] - canceled_at:.2f} s")  # information only
    assert out["response"].status_code == 200, out["response"].text
    assert out["response"].json()["cancelJobIds"] == sorted([stopping, running])
