"""Everything a request handler needs, built once per hub app."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from .claim_waiters import ClaimWaiters
from .db.engine import make_engine, make_private_dir, make_session_factory, read_only_engine
from .db.migrate import upgrade_database
from .db.loop_connection import CHECKPOINT_EVERY_COMMITS, LoopBusy, is_locked, make_loop_engine
from .db.loop_postgres import AwaitedConnection, LoopPool, LoopPools, on_loop
from .db.raw import RawReads, raw_reads
from .files import JobFiles
from .notifier import ComputeClientNotifier, RunnableNotifier
from .settings import HubSettings

NOTIFY_RUNNABLE = "pairio_notify_runnable"
JOB_FILES_INFO = "pairio_job_files"  # hub.core.job_secrets reads it
SECRETS_ERASED = "pairio_secrets_erased"
DELETE_FILES_AFTER_COMMIT = "pairio_delete_files_after_commit"
NOTIFY_JOBS_TO_STOP = "pairio_notify_jobs_to_stop"
T = TypeVar("T")
LOOP_WRITE_RECHECK_SEC = 1.0
"""A write waiting on the event loop for the write lock looks again at least this often (it is woken at once)."""


@dataclass
class HubContext:
    settings: HubSettings
    engine: Engine
    sessions: sessionmaker[Session]
    files: JobFiles
    read_sessions: sessionmaker[Session]
    read_engine: Engine  # the engine of read_sessions: on SQLite its transactions begin without the write lock
    statement_engine: Engine  # for reads of one statement (statement_connection)
    notifier: RunnableNotifier = field(default_factory=RunnableNotifier)
    # set when a commit erased secrets: the next housekeeping empties SQLite's write-ahead log
    secrets_erased: bool = False
    stop_notifier: ComputeClientNotifier = field(default_factory=ComputeClientNotifier)
    claim_waiters: ClaimWaiters = field(default_factory=ClaimWaiters)
    """the claims waiting for a job, per service: none gets a job ahead while another client waits (hub/claim_waiters.py)"""
    # SQLite: this process's writers queue here instead of in SQLite's busy handler, which
    # polls with growing sleeps (seconds of tail latency under load); see transaction()
    write_lock: AbstractContextManager[object] = field(default_factory=nullcontext)
    # SQLite: the busiest reads and creations run on the event loop, on a connection of the loop's own
    # that never waits (hub/db/loop_connection.py; run_read, run_write)
    loop_engine: Optional[Engine] = None
    loop_sessions: Optional[sessionmaker[Session]] = None
    _loop_commits: int = 0
    _writers_waiting: int = 0  # worker threads waiting for write_lock: the loop leaves it to them
    _loop_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)  # writes on loops
    _waiters_lock: threading.Lock = field(default_factory=threading.Lock)
    _checkpointing: bool = False  # a background checkpoint is under way
    _log_copied: bool = False  # one copied the log: the loop's next write copies what it missed first
    # PostgreSQL: the busiest reads and writes run on the event loop, on asyncio connections of the loop's own
    # (hub/db/loop_postgres.py; run_read, run_write)
    loop_pools: Optional[LoopPools] = None

    @classmethod
    def create(cls, settings: HubSettings, migrate: bool = True) -> "HubContext":
        make_private_dir(settings.data_dir)
        engine = make_engine(settings.resolved_database_url())
        if migrate:
            upgrade_database(engine)
        read_engine = read_only_engine(engine)
        ctx = cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            read_sessions=make_session_factory(read_engine),
            read_engine=read_engine,
            # a PostgreSQL statement reads one snapshot by itself: no BEGIN and COMMIT, two round trips fewer
            statement_engine=read_engine if engine.dialect.name == "sqlite" else engine.execution_options(isolation_level="AUTOCOMMIT"),
            files=JobFiles(settings.files_dir),
            write_lock=threading.Lock() if engine.dialect.name == "sqlite" else nullcontext(),
        )
        if engine.dialect.name == "postgresql":
            ctx.loop_pools = LoopPools(
                settings.resolved_database_url(), lambda s: event.listen(s, "after_commit", ctx._after_commit), settings.database_concurrency,
            )
        ctx.loop_engine = make_loop_engine(engine)
        if ctx.loop_engine is not None:
            ctx.loop_sessions = make_session_factory(ctx.loop_engine)
            event.listen(ctx.loop_sessions, "after_commit", ctx._after_commit)
        event.listen(ctx.sessions, "after_commit", ctx._after_commit)
        return ctx

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(NOTIFY_RUNNABLE, False):
            self.notifier.notify()
        if session.info.pop(SECRETS_ERASED, False):
            self.secrets_erased = True
        for client_id in session.info.pop(NOTIFY_JOBS_TO_STOP, set()):
            self.stop_notifier.notify(client_id)
        for job_id in session.info.pop(DELETE_FILES_AFTER_COMMIT, []):
            self.files.delete_job(job_id)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success, rolls back on error, and wakes claims after commit if asked.

        On SQLite, one write transaction of this process at a time (``write_lock``); SQLite's own
        lock (``BEGIN IMMEDIATE``) still serialises it with other processes.
        """
        with self._write_lock_queued(), self._session_transaction(self.sessions) as session:
            yield session

    @contextmanager
    def _session_transaction(self, sessions: sessionmaker[Session]) -> Iterator[Session]:
        with sessions() as session:
            session.info[JOB_FILES_INFO] = self.files  # a job's terminal transition flushes its console output
            with session.begin():
                yield session

    @contextmanager
    def _write_lock_queued(self) -> Iterator[None]:
        """``write_lock`` for a worker thread, counted while waited for (``run_write`` leaves the lock to threads
        that wait for it); its release wakes the writes waiting on event loops."""
        if self.loop_sessions is None:  # PostgreSQL (no lock) or a database without a loop connection
            with self.write_lock:
                yield
            return
        lock: Any = self.write_lock
        if not lock.acquire(blocking=False):
            with self._waiters_lock:
                self._writers_waiting += 1
            try:
                lock.acquire()
            finally:
                with self._waiters_lock:
                    self._writers_waiting -= 1
        try:
            yield
        finally:
            self._release_write_lock()

    def _release_write_lock(self) -> None:
        lock: Any = self.write_lock
        with self._waiters_lock:
            lock.release()
            waiters, self._loop_waiters = self._loop_waiters, []
        for loop, released in waiters:
            try:
                loop.call_soon_threadsafe(released.set)
            except RuntimeError:  # that loop has closed: its waiter is gone
                pass

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """A session for reads only; on SQLite it does not take the write lock, so reads run side by side."""
        with self.read_sessions() as session:
            with session.begin():
                yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A plain connection for reads only, no ORM session: what the busiest routes read with."""
        with self.read_engine.begin() as connection:
            yield connection

    @contextmanager
    def statement_connection(self) -> Iterator[Connection]:
        """A connection for a read of one statement: on PostgreSQL outside a transaction."""
        with self.statement_engine.connect() as connection:
            yield connection

    @contextmanager
    def raw_reads(self) -> Iterator[RawReads]:
        """Reads of prebuilt statements on the driver's connection, each statement its own snapshot
        (hub/db/raw.py); other statements go to a ``statement_connection``. In a worker thread: ``run_read``'s
        way when SQLite is locked."""
        with raw_reads(self.statement_engine, self.statement_connection) as reads:
            yield reads

    async def run_read(self, read: Callable[[RawReads], T]) -> T:
        """``read`` (reads of prebuilt statements and some CPU, no writes) with a ``RawReads``, on the event loop:
        on SQLite on the loop's own connection (hub/db/loop_connection.py), in a worker thread with ``raw_reads``
        when that connection meets a lock; on PostgreSQL on the loop's asyncio pool (hub/db/loop_postgres.py),
        run once more on a new connection when the one it had was lost."""
        if self.loop_engine is not None:
            try:
                return self._read_on_loop(read)
            except LoopBusy:
                pass  # again where waiting blocks nobody: reads only, so running them twice changes nothing
        elif self.loop_pools is not None:
            pool = self.loop_pools.for_running_loop()
            return await on_loop(self._read_retried, lambda: pool.reads.raw_reads(pool.autocommit.connect), read)
        return await run_in_threadpool(self._read_retried, self.raw_reads, read)

    @property
    def writes_in_one_round_trip(self) -> bool:
        """Whether ``run_write_in_one_round_trip`` may be used: PostgreSQL on the event loop, with libpq's pipelines."""
        return self.loop_pools is not None and AwaitedConnection.can_pipeline

    async def run_write_in_one_round_trip(self, write: Callable[[RawReads, Engine], T]) -> T:
        """``write`` with a ``RawReads`` on one of the loop's connections outside any transaction, whose ``commit_all``
        writes statements in a transaction of their own, in one round trip; and the engine of the loop's write
        sessions (what ``slot_fit`` remembers is kept per engine). Only where ``writes_in_one_round_trip``."""
        assert self.loop_pools is not None
        pool = self.loop_pools.for_running_loop()

        def run() -> T:
            with pool.reads.raw_reads(pool.autocommit.connect) as reads:
                return write(reads, pool.autocommit)

        return await on_loop(run)

    def _read_on_loop(self, read: Callable[[RawReads], T]) -> T:
        assert self.loop_engine is not None
        try:  # this thread's own connection (SingletonThreadPool)
            with raw_reads(self.loop_engine, self.statement_connection) as reads:
                return read(reads)
        except OperationalError as e:
            if is_locked(e):
                raise LoopBusy(str(e)) from e
            raise

    @staticmethod
    def _read_retried(open_reads: Callable[[], AbstractContextManager[RawReads]], read: Callable[[RawReads], T]) -> T:
        try:
            with open_reads() as reads:
                return read(reads)
        except DBAPIError as e:
            if not e.connection_invalidated:
                raise
        # the connection was lost (the database restarted, a proxy dropped it): reads only, so run them again
        with open_reads() as reads:
            return read(reads)

    async def run_write(self, write: Callable[[Session], T]) -> T:
        """``write`` in a transaction (``transaction``'s rules; it must touch only the database until it returns).

        On SQLite on the event loop: when a worker thread of this process holds ``write_lock`` or waits for it,
        the write waits (on the loop, woken by the release) and goes after them; when another process holds
        SQLite's lock (the loop's connection never waits), it is handed to a worker thread to wait there (it
        was rolled back: nothing of it was committed). On PostgreSQL on the loop's asyncio pool
        (hub/db/loop_postgres.py): the waits for the server (row locks included) are awaited."""
        if self.loop_pools is not None:
            pool = self.loop_pools.for_running_loop()
            async with pool.writing:
                return await on_loop(self._write_retried, pool, write)
        if self.loop_sessions is None:
            return await run_in_threadpool(self._write_in_thread, write)
        lock: Any = self.write_lock
        while True:
            released = asyncio.Event()
            with self._waiters_lock:
                mine = not self._writers_waiting and lock.acquire(blocking=False)
                if not mine:
                    self._loop_waiters.append((asyncio.get_running_loop(), released))
            if mine:
                try:
                    return self._write_on_loop(write)
                except LoopBusy:
                    break
                finally:
                    self._release_write_lock()
            try:  # woken by the release; the bound only caps what a wake-up lost to a bug would cost
                await asyncio.wait_for(released.wait(), LOOP_WRITE_RECHECK_SEC)
            except asyncio.TimeoutError:
                pass
        return await run_in_threadpool(self._write_in_thread, write)

    def _write_on_loop(self, write: Callable[[Session], T]) -> T:
        assert self.loop_sessions is not None
        if self._log_copied:
            self._finish_checkpoint_on_loop()
        try:
            with self._session_transaction(self.loop_sessions) as session:
                result = write(session)
        except OperationalError as e:  # rolled back: nothing of it was committed
            if is_locked(e):
                raise LoopBusy(str(e)) from e
            raise
        self._loop_commits += 1
        if self._loop_commits % CHECKPOINT_EVERY_COMMITS == 0 and not self._checkpointing:
            self._checkpointing = True
            threading.Thread(target=self._checkpoint_in_background, name="pairio-checkpoint", daemon=True).start()
        return result

    def _checkpoint_in_background(self) -> None:
        """The bulk of what the loop's connection never does: copy the write-ahead log into the database file (and
        fsync both), in a worker thread, while the loop goes on writing. PASSIVE: neither readers, nor writers, nor
        other processes are waited for, and this process's writers are not held either: holding ``write_lock`` here
        stalled every write on the loop for 15-30 ms per checkpoint under load (the thread waits for the GIL each
        time it needs it while holding the lock, bench/README.md "P3, tenth pass"). What the loop commits meanwhile
        is copied by ``_finish_checkpoint_on_loop`` before its next write."""
        try:
            _passive_checkpoint(self.engine)
            self._log_copied = True
        except Exception:  # noqa: BLE001 - a later checkpoint (or the next writer's) does it
            pass
        finally:
            self._checkpointing = False

    def _finish_checkpoint_on_loop(self) -> None:
        """Copy the log's last frames (what the loop committed while the background checkpoint ran: a few pages)
        on the loop's own connection, between two of its writes. With the whole log in the database file and no
        write under way, the next write starts the log over from its beginning, as after SQLite's own checkpoint;
        without this the log only grows under steady writes, since some write is nearly always under way when a
        background checkpoint ends. PASSIVE: a lock held by another process makes it return at once, and a later
        checkpoint does it."""
        assert self.loop_engine is not None
        self._log_copied = False
        try:
            _passive_checkpoint(self.loop_engine)  # this thread's own connection (SingletonThreadPool)
        except Exception:  # noqa: BLE001 - not this write's business: a later checkpoint does it
            pass

    def _write_in_thread(self, write: Callable[[Session], T]) -> T:
        with self.transaction() as session:
            return write(session)

    def _write_retried(self, pool: LoopPool, write: Callable[[Session], T]) -> T:
        """``write`` in a transaction of the loop's pool, run once more on a new connection when the one it had was
        found lost before the commit: the server rolled that transaction back, so nothing of it was committed (the
        pool's connections are not checked before use: a round trip per write). A connection lost at the commit
        fails the request: the commit may have happened."""
        lost_before_commit = False

        def watched(session: Session) -> T:
            nonlocal lost_before_commit
            try:
                return write(session)
            except DBAPIError as e:
                lost_before_commit = e.connection_invalidated
                raise

        try:
            with self._session_transaction(pool.sessions) as session:
                return watched(session)
        except DBAPIError:
            if not lost_before_commit:
                raise
        pool.drop_idle_writers()  # the server restarted? the idle ones were lost with it
        with self._session_transaction(pool.sessions) as session:
            return write(session)

    async def close_loop(self) -> None:
        """Close what the running event loop holds (an app's shutdown, on its loop)."""
        if self.loop_pools is not None:
            await self.loop_pools.close_running_loop()

    def close(self) -> None:
        if self.loop_pools is not None:
            self.loop_pools.forget_all()
        if self.loop_engine is not None:
            self.loop_engine.dispose()
        self.engine.dispose()


def _passive_checkpoint(engine: Engine) -> None:
    """SQLite: copy what it can of the write-ahead log into the database file, waiting for no one."""
    raw: Any = engine.raw_connection()
    try:
        raw.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        raw.close()


def mark_runnable_changed(session: Session) -> None:
    """Ask for waiting claims to be woken once this session commits."""
    session.info[NOTIFY_RUNNABLE] = True


def mark_job_to_stop(session: Session, compute_client_id: str) -> None:
    """Wake the compute client's waiting heartbeat once this session commits: one of its jobs must stop."""
    session.info.setdefault(NOTIFY_JOBS_TO_STOP, set()).add(compute_client_id)


def now_sec() -> float:
    return time.time()

