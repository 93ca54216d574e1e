"""PostgreSQL: the busiest reads take connections from a pool that does not ping the server at checkout
(a round trip per read); a read that finds its connection lost runs once more on a new one."""

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


def test_a_read_whose_connection_was_lost_runs_again_on_a_new_one(ctx: HubContext) -> None:
    assert ctx.reads_engine is not None and ctx.loop_engine is None
    first = asyncio.run(ctx.run_read(backend_pid))
    assert asyncio.run(ctx.run_read(backend_pid)) == first  # the pooled connection is reused
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:  # as a database restart would: the pooled connection is gone
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
    finally:
        admin.dispose()
    again = asyncio.run(ctx.run_read(backend_pid))
    assert again != first


def test_other_errors_of_a_read_are_not_run_again(ctx: HubContext) -> None:
    calls = []
    bad = prebuilt(text("SELECT 1 / 0"))

    def divide(reads: RawReads) -> object:
        calls.append(1)
        return reads.execute(bad).scalar()

    with pytest.raises(Exception, match="division by zero"):
        asyncio.run(ctx.run_read(divide))
    assert len(calls) == 1
