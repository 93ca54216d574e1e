"""Which compute clients are waiting in a claim right now, per service: jobs are not held ahead while another waits.

A bridge that claims ahead (``aheadJobs``) holds jobs beyond its slots and starts each when
one of its slots frees. That is right while nobody else could start them sooner, and wrong
while another compute client of the same service sits idle in a long-polling claim: the job
would wait for a slot there when a slot is free here. So a claim attempt gets no job ahead
while another client of its service waits in a claim on this hub process.

One registry per hub process (``HubContext.claim_waiters``): hubs that share a PostgreSQL
database do not see each other's waiting claims, which at worst lets a job be held ahead
for up to the bridge's ``claimAheadHoldSec`` (it then goes back to pending).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Optional

Apps = Optional[frozenset[str]]
"""the apps a claim asks for; None: any"""
_Waiter = tuple[str, Apps]


def _share_an_app(a: Apps, b: Apps) -> bool:
    return a is None or b is None or not a.isdisjoint(b)


class ClaimWaiters:
    """Waiting claims per service: how many of each (compute client, apps)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Counter[_Waiter]] = {}

    def call(self) -> "ClaimCall":
        """The place of one claim call (a long poll, or the claim in a finish report) among the waiting ones."""
        return ClaimCall(self)

    def others_waiting(self, service_name: str, compute_client_id: str, apps: Apps) -> bool:
        """Whether a client of ``service_name`` other than ``compute_client_id``, running one of ``apps``, waits in a claim."""
        with self._lock:
            waiters = self._waiting.get(service_name)
            return waiters is not None and any(
                client != compute_client_id and _share_an_app(apps, their_apps) for client, their_apps in waiters
            )

    def _add(self, service_name: str, waiter: _Waiter) -> None:
        with self._lock:
            self._waiting.setdefault(service_name, Counter())[waiter] += 1

    def _remove(self, service_name: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiting.get(service_name)
            if waiters is None:
                return
            waiters[waiter] -= 1
            if waiters[waiter] <= 0:
                del waiters[waiter]
            if not waiters:
                del self._waiting[service_name]


class ClaimCall:
    """One claim call: ``identify`` (by the claim, once it knows its client) and ``others_waiting`` in each attempt;
    ``start_waiting`` before it waits for a job, ``stop_waiting`` when it returns (both safe to repeat)."""

    def __init__(self, registry: ClaimWaiters) -> None:
        self._registry = registry
        self._who: Optional[tuple[str, _Waiter]] = None
        self._waiting = False

    def identify(self, service_name: str, compute_client_id: str, apps: Apps) -> None:
        self._who = (service_name, (compute_client_id, apps))

    def others_waiting(self) -> bool:
        if self._who is None:
            return False
        service_name, (client, apps) = self._who
        return self._registry.others_waiting(service_name, client, apps)

    def start_waiting(self) -> None:
        if self._who is not None and not self._waiting:
            self._registry._add(*self._who)
            self._waiting = True

    def stop_waiting(self) -> None:
        if self._who is not None and self._waiting:
            self._registry._remove(*self._who)
            self._waiting = False
