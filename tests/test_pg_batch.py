"""PostgreSQL batches (hub/db/pg_batch.py): several statements in one round trip on a real server, converted as
psycopg's own cursors convert them; an error fails the batch and skips what follows; a batch interrupted while it
waits leaves its connection closed, never half-read."""

from __future__ import annotations

import asyncio
import datetime
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from hub.db import pg_batch
from hub.db.pg_batch import BatchStatement, run_batch

from .hubtools import POSTGRES_URL

pytestmark = pytest.mark.hub

DSN = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def _connected() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(DSN, autocommit=True, **pg_batch.BATCH_CONNECT_ARGS)
    try:
        yield conn
    finally:
        await conn.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


@asynccontextmanager
async def _table(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[str]:
    name = f"pairio_batch_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE TABLE "{name}" (id text PRIMARY KEY, n integer, doc jsonb)')
    try:
        yield name
    finally:
        await conn.execute(f'DROP TABLE "{name}"')


def test_statements_run_in_order_and_come_back_as_psycopgs_cursor_gives_them() -> None:
    values = {
        "i": 42, "big": 2**40, "s": "it's 100%", "none": None, "yes": True, "x": 0.25,
        "doc": psycopg.types.json.Jsonb({"a": [1, "b"]}), "when": datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.timezone.utc),
    }
    sql = (
        "SELECT %(i)s::int + 1 AS i, %(big)s AS big, %(s)s AS s, %(none)s::text AS none, %(yes)s AS yes, %(x)s AS x,"
        " %(doc)s AS doc, %(when)s AS at, %(i)s AS again, 'a%%b' AS literal"
    )

    async def scenario() -> None:
        async with _connected() as conn:
            got = await run_batch(conn, [BatchStatement(sql, values), BatchStatement("SELECT 1 WHERE false"), BatchStatement("SELECT 7 AS n")])
            cursor = await conn.execute(sql, values)
            expected = await cursor.fetchall()
            assert got[0].rows == [tuple(expected[0])]
            assert [name for name, _ in got[0].columns or []] == [c.name for c in cursor.description or []]
            assert [oid for _, oid in got[0].columns or []] == [c.type_code for c in cursor.description or []]
            assert got[1].rows == [] and got[1].columns is not None  # a query with no rows still has columns
            assert got[2].rows == [(7,)]

    run(scenario)


def test_each_parameter_set_of_many_runs_and_each_statement_is_prepared_once_per_connection() -> None:
    async def scenario() -> None:
        async with _connected() as conn, _table(conn) as table:
            insert = f'INSERT INTO "{table}" (id, n) VALUES (%(id)s, %(n)s)'
            count = f'SELECT count(*) FROM "{table}"'
            await run_batch(conn, [BatchStatement(insert, [{"id": "a", "n": 1}, {"id": "b", "n": 2}], many=True), BatchStatement(count)])
            got = await run_batch(conn, [BatchStatement(insert, {"id": "c", "n": 3}), BatchStatement(count)])
            assert got[1].rows == [(3,)]
            cursor = await conn.execute("SELECT statement FROM pg_prepared_statements WHERE name LIKE '\\_pairio\\_%%'")
            prepared = [r[0] for r in await cursor.fetchall()]
            assert sorted(prepared) == sorted([insert.replace("%(id)s", "$1").replace("%(n)s", "$2"), count])

    run(scenario)


def test_a_failed_statement_fails_its_transaction_and_the_statements_after_it_do_not_run() -> None:
    async def scenario() -> None:
        async with _connected() as conn, _table(conn) as table:
            insert = f'INSERT INTO "{table}" (id) VALUES (%(id)s)'
            count = BatchStatement(f'SELECT count(*) FROM "{table}"')
            with pytest.raises(psycopg.errors.UniqueViolation):
                await run_batch(conn, [
                    BatchStatement(insert, {"id": "one"}), BatchStatement(insert, {"id": "one"}), BatchStatement(insert, {"id": "two"}),
                ], begin=True)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            await conn.rollback()
            assert (await run_batch(conn, [count]))[0].rows == [(0,)]  # the connection goes on
            # outside a transaction a batch is one implicit transaction: all of it or nothing
            with pytest.raises(psycopg.errors.UniqueViolation):
                await run_batch(conn, [BatchStatement(insert, {"id": "three"}), BatchStatement(insert, {"id": "three"})])
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert (await run_batch(conn, [count]))[0].rows == [(0,)]

    run(scenario)


def test_a_batch_that_is_a_transaction_of_its_own_commits_all_or_rolls_back_and_leaves_its_connection_idle() -> None:
    """``begin`` and ``commit``: BEGIN, the statements and COMMIT in one round trip. A failed statement skips the
    rest, COMMIT included, and the transaction is rolled back before the error is raised (an advisory lock taken
    in it is released with it)."""
    async def scenario() -> None:
        async with _connected() as conn, _table(conn) as table:
            insert = f'INSERT INTO "{table}" (id) VALUES (%(id)s)'
            count = BatchStatement(f'SELECT count(*) FROM "{table}"')
            lock = BatchStatement("SELECT pg_advisory_xact_lock(12345)")
            held = BatchStatement("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            got = await run_batch(conn, [lock, BatchStatement(insert, {"id": "one"}), count], begin=True, commit=True)
            assert got[2].rows == [(1,)]
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            with pytest.raises(psycopg.errors.DivisionByZero):
                await run_batch(conn, [
                    lock, BatchStatement(insert, {"id": "two"}), BatchStatement("SELECT 1 / 0"), BatchStatement(insert, {"id": "three"}),
                ], begin=True, commit=True)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            rows = (await run_batch(conn, [count, held]))
            assert [r.rows for r in rows] == [[(1,)], [(0,)]]  # "two" rolled back, the lock released
            async with _connected() as other:  # what was committed is there for others
                assert (await run_batch(other, [count]))[0].rows == [(1,)]

    run(scenario)


def test_a_connection_where_psycopg_prepares_statements_of_its_own_is_refused() -> None:
    """psycopg's rollback sends DEALLOCATE ALL on a connection where it prepared statements, dropping the batch's
    too: such a connection is refused, saying how to open one."""
    async def scenario() -> None:
        conn = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        try:
            with pytest.raises(psycopg.ProgrammingError, match="BATCH_CONNECT_ARGS"):
                await run_batch(conn, [BatchStatement("SELECT 1")])
        finally:
            await conn.close()

    run(scenario)


def test_a_value_the_connection_cannot_adapt_fails_the_batch_before_anything_is_sent() -> None:
    async def scenario() -> None:
        async with _connected() as conn:
            with pytest.raises(psycopg.ProgrammingError, match="cannot adapt"):
                await run_batch(conn, [BatchStatement("SELECT pg_advisory_lock(1)"), BatchStatement("SELECT %(x)s", {"x": object()})])
            assert not conn.closed
            locks = await run_batch(conn, [BatchStatement("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")])
            assert locks[0].rows == [(0,)], "the first statement was not sent"

    run(scenario)


def test_a_batch_cancelled_while_it_waits_closes_its_connection() -> None:
    """Its results would still come: a later batch on that connection would read them as its own."""

    async def scenario() -> None:
        async with _connected() as conn:
            task = asyncio.ensure_future(run_batch(conn, [BatchStatement("SELECT pg_sleep(2)")]))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert conn.closed

    run(scenario)


def test_a_lost_connection_fails_the_batch_and_is_closed() -> None:
    async def scenario() -> None:
        async with _connected() as conn, _connected() as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
            with pytest.raises(psycopg.OperationalError):
                await run_batch(conn, [BatchStatement("SELECT 1"), BatchStatement("SELECT 2")])
            assert conn.closed

    run(scenario)


def test_each_statement_has_a_name_of_its_own_when_loops_of_several_threads_ask_at_once() -> None:
    """Two statements under one name would run one another's SQL on a connection that prepared the other."""
    queries = [f"SELECT {i} AS thread_test".encode() for i in range(300)]
    start = threading.Barrier(8)
    names: list[list[tuple[bytes, bytes]]] = []

    def ask(offset: int) -> None:
        start.wait()
        names.append([(q, pg_batch._statement_name(q, ())) for q in queries[offset:] + queries[:offset]])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can
    try:
        threads = [threading.Thread(target=ask, args=(i * 37,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    seen = {q: n for got in names for q, n in got}
    assert all(seen[q] == n for got in names for q, n in got), "a statement got two names"
    assert len(set(seen.values())) == len(queries), "two statements share a name"
