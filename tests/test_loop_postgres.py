"""PostgreSQL: the busiest reads and writes run on the event loop, on asyncio connections of the loop's own
(hub/db/loop_postgres.py). A read that finds its connection lost runs once more on a new one; a write that
waits for the server (a row lock) waits on the loop, which goes on answering; a failed write commits nothing."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, bindparam, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from hub.context import HubContext
from hub.db.loop_postgres import AwaitedConnection
from hub.db.raw import RawReads, on_connection, prebuilt
from hub.db.tables import User
from hub.settings import HubSettings, default_database_concurrency

from .hubtools import POSTGRES_URL, LiveHub, Seed, seed
from .test_compute_api import RES, claim, get_job, hello1, register, report, submit

pytestmark = [pytest.mark.hub, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

_BACKEND_PID = prebuilt(text("SELECT pg_backend_pid()"))


def backend_pid(reads: RawReads) -> int:
    return int(reads.execute(_BACKEND_PID).scalar())


def terminate_backend(pid: int) -> None:
    """As a database restart would: the pooled connection is gone."""
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    finally:
        admin.dispose()


def test_a_read_whose_connection_was_lost_runs_again_on_a_new_one(ctx: HubContext) -> None:
    assert ctx.loop_pools is not None and ctx.loop_engine is None

    async def scenario() -> None:
        first = await ctx.run_read(backend_pid)
        assert await ctx.run_read(backend_pid) == first  # the loop's pooled connection is reused
        await asyncio.get_running_loop().run_in_executor(None, terminate_backend, first)
        again = await ctx.run_read(backend_pid)
        assert again != first
        assert await ctx.run_read(backend_pid) == again
        await ctx.close_loop()

    asyncio.run(scenario())


def test_each_event_loop_has_connections_of_its_own(ctx: HubContext) -> None:
    """An asyncio connection works only on the loop that opened it: a second loop (another app on the same
    context, a test client) gets a pool of its own, and a closed loop's pool is not used again."""
    async def pid_and_pool() -> tuple[int, object]:
        assert ctx.loop_pools is not None
        return await ctx.run_read(backend_pid), ctx.loop_pools.for_running_loop()

    _, first_pool = asyncio.run(pid_and_pool())
    _, second_pool = asyncio.run(pid_and_pool())
    assert second_pool is not first_pool
    assert ctx.loop_pools is not None and list(ctx.loop_pools._pools.values()) == [second_pool]  # the closed loop's is gone


def test_reads_at_once_on_a_loop_are_bounded_by_the_database_concurrency(ctx: HubContext) -> None:
    """``database_concurrency`` reads run at once (on as many connections); the others wait on the loop for one
    to end. Past about twice the server's cores, more at once only cost PostgreSQL more CPU per statement."""
    bounded = HubContext.create(ctx.settings.model_copy(update={"database_concurrency": 2}))

    async def scenario() -> tuple[int, list[int]]:
        gate = asyncio.Event()
        inside: list[int] = []

        def held_read(reads: RawReads) -> int:
            inside.append(backend_pid(reads))
            await_only(gate.wait())
            return inside[-1]

        tasks = [asyncio.ensure_future(bounded.run_read(held_read)) for _ in range(6)]
        while len(inside) < 2:
            await asyncio.sleep(0.01)
        for _ in range(20):  # the loop runs every task that can run: none gets past the two held
            await asyncio.sleep(0)
        at_once = len(inside)
        gate.set()
        pids = await asyncio.gather(*tasks)
        await bounded.close_loop()
        return at_once, pids

    try:
        at_once, pids = asyncio.run(scenario())
    finally:
        bounded.close()
    assert at_once == 2
    assert len(pids) == 6 and len(set(pids)) <= 2


def test_the_default_database_concurrency_is_twice_the_cpus_and_at_least_4(database_url: str) -> None:
    assert [default_database_concurrency(n) for n in (None, 1, 2, 3, 16)] == [4, 4, 4, 6, 32]


def test_other_errors_of_a_read_are_not_run_again(ctx: HubContext) -> None:
    calls = []
    bad = prebuilt(text("SELECT 1 / 0"))

    def divide(reads: RawReads) -> object:
        calls.append(1)
        return reads.execute(bad).scalar()

    with pytest.raises(Exception, match="division by zero"):
        asyncio.run(ctx.run_read(divide))
    assert len(calls) == 1


def wait_for_a_lock_waiter(holder: Connection) -> None:
    """Until a statement waits for a lock held by ``holder``'s transaction."""
    deadline = time.monotonic() + 120  # a liveness bound, not a measure
    pid = holder.execute(text("SELECT pg_backend_pid()")).scalar()
    blocking = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as observer:
            while not observer.execute(blocking, {"pid": pid}).scalar():
                assert time.monotonic() < deadline, "the status report never waited for the job's row"
                time.sleep(0.02)
    finally:
        engine.dispose()


def test_a_write_waiting_for_a_row_lock_waits_on_the_loop_while_it_answers_others(ctx: HubContext, seeded: Seed, live_hub: LiveHub) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=300) as http, httpx.Client(base_url=live_hub.url, timeout=300) as reporter:
        cc = register(http, seeded)
        job = submit(http, seeded, hello1("locked"))
        assert [j["jobId"] for j in claim(http, cc)] == [job["jobId"]]
        answer: list[httpx.Response] = []
        with ctx.engine.connect() as holder:  # another transaction holds the job's row, as a slow writer would
            holder.execute(text("SELECT job_id FROM jobs WHERE job_id = :j FOR UPDATE"), {"j": job["jobId"]})
            waiting = threading.Thread(target=lambda: answer.append(report(reporter, job["jobId"], cc.key, "running")))
            waiting.start()
            wait_for_a_lock_waiter(holder)
            # the report waits for the row; meanwhile the loop reads and creates (a write of other rows)
            others = [submit(http, seeded, hello1(f"other{i}")) for i in range(3)]
            assert [get_job(http, o["jobId"])["status"] for o in others] == ["pending"] * 3
            assert get_job(http, job["jobId"])["status"] == "starting"
            assert not answer and waiting.is_alive()
            holder.rollback()
        waiting.join(timeout=300)
        assert answer and answer[0].status_code == 200, answer
        assert get_job(http, job["jobId"])["status"] == "running"


def test_a_failed_write_on_the_loop_commits_nothing(ctx: HubContext) -> None:
    def add_then_fail(s: Session) -> None:
        s.add(User(user_id="written-then-failed", created_sec=0.0))
        s.flush()
        raise RuntimeError("a check after the first statement refused")

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="refused"):
            await ctx.run_write(add_then_fail)
        await ctx.close_loop()

    asyncio.run(scenario())
    with Session(ctx.engine) as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.user_id == "written-then-failed")) == 0


def test_a_write_after_its_pooled_connection_was_lost_gets_a_new_one(ctx: HubContext) -> None:
    def pid_in_transaction(s: Session) -> int:
        return int(s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    async def scenario() -> None:
        first = await ctx.run_write(pid_in_transaction)
        assert await ctx.run_write(pid_in_transaction) == first  # the loop's pooled connection is reused
        await asyncio.get_running_loop().run_in_executor(None, terminate_backend, first)
        assert await ctx.run_write(pid_in_transaction) != first  # found lost, run again on a new one: not a failed request
        await ctx.close_loop()

    asyncio.run(scenario())


def test_a_write_that_lost_its_connection_midway_runs_again_and_commits_once(ctx: HubContext) -> None:
    """The first run wrote a row, then its connection was lost (before the commit): the server rolled it back,
    so the write runs again on a new connection and the row is there once."""
    runs: list[int] = []

    def add_user(s: Session) -> None:
        runs.append(1)
        s.add(User(user_id="written-once", created_sec=0.0))
        s.flush()
        if len(runs) == 1:
            terminate_backend(int(s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()))
        s.connection().exec_driver_sql("SELECT 1")

    async def scenario() -> None:
        await ctx.run_write(add_user)
        await ctx.close_loop()

    asyncio.run(scenario())
    assert len(runs) == 2
    with Session(ctx.engine) as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.user_id == "written-once")) == 1


_INSERT_USER = prebuilt(insert(User.__table__), ["user_id", "created_sec"])
_USERS_LIKE = prebuilt(select(User.__table__.c.user_id).where(User.__table__.c.user_id.like(bindparam("pattern"))).order_by(User.__table__.c.user_id))


def test_a_rolled_back_write_leaves_its_connections_prepared_statements_in_place(ctx: HubContext) -> None:
    """A statement run often enough on a write connection would be prepared by psycopg itself, and psycopg's
    rollback then deallocates every prepared statement of the connection, the batches' too: the next write's
    prebuilt statements failed with "prepared statement ... does not exist" (seen in racing creations)."""
    def pid(s: Session) -> int:
        return int(s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def prebuilt_read(s: Session) -> int:
        on_connection(s.connection()).execute_all([(_USERS_LIKE, {"pattern": "prepared-%"}), (_USERS_LIKE, {"pattern": "x%"})])
        return pid(s)

    def busy_then_refused(s: Session) -> None:
        prebuilt_read(s)
        for _ in range(8):
            s.connection().exec_driver_sql("SELECT count(*) FROM users")
        raise ValueError("refused")

    async def scenario() -> None:
        first = await ctx.run_write(prebuilt_read)
        with pytest.raises(ValueError, match="refused"):
            await ctx.run_write(busy_then_refused)
        assert await ctx.run_write(prebuilt_read) == first  # the same pooled connection, its statements still there
        await ctx.close_loop()

    asyncio.run(scenario())


def test_a_write_in_one_round_trip_is_all_or_nothing_and_a_lost_connection_fails_it_and_is_replaced(ctx: HubContext) -> None:
    """``run_write_in_one_round_trip``: statements in a transaction of their own, on the loop's plain connections.
    A failed statement writes nothing and leaves the connection usable; a connection found lost fails the write
    (the caller decides: a creation goes the usual way, which finds its job if the COMMIT had happened) and the
    next write gets a new one."""
    def write(*users: str) -> Callable[[RawReads, Any], list[Any]]:
        return lambda reads, _engine: reads.commit_all([(_INSERT_USER, {"user_id": u, "created_sec": 0.0}) for u in users])

    async def scenario() -> None:
        await ctx.run_write_in_one_round_trip(write("one-trip-a", "one-trip-b"))
        with pytest.raises(IntegrityError):  # the second row is there already: neither is written
            await ctx.run_write_in_one_round_trip(write("one-trip-c", "one-trip-b"))
        first = await ctx.run_read(backend_pid)
        await asyncio.get_running_loop().run_in_executor(None, terminate_backend, first)
        with pytest.raises(DBAPIError) as lost:
            await ctx.run_write_in_one_round_trip(write("one-trip-d"))
        assert lost.value.connection_invalidated
        await ctx.run_write_in_one_round_trip(write("one-trip-e"))
        assert await ctx.run_read(backend_pid) != first
        await ctx.close_loop()

    assert ctx.writes_in_one_round_trip
    asyncio.run(scenario())
    with Session(ctx.engine) as s:
        written = s.scalars(select(User.user_id).where(User.user_id.like("one-trip-%")).order_by(User.user_id)).all()
    assert written == ["one-trip-a", "one-trip-b", "one-trip-e"]


@pytest.mark.parametrize("can_pipeline", [True, False], ids=["pipelined", "libpq-without-pipelines"])
def test_statements_pipelined_in_a_write_run_in_order_and_fail_together(
    ctx: HubContext, can_pipeline: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``RawReads.execute_after`` and ``send_all`` on the loop's write connection (psycopg's pipeline mode, or one
    by one where libpq has none): the inserts are seen by the select after them; a failed insert fails the
    transaction, which commits nothing."""
    monkeypatch.setattr(AwaitedConnection, "can_pipeline", can_pipeline)
    def insert_then_read(s: Session) -> list[str]:
        reads = on_connection(s.connection())
        first = [(_INSERT_USER, {"user_id": "piped-1", "created_sec": 0.0}), (_INSERT_USER, [{"user_id": "piped-2", "created_sec": 0.0}])]
        rows = reads.execute_after(first, _USERS_LIKE, {"pattern": "piped-%"}).all()
        reads.send_all([(_INSERT_USER, {"user_id": "piped-3", "created_sec": 0.0})])
        return [r.user_id for r in rows] + [r.user_id for r in reads.execute(_USERS_LIKE, {"pattern": "piped-3"})]

    def insert_twice(s: Session) -> None:
        on_connection(s.connection()).send_all([
            (_INSERT_USER, {"user_id": "piped-dup", "created_sec": 0.0}), (_INSERT_USER, {"user_id": "piped-dup", "created_sec": 0.0}),
        ])

    async def scenario() -> list[str]:
        seen = await ctx.run_write(insert_then_read)
        with pytest.raises(IntegrityError):
            await ctx.run_write(insert_twice)
        await ctx.close_loop()
        return seen

    assert asyncio.run(scenario()) == ["piped-1", "piped-2", "piped-3"]
    with Session(ctx.engine) as s:
        assert s.scalars(select(User.user_id).where(User.user_id.like("piped-%")).order_by(User.user_id)).all() == ["piped-1", "piped-2", "piped-3"]


@pytest.mark.parametrize("can_pipeline", [True, False], ids=["pipelined", "libpq-without-pipelines"])
@pytest.mark.parametrize("first", ["one row", "many rows", "through SQLAlchemy"])
def test_a_write_is_one_transaction_whatever_its_first_statement(
    ctx: HubContext, first: str, can_pipeline: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop's write connections are in autocommit at the driver, and each session's transaction sends its
    own BEGIN with its first statement (hub/db/loop_postgres.py): whichever way that statement goes, a write that
    fails afterwards commits nothing of it."""
    monkeypatch.setattr(AwaitedConnection, "can_pipeline", can_pipeline)
    name = f"first-{first.replace(' ', '-')}-{can_pipeline}"

    def write_then_fail(s: Session) -> None:
        if first == "one row":
            on_connection(s.connection()).execute(_INSERT_USER, {"user_id": name, "created_sec": 0.0})
        elif first == "many rows":
            on_connection(s.connection()).execute(_INSERT_USER, [{"user_id": name, "created_sec": 0.0}, {"user_id": f"{name}-2", "created_sec": 0.0}])
        else:
            s.connection().execute(insert(User.__table__), {"user_id": name, "created_sec": 0.0})
        assert on_connection(s.connection()).execute(_USERS_LIKE, {"pattern": f"{name}%"}).scalars()  # seen inside
        raise RuntimeError("refused after the first statement")

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="refused"):
            await ctx.run_write(write_then_fail)
        await ctx.close_loop()

    asyncio.run(scenario())
    with Session(ctx.engine) as s:
        assert s.scalars(select(User.user_id).where(User.user_id.like(f"{name}%"))).all() == []


def test_a_database_that_refuses_connections_gets_503_and_the_hub_recovers(database_url: str, tmp_path: Path) -> None:
    """The database restarting or refusing connections is nothing the request did wrong: every path (reads
    and creations on the loop, list pages in worker threads) answers 503 with Retry-After, which pairio's
    client retries; once the database is back, the same hub answers again. The hub here logs in as a role
    of its own, which is refused (NOLOGIN) and cut off, so that other tests' connections are untouched."""
    role = f"pairio_refused_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")

    def as_admin(*statements: str) -> None:
        with admin.connect() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)

    def cut_off() -> None:
        as_admin(f'ALTER ROLE "{role}" NOLOGIN', f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")

    as_admin(f'CREATE ROLE "{role}" LOGIN', f'CREATE SCHEMA "{role}" AUTHORIZATION "{role}"')
    url = make_url(POSTGRES_URL).set(username=role, query={"options": f"-csearch_path={role}"}).render_as_string(hide_password=False)
    ctx = HubContext.create(HubSettings(data_dir=tmp_path / "hub", database_url=url, public_url="http://127.0.0.1:1"))
    try:
        seeded = seed(ctx)
        auth = {"Authorization": f"Bearer {seeded.key}"}
        with LiveHub(ctx) as hub, httpx.Client(base_url=hub.url, timeout=60) as http:
            job = submit(http, seeded, hello1("before"))
            assert http.get(f"/v1/jobs/{job['jobId']}").status_code == 200
            cut_off()
            for method, path, body in [
                ("GET", f"/v1/jobs/{job['jobId']}", None),  # a read on the loop
                ("POST", "/v1/jobs", {"serviceName": seeded.service, "jobDefinition": hello1("during"), "requiredResources": RES}),
                ("GET", "/v1/jobs", None),  # a page, in a worker thread
                ("POST", "/api/getJob", {"type": "getJobRequest", "jobId": job["jobId"], "includePrivateKey": False}),  # the wire protocol
            ]:
                answer = http.request(method, path, json=body, headers=auth)
                assert answer.status_code == 503, (path, answer.status_code, answer.text)
                assert "database is unavailable" in answer.text
                assert path.startswith("/api/") or answer.headers["Retry-After"]
            as_admin(f'ALTER ROLE "{role}" LOGIN')
            assert http.get(f"/v1/jobs/{job['jobId']}").json()["jobId"] == job["jobId"]
            assert submit(http, seeded, hello1("after"))["status"] == "pending"
    finally:
        ctx.close()
        cut_off()
        as_admin(f'DROP SCHEMA "{role}" CASCADE', f'DROP ROLE "{role}"')
        admin.dispose()
