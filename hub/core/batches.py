"""A batch: the jobs submitted with one ``batchId`` (``submit_jobs(..., batch_id=...)``), seen together.

A batch exists while it has jobs; every query walks the ``ix_jobs_batch_*`` indexes, so a batch of
thousands of jobs costs an index range, never a scan of the jobs table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pairio.status import JobStatus

from ..context import now_sec
from ..db.tables import Job
from ..errors import NotFound
from . import jobs as core

FAILED = [JobStatus.FAILED]
NOT_FAILED = [st for st in JobStatus if st is not JobStatus.FAILED]


@dataclass
class BatchSummary:
    batch_id: str
    counts: dict[str, int]
    total: int
    finished: int
    failed: int
    first_created_sec: float
    # a guess from the pace so far (jobs finished since the first was created); None until one finishes
    eta_sec: Optional[float]

    @property
    def is_finished(self) -> bool:
        return self.finished == self.total


def batch_summary(s: Session, batch_id: str) -> BatchSummary:
    counts = core.count_jobs_by_status(s, f=core.JobFilter(batchId=batch_id))
    total = sum(counts.values())
    if total == 0:
        raise NotFound(f"no jobs have batch id {batch_id!r} (a batch exists while it has jobs; check the id, or the jobs were deleted)")
    first = s.scalar(select(func.min(Job.timestamp_created_sec)).where(Job.batch_id == batch_id)) or now_sec()
    finished = sum(counts[st.value] for st in JobStatus if st.is_terminal)
    eta = None
    if 0 < finished < total:
        elapsed = max(0.0, now_sec() - first)
        eta = elapsed / finished * (total - finished)
    return BatchSummary(
        batch_id=batch_id, counts=counts, total=total, finished=finished, failed=counts[JobStatus.FAILED.value],
        first_created_sec=first, eta_sec=eta,
    )


def batch_jobs(
    s: Session, batch_id: str, *, failed: bool, limit: int, cursor: Optional[str] = None,
) -> tuple[list[Job], Optional[str]]:
    """A page of the batch's failed jobs, or of its other jobs, oldest first (the order they were submitted)."""
    f = core.JobFilter(batchId=batch_id, status=FAILED if failed else NOT_FAILED)
    return core.find_jobs(s, f, limit=limit, cursor=cursor, oldest_first=True)
