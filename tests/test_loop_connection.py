"""The hub's busiest SQLite work runs on the event loop and never waits there (hub/db/loop_connection.py).

Reads (getJob, cache hits) and creations run on the loop's own connection; when SQLite's write lock
is held elsewhere (another process), a creation is handed to a worker thread to wait, and the loop
goes on answering; while worker threads wait for the process's write lock, the loop leaves it to them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.context import HubContext
from hub.core import accounts
from hub.db.loop_connection import CHECKPOINT_EVERY_COMMITS
from hub.db.tables import User

from .hubtools import LiveHub, Seed

pytestmark = [pytest.mark.hub, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def job_body(service: str, name: str) -> dict[str, Any]:
    return {
        "serviceName": service,
        "jobDefinition": {
            "appName": "hello_world", "processorName": "hello_world_1",
            "inputFiles": [], "outputFiles": [], "parameters": [{"name": "name", "value": name}],
        },
        "requiredResources": {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60},
    }


def wait_until(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout  # a liveness bound, not a measure
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.01)


def test_a_creation_waits_in_a_worker_thread_while_another_process_writes_and_reads_go_on(
    ctx: HubContext, seeded: Seed, live_hub: LiveHub, tmp_path: Path
) -> None:
    assert ctx.loop_engine is not None
    auth = {"Authorization": f"Bearer {seeded.key}"}
    with httpx.Client(base_url=live_hub.url, headers=auth, timeout=300) as http, \
            httpx.Client(base_url=live_hub.url, headers=auth, timeout=300) as other_http:
        first = http.post("/v1/jobs", json=job_body(seeded.service, "first"))
        assert first.status_code == 201, first.text
        # another process takes SQLite's write lock (as a second hub process or an admin command would)
        other = sqlite3.connect(str(tmp_path / "hub.db"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        answers: dict[str, httpx.Response] = {}
        creating = threading.Thread(target=lambda: answers.update(new=other_http.post("/v1/jobs", json=job_body(seeded.service, "second"))))
        try:
            creating.start()
            # the loop still answers reads and cache hits while the creation waits for the lock
            got = http.get(f"/v1/jobs/{first.json()['jobId']}")
            assert got.status_code == 200 and got.json()["jobId"] == first.json()["jobId"]
            hit = http.post("/v1/jobs", json=job_body(seeded.service, "first"))
            assert hit.status_code == 200 and hit.json()["jobId"] == first.json()["jobId"]
            assert "new" not in answers  # it cannot have been created: the lock is still held
        finally:
            other.execute("COMMIT")
            other.close()
        creating.join(timeout=300)
        assert answers["new"].status_code == 201, answers["new"].text
        created = http.get(f"/v1/jobs/{answers['new'].json()['jobId']}")
        assert created.status_code == 200


def test_a_write_on_the_loop_waits_on_the_loop_for_worker_threads_that_hold_or_wait_for_the_write_lock(
    ctx: HubContext, seeded: Seed
) -> None:
    loop_thread = threading.get_ident()
    order: list[str] = []

    async def write(name: str) -> int:
        return await ctx.run_write(lambda s: order.append(name) or threading.get_ident())

    assert asyncio.run(write("alone")) == loop_thread  # nobody else writing: on the loop

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ctx.transaction():
            holding.set()
            release.wait(300)
            order.append("holder")

    def wait_to_write() -> None:
        with ctx.transaction():
            order.append("waiter")

    holder, waiter = threading.Thread(target=hold), threading.Thread(target=wait_to_write)
    holder.start()
    holding.wait(120)
    waiter.start()
    wait_until(lambda: ctx._writers_waiting == 1, "the second writer to wait for the lock")

    async def write_while_others_hold_and_wait() -> int:
        task = asyncio.ensure_future(write("loop"))
        ticks = 0
        while not task.done() and ticks < 5:  # the loop goes on meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done()
        release.set()
        return await task

    assert asyncio.run(write_while_others_hold_and_wait()) == loop_thread
    holder.join(120)
    waiter.join(120)
    assert order == ["alone", "holder", "waiter", "loop"]
    assert ctx._writers_waiting == 0 and not ctx._loop_waiters


def test_a_failed_write_on_the_loop_commits_nothing(ctx: HubContext, seeded: Seed) -> None:
    async def write_then_fail() -> None:
        def fail(s: Any) -> None:
            accounts.create_user(s, "carol")
            raise ValueError("refused")

        await ctx.run_write(fail)

    with pytest.raises(ValueError, match="refused"):
        asyncio.run(write_then_fail())
    with ctx.read_transaction() as s:
        assert s.get(User, "carol") is None


def test_the_write_ahead_log_of_writes_on_the_loop_starts_over_after_each_checkpoint(ctx: HubContext, seeded: Seed, tmp_path: Path) -> None:
    """The loop's connection never checkpoints; a worker thread does every CHECKPOINT_EVERY_COMMITS commits,
    and the loop's next write copies what it missed, so that the log starts over instead of growing with every write."""
    commits = 4 * CHECKPOINT_EVERY_COMMITS

    async def write_many() -> None:
        for i in range(commits):
            await ctx.run_write(lambda s, i=i: accounts.create_user(s, f"user{i}"))
            while ctx._checkpointing:  # let each checkpoint finish (on a busy machine the thread starts late)
                await asyncio.sleep(0.01)
        await ctx.run_write(lambda s: accounts.create_user(s, "last"))  # the first write after the last checkpoint

    asyncio.run(write_many())
    with sqlite3.connect(str(tmp_path / "hub.db")) as db:
        _, log_frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    # each commit writes at least one page to the log: one that never started over would hold more than `commits`
    assert 0 < log_frames < CHECKPOINT_EVERY_COMMITS, log_frames


def log_restarts(wal: Path) -> int:
    """The write-ahead log's checkpoint sequence number: its header's bytes 12-15, one more each time the log starts over."""
    with wal.open("rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def test_the_write_ahead_log_starts_over_under_writes_that_never_pause(ctx: HubContext, seeded: Seed, tmp_path: Path) -> None:
    """Writes on the loop one after another, never waiting for the background checkpoints: one of them is nearly
    always under way when a checkpoint ends, and the log would only grow (it started over 0-1 times in 20
    checkpoints) if the loop did not copy its last frames itself before its next write."""
    checkpoints = 20
    wal = tmp_path / "hub.db-wal"

    async def write_many(prefix: str, commits: int) -> None:
        for i in range(commits):
            await ctx.run_write(lambda s, i=i: accounts.create_user(s, f"{prefix}{i}"))

    asyncio.run(write_many("first", 1))
    before = log_restarts(wal)
    asyncio.run(write_many("steady", checkpoints * CHECKPOINT_EVERY_COMMITS))
    # most checkpoints start the log over; a busy machine may start a background checkpoint late and skip some
    assert log_restarts(wal) - before >= checkpoints // 4, (before, log_restarts(wal))


def test_the_wire_protocols_reads_answer_while_another_process_holds_the_write_lock(
    ctx: HubContext, seeded: Seed, live_hub: LiveHub, tmp_path: Path
) -> None:
    """Neurosift polls getJob through the original wire protocol: its reads run in read transactions, so they
    neither take SQLite's write lock nor wait for it (a read that wrote anything would wait here, then fail)."""
    from hub.routes.wire import CALLS

    auth = {"Authorization": f"Bearer {seeded.key}"}
    with httpx.Client(base_url=live_hub.url, headers=auth, timeout=300) as http:
        job = http.post("/v1/jobs", json=job_body(seeded.service, "polled")).json()
        client = http.post("/v1/compute-clients", json={
            "serviceName": seeded.service, "label": "cc",
            "computeSlots": [{"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60, "multiplicity": 1}],
        }).json()["computeClient"]["computeClientId"]
        reads = {
            "getJob": {"jobId": job["jobId"], "includePrivateKey": False},
            "findJobByDefinition": {"serviceName": seeded.service, "jobDefinition": job_body(seeded.service, "polled")["jobDefinition"]},
            "findJobs": {"serviceName": seeded.service},
            "getService": {"serviceName": seeded.service},
            "getServices": {},
            "getServiceApp": {"serviceName": seeded.service, "appName": "hello_world"},
            "getServiceApps": {"serviceName": seeded.service},
            "getComputeClient": {"computeClientId": client},
            "getComputeClients": {"serviceName": seeded.service},
            "computeUserStats": {"userId": seeded.user},
        }
        assert set(reads) == {name for name, call in CALLS.items() if call.reads_only}
        other = sqlite3.connect(str(tmp_path / "hub.db"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            for name, fields in reads.items():
                answer = http.post(f"/api/{name}", json={"type": f"{name}Request", **fields})
                assert answer.status_code == 200, (name, answer.text)
                assert answer.json()["type"] == f"{name}Response"
        finally:
            other.execute("COMMIT")
            other.close()
        assert http.post("/api/getJob", json={"type": "getJobRequest", "jobId": job["jobId"]}).json()["job"]["jobId"] == job["jobId"]
