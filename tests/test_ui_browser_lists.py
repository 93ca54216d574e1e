"""The batch page and the jobs list in a real browser (headless Chromium via Playwright) against a hub on a
real port: counts, failures first, progress, sorting, and pages that follow jobs as they finish.

The test plays the compute client through the hub's compute API (claim, report), so it decides when
each job finishes: the pages must notice without a reload (``window.__sameDocument`` survives).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.context import HubContext

from .conftest import auth
from .hubtools import LiveHub, Seed
from .test_compute_api import Client, claim, hello1, register, report, set_job_columns
from .test_ui_browser import TIMEOUT_MS, browser, screenshot  # noqa: F401 - browser is a module fixture

RES = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the browser's side does not depend on the database (test_batch_page covers both)."""
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
def http(live_hub: LiveHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        yield client


@pytest.fixture
def page(browser: Any, live_hub: LiveHub) -> Iterator[Any]:  # noqa: F811 - the imported fixture
    context = browser.new_context(base_url=live_hub.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
        assert not errors, f"scripts failed on the page: {errors}"
    finally:
        context.close()


def submit(http: httpx.Client, seeded: Seed, names: list[str], **extra: Any) -> list[str]:
    jobs = [{"serviceName": seeded.service, "jobDefinition": hello1(n), "requiredResources": RES, **extra} for n in names]
    r = http.post("/v1/jobs/batch", json={"jobs": jobs}, headers=auth(seeded.key))
    assert r.status_code == 200, r.text
    return [j["jobId"] for j in r.json()["jobs"]]


def claim_all(http: httpx.Client, cc: Client, n: int) -> dict[str, str]:
    return {j["jobId"]: j["jobPrivateKey"] for j in claim(http, cc, maxJobs=n)}


def ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text


def wait_text(page: Any, selector: str, value: str) -> None:
    """Waits by selector (the pages' CSP forbids the eval that wait_for_function needs)."""
    page.locator(selector, has_text=re.compile(rf"^\s*{re.escape(value)}\s*$")).wait_for()


def test_the_batch_page_shows_failures_first_and_follows_the_batch_to_its_end(page: Any, http: httpx.Client, seeded: Seed) -> None:
    ids = submit(http, seeded, [f"b{i}" for i in range(4)], batchId="ui-batch")
    keys = claim_all(http, register(http, seeded), 4)
    for jid in ids:
        ok(report(http, jid, keys[jid], "running"))
    ok(report(http, ids[0], keys[ids[0]], "completed"))
    ok(report(http, ids[1], keys[ids[1]], "failed", error="boom: the first line\nthe second line"))

    page.goto(f"/job/{ids[2]}")
    page.locator("#job-batch-link").click()  # each job links its batch
    page.wait_for_url(re.compile(r"/batch/ui-batch$"))
    page.evaluate("window.__sameDocument = true")
    assert page.locator("#count-completed").inner_text() == "1" and page.locator("#count-failed").inner_text() == "1"
    assert page.locator("#count-running").inner_text() == "2"
    assert page.locator("#batch-progress").get_attribute("aria-valuenow") == "2"
    failed_rows = page.locator("#batch-failed-jobs tbody tr")
    assert failed_rows.count() == 1 and ids[1] in failed_rows.first.inner_text()
    assert "boom: the first line" in failed_rows.first.inner_text() and "second line" not in failed_rows.first.inner_text()
    assert [page.locator("#batch-other-jobs tbody tr").nth(i).get_attribute("data-job-id") for i in range(3)] == [ids[0], ids[2], ids[3]]
    # failures come before the other jobs on the page
    assert page.locator("#batch-failed-jobs").bounding_box()["y"] < page.locator("#batch-other-jobs").bounding_box()["y"]
    page.locator("#live-indicator").wait_for(state="visible")
    screenshot(page, "batch-running")

    ok(report(http, ids[2], keys[ids[2]], "completed"))
    wait_text(page, "#count-completed", "2")
    assert page.locator("#batch-progress").get_attribute("aria-valuenow") == "3"
    ok(report(http, ids[3], keys[ids[3]], "failed", error="second failure"))
    page.locator("#batch-done").wait_for()
    assert page.locator("#count-failed").inner_text() == "2"
    assert [failed_rows.nth(i).get_attribute("data-job-id") for i in range(2)] == [ids[1], ids[3]]
    assert page.locator("#batch").get_attribute("data-finished") == "true"
    assert page.locator("#live-indicator").count() == 0
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    screenshot(page, "batch-finished")


def test_the_jobs_list_sorts_by_its_headers_and_follows_running_jobs(page: Any, http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    ids = submit(http, seeded, [f"s{i}" for i in range(4)], tags=["ui-sort"])
    keys = claim_all(http, register(http, seeded), 4)
    for jid in ids:
        ok(report(http, jid, keys[jid], "running"))
    ok(report(http, ids[0], keys[ids[0]], "completed"))
    ok(report(http, ids[1], keys[ids[1]], "failed", error="x"))
    ok(report(http, ids[2], keys[ids[2]], "completed"))
    # known creation times and run times: 0 ran 30 s, 1 ran 5 s, 2 ran 300 s, 3 still runs
    for i, (started, finished) in enumerate([(100.0, 130.0), (200.0, 205.0), (300.0, 600.0)]):
        set_job_columns(ctx, ids[i], timestamp_created_sec=1000.0 + i, timestamp_started_sec=started, timestamp_finished_sec=finished)
    set_job_columns(ctx, ids[3], timestamp_created_sec=1003.0)

    def listed() -> list[str]:
        rows = page.locator("table.jobs tbody tr")
        return [rows.nth(i).get_attribute("data-job-id") for i in range(rows.count())]

    page.goto("/jobs?tag=ui-sort")
    assert listed() == [ids[3], ids[2], ids[1], ids[0]]  # newest first
    page.locator("#sort-created").click()
    page.wait_for_url(re.compile(r"sort=created&order=asc"))
    assert listed() == [ids[0], ids[1], ids[2], ids[3]]
    page.locator("#sort-duration").click()
    page.wait_for_url(re.compile(r"sort=duration&order=desc"))
    assert listed() == [ids[2], ids[0], ids[1], ids[3]]  # longest run first, the running job after
    page.locator("#sort-duration").click()
    page.wait_for_url(re.compile(r"sort=duration&order=asc"))
    assert listed() == [ids[1], ids[0], ids[2], ids[3]]
    page.locator("#sort-status").click()
    page.wait_for_url(re.compile(r"sort=status&order=desc"))
    assert listed() == [ids[1], ids[2], ids[0], ids[3]]  # failed, completed (newest first), running
    assert page.locator("th[aria-sort=descending]").inner_text().startswith("Status")
    assert page.get_by_label("Sort by").input_value() == "status"  # the filter form keeps the sort

    # the list follows the running job: no reload, the same sort and filter, the new status in place
    page.evaluate("window.__sameDocument = true")
    page.locator("#live-indicator").wait_for(state="visible")
    screenshot(page, "jobs-sorted-live")
    # a hidden tab stops polling, and picks up what changed meanwhile when shown again
    page.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true})")
    page.locator("html[data-live-paused=true]").wait_for(state="attached")
    ok(report(http, ids[3], keys[ids[3]], "completed"))
    assert page.locator(f'table.jobs tr[data-job-id="{ids[3]}"]').get_attribute("data-status") == "running"
    page.evaluate("delete document.hidden; document.dispatchEvent(new Event('visibilitychange'))")
    page.locator(f'table.jobs tr[data-job-id="{ids[3]}"][data-status="completed"]').wait_for()
    assert page.locator("html[data-live-paused]").count() == 0
    assert listed() == [ids[1], ids[3], ids[2], ids[0]]  # now among the completed ones, newest first
    assert page.locator("#jobs-live").get_attribute("data-live") == "false"
    assert page.locator("#live-indicator").count() == 0
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    assert "sort=status" in page.url and "tag=ui-sort" in page.url


def test_a_waiting_job_and_a_compute_client_say_why_and_where_in_the_browser(page: Any, http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded)
    info = {"host": "node7", "backend": "ssh", "remoteHost": "alice@lab1:22", "containerMode": "none", "apps": ["some_other_app"], "version": "9.9"}
    ok(http.post("/v1/compute/heartbeat", json={"activeJobIds": [], "bridge": info}, headers=cc.headers))
    first, second = submit(http, seeded, ["waits 1", "waits 2"])
    page.goto(f"/job/{second}")
    reason = page.locator("#job-waiting-reason")
    assert reason.get_attribute("data-code") == "no_compute_client_runs_app"
    assert "runs app 'hello_world'" in reason.inner_text() and "pairio-bridge apps add" in reason.inner_text()
    assert "Queue position 2" in page.locator("#job-queue-position").inner_text()
    page.goto(f"/compute-client/{cc.id}")
    where = page.locator("section[aria-labelledby=bridge-h]")
    text = where.inner_text()
    assert "node7" in text and "ssh on alice@lab1:22" in text and "some_other_app" in text and "9.9" in text, text
    screenshot(page, "compute-client-where-it-runs")
