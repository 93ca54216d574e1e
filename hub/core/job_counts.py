"""Jobs per service and status without counting rows: triggers on ``jobs`` append +1/-1
changes (migration 0004) in the transaction that changes a status; reads add the folded
counts and the changes not folded yet; housekeeping folds them now and then.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional

from sqlalchemy import Select, delete, func, select, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..context import HubContext
from ..db.tables import JobCount, JobCountChange


def counts_by_status(s: Session, service_name: Optional[str] = None) -> dict[str, int]:
    """Jobs per status (statuses with none left out), in one service or everywhere: one small query."""
    return {status: int(n) for status, n in s.execute(counts_query(service_name)) if n}


def counts_query(service_name: Optional[str]) -> Select[tuple[str, int]]:
    folded = select(JobCount.service_name, JobCount.status, JobCount.n.label("n"))
    pending = select(JobCountChange.service_name, JobCountChange.status, JobCountChange.delta.label("n"))
    if service_name:
        folded = folded.where(JobCount.service_name == service_name)
        pending = pending.where(JobCountChange.service_name == service_name)
    both = union_all(folded, pending).subquery()
    return select(both.c.status, func.sum(both.c.n)).group_by(both.c.status)


def fold_changes(s: Session) -> int:
    """Move the visible changes into ``job_counts``; returns how many were folded.

    ``DELETE ... RETURNING`` hands each change to one folding transaction only, so hub
    processes folding at once never count a change twice; counters are upserted in key
    order so they cannot deadlock each other.
    """
    rows = s.execute(delete(JobCountChange).returning(JobCountChange.service_name, JobCountChange.status, JobCountChange.delta)).all()
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for service_name, status, delta in rows:
        sums[(service_name, status)] += delta
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    for (service_name, status), delta in sorted(sums.items()):
        if delta:
            stmt = insert(JobCount).values(service_name=service_name, status=status, n=delta)
            s.execute(stmt.on_conflict_do_update(index_elements=["service_name", "status"], set_={"n": JobCount.n + delta}))
    return len(rows)


def fold_job_counts(ctx: HubContext) -> int:
    """Fold the pending changes in a transaction of their own (the housekeeping loop calls it)."""
    with ctx.transaction() as s:
        return fold_changes(s)
