"""A one-line progress display for waiting on many jobs: counts per status, a bar, an estimate of the time left.

On a terminal the line is redrawn in place; elsewhere (logs, pipes, CI) it stays quiet and only the
summary is written once at the end, so a log is not filled with redraws.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Optional, TextIO

from .status import JobStatus

BAR_WIDTH = 24
# Statuses in the order a job passes them, for the line's counts.
STATUS_ORDER = (JobStatus.PENDING, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED)


def format_duration(seconds: float) -> str:
    """90 -> '1m30s', 3725 -> '1h02m', 7 -> '7s'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def progress_line(counts: Counter[JobStatus], total: int, elapsed_sec: float, eta_sec: Optional[float]) -> str:
    """'[#########...............] 7/12 done: 5 completed, 2 failed | 3 running, 2 pending | 1m20s, about 40s left'"""
    done = counts[JobStatus.COMPLETED] + counts[JobStatus.FAILED]
    filled = int(BAR_WIDTH * done / total) if total else BAR_WIDTH
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    finished = ", ".join(f"{counts[s]} {s.value}" for s in (JobStatus.COMPLETED, JobStatus.FAILED) if counts[s])
    waiting = ", ".join(f"{counts[s]} {s.value}" for s in (JobStatus.RUNNING, JobStatus.STARTING, JobStatus.PENDING) if counts[s])
    line = f"[{bar}] {done}/{total} done"
    if finished:
        line += f": {finished}"
    if waiting:
        line += f" | {waiting}"
    line += f" | {format_duration(elapsed_sec)}"
    if eta_sec is not None and done < total:
        line += f", about {format_duration(eta_sec)} left"
    return line


class ProgressDisplay:
    """Shows how far a set of jobs has got; ``update`` with their statuses, ``close`` at the end."""

    def __init__(self, total: int, *, stream: Optional[TextIO] = None, enabled: Optional[bool] = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled if enabled is not None else _is_terminal(self.stream)
        self.started = time.monotonic()
        self.first_done_at: Optional[float] = None
        self.counts: Counter[JobStatus] = Counter()
        self._width = 0

    def update(self, statuses: Iterable[JobStatus]) -> None:
        self.counts = Counter(statuses)
        if self.first_done_at is None and self._done():
            self.first_done_at = time.monotonic()
        if self.live:
            self._draw(self.line())

    def line(self) -> str:
        return progress_line(self.counts, self.total, time.monotonic() - self.started, self.eta_sec())

    def eta_sec(self) -> Optional[float]:
        """Time left at the pace jobs have finished so far (None until one has)."""
        done = self._done()
        if not done or done >= self.total:
            return None
        per_job = (time.monotonic() - self.started) / done
        return per_job * (self.total - done)

    def close(self) -> None:
        """The final line: redrawn and ended on a terminal, written once elsewhere."""
        line = self.line()
        if self.live:
            self._draw(line)
            self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _done(self) -> int:
        return self.counts[JobStatus.COMPLETED] + self.counts[JobStatus.FAILED]

    def _draw(self, line: str) -> None:
        padding = " " * max(0, self._width - len(line))
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._width = len(line)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
