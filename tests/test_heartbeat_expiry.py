"""Compute clients that stop heartbeating lose their jobs: running ones fail, starting ones go back to pending."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from hub.context import HubContext
from hub.core.compute import expire_lost_compute_clients
from hub.expiry import finished_in_thread

from .conftest import auth
from .hubtools import LiveHub, Seed
from .test_compute_api import claim, count_chars, events, get_job, hello1, hello2, register, report, submit

LATER = 121.0  # seconds after now: past the test hub's heartbeat_timeout_sec of 120


def test_a_lost_clients_running_job_fails_and_its_starting_job_is_pending_again(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded, "laptop")
    running = submit(api, seeded, hello1("running"))
    starting = submit(api, seeded, hello1("starting"))
    claimed = {j["jobId"]: j for j in claim(api, cc, maxJobs=2)}
    report(api, running["jobId"], cc.key, "running")

    assert expire_lost_compute_clients(ctx, time.time() + 10).failed_job_ids == [], "a client heard from recently keeps its jobs"
    result = expire_lost_compute_clients(ctx, time.time() + LATER)
    assert result.failed_job_ids == [running["jobId"]] and result.requeued_job_ids == [starting["jobId"]]

    lost = get_job(api, running["jobId"])
    assert lost["status"] == "failed" and lost["timestampFinishedSec"] is not None
    assert lost["error"].startswith(f"compute client laptop ({cc.id}) stopped sending heartbeats for 12")
    assert lost["error"].endswith("the job was lost")

    again = get_job(api, starting["jobId"])
    assert again["status"] == "pending" and again["isRunnable"] is True
    assert again["computeClientId"] is None and again["computeClientName"] is None and again["timestampStartingSec"] is None
    assert "pending again" in events(api, starting["jobId"])[-1]["message"]
    old_key = claimed[starting["jobId"]]["jobPrivateKey"]
    assert report(api, starting["jobId"], old_key, "running").status_code == 401, "the old job key no longer works"
    assert report(api, starting["jobId"], cc.key, "running").status_code == 403

    other = register(api, seeded, "desktop")
    assert [j["jobId"] for j in claim(api, other)] == [starting["jobId"]]
    assert expire_lost_compute_clients(ctx, time.time() + LATER).failed_job_ids == [], "nothing is expired twice"
    hb = api.post("/v1/compute/heartbeat", json={"activeJobIds": list(claimed)}, headers=cc.headers).json()
    assert sorted(hb["cancelJobIds"]) == sorted(claimed), "the lost client hears to stop both when it comes back"


def test_expiry_of_a_running_job_fails_its_dependants(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    producer = submit(api, seeded, hello2())
    consumer = submit(api, seeded, count_chars(producer["outputFileResults"][0]["url"]))
    claim(api, cc)
    report(api, producer["jobId"], cc.key, "running")
    expire_lost_compute_clients(ctx, time.time() + LATER)
    dependant = get_job(api, consumer["jobId"])
    assert dependant["status"] == "failed" and producer["jobId"] in dependant["error"]


def test_a_canceled_starting_job_of_a_lost_client_fails_instead_of_waiting_again(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    api.post(f"/v1/jobs/{job['jobId']}/cancel", headers=auth(seeded.key))
    assert expire_lost_compute_clients(ctx, time.time() + LATER).failed_job_ids == [job["jobId"]]
    failed = get_job(api, job["jobId"])
    assert failed["status"] == "failed" and failed["error"].startswith("canceled by alice")


def test_jobs_of_a_deleted_compute_client_are_lost_at_once(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded, "gone")
    running = submit(api, seeded, hello1("r"))
    starting = submit(api, seeded, hello1("s"))
    claim(api, cc, maxJobs=2)
    report(api, running["jobId"], cc.key, "running")
    assert api.delete(f"/v1/compute-clients/{cc.id}", headers=auth(seeded.key)).status_code == 204
    result = expire_lost_compute_clients(ctx)
    assert result.failed_job_ids == [running["jobId"]] and result.requeued_job_ids == [starting["jobId"]]
    assert f"compute client gone ({cc.id}) was deleted" in get_job(api, running["jobId"])["error"]


def test_a_heartbeat_keeps_a_client_alive(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    report(api, job["jobId"], cc.key, "running")
    ctx.settings.heartbeat_timeout_sec = 0.2
    time.sleep(0.3)
    heard = time.time()
    api.post("/v1/compute/heartbeat", json={"activeJobIds": [job["jobId"]]}, headers=cc.headers)
    # judged as of just after the heartbeat, however long the busy machine took to answer it: last heard
    # 0.3 s or more before that without it, under the timeout with it
    assert expire_lost_compute_clients(ctx, heard + 0.1).failed_job_ids == []
    assert get_job(api, job["jobId"])["status"] == "running"


def test_the_hubs_background_loop_expires_lost_clients(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    # The loop waits heartbeat_timeout_sec after start-up (bridges get a chance to
    # heartbeat after the hub was down), then checks every expiry_check_interval_sec.
    ctx.settings.heartbeat_timeout_sec = 0.3
    with httpx.Client(base_url=live_hub.url, timeout=10) as api:
        cc = register(api, seeded)
        running = submit(api, seeded, hello1("r"))
        starting = submit(api, seeded, hello1("s"))
        claim(api, cc, maxJobs=2)
        report(api, running["jobId"], cc.key, "running")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and get_job(api, running["jobId"])["status"] != "failed":
            time.sleep(0.1)
        assert get_job(api, running["jobId"])["status"] == "failed"
        assert "stopped sending heartbeats" in get_job(api, running["jobId"])["error"]
        assert get_job(api, starting["jobId"])["status"] == "pending"


def test_a_job_reporting_with_its_own_key_keeps_its_client_alive(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    """The original compute client calls rarely; its jobs' own processes (the original SDK) report with their job keys.
    Those reports count as signs of life of the client, so its running jobs are not taken for lost."""
    from sqlalchemy import update

    from hub.db.tables import ComputeClient

    cc = register(api, seeded, "original client")
    job = submit(api, seeded, hello1("own key"))
    [claimed] = claim(api, cc)
    with ctx.transaction() as s:  # the client itself has been silent for longer than the timeout
        s.execute(update(ComputeClient).where(ComputeClient.compute_client_id == cc.id).values(last_active_sec=time.time() - LATER))
    assert report(api, job["jobId"], claimed["jobPrivateKey"], "running").status_code == 200
    assert expire_lost_compute_clients(ctx, time.time()).failed_job_ids == []
    assert get_job(api, job["jobId"])["status"] == "running"


def test_the_hubs_background_work_in_a_thread_ends_before_its_cancel_goes_on() -> None:
    """The hub stopping cancels its background loop: the transaction it runs in a worker thread (expiry, folding
    the job counts) ends before the loop does, so the database is never closed (or, in tests, its schema
    dropped) under a transaction still running."""
    started, release = threading.Event(), threading.Event()
    finished: list[object] = []

    def work(ctx: object) -> int:
        started.set()
        release.wait(120)
        finished.append(ctx)
        return 1

    async def scenario() -> None:
        task = asyncio.ensure_future(finished_in_thread(work, "ctx"))  # type: ignore[arg-type]
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 120)
        task.cancel()
        threading.Timer(0.2, release.set).start()  # when it ends changes nothing: the cancel waits for it
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == ["ctx"]

    asyncio.run(scenario())
