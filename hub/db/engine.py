"""Engine and sessions for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY_OPTION = "pairio_read_only"
# The hub's files hold job secrets for a while and everyone's console output: its user only.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) for the hub's user only; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)


def make_private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it copies the mode to -wal and -shm); tighten old ones."""
    if not path.parent.exists():  # an existing folder may be shared: leave its mode alone
        make_private_dir(path.parent)
    # Never open an existing file here: closing any descriptor of a file drops every POSIX lock this
    # process holds on it, its open SQLite connections' too, and another process could then take the
    # database for unused and remove its shared-memory index under them (a second engine of an open
    # file, as the hub's event-loop connection is, once lost a created job so).
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass
    for p in [path] + [Path(f"{path}{suffix}") for suffix in SQLITE_SIDE_FILES]:
        try:
            if p.stat().st_mode & 0o777 != PRIVATE_FILE_MODE:
                os.chmod(p, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            pass


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and write-ahead ``BEGIN IMMEDIATE``.

    SQLite upgrades a read transaction to a write lazily, so two writers that both
    read first can deadlock ("database is locked"). Taking the write lock at BEGIN
    serialises writers cleanly; WAL keeps readers unblocked meanwhile.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            make_private_sqlite_file(Path(path))
        if "///" in url and path and path != ":memory:" and "poolclass" not in kwargs:  # a file (QueuePool)
            # as many kept connections as requests run at once: an overflow connection is closed when
            # returned, and opening one (file, pragmas, WAL index) costs more than a request
            kwargs.setdefault("pool_size", 20)
            kwargs.setdefault("max_overflow", 20)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            # Erased secrets must not linger in free space of the file (see checkpoint_sqlite too).
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            statement = "BEGIN" if conn.get_execution_options().get(READ_ONLY_OPTION, False) else "BEGIN IMMEDIATE"
            # the driver directly: through exec_driver_sql this costs as much as a small query
            try:
                conn.connection.dbapi_connection.execute(statement)
            except conn.dialect.dbapi.Error as e:  # as SQLAlchemy would raise it (e.g. "database is locked")
                raise DBAPIError.instance(statement, None, e, conn.dialect.dbapi.Error) from e

        return engine
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def checkpoint_sqlite(engine: Engine) -> None:
    """Copy the write-ahead log into the database file and empty it.

    Old page versions (with values erased since) stay in the WAL until it is reused;
    a TRUNCATE checkpoint removes them. It waits for readers, so it runs in the
    background (hub.expiry), not in requests.
    """
    if not is_sqlite(engine):
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()


def read_only_engine(engine: Engine) -> Engine:
    """The engine for reading: on SQLite its transactions begin without the write lock."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions for writing, or (``read_only``) for reading: on SQLite those begin without the write lock."""
    return sessionmaker(read_only_engine(engine) if read_only else engine, expire_on_commit=False)

