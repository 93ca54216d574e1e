"""Waiting on many jobs: ``wait_for_jobs``, ``as_completed``, the progress line, ``pairio jobs wait`` and
``pairio jobs logs --follow``, against a real hub over HTTP.

A compute client is played by the test over the bridge-facing API (claim, running, console output,
completed or failed), so each job's end comes exactly when the test says.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from pairio import JobStatus, PairioClient, as_completed, wait_for_jobs
from pairio.cli import main
from pairio.errors import JobsWaitTimeoutError
from pairio.progress import ProgressDisplay, format_duration, progress_line

from .hubtools import LiveHub, Seed
from .test_compute_api import Client, claim, register, report

RESOURCES = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}


def definition(n: int) -> dict[str, Any]:
    return {"appName": "hello_world", "processorName": "hello_world_1", "parameters": [{"name": "name", "value": f"job {n}"}]}


@pytest.fixture
def hub_http(live_hub: LiveHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_hub.url, timeout=30) as http:
        yield http


@pytest.fixture
def alice(live_hub: LiveHub, seeded: Seed) -> Iterator[PairioClient]:
    with PairioClient(live_hub.url, seeded.key) as client:
        yield client


def submit_batch(alice: PairioClient, seeded: Seed, n: int, batch_id: str) -> list[Any]:
    return [
        alice.submit_job(service_name=seeded.service, job_definition=definition(i), required_resources=RESOURCES, batch_id=batch_id)
        for i in range(n)
    ]


def claim_all(hub_http: httpx.Client, seeded: Seed, n: int) -> tuple[Client, dict[str, dict[str, Any]]]:
    cc = register(hub_http, seeded)
    claimed: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(claimed) < n and time.monotonic() < deadline:
        for job in claim(hub_http, cc, waitSec=1):
            claimed[job["jobId"]] = job
    assert len(claimed) == n
    return cc, claimed


def finish(hub_http: httpx.Client, cc: Client, job_id: str, ok: bool) -> None:
    assert report(hub_http, job_id, cc.key, "running").status_code == 200
    r = report(hub_http, job_id, cc.key, "completed" if ok else "failed", None if ok else "exit code 3: boom")
    assert r.status_code == 200, r.text


def test_wait_for_jobs_returns_every_job_finished_and_shows_progress(
    alice: PairioClient, seeded: Seed, hub_http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = submit_batch(alice, seeded, 6, "batch-wait")
    cc, claimed = claim_all(hub_http, seeded, 6)
    ids = [j.jobId for j in jobs]

    def worker() -> None:
        for i, job_id in enumerate(ids):
            time.sleep(0.2)
            finish(hub_http, cc, job_id, ok=i % 3 != 2)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        done = wait_for_jobs(jobs, timeout_sec=120, progress=True, poll_interval_sec=0.1, max_poll_interval_sec=0.3)
    finally:
        thread.join()
    assert [j.jobId for j in done] == ids
    assert [j.status for j in done] == [JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.FAILED] * 2
    assert done[2].error == "exit code 3: boom"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "6/6 done: 4 completed, 2 failed" in last and "#" * 24 in last, last


def test_as_completed_yields_jobs_in_the_order_they_finish(alice: PairioClient, seeded: Seed, hub_http: httpx.Client) -> None:
    jobs = submit_batch(alice, seeded, 3, "batch-order")
    others = [alice.submit_job(service_name=seeded.service, job_definition=definition(9), required_resources=RESOURCES)]
    cc, _ = claim_all(hub_http, seeded, 4)
    order = [jobs[2].jobId, others[0].jobId, jobs[0].jobId, jobs[1].jobId]
    finish(hub_http, cc, order[0], ok=True)  # finished before the wait starts: yielded first

    def worker() -> None:
        for job_id in order[1:]:
            time.sleep(0.4)
            finish(hub_http, cc, job_id, ok=True)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        seen = [j.jobId for j in as_completed([*jobs, *others], timeout_sec=120, poll_interval_sec=0.05, max_poll_interval_sec=0.1)]
    finally:
        thread.join()
    assert seen == order


def test_a_wait_that_times_out_names_the_unfinished_jobs(alice: PairioClient, seeded: Seed) -> None:
    jobs = submit_batch(alice, seeded, 2, "batch-timeout")
    with pytest.raises(JobsWaitTimeoutError) as e:
        wait_for_jobs(jobs, timeout_sec=0.5, poll_interval_sec=0.1)
    assert set(e.value.unfinished) == {j.jobId for j in jobs} and isinstance(e.value, TimeoutError)
    assert "2 of 2 jobs are unfinished" in str(e.value)


def test_pairio_jobs_wait_lists_failures_first_and_sets_the_exit_status(
    live_hub: LiveHub, alice: PairioClient, seeded: Seed, hub_http: httpx.Client
) -> None:
    jobs = submit_batch(alice, seeded, 3, "batch-cli")
    cc, _ = claim_all(hub_http, seeded, 3)
    runner = CliRunner()
    common = ["jobs", "wait", "--url", live_hub.url, "--key", seeded.key]
    timed_out = runner.invoke(main, [*common, "--batch", "batch-cli", "--timeout", "0.5", "--quiet"])
    assert timed_out.exit_code == 2 and "3 of 3 jobs are unfinished" in timed_out.stderr

    finish(hub_http, cc, jobs[0].jobId, ok=True)
    finish(hub_http, cc, jobs[1].jobId, ok=False)
    finish(hub_http, cc, jobs[2].jobId, ok=True)
    waited = runner.invoke(main, [*common, "--batch", "batch-cli"])
    assert waited.exit_code == 1 and "1 of 3 jobs failed" in waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[1].startswith(jobs[1].jobId) and "boom" in lines[1], lines  # failures first
    single = runner.invoke(main, [*common, jobs[0].jobId])
    assert single.exit_code == 0 and jobs[0].jobId in single.stdout
    assert runner.invoke(main, [*common]).exit_code == 2  # neither ids nor --batch: a usage error
    listed = runner.invoke(main, ["jobs", "list", "--url", live_hub.url, "--batch", "batch-cli", "--status", "failed"])
    assert listed.exit_code == 0 and jobs[1].jobId in listed.stdout and jobs[0].jobId not in listed.stdout


def test_pairio_jobs_logs_follow_prints_output_as_it_grows(
    live_hub: LiveHub, alice: PairioClient, seeded: Seed, hub_http: httpx.Client
) -> None:
    [job] = submit_batch(alice, seeded, 1, "batch-logs")
    cc, _ = claim_all(hub_http, seeded, 1)
    assert report(hub_http, job.jobId, cc.key, "running").status_code == 200

    def worker() -> None:
        offset = 0
        for piece in (b"step 1\n", b"step 2\n", b"done\n"):
            time.sleep(0.5)
            r = hub_http.post(f"/v1/compute/jobs/{job.jobId}/console-output", params={"offset": offset}, content=piece, headers={"Authorization": f"Bearer {cc.key}"})
            assert r.status_code in (200, 204), r.text
            offset += len(piece)
        time.sleep(0.3)
        assert report(hub_http, job.jobId, cc.key, "completed").status_code == 200

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        followed = CliRunner().invoke(main, ["jobs", "logs", "--follow", job.jobId, "--url", live_hub.url])
    finally:
        thread.join()
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == "step 1\nstep 2\ndone\n"


def test_the_progress_line() -> None:
    counts = {JobStatus.COMPLETED: 5, JobStatus.FAILED: 2, JobStatus.RUNNING: 3, JobStatus.PENDING: 2}
    from collections import Counter

    line = progress_line(Counter(counts), 12, 80, 40)
    assert line == "[##############..........] 7/12 done: 5 completed, 2 failed | 3 running, 2 pending | 1m20s, about 40s left"
    assert format_duration(3725) == "1h02m" and format_duration(7) == "7s"
    quiet = io.StringIO()  # not a terminal: nothing until the summary
    display = ProgressDisplay(2, stream=quiet)
    display.update([JobStatus.RUNNING, JobStatus.COMPLETED])
    assert quiet.getvalue() == ""
    display.update([JobStatus.COMPLETED, JobStatus.COMPLETED])
    display.close()
    assert quiet.getvalue().startswith("[########################] 2/2 done: 2 completed")


def test_submit_jobs_creates_many_in_one_request_with_the_cache_rules(
    alice: PairioClient, seeded: Seed, hub_http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pairio import JobRequest
    from pairio import client as client_module

    requests = [
        JobRequest(seeded.service, definition(1), RESOURCES, tags=["a"]),
        JobRequest(seeded.service, definition(2), {**RESOURCES, "numCpus": 2}, tags=["b"], batch_id="own-batch"),
        JobRequest(seeded.service, definition(1), RESOURCES),  # the first one's definition: the same job
    ]
    jobs = alice.submit_jobs(requests, batch_id="sweep")
    assert jobs[0].jobId == jobs[2].jobId and jobs[0].jobId != jobs[1].jobId
    assert jobs[0].batchId == "sweep" and jobs[1].batchId == "own-batch" and jobs[1].requiredResources.numCpus == 2
    assert jobs[0].tags == ["a"] and jobs[1].tags == ["b"]
    raw = hub_http.post("/v1/jobs/batch", json={"jobs": [r.body() for r in requests[:2]]}, headers={"Authorization": f"Bearer {seeded.key}"})
    assert raw.status_code == 200 and raw.json()["created"] == [False, False]  # both exist now: cache hits

    monkeypatch.setattr(client_module, "MAX_JOBS_PER_REQUEST", 2)  # more jobs than one request takes
    many = alice.submit_jobs([JobRequest(seeded.service, definition(10 + i), RESOURCES) for i in range(5)], batch_id="chunked")
    assert len({j.jobId for j in many}) == 5 and {j.jobId for j in alice.find_jobs(batch_id="chunked")} == {j.jobId for j in many}


def test_submit_jobs_is_all_or_nothing_and_names_the_refused_job(alice: PairioClient, seeded: Seed, hub_http: httpx.Client) -> None:
    from pairio import JobRequest
    from pairio.errors import PairioHTTPError

    bad = {"appName": "no_such_app", "processorName": "p", "parameters": []}
    requests = [JobRequest(seeded.service, definition(i), RESOURCES) for i in range(2)] + [JobRequest(seeded.service, bad, RESOURCES)]
    with pytest.raises(PairioHTTPError) as e:
        alice.submit_jobs(requests, batch_id="refused")
    assert "jobs[2]" in str(e.value) and "no_such_app" in str(e.value)
    assert alice.find_jobs(batch_id="refused") == []  # the first two were not kept either
    too_many = hub_http.post("/v1/jobs/batch", json={"jobs": [requests[0].body()] * 1001}, headers={"Authorization": f"Bearer {seeded.key}"})
    assert too_many.status_code == 422 and "1000" in too_many.text
    empty = hub_http.post("/v1/jobs/batch", json={"jobs": []}, headers={"Authorization": f"Bearer {seeded.key}"})
    assert empty.status_code == 422
