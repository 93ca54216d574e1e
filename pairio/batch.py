"""Waiting on many jobs at once: ``as_completed`` yields each job as it finishes, ``wait_for_jobs`` returns
them all once every one has, optionally with a progress line (pairio.progress).

Jobs of one batch (the same ``batch_id``, as ``submit_job(..., batch_id=...)`` gives them) are refreshed
with one listing per poll; others one request each, only while they are unfinished. Polls start
quickly and slow down (up to ``max_poll_interval_sec``), so a long wait does not load the hub.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Optional

from .errors import JobsWaitTimeoutError
from .job import PairioJob
from .progress import ProgressDisplay


def as_completed(
    jobs: Iterable[PairioJob],
    *,
    timeout_sec: Optional[float] = None,
    poll_interval_sec: float = 1.0,
    max_poll_interval_sec: float = 10.0,
    progress: Optional[ProgressDisplay] = None,
) -> Iterator[PairioJob]:
    """Each job once, as soon as it is completed or failed (finished ones first, then in the order they finish).

    Raises ``JobsWaitTimeoutError`` (a ``TimeoutError``) naming the unfinished jobs when ``timeout_sec`` passes.
    """
    every = list(jobs)
    waiting = list(every)
    deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
    delay = poll_interval_sec
    first = True
    while waiting:
        if not first:
            _refresh(waiting)
        first = False
        if progress is not None:
            progress.update(j.status for j in every)
        finished = [j for j in waiting if j.status.is_terminal]
        waiting = [j for j in waiting if not j.status.is_terminal]
        yield from finished
        if not waiting:
            return
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobsWaitTimeoutError([j.jobId for j in waiting], len(every), float(timeout_sec or 0))
            time.sleep(min(delay, remaining))
        else:
            time.sleep(delay)
        delay = min(delay * 1.5, max_poll_interval_sec)


def wait_for_jobs(
    jobs: Iterable[PairioJob],
    *,
    timeout_sec: Optional[float] = None,
    progress: Optional[bool] = None,
    poll_interval_sec: float = 1.0,
    max_poll_interval_sec: float = 10.0,
) -> list[PairioJob]:
    """Wait until every job is completed or failed; return them (refreshed) in the order given.

    ``progress``: show a progress line on stderr (counts per status, a bar, time left); by default
    only when stderr is a terminal. Check each job's ``status`` and ``error`` afterwards.
    """
    every = list(jobs)
    display = ProgressDisplay(len(every), enabled=progress) if progress is not False else None
    try:
        for _ in as_completed(
            every, timeout_sec=timeout_sec, poll_interval_sec=poll_interval_sec,
            max_poll_interval_sec=max_poll_interval_sec, progress=display,
        ):
            pass
    finally:
        if display is not None and (display.live or progress):
            display.close()
    return every


def _refresh(jobs: Sequence[PairioJob]) -> None:
    batch_ids = {j.batchId for j in jobs}
    clients = {id(j.client) for j in jobs}
    if len(jobs) > 1 and len(batch_ids) == 1 and None not in batch_ids and "" not in batch_ids and len(clients) == 1:
        client = jobs[0].client
        wanted = {j.jobId: j for j in jobs}
        for fresh in client.iter_jobs(batch_id=str(next(iter(batch_ids)))):
            job = wanted.pop(fresh.jobId, None)
            if job is not None:
                job._update_from(fresh)
            if not wanted:
                return
        for job in wanted.values():  # left the batch's listing (deleted?): ask for it alone
            job.refresh()
        return
    for job in jobs:
        job.refresh()
