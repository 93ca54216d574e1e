"""Wakes long-polling claims as soon as a job becomes runnable, and waiting heartbeats when a job must stop.

Database work runs in worker threads while claims wait on the event loop, so
``notify`` may be called from any thread. Each waiter remembers the generation it
saw; a notify bumps the generation and wakes every waiter. Hub processes that share
a PostgreSQL database do not see each other's notifies; waiting claims also re-read
the database every ``claim_recheck_interval_sec`` for that reason.
"""

from __future__ import annotations

import asyncio
import threading


class RunnableNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        with self._lock:
            self._generation += 1
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop has closed; its waiter is gone
                pass

    async def wait(self, seen_generation: int, timeout: float) -> bool:
        """Wait until a notify newer than ``seen_generation`` or the timeout; True if notified."""
        ev = asyncio.Event()
        entry = (asyncio.get_running_loop(), ev)
        with self._lock:
            if self._generation != seen_generation:
                return True
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(entry)


class ComputeClientNotifier:
    """Wakes one compute client's waiting heartbeat when a job it holds must stop (canceled, deleted).

    Keyed by compute client id, so a cancel wakes only the bridge that runs the job. Each
    client has its own generation, read before the database is looked at, so a notify
    between that look and the wait is not missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def generation(self, client_id: str) -> int:
        with self._lock:
            return self._generations.get(client_id, 0)

    def notify(self, client_id: str) -> None:
        with self._lock:
            self._generations[client_id] = self._generations.get(client_id, 0) + 1
            waiters = list(self._waiters.get(client_id, ()))
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop has closed; its waiter is gone
                pass

    async def wait(self, client_id: str, seen_generation: int, timeout: float) -> bool:
        """Wait until a notify for ``client_id`` newer than ``seen_generation``, or the timeout; True if notified."""
        ev = asyncio.Event()
        entry = (asyncio.get_running_loop(), ev)
        with self._lock:
            if self._generations.get(client_id, 0) != seen_generation:
                return True
            self._waiters.setdefault(client_id, set()).add(entry)
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(client_id)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[client_id]
