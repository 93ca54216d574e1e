"""PostgreSQL work run on the event loop: psycopg's asyncio connections, one pool per event loop.

The busiest requests are a few small statements. In a worker thread each statement's round trip
hands the GIL between that thread and the event loop several times: measured on the 2-core VM
(bench/README.md, P3 sixth pass), 30 context switches per getJob and 61 per creation, which cost
more server CPU than the statements. On the loop, a statement's round trip is an ``await`` like any
other I/O, and the Python between statements runs where it would have run anyway (the GIL runs one
thread's Python at a time).

The same synchronous code serves both: SQLAlchemy runs it in a greenlet (``greenlet_spawn``), where
each wait for the server becomes an ``await`` on the loop. Writes (ORM sessions) use SQLAlchemy's
asyncio adaptation of psycopg, through a sync engine view (``AsyncEngine.sync_engine``) of the loop's
pool; their prebuilt statements (``on_connection``) run on the psycopg connection itself
(``AwaitedConnection``), several in one round trip and one write to the socket (``batch``,
hub/db/pg_batch.py). Reads (``RawReads``, the busiest requests) take psycopg's asyncio connections
directly from a small pool of their own (``ReadConnections``), in autocommit: checking one out of
SQLAlchemy's pool and its adaptation cost about as much as the statement (0.19 against 0.08 ms of CPU
per statement, measured).

An asyncio connection belongs to the event loop that opened it, so each loop gets a pool of its own
(``LoopPools.for_running_loop``): a uvicorn worker has one loop; tests open several (a test client
without its context runs each request on a loop of its own). The pools of loops that have closed are
dropped when a new loop's pool is made (psycopg closes a connection as it is collected).

A write transaction's BEGIN goes with its first statements. psycopg, left to begin transactions
itself, sends BEGIN and waits for its answer before the first statement, even in pipeline mode: one
round trip more per write. The write connections are therefore in autocommit at the driver, and a
session's transaction sends its own BEGIN (``begin_with_first_statement``): in the same round trip as
its first statements where they go in a batch, else just before its first statement. psycopg's commit
and rollback act on the server's transaction status, so they end it as before.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import await_only, greenlet_spawn

from .engine import make_session_factory
from .pg_batch import BATCH_CONNECT_ARGS, BatchResult, BatchStatement, run_batch
from .raw import RawReads

T = TypeVar("T")
MAX_OVERFLOW = 10  # SQLAlchemy's pool past the write transactions' connections: the reads' statements that were not prebuilt


class AwaitedCursor:
    """psycopg's asyncio cursor as a DBAPI cursor for code running in ``on_loop``'s greenlet."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    def execute(self, sql: str, args: Any = None) -> None:
        await_only(_executed_after_pending_begin(self._cursor, sql, args))

    def executemany(self, sql: str, args: Any) -> None:
        await_only(_executed_after_pending_begin(self._cursor, sql, args, many=True))

    def fetchall(self) -> list[Any]:
        return await_only(self._cursor.fetchall())

    def close(self) -> None:
        await_only(self._cursor.close())


class AwaitedConnection:
    """psycopg's asyncio connection as a DBAPI connection (what ``RawReads`` and the dialect's ``is_disconnect`` use)."""

    __slots__ = ("connection",)

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection

    def cursor(self) -> AwaitedCursor:
        return AwaitedCursor(self.connection.cursor())

    # libpq 14 or newer (psycopg's binary package brings its own): ``batch`` works; without it, ``RawReads`` sends
    # statements one by one through ``cursor``
    can_pipeline = psycopg.AsyncPipeline.is_supported()

    def batch(self, statements: Sequence[BatchStatement], transaction: bool = False) -> list[BatchResult]:
        """``statements`` in one round trip (hub/db/pg_batch.py), after the BEGIN of their transaction if that is
        still to be sent; ``transaction`` (on a connection outside any): in a transaction of their own, committed
        in the same round trip."""
        if transaction:
            return await_only(run_batch(self.connection, statements, begin=True, commit=True))
        return await_only(run_batch(self.connection, statements, begin=_take_pending_begin(self.connection)))

    @property
    def closed(self) -> bool:
        return self.connection.closed

    @property
    def broken(self) -> bool:
        return self.connection.broken


BEGIN = "BEGIN"
_begin_pending: "weakref.WeakSet[psycopg.AsyncConnection[Any]]" = weakref.WeakSet()
"""write connections whose session began a transaction that has sent no statement yet"""


def begin_with_first_statement(sessions: sessionmaker[Session]) -> None:
    """Each transaction of ``sessions`` (on an engine in autocommit at the driver) sends BEGIN with its first
    statement: in the same round trip by ``AwaitedConnection.batch``, or just before it by ``AwaitedCursor`` and
    when SQLAlchemy runs it (``before_cursor_execute``)."""
    engine = sessions.kw["bind"]

    @event.listens_for(sessions, "after_begin")
    def _pending(session: Session, transaction: Any, connection: Connection) -> None:
        _begin_pending.add(connection.connection.driver_connection)

    @event.listens_for(engine, "before_cursor_execute")
    def _begin_first(connection: Connection, *_: Any) -> None:
        driver = connection.connection.driver_connection
        if _take_pending_begin(driver):
            await_only(driver.execute(BEGIN, prepare=False))

    def _ended(connection: Connection) -> None:  # a transaction that sent nothing leaves nothing pending
        if not connection.invalidated:  # (else the connection is gone; asking for it would reconnect)
            _begin_pending.discard(connection.connection.driver_connection)

    event.listen(engine, "commit", _ended)
    event.listen(engine, "rollback", _ended)


def _take_pending_begin(connection: psycopg.AsyncConnection[Any]) -> bool:
    if connection in _begin_pending:
        _begin_pending.discard(connection)
        return True
    return False


async def _executed_after_pending_begin(cursor: psycopg.AsyncCursor[Any], sql: str, args: Any, many: bool = False) -> None:
    """The cursor's statement, after the BEGIN of its transaction if that is still to be sent (a libpq without
    pipeline mode: ``RawReads`` batches where it has one)."""
    if _take_pending_begin(cursor.connection):
        await cursor.connection.execute(BEGIN, prepare=False)
    await (cursor.executemany if many else cursor.execute)(sql, args)


def awaited(driver_connection: Any) -> "AwaitedConnection | None":
    """A psycopg asyncio connection (SQLAlchemy's session on the loop gives one) as ``AwaitedConnection``; None for others."""
    return AwaitedConnection(driver_connection) if isinstance(driver_connection, psycopg.AsyncConnection) else None


class ReadConnections:
    """One loop's autocommit connections for reads: at most ``size`` at once (more wait on the loop), kept while
    healthy. Opened with the engine dialect's connect arguments (its type adaptations included)."""

    def __init__(self, engine: Engine, size: int) -> None:
        self._dialect = engine.dialect
        self._args, self._params = engine.dialect.create_connect_args(engine.url)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)

    @contextmanager
    def raw_reads(self, fallback: Callable[[], Any]) -> Iterator[RawReads]:
        """In ``on_loop``'s greenlet: a ``RawReads`` on one of these connections, as ``hub.db.raw.raw_reads`` gives
        one of an engine's pool (``fallback``: the same). A connection found lost takes the idle ones with it (the
        server restarted?), as SQLAlchemy's pool does."""
        await_only(self._slots.acquire())
        try:
            conn = self._idle.pop() if self._idle else self._connect()
            with ExitStack() as stack:
                reads = RawReads(self._dialect, AwaitedConnection(conn), lambda: stack.enter_context(fallback()))
                try:
                    yield reads
                finally:
                    stack.close()
                    if reads.lost:
                        await_only(self.drop_idle())
                    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
                        await_only(conn.close())
                    else:
                        self._idle.append(conn)
        finally:
            self._slots.release()

    def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await_only(psycopg.AsyncConnection.connect(*self._args, **{**self._params, **BATCH_CONNECT_ARGS, "autocommit": True}))
        except psycopg.Error as e:  # as SQLAlchemy raises it (an OperationalError: the hub answers 503)
            raise DBAPIError.instance(None, None, e, psycopg.Error, dialect=self._dialect) from e

    async def drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


@dataclass(frozen=True)
class LoopPool:
    """One event loop's connections: ``reads`` (``RawReads``), ``sessions`` (writes) and ``autocommit`` (the reads'
    statements that were not prebuilt), the last two from ``async_engine``'s pool."""

    async_engine: AsyncEngine
    reads: ReadConnections
    autocommit: Engine
    sessions: sessionmaker[Session]
    writing: asyncio.Semaphore
    """held by each write transaction: past the pool's size, a connection would be opened and closed per request"""

    def drop_idle_writers(self) -> None:
        """In ``on_loop``'s greenlet: close the idle connections of ``sessions`` (one was found lost)."""
        await_only(self.async_engine.dispose())


class LoopPools:
    """A pool per running event loop, for one PostgreSQL URL; ``on_new_sessions`` is called with each pool's
    session factory (the hub listens to its commits)."""

    def __init__(self, url: str, on_new_sessions: Callable[[sessionmaker[Session]], None], concurrency: int) -> None:
        """``concurrency``: reads at once on a loop, and write transactions at once (HubSettings.database_concurrency);
        more wait on the loop for one to end."""
        self._url = url
        self._concurrency = concurrency
        self._on_new_sessions = on_new_sessions
        self._pools: dict[asyncio.AbstractEventLoop, LoopPool] = {}
        self._lock = threading.Lock()

    def for_running_loop(self) -> LoopPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            with self._lock:
                pool = self._pools.get(loop)
                if pool is None:
                    self._pools = {other: p for other, p in self._pools.items() if not other.is_closed()}
                    pool = self._new_pool()
                    self._pools[loop] = pool
        return pool

    def _new_pool(self) -> LoopPool:
        async_engine = create_async_engine(
            # not checked before use (a round trip per write): a write whose connection is found lost before its
            # commit runs again on a new one (HubContext.run_write), as reads do
            self._url, pool_size=self._concurrency, max_overflow=MAX_OVERFLOW,
            isolation_level="AUTOCOMMIT",  # a write's session sends its own BEGIN, with its first statement
            connect_args=BATCH_CONNECT_ARGS,
        )
        engine = async_engine.sync_engine
        sessions = make_session_factory(engine)
        begin_with_first_statement(sessions)
        self._on_new_sessions(sessions)
        return LoopPool(
            async_engine, ReadConnections(engine, self._concurrency), engine, sessions,
            asyncio.Semaphore(self._concurrency),
        )

    async def close_running_loop(self) -> None:
        """Close the running loop's connections (an app's shutdown, on its loop)."""
        with self._lock:
            pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.reads.drop_idle()
            await pool.async_engine.dispose()

    def forget_all(self) -> None:
        """Drop every pool (the hub closes): connections of loops still running are closed as they are collected."""
        with self._lock:
            self._pools = {}


async def on_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run synchronous database code on the event loop, its waits for the server awaited (see the module's doc)."""
    return await greenlet_spawn(fn, *args)
