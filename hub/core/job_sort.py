"""The jobs list in the orders a person asks for: by creation time, by status, or by how long jobs ran.

Every order pages by keyset, each piece walked in an index (tables.py, migration 0005):

- ``created``: (created, job id), newest or oldest first;
- ``status``: one status after another in the order of a job's life (pending first, or failed first
  when descending), each status's jobs newest first: the (…, status, created, job id) indexes;
- ``duration``: finished jobs by how long they ran (the ``ix_jobs_run_time`` expression index), then
  the jobs that have not finished, newest first (they have no duration yet).

A sorted page's cursor names its piece (a status, or ``ran``/``unfinished``) and the position in it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Optional

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from pairio.status import JobStatus

from ..db.tables import Job
from ..errors import BadRequest
from . import jobs as core

LIFECYCLE = [JobStatus.PENDING, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED]
RAN, UNFINISHED = "ran", "unfinished"
# the same expression as the index ix_jobs_run_time, so the planner walks it
RUN_TIME = Job.timestamp_finished_sec - Job.timestamp_started_sec
# true for every job with both times (NULL otherwise), as a range: the index is read from its first non-NULL
# entry on, not through the NULL entries of every unfinished job (IS NOT NULL is no range to SQLite)
HAS_RUN_TIME = RUN_TIME >= -1e300


class SortKey(str, Enum):
    CREATED = "created"
    STATUS = "status"
    DURATION = "duration"


@dataclass(frozen=True)
class JobSort:
    key: SortKey = SortKey.CREATED
    descending: bool = True

    @property
    def is_default(self) -> bool:
        return self.key is SortKey.CREATED and self.descending


def parse_sort(sort: Optional[str], order: Optional[str]) -> JobSort:
    """``sort`` (created, status, duration) and ``order`` (desc, asc) from a query string; 400 for other values."""
    sort, order = (sort or "").strip(), (order or "").strip()
    try:
        key = SortKey(sort) if sort else SortKey.CREATED
    except ValueError:
        raise BadRequest(f"unknown sort {sort[:40]!r}: use one of {', '.join(k.value for k in SortKey)}") from None
    if order not in ("", "asc", "desc"):
        raise BadRequest(f"unknown order {order[:40]!r}: use asc or desc")
    return JobSort(key, order != "asc")


def find_sorted_jobs(s: Session, f: core.JobFilter, sort: JobSort, *, limit: int, cursor: Optional[str] = None) -> tuple[list[Job], Optional[str]]:
    """A page of the jobs matching ``f`` in the order ``sort``, and the cursor of the next page (None on the last)."""
    if sort.key is SortKey.CREATED:
        return core.find_jobs(s, f, limit=limit, cursor=cursor, oldest_first=not sort.descending)
    pieces = _pieces(f, sort)
    start, inner = _decode(cursor, pieces) if cursor else (0, None)
    rows: list[Job] = []
    for index in range(start, len(pieces)):
        want = limit + 1 - len(rows)  # one more than a page: is there a next one?
        rows.extend(_piece_rows(s, f, sort, pieces[index], want, inner if index == start else None))
        if len(rows) > limit:
            break
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode(_piece_of(last, sort), last)


def _pieces(f: core.JobFilter, sort: JobSort) -> list[str]:
    if sort.key is SortKey.STATUS:
        statuses = [st for st in LIFECYCLE if not f.status or st in f.status]
        return [st.value for st in (statuses[::-1] if sort.descending else statuses)]
    return [RAN, UNFINISHED]


def _piece_of(job: Job, sort: JobSort) -> str:
    if sort.key is SortKey.STATUS:
        return job.status
    return RAN if job.timestamp_finished_sec is not None and job.timestamp_started_sec is not None else UNFINISHED


def _piece_rows(s: Session, f: core.JobFilter, sort: JobSort, piece: str, limit: int, inner: Optional[tuple[float, str]]) -> list[Job]:
    if piece == RAN:
        q = core.filter_jobs(select(Job), f)
        if inner is None:
            q = q.where(HAS_RUN_TIME)
        else:
            # the plain bound (<= or >=) is a range of the index: a later page starts where the last one ended
            value, jid = inner
            if sort.descending:
                q = q.where(HAS_RUN_TIME, RUN_TIME <= value, or_(RUN_TIME < value, and_(RUN_TIME == value, Job.job_id < jid)))
            else:
                q = q.where(RUN_TIME >= value, or_(RUN_TIME > value, and_(RUN_TIME == value, Job.job_id > jid)))
        order: Any = (RUN_TIME.desc(), Job.job_id.desc()) if sort.descending else (RUN_TIME.asc(), Job.job_id.asc())
        return list(s.scalars(q.order_by(*order).limit(limit)))
    if piece == UNFINISHED:
        q = core.find_jobs_query(f, limit, _inner_cursor(inner))
        # no duration: not finished (or failed before it started)
        q = q.where(or_(Job.timestamp_finished_sec.is_(None), Job.timestamp_started_sec.is_(None)))
        return list(s.scalars(q))
    return list(s.scalars(core.find_jobs_query(replace(f, status=[JobStatus(piece)]), limit, _inner_cursor(inner))))


def _inner_cursor(inner: Optional[tuple[float, str]]) -> Optional[str]:
    if inner is None:
        return None
    return base64.urlsafe_b64encode(f"{inner[0]!r}|{inner[1]}".encode()).decode()


def _encode(piece: str, job: Job) -> str:
    value = job.timestamp_created_sec
    if piece == RAN:
        value = float(job.timestamp_finished_sec or 0) - float(job.timestamp_started_sec or 0)
    return base64.urlsafe_b64encode(f"{piece}|{value!r}|{job.job_id}".encode()).decode()


def _decode(cursor: str, pieces: list[str]) -> tuple[int, tuple[float, str]]:
    try:
        piece, value, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 2)
        return pieces.index(piece), (float(value), job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("invalid cursor for this sort: follow the page's 'next' link, which carries the cursor unchanged") from None
