"""Create or upgrade the hub's schema with Alembic, safely from several hub processes at once."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATION_LOCK = 7_430_211  # arbitrary advisory lock id for "pairio schema migration"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_database(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    cfg = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
    else:
        with _sqlite_migration_lock(engine), engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process at a time per SQLite file.

    Switching a new file to WAL needs an exclusive lock that SQLite may refuse at once
    ("database is locked") instead of waiting, so hubs starting together take turns here.
    """
    path = engine.url.database
    if not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate-lock", "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
