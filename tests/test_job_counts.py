"""Job counts kept by triggers match the jobs table through every kind of status change."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from hub.context import HubContext
from hub.core.job_counts import fold_job_counts
from hub.db.tables import Job

from .conftest import auth
from .hubtools import Seed, hello2

RES = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}


def counted(ctx: HubContext, service: str | None = None) -> dict[str, int]:
    with ctx.read_transaction() as s:
        q = select(Job.status, func.count()).group_by(Job.status)
        if service:
            q = q.where(Job.service_name == service)
        return dict(s.execute(q).all())


def reported(api: httpx.Client, service: str | None = None) -> dict[str, int]:
    r = api.get("/v1/job-counts", params={"serviceName": service} if service else {})
    assert r.status_code == 200, r.text
    return {k: v for k, v in r.json()["counts"].items() if v}


def test_job_counts_follow_creates_claims_cancels_and_deletes(ctx: HubContext, seeded: Seed, api: httpx.Client) -> None:
    ids = []
    for i in range(5):
        r = api.post("/v1/jobs", json={"serviceName": seeded.service, "jobDefinition": hello2(f"n{i}"), "requiredResources": RES}, headers=auth(seeded.key))
        assert r.status_code == 201, r.text
        ids.append(r.json()["jobId"])
    assert reported(api) == counted(ctx) == {"pending": 5}
    fold_job_counts(ctx)
    assert reported(api) == reported(api, seeded.service) == counted(ctx) == {"pending": 5}

    slot = {"numCpus": 4, "numGpus": 0, "memoryGb": 8, "timeSec": 3600, "multiplicity": 4}
    r = api.post("/v1/compute-clients", json={"serviceName": seeded.service, "label": "cc", "computeSlots": [slot]}, headers=auth(seeded.key))
    cc_key = r.json()["computeClientPrivateKey"]
    claimed = api.post("/v1/compute/claim", json={"maxJobs": 2}, headers=auth(cc_key)).json()["jobs"]
    assert len(claimed) == 2
    assert api.post(f"/v1/compute/jobs/{claimed[0]['jobId']}/status", json={"status": "running"}, headers=auth(cc_key)).status_code == 200
    pending = [i for i in ids if i not in {c["jobId"] for c in claimed}]
    assert api.post(f"/v1/jobs/{pending[0]}/cancel", headers=auth(seeded.key)).status_code == 200
    assert api.delete(f"/v1/jobs/{pending[1]}", headers=auth(seeded.key)).status_code == 204
    expected = {"pending": 1, "starting": 1, "running": 1, "failed": 1}
    assert reported(api) == counted(ctx) == expected
    fold_job_counts(ctx)
    fold_job_counts(ctx)  # nothing left to fold: unchanged
    assert reported(api) == reported(api, seeded.service) == counted(ctx) == expected
    assert reported(api, "no_such_service") == {}


def test_job_counts_stay_exact_while_hub_processes_fold_concurrently(ctx: HubContext, seeded: Seed, api: httpx.Client) -> None:
    import threading

    errors: list[BaseException] = []
    done = threading.Event()

    def create(worker: int) -> None:
        try:
            for i in range(8):
                body = {"serviceName": seeded.service, "jobDefinition": hello2(f"w{worker}-{i}"), "requiredResources": RES}
                r = api.post("/v1/jobs", json=body, headers=auth(seeded.key))
                assert r.status_code == 201, r.text
                if i % 3 == 0:
                    assert api.post(f"/v1/jobs/{r.json()['jobId']}/cancel", headers=auth(seeded.key)).status_code == 200
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def fold() -> None:
        try:
            while not done.is_set():
                fold_job_counts(ctx)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    folders = [threading.Thread(target=fold) for _ in range(2)]  # as two hub processes' housekeeping
    creators = [threading.Thread(target=create, args=(w,)) for w in range(4)]
    for t in folders + creators:
        t.start()
    for t in creators:
        t.join(timeout=300)
    done.set()
    for t in folders:
        t.join(timeout=60)
    assert not errors, errors
    assert reported(api) == counted(ctx) == {"pending": 20, "failed": 12}
    fold_job_counts(ctx)
    assert reported(api) == counted(ctx) == {"pending": 20, "failed": 12}
