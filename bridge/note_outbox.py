"""The notes a bridge puts on its jobs' timelines ("submitted as Slurm job 81", "waiting in the slurm queue:
Priority", ...), sent to the hub together: one call for all the notes of a pass of the runner's main loop.

A bridge following 40 queued batch jobs has a note or two for each of them after every look at the
queue; one call per note was the bulk of its hub requests. The runner queues notes here (``put``),
hands what is queued to a reporting worker once per pass (``take``, then ``send``), and keeps a
job's finish report back while a note of it is on its way (``waiting_for``), so its timeline keeps
the order things happened in. An older hub without ``POST /v1/compute/notes`` gets one call per
note, as before.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence

from .hub_api import MAX_REPORTS_PER_CALL, HubApi, HubAuthError, HubRejectedError

log = logging.getLogger("bridge.runner")


class NoteOutbox:
    """The notes queued for the hub, oldest first, and the jobs that have one queued or on its way."""

    def __init__(self, hub: HubApi) -> None:
        self.hub = hub
        self._queued: list[tuple[str, str]] = []
        self._unfinished: Counter[str] = Counter()
        """per job: its notes queued or being sent"""
        self._lock = threading.Lock()
        self.hub_takes_batches = True
        """false after the hub did not know the call for several notes (an older hub): one call per note"""

    def put(self, job_id: str, note: str) -> None:
        with self._lock:
            self._queued.append((job_id, note))
            self._unfinished[job_id] += 1

    def take(self) -> list[tuple[str, str]]:
        """Everything queued, oldest first; its jobs still count as waiting for their notes until ``done``."""
        with self._lock:
            taken, self._queued = self._queued, []
            return taken

    def done(self, notes: Sequence[tuple[str, str]]) -> None:
        """``notes`` (from ``take``) were sent or given up."""
        with self._lock:
            for job_id, _ in notes:
                self._unfinished[job_id] -= 1
                if self._unfinished[job_id] <= 0:
                    del self._unfinished[job_id]

    def waiting_for(self, job_id: str) -> bool:
        """Whether a note of the job is queued or being sent (its finish report waits for it)."""
        with self._lock:
            return job_id in self._unfinished

    def send(self, notes: Sequence[tuple[str, str]]) -> None:
        """Send ``notes`` (from ``take``), in order. A note the hub refuses (the job ended there, or went to another
        bridge) is only logged; a hub that cannot be reached, or that refuses the bridge's key, raises (HubApiError),
        and the rest are not sent."""
        for start in range(0, len(notes), MAX_REPORTS_PER_CALL):
            chunk = notes[start:start + MAX_REPORTS_PER_CALL]
            if self.hub_takes_batches:
                try:
                    refused = self.hub.add_notes(chunk)
                except HubAuthError:
                    raise  # the key itself is refused: the runner backs off
                except HubRejectedError as e:
                    if e.status_code not in (404, 405):
                        log.warning("the hub refused %d note(s) for the jobs' timelines: %s", len(chunk), e)
                        continue
                    log.info("the hub takes no notes of several jobs in one call (an older hub?); one call per note from now on")
                    self.hub_takes_batches = False
                else:
                    for refusal in refused:
                        log.debug("job %s: the hub refused a note (%d: %s)", refusal.job_id, refusal.status_code, refusal.detail)
                    continue
            for job_id, note in chunk:
                try:
                    self.hub.add_note(job_id, note)
                except HubRejectedError as e:
                    log.debug("job %s: the hub refused a note (%s)", job_id, e)
