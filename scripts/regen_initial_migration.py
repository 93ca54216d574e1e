"""Regenerate hub/migrations/versions/0001_initial_schema.py from hub/db/tables.py.

Only while nothing has been released: after the first release, schema changes get
new migrations (alembic revision --autogenerate) instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from hub.db.engine import make_engine
from hub.db.migrate import MIGRATIONS_DIR, alembic_config

target = MIGRATIONS_DIR / "versions" / "0001_initial_schema.py"
target.unlink(missing_ok=True)
with tempfile.TemporaryDirectory() as d:
    engine = make_engine(f"sqlite:///{Path(d) / 'empty.db'}")
    command.revision(alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001")
print(f"wrote {target}")
