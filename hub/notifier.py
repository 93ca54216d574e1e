"""Wakes long-polling claims as soon as a job becomes runnable, and waiting heartbeats when a job must stop.

Database work runs in worker threads while claims and heartbeats wait on the event loop,
so ``notify`` may be called from any thread. Each waiter remembers the generation of its
key that it saw before it looked at the database; a notify bumps that generation and
wakes the key's waiters, so a notify between the look and the wait is never missed.
Hub processes that share a PostgreSQL database do not see each other's notifies; waiting
calls also re-read the database every ``claim_recheck_interval_sec`` for that reason.
"""

from __future__ import annotations

import asyncio
import threading

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class KeyedNotifier:
    """Generations and waiters per key (a compute client's id; ``""`` where there is one key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._waiters: dict[str, set[_Waiter]] = {}

    def generation(self, key: str = "") -> int:
        with self._lock:
            return self._generations.get(key, 0)

    def notify(self, key: str = "") -> None:
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            waiters = list(self._waiters.get(key, ()))
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop has closed; its waiter is gone
                pass

    async def wait(self, seen_generation: int, timeout: float, key: str = "") -> bool:
        """Wait until a notify for ``key`` newer than ``seen_generation``, or the timeout; True if notified."""
        ev = asyncio.Event()
        entry = (asyncio.get_running_loop(), ev)
        with self._lock:
            if self._generations.get(key, 0) != seen_generation:
                return True
            self._waiters.setdefault(key, set()).add(entry)
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[key]


class RunnableNotifier(KeyedNotifier):
    """One key: some job became runnable (every waiting claim looks again)."""


class ComputeClientNotifier(KeyedNotifier):
    """Keyed by compute client id: a job that client holds must stop (canceled, deleted), so only its bridge wakes."""
