"""SQLite work run on the event loop itself, on a connection of the loop thread's own, that never waits.

The busiest requests are a few small SQLite statements: a read of one prebuilt statement (a
job's answer, a cache hit) takes 0.05-0.2 ms, a creation about 1 ms. Handing such work to a
worker thread and back costs more than the work: measured on the 2-core VM (bench/README.md,
P3 fifth pass), a getJob through a worker thread took 1.35 ms of server CPU and 31 context
switches (worker threads and the event loop passing the GIL back and forth around each SQLite
call), against 0.69 ms and none on the event loop; a creation 2.8 ms against 1.9 ms. The GIL
runs one thread's Python at a time anyway, so the loop loses nothing by doing this CPU work
itself; what it must never do is wait. So the loop's connection:

- has no busy timeout: a lock held by someone else (another process's write, WAL recovery, a
  checkpoint) fails at once with ``LoopBusy``, and the caller runs the work in a worker thread,
  where waiting blocks nobody else (work that failed so was rolled back, or only read);
- never checkpoints by itself (``wal_autocheckpoint=0``): a checkpoint writes and fsyncs the
  database file; the pool's connections (worker threads) still checkpoint as they commit, and the
  caller has a worker thread checkpoint every ``CHECKPOINT_EVERY_COMMITS`` commits on the loop,
  without holding up the loop's writes; the loop's next write first copies the few frames it
  committed meanwhile, so that the log starts over (``HubContext._write_on_loop``).

Within the process, writes on the loop take the same ``write_lock`` as worker threads' transactions,
without blocking: when a thread holds it or waits for it, the loop's write waits on the loop (an
event the release sets) and goes after them. (Handing such a write to a thread instead made each
handed-over write hold the lock while the next request arrived, so under steady load nearly every
creation went through a thread.)

Each loop thread gets its own connection (``SingletonThreadPool``); on PostgreSQL, where every
statement is a network round trip, there is no loop engine and this work stays in worker threads.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import SingletonThreadPool

from .engine import is_sqlite, make_engine

CHECKPOINT_EVERY_COMMITS = 25
"""Commits on the loop connection between background checkpoints of the write-ahead log: about what SQLite's
automatic checkpoint (at 1,000 pages) gives for creations, which write 30-40 pages each."""


class LoopBusy(Exception):
    """SQLite was locked: do the work in a worker thread, where waiting blocks nobody else."""


def make_loop_engine(engine: Engine) -> Optional[Engine]:
    """An engine for ``engine``'s SQLite file with one connection per thread that never waits; None on PostgreSQL
    or an in-memory database."""
    url = engine.url
    if not is_sqlite(engine) or not url.database or url.database == ":memory:":
        return None
    loop_engine = make_engine(url.render_as_string(hide_password=False), poolclass=SingletonThreadPool, pool_size=64)

    @event.listens_for(loop_engine, "connect")
    def _never_wait(dbapi_connection: Any, _record: Any) -> None:  # after make_engine's own pragmas
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    return loop_engine


def is_locked(error: BaseException) -> bool:
    """Whether ``error`` is SQLite's "database is locked" (or busy) as SQLAlchemy or the driver raises it."""
    orig = error.orig if isinstance(error, DBAPIError) else error
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text
