"""How busy the host's CPUs are, and how much of that is the bridge's own doing.

``respectMachineLoad`` holds a job back while *other* programs keep the CPUs busy. The
bridge's own work (itself, its watchers and their jobs) must not count: a bridge whose
jobs fill the machine would otherwise hold its next job for the load it makes itself.
Both are measured over the same window, from CPU time counters, so a look costs a few
reads instead of a second's sampling per job:

- the host: busy and total CPU time of all CPUs (``psutil.cpu_times``);
- the bridge's own: CPU time of this process, of the children it reaped (which include
  what their own reaped children used) and of its live descendants and adopted watchers
  (and theirs), so a job that ran and ended inside the window is counted too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Optional

import psutil

LOAD_WINDOW_SEC = 1.0
"""a look reuses the previous one's figure when it is younger than this"""
STALE_SAMPLE_SEC = 5.0
"""a counter reading older than this says nothing about now: take two readings a window apart"""


@dataclass(frozen=True)
class CpuReading:
    at: float
    busy_sec: float
    total_sec: float
    own_sec: float


@dataclass(frozen=True)
class CpuLoad:
    busy_cpus: float
    """CPUs in use by every process over the window (the host's busy share times the CPUs we may use)"""
    own_cpus: float
    """CPUs the bridge and its jobs used over the window"""


def host_cpu_seconds() -> tuple[float, float]:
    """Busy and total CPU seconds of all the host's CPUs since boot (guest time is already in user time)."""
    t = psutil.cpu_times()
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


def own_cpu_seconds(extra_pids: Iterable[int] = ()) -> float:
    """CPU seconds of this process, its reaped children, its live descendants, and ``extra_pids`` with theirs."""
    me = os.times()
    total = me.user + me.system + me.children_user + me.children_system
    processes: dict[int, psutil.Process] = {}
    roots: list[psutil.Process] = [psutil.Process()]
    for pid in extra_pids:
        try:
            roots.append(psutil.Process(pid))
        except psutil.Error:
            continue
    for root in roots:
        try:
            if root.pid != os.getpid():
                processes[root.pid] = root
            for p in root.children(recursive=True):
                processes[p.pid] = p
        except psutil.Error:
            continue
    for p in processes.values():
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue  # ended meanwhile: its time went to its parent's children counters, or is lost to init
        # a live process's children counters hold only its reaped children: no process is counted twice
        total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuLoadMeter:
    """The latest window's load; looks from several threads share one reading at a time."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last: Optional[CpuReading] = None
        self._load: Optional[CpuLoad] = None

    def load(self, usable_cpus: int, extra_pids: Iterable[int] = ()) -> CpuLoad:
        extra = list(extra_pids)
        with self._lock:
            now = self._clock()
            if self._last is None or now - self._last.at > STALE_SAMPLE_SEC:
                # the first look, or the first after a quiet while: a window of its own
                self._last, self._load = self._read(extra), None
                self._sleep(LOAD_WINDOW_SEC)
            elif self._load is not None and now - self._last.at < LOAD_WINDOW_SEC:
                return self._load
            reading = self._read(extra)
            self._load = window_load(self._last, reading, usable_cpus)
            self._last = reading
            return self._load

    def _read(self, extra_pids: list[int]) -> CpuReading:
        busy, total = host_cpu_seconds()
        return CpuReading(at=self._clock(), busy_sec=busy, total_sec=total, own_sec=own_cpu_seconds(extra_pids))


def window_load(first: CpuReading, second: CpuReading, usable_cpus: int) -> CpuLoad:
    """The load between two readings (pure, for tests)."""
    wall = second.at - first.at
    total = second.total_sec - first.total_sec
    if wall <= 0 or total <= 0:
        return CpuLoad(busy_cpus=0.0, own_cpus=0.0)
    busy_share = min(1.0, max(0.0, (second.busy_sec - first.busy_sec) / total))
    own = max(0.0, (second.own_sec - first.own_sec) / wall)
    return CpuLoad(busy_cpus=busy_share * usable_cpus, own_cpus=own)
