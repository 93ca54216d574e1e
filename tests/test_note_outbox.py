"""Timeline notes go to the hub together (bridge/note_outbox.py, ``POST /v1/compute/notes``): in order, each job's
before its finish report, refusals logged, and one call per note to an older hub without the call.

A real hub on 127.0.0.1 (in-process uvicorn, SQLite and PostgreSQL); the bridge's own hub client, wrapped to count
its calls (and, for an older hub, to send the batch where that hub has no route: its real 404).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import BridgeConfig
from bridge.hub_api import MAX_REPORTS_PER_CALL, HubApi, HubAuthError, Refusal
from bridge.local.backend import LocalBackend
from bridge.note_outbox import NoteOutbox

from .conftest import auth
from .hubtools import LiveHub, Seed
from .test_finish_claims import _client_and_jobs
from .test_runner_recovery import run_until_idle


class CountingNotesHubApi(HubApi):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        """notes in each call for several"""
        self.single_notes = 0
        self._count_lock = threading.Lock()

    def add_notes(self, notes: Any) -> list[Refusal]:
        with self._count_lock:
            self.batches.append(len(notes))
        return super().add_notes(notes)

    def add_note(self, job_id: str, message: str) -> None:
        with self._count_lock:
            self.single_notes += 1
        super().add_note(job_id, message)


class OlderNotesHubApi(CountingNotesHubApi):
    """A hub from before the call for several notes: the batch goes where this hub has no route (its real 404)."""

    def add_notes(self, notes: Any) -> list[Refusal]:
        with self._count_lock:
            self.batches.append(len(notes))
        self._request("POST", "/v1/compute/notes-on-a-newer-hub", json={"notes": []})
        raise AssertionError("the hub answered a call it does not have")


class DescribingBackend(LocalBackend):
    """The local backend, naming each job for the timeline as a batch system does ("submitted as ...")."""

    def describe(self, native_id: str) -> str:
        return f"local job {native_id.split(':')[0]}"


def timeline(api: httpx.Client, job_id: str) -> list[str]:
    """The job's events in order: a status, or a note's message."""
    return [e["status"] or e["message"] for e in api.get(f"/v1/jobs/{job_id}/events").json()["events"]]


def claimed_jobs(api: httpx.Client, seeded: Seed, live_hub: LiveHub, tmp_path: Path, count: int) -> tuple[list[str], BridgeConfig]:
    """``count`` jobs claimed by a compute client of their own; its settings (hub URL and key)."""
    job_ids, config = _client_and_jobs(api, seeded, live_hub, tmp_path, "notes", count)
    # beyond its one slot: jobs claimed ahead are as much its own for notes
    r = api.post("/v1/compute/claim", json={"maxJobs": count, "aheadJobs": count}, headers=auth(config.computeClientPrivateKey))
    assert r.status_code == 200, r.text
    assert {j["jobId"] for j in r.json()["jobs"]} == set(job_ids)
    return job_ids, config


def test_each_jobs_note_reaches_its_timeline_before_its_end_by_the_call_for_several(seeded: Seed, live_hub: LiveHub, tmp_path: Path) -> None:
    run_jobs = 3
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        job_ids, config = _client_and_jobs(api, seeded, live_hub, tmp_path, "described", run_jobs)
        hub = CountingNotesHubApi(config.hubUrl, config.computeClientPrivateKey)
        run_until_idle(config, DescribingBackend(config.jobs_path), hub)
        for job_id in job_ids:
            events = timeline(api, job_id)
            assert events[-1] == "completed", events
            notes = [e for e in events if e.startswith("submitted as local job ")]
            assert len(notes) == 1, events  # on the timeline before its end: the report waited for it
        assert hub.single_notes == 0 and sum(hub.batches) == run_jobs, hub.batches


def test_against_an_older_hub_notes_go_one_call_each(seeded: Seed, live_hub: LiveHub, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        job_ids, config = _client_and_jobs(api, seeded, live_hub, tmp_path, "older", 3)
        hub = OlderNotesHubApi(config.hubUrl, config.computeClientPrivateKey)
        runner = run_until_idle(config, DescribingBackend(config.jobs_path), hub)
        assert not runner.notes.hub_takes_batches
        assert len(hub.batches) == 1, "tried once"
        assert hub.single_notes == 3
        for job_id in job_ids:
            events = timeline(api, job_id)
            assert events[-1] == "completed" and any(e.startswith("submitted as local job ") for e in events), events


def test_the_outbox_sends_in_order_in_calls_of_at_most_the_hubs_limit(seeded: Seed, live_hub: LiveHub, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        job_ids, config = claimed_jobs(api, seeded, live_hub, tmp_path, 2)
        counting = CountingNotesHubApi(config.hubUrl, config.computeClientPrivateKey)
        outbox = NoteOutbox(counting)
        for i in range(MAX_REPORTS_PER_CALL + 2):
            outbox.put(job_ids[i % 2], f"note {i}")
        assert outbox.waiting_for(job_ids[0]) and outbox.waiting_for(job_ids[1])
        notes = outbox.take()
        assert outbox.take() == [] and outbox.waiting_for(job_ids[0]), "taken notes count until done"
        outbox.send(notes)
        outbox.done(notes)
        assert not outbox.waiting_for(job_ids[0]) and not outbox.waiting_for(job_ids[1])
        assert counting.batches == [MAX_REPORTS_PER_CALL, 2] and counting.single_notes == 0
        for k, job_id in enumerate(job_ids):
            notes_there = [e for e in timeline(api, job_id) if e.startswith("note ")]
            assert notes_there == [f"note {i}" for i in range(k, MAX_REPORTS_PER_CALL + 2, 2)]
        counting.close()


def test_refused_notes_are_dropped_and_a_refused_key_is_raised(seeded: Seed, live_hub: LiveHub, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as api:
        job_ids, config = claimed_jobs(api, seeded, live_hub, tmp_path, 1)
        hub = HubApi(config.hubUrl, config.computeClientPrivateKey)
        outbox = NoteOutbox(hub)
        outbox.send([("nosuchjob", "lost"), (job_ids[0], "kept")])  # the refused one is only logged
        assert "kept" in timeline(api, job_ids[0])
        stranger = HubApi(config.hubUrl, "not-a-key")
        with pytest.raises(HubAuthError):
            NoteOutbox(stranger).send([(job_ids[0], "by a stranger")])
        assert "by a stranger" not in timeline(api, job_ids[0])
        stranger.close()
        hub.close()
