"""User statistics count jobs as the original Pairio does (only jobs that started and ended), over the wire
call and REST; the user page shows them; the original web UI's page paths redirect to this hub's pages.

Everything goes through a real hub over HTTP; jobs move through their real lifecycle (claimed by a
compute client, reported running and failed), and then the test pins the run's start and end times
in the database so the hours come out as exact numbers.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from hub.context import HubContext
from hub.core import accounts, compute
from hub.db.tables import Job
from pairio.models import PairioComputeClientComputeSlot
from pairio.status import JobStatus

from .hubtools import LiveHub, Seed
from .test_wire_protocol import error, greeting, job_request, ok

RESOURCES = {"numCpus": 2, "numGpus": 1, "memoryGb": 4, "timeSec": 60}
ZERO = {"numJobs": 0, "cpuHours": 0.0, "gpuHours": 0.0, "gbHours": 0.0, "jobHours": 0.0}


@pytest.fixture
def hub(live_hub: LiveHub) -> httpx.Client:
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        yield client


def send(api: httpx.Client, call: str, key: str = "", **fields: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return api.post(f"/api/{call}", json={"type": f"{call}Request", **fields}, headers=headers)


def wire_stats(api: httpx.Client, user: str) -> dict[str, Any]:
    stats: dict[str, Any] = ok(send(api, "computeUserStats", userId=user), "computeUserStats")["userStats"]
    return stats


def run_jobs(hub: httpx.Client, seeded: Seed, ctx: HubContext) -> tuple[str, dict[str, str]]:
    """bob's compute client runs alice's jobs: one ran two hours and failed, one failed while starting, one waits."""
    with ctx.transaction() as s:
        accounts.set_service_user(s, seeded.service, "bob", admin=False, create_jobs=False, process_jobs=True)
        cc, cc_key = accounts.register_compute_client(
            s, seeded.service, "bob", "bobs-box", [PairioComputeClientComputeSlot(numCpus=8, numGpus=1, memoryGb=16, timeSec=3600, multiplicity=4)]
        )
        cc_id = cc.compute_client_id
    ids = {}
    for name in ("ran", "never-started", "waiting"):
        body = job_request(seeded, greeting(name), requiredResources=RESOURCES)
        ids[name] = ok(send(hub, "createJob", seeded.key, **body), "createJob")["job"]["jobId"]
    claimed = {c.job.jobId: c.job.jobPrivateKey for c in compute.claim_jobs(ctx, cc_key, 2)}
    assert set(claimed) == {ids["ran"], ids["never-started"]}
    with ctx.transaction() as s:
        compute.set_job_status(s, ids["ran"], claimed[ids["ran"]], JobStatus.RUNNING)
        compute.set_job_status(s, ids["ran"], claimed[ids["ran"]], JobStatus.FAILED, "it broke")
        compute.set_job_status(s, ids["never-started"], claimed[ids["never-started"]], JobStatus.FAILED, "no image")
        # Exact hours: the run took two hours.
        s.execute(update(Job).where(Job.job_id == ids["ran"]).values(timestamp_started_sec=1000.0, timestamp_finished_sec=8200.0))
    return cc_id, ids


def test_only_jobs_that_started_and_ended_count(hub: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    _cc_id, ids = run_jobs(hub, seeded, ctx)
    job = ok(send(hub, "getJob", jobId=ids["never-started"], includePrivateKey=False), "getJob")["job"]
    assert job["status"] == "failed" and job["timestampStartedSec"] is None and job["timestampFinishedSec"] is not None

    two_hours = {"numJobs": 1, "cpuHours": 4.0, "gpuHours": 2.0, "gbHours": 8.0, "jobHours": 2.0}
    alice = wire_stats(hub, "alice")
    assert alice == {"userId": "alice", "consumed": two_hours, "provided": ZERO, "consumedDeleted": ZERO, "providedDeleted": ZERO}
    bob = wire_stats(hub, "bob")
    assert bob == {"userId": "bob", "consumed": ZERO, "provided": two_hours, "consumedDeleted": ZERO, "providedDeleted": ZERO}
    assert hub.get("/v1/users/alice/stats").json() == alice  # REST gives the same numbers
    assert hub.get("/v1/users/bob/stats").json() == bob

    # Deleted jobs move to the *Deleted columns, still counted the same way.
    ok(send(hub, "deleteJobs", seeded.key, userId="alice", jobIds=[ids["ran"], ids["never-started"]]), "deleteJobs")
    alice = wire_stats(hub, "alice")
    assert (alice["consumed"], alice["consumedDeleted"]) == (ZERO, two_hours)
    assert wire_stats(hub, "bob")["providedDeleted"] == two_hours

    assert wire_stats(hub, "nobody") == {"userId": "nobody", "consumed": ZERO, "provided": ZERO, "consumedDeleted": ZERO,
                                         "providedDeleted": ZERO}
    assert "invalid computeUserStatsRequest" in error(send(hub, "computeUserStats"), 400)


def stat_cells(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-stat="([a-zA-Z-]+)">([^<]*)<', html))


def test_user_page_shows_consumed_and_provided(hub: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    cc_id, ids = run_jobs(hub, seeded, ctx)
    ok(send(hub, "deleteJobs", seeded.key, userId="alice", jobIds=[ids["never-started"]]), "deleteJobs")

    page = hub.get("/user/alice")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    cells = stat_cells(page.text)
    assert cells == {
        "consumed-numJobs": "1", "consumed-cpuHours": "4.00", "consumed-gpuHours": "2.00", "consumed-gbHours": "8.00",
        "consumed-jobHours": "2.00", "provided-numJobs": "0", "provided-cpuHours": "0.00", "provided-gpuHours": "0.00",
        "provided-gbHours": "0.00", "provided-jobHours": "0.00",
    }
    assert "CPU-hours" in page.text and "GPU-hours" in page.text and "Memory GB-hours" in page.text
    assert f'href="/service/{seeded.service}"' in page.text  # the services alice owns
    assert ids["waiting"] in page.text  # her recent jobs

    bob = hub.get("/user/bob")
    assert bob.status_code == 200
    assert stat_cells(bob.text)["provided-cpuHours"] == "4.00" and stat_cells(bob.text)["consumed-numJobs"] == "0"
    assert f'href="/compute-client/{cc_id}"' in bob.text

    missing = hub.get("/user/nobody")
    assert missing.status_code == 404 and "no user &#39;nobody&#39;" in missing.text


def test_the_original_ui_paths_redirect_to_this_hubs_pages(hub: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    with ctx.transaction() as s:
        cc, _ = accounts.register_compute_client(
            s, seeded.service, "alice", "lab", [PairioComputeClientComputeSlot(numCpus=1, numGpus=0, memoryGb=1, timeSec=60)]
        )
        cc_id = cc.compute_client_id
    moved = {
        f"/compute_client/{cc_id}": f"/compute-client/{cc_id}",
        f"/service_app/{seeded.service}/hello_world": f"/service/{seeded.service}/app/hello_world",
        "/playground": "/submit",
    }
    for old, new in moved.items():
        resp = hub.get(old)
        assert resp.status_code == 308 and resp.headers["location"] == new, (old, resp.status_code, resp.headers)
        page = hub.get(old, follow_redirects=True)
        assert page.status_code == 200 and str(page.url).endswith(new), old
    assert "Compute client lab" in hub.get(f"/compute_client/{cc_id}", follow_redirects=True).text
    # Names that need escaping stay one path segment.
    resp = hub.get("/service_app/a%20b/c")
    assert resp.status_code == 308 and resp.headers["location"] == "/service/a%20b/app/c"
    assert hub.get("/compute_client/nope", follow_redirects=True).status_code == 404
    # /user/<id> is the original's path and this hub's page at once.
    assert hub.get("/user/alice").status_code == 200
