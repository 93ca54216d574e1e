"""Everything a request handler needs, built once per hub app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session, sessionmaker

from .db.engine import make_engine, make_private_dir, make_session_factory, read_only_engine
from .db.migrate import upgrade_database
from .db.raw import RawReads, raw_reads
from .files import JobFiles
from .notifier import ComputeClientNotifier, RunnableNotifier
from .settings import HubSettings

NOTIFY_RUNNABLE = "pairio_notify_runnable"
JOB_FILES_INFO = "pairio_job_files"  # hub.core.job_secrets reads it
SECRETS_ERASED = "pairio_secrets_erased"
DELETE_FILES_AFTER_COMMIT = "pairio_delete_files_after_commit"
NOTIFY_JOBS_TO_STOP = "pairio_notify_jobs_to_stop"


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
    # SQLite: this process's writers queue here instead of in SQLite's busy handler, which
    # polls with growing sleeps (seconds of tail latency under load); see transaction()
    write_lock: AbstractContextManager[object] = field(default_factory=nullcontext)

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
        with self.write_lock, self.sessions() as session:
            session.info[JOB_FILES_INFO] = self.files  # a job's terminal transition flushes its console output
            with session.begin():
                yield session

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
        (hub/db/raw.py); other statements go to a ``statement_connection``."""
        with raw_reads(self.statement_engine, self.statement_connection) as reads:
            yield reads

    def close(self) -> None:
        self.engine.dispose()


def mark_runnable_changed(session: Session) -> None:
    """Ask for waiting claims to be woken once this session commits."""
    session.info[NOTIFY_RUNNABLE] = True


def mark_job_to_stop(session: Session, compute_client_id: str) -> None:
    """Wake the compute client's waiting heartbeat once this session commits: one of its jobs must stop."""
    session.info.setdefault(NOTIFY_JOBS_TO_STOP, set()).add(compute_client_id)


def now_sec() -> float:
    return time.time()

