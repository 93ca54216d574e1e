"""PostgreSQL: the busiest reads run on the event loop, on connections of the loop's own pool that are not pinged
at checkout (a round trip per read); a read that finds its connection lost runs once more on a new one."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, text

from hub.context import HubContext
from hub.db.raw import RawReads, prebuilt

from .hubtools import POSTGRES_URL

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


def test_other_errors_of_a_read_are_not_run_again(ctx: HubContext) -> None:
    calls = []
    bad = prebuilt(text("SELECT 1 / 0"))

    def divide(reads: RawReads) -> object:
        calls.append(1)
        return reads.execute(bad).scalar()

    with pytest.raises(Exception, match="division by zero"):
        asyncio.run(ctx.run_read(divide))
    assert len(calls) == 1
