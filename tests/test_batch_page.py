"""The batch page and its JSON (``/batch/<id>``, ``GET /v1/batches/<id>``) and the jobs list's sort orders,
over real HTTP (a uvicorn hub on 127.0.0.1) on SQLite and PostgreSQL. The browser side: test_ui_browser_lists.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from hub.context import HubContext
from hub.core import batches, job_sort
from hub.core import jobs as core
from hub.db.tables import Job, JobTag
from pairio.status import JobStatus

from .conftest import auth
from .hubtools import LiveHub, Seed
from .test_compute_api import claim, create_jobs_directly, hello1, register, report, set_job_columns

JOB_LINK = re.compile(r'<a class="mono" href="/job/([A-Za-z0-9]+)">')


@pytest.fixture
def http(live_hub: LiveHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        yield client


def submit_batch(http: httpx.Client, seeded: Seed, batch_id: str, names: list[str]) -> list[str]:
    res = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}
    jobs = [{"serviceName": seeded.service, "jobDefinition": hello1(n), "requiredResources": res, "batchId": batch_id} for n in names]
    r = http.post("/v1/jobs/batch", json={"jobs": jobs}, headers=auth(seeded.key))
    assert r.status_code == 200, r.text
    return [j["jobId"] for j in r.json()["jobs"]]


def job_ids_in(html: str) -> list[str]:
    return JOB_LINK.findall(html)


# ---------------------------------------------------------------- the batch JSON and page


def test_batch_json_counts_every_status_and_guesses_the_time_left(http: httpx.Client, seeded: Seed) -> None:
    ids = submit_batch(http, seeded, "sweep-1", [f"n{i}" for i in range(6)])
    submit_batch(http, seeded, "other-batch", ["x"])
    first = http.get("/v1/batches/sweep-1").json()
    assert first["counts"] == {"pending": 6, "starting": 0, "running": 0, "completed": 0, "failed": 0}
    assert (first["total"], first["finished"], first["failed"], first["isFinished"], first["etaSec"]) == (6, 0, 0, False, None)

    cc = register(http, seeded)
    claimed = {j["jobId"]: j["jobPrivateKey"] for j in claim(http, cc, maxJobs=4)}
    a, b, c, d = [jid for jid in ids if jid in claimed][:4]
    for jid in (a, b, c, d):
        assert report(http, jid, claimed[jid], "running").status_code == 200
    assert report(http, a, claimed[a], "completed").status_code == 200
    assert report(http, b, claimed[b], "completed").status_code == 200
    assert report(http, c, claimed[c], "failed", error="exited with code 3\nTraceback: more lines").status_code == 200
    now = http.get("/v1/batches/sweep-1")
    assert now.headers["content-type"].startswith("application/json")
    body = now.json()
    assert body["counts"] == {"pending": 2, "starting": 0, "running": 1, "completed": 2, "failed": 1}
    assert (body["total"], body["finished"], body["failed"], body["isFinished"]) == (6, 3, 1, False)
    assert body["etaSec"] is not None and body["etaSec"] >= 0 and body["batchId"] == "sweep-1"
    assert http.get("/v1/batches/other-batch").json()["total"] == 1


def test_unknown_or_malformed_batch_ids_are_4xx(http: httpx.Client, seeded: Seed) -> None:
    missing = http.get("/v1/batches/no-such-batch")
    assert missing.status_code == 404 and "no jobs have batch id 'no-such-batch'" in missing.json()["detail"]
    for bad in ["bad%20id", "x" * 201, "semi%3Bcolon"]:
        assert http.get(f"/v1/batches/{bad}").status_code == 422, bad
    page = http.get("/batch/no-such-batch")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"] and "no jobs have batch id" in page.text
    assert http.get("/batch/x", params={"cursor": "c" * 500}).status_code == 400
    submit_batch(http, seeded, "b1", ["a"])
    assert http.get("/batch/b1", params={"failedCursor": "not-a-cursor"}).status_code == 400
    assert http.get("/v1/batches/b1", headers=auth(seeded.other_key)).status_code == 200  # readable like the jobs


def test_the_batch_page_shows_progress_and_failures_first(http: httpx.Client, seeded: Seed) -> None:
    ids = submit_batch(http, seeded, "sweep-2", [f"n{i}" for i in range(5)])
    cc = register(http, seeded)
    claimed = {j["jobId"]: j["jobPrivateKey"] for j in claim(http, cc, maxJobs=5)}
    for jid in ids[:3]:
        report(http, jid, claimed[jid], "running")
    report(http, ids[0], claimed[ids[0]], "completed")
    report(http, ids[2], claimed[ids[2]], "failed", error="\nValueError: bad input 7\n  at line 3")
    page = http.get("/batch/sweep-2")
    assert page.status_code == 200, page.text
    html = page.text
    failed_section = html[html.index('id="batch-failed-jobs"'):html.index('id="batch-other-jobs"')]
    assert job_ids_in(failed_section) == [ids[2]]
    assert "ValueError: bad input 7" in failed_section and "at line 3" not in failed_section  # the first line only
    others = html[html.index('id="batch-other-jobs"'):]
    assert job_ids_in(others) == [ids[0], ids[1], ids[3], ids[4]]  # oldest first, the failed one not again
    assert 'aria-valuenow="2"' in html and 'aria-valuemax="5"' in html
    assert re.search(r'id="count-failed">1<', html) and re.search(r'id="count-completed">1<', html)
    assert 'data-finished="false"' in html and 'id="live-indicator"' in html
    # links to the batch page: from each of its jobs, from the jobs list and from its rows
    assert 'id="job-batch-link" href="/batch/sweep-2"' in http.get(f"/job/{ids[0]}").text
    listed = http.get("/jobs", params={"batch": "sweep-2"}).text
    assert 'id="batch-page-link" href="/batch/sweep-2"' in listed and 'href="/batch/sweep-2"' in listed


def test_a_large_batch_pages_its_failures_and_its_other_jobs(http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    ids = create_jobs_directly(ctx, seeded, 130, prefix="big")
    with ctx.transaction() as s:
        for i, jid in enumerate(ids):
            row = core.get_job_row(s, jid)
            row.batch_id = "big-batch"
            row.timestamp_created_sec = 1_000_000.0 + i
            if i % 2:
                row.status, row.error, row.timestamp_finished_sec = "failed", f"error {i}\nsecond line", 2_000_000.0
    failed = [jid for i, jid in enumerate(ids) if i % 2]
    others = [jid for i, jid in enumerate(ids) if not i % 2]
    seen_failed: list[str] = []
    url = "/batch/big-batch"
    while True:
        html = http.get(url).text
        section = html[html.index('id="batch-failed-jobs"'):html.index('id="batch-other-jobs"')]
        seen_failed += job_ids_in(section)
        more = re.search(r'id="more-failed" href="([^"]+)"', section)
        if not more:
            break
        url = more.group(1).replace("&amp;", "&")
    assert seen_failed == failed
    seen_others: list[str] = []
    url = "/batch/big-batch"
    while True:
        html = http.get(url).text
        seen_others += job_ids_in(html[html.index('id="batch-other-jobs"'):])
        more = re.search(r'id="more-others" rel="next" href="([^"]+)"', html)
        if not more:
            break
        url = more.group(1).replace("&amp;", "&")
    assert seen_others == others
    summary = http.get("/v1/batches/big-batch").json()
    assert (summary["total"], summary["failed"], summary["finished"]) == (130, 65, 65)


# ---------------------------------------------------------------- the jobs list's sort orders


LIFECYCLE = ["pending", "starting", "running", "completed", "failed"]


def make_sortable_jobs(ctx: HubContext, seeded: Seed) -> list[dict[str, Any]]:
    """Eleven jobs in every status, created a second apart, the finished ones with distinct run times."""
    ids = create_jobs_directly(ctx, seeded, 11, prefix="sort")
    plan = [
        ("pending", None, None), ("completed", 10.0, 25.0), ("running", 20.0, None), ("failed", 30.0, 31.5),
        ("completed", 40.0, 100.0), ("starting", None, None), ("failed", None, 60.0), ("completed", 70.0, 72.25),
        ("pending", None, None), ("running", 90.0, None), ("failed", 100.0, 140.0),
    ]
    jobs = []
    for i, (jid, (status, started, finished)) in enumerate(zip(ids, plan)):
        set_job_columns(ctx, jid, status=status, timestamp_created_sec=5000.0 + i, timestamp_started_sec=started,
                        timestamp_finished_sec=finished, tags=["sortme"])
        with ctx.transaction() as s:
            s.add(JobTag(job_id=jid, tag="sortme", timestamp_created_sec=5000.0 + i))
        jobs.append({"id": jid, "status": status, "created": 5000.0 + i, "started": started, "finished": finished})
    return jobs


def expected_order(jobs: list[dict[str, Any]], key: str, descending: bool) -> list[str]:
    newest = sorted(jobs, key=lambda j: j["created"], reverse=True)
    if key == "created":
        return [j["id"] for j in (newest if descending else newest[::-1])]
    if key == "status":
        statuses = LIFECYCLE[::-1] if descending else LIFECYCLE
        return [j["id"] for st in statuses for j in newest if j["status"] == st]
    ran = [j for j in jobs if j["started"] is not None and j["finished"] is not None]
    ran.sort(key=lambda j: j["finished"] - j["started"], reverse=descending)
    return [j["id"] for j in ran] + [j["id"] for j in newest if j not in ran]


@pytest.mark.parametrize("key", ["created", "status", "duration"])
@pytest.mark.parametrize("descending", [True, False])
def test_every_sort_order_pages_through_every_job_once(ctx: HubContext, seeded: Seed, key: str, descending: bool) -> None:
    jobs = make_sortable_jobs(ctx, seeded)
    f = core.JobFilter(serviceName=seeded.service) if descending else core.JobFilter(tags=["sortme"])
    sort = job_sort.parse_sort(key, "desc" if descending else "asc")
    seen: list[str] = []
    cursor = None
    with ctx.read_transaction() as s:
        while True:
            rows, cursor = job_sort.find_sorted_jobs(s, f, sort, limit=2, cursor=cursor)  # pages cross status groups
            seen += [r.job_id for r in rows]
            if cursor is None:
                break
    assert seen == expected_order(jobs, key, descending)


def test_sorting_by_status_keeps_a_status_filter(ctx: HubContext, seeded: Seed) -> None:
    jobs = make_sortable_jobs(ctx, seeded)
    f = core.JobFilter(status=[JobStatus.FAILED])
    with ctx.read_transaction() as s:
        rows, cursor = job_sort.find_sorted_jobs(s, f, job_sort.JobSort(job_sort.SortKey.STATUS, False), limit=50)
    assert cursor is None and [r.job_id for r in rows] == [j["id"] for j in sorted(jobs, key=lambda j: -j["created"]) if j["status"] == "failed"]


def test_the_jobs_page_sorts_and_pages_over_http(http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    jobs = make_sortable_jobs(ctx, seeded)
    for key in ("created", "status", "duration"):
        for order in ("desc", "asc"):
            page = http.get("/jobs", params={"tag": "sortme", "sort": key, "order": order})
            assert page.status_code == 200, page.text
            assert job_ids_in(page.text) == expected_order(jobs, key, order == "desc"), (key, order)
            assert f'<option value="{key}" selected>' in page.text  # the form keeps the sort
    page = http.get("/jobs", params={"tag": "sortme", "sort": "duration", "order": "desc"}).text
    assert 'aria-sort="descending"><a class="sort-link" id="sort-duration" href="/jobs?sort=duration&amp;order=asc&amp;tag=sortme"' in page
    assert 'data-live="true"' in page  # some listed jobs are unfinished: the page follows them
    done = http.get("/jobs", params={"tag": "sortme", "status": "completed"}).text
    assert 'data-live="false"' in done and 'id="live-indicator"' not in done


@pytest.mark.parametrize("params", [
    {"sort": "bogus"}, {"sort": "created", "order": "sideways"}, {"order": "ASC"}, {"sort": "x" * 5000},
    {"sort": "status", "cursor": "bm90LWEtY3Vyc29y"}, {"sort": "duration", "cursor": "!!"},
    # a cursor of another order, and of another piece
    {"sort": "status", "cursor": "NTAwMC4wfGFiYw=="}, {"sort": "duration", "cursor": "cGVuZGluZ3w1MDAwLjB8YWJj"},
])
def test_bad_sort_parameters_are_400(http: httpx.Client, seeded: Seed, params: dict[str, str]) -> None:
    r = http.get("/jobs", params=params)
    assert r.status_code == 400, (params, r.status_code)
    assert "text/html" in r.headers["content-type"]


# ---------------------------------------------------------------- indexes


def query_plan(ctx: HubContext, q: Any) -> str:
    sql = str(q.compile(dialect=ctx.engine.dialect, compile_kwargs={"literal_binds": True}))
    with ctx.engine.connect() as conn:
        if ctx.engine.dialect.name == "sqlite":
            return " / ".join(str(row[-1]) for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        # the tables are tiny: the planner is told to use an index, and must find one that gives the order
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        return " / ".join(str(row[0]) for row in conn.execute(text("EXPLAIN " + sql)))


def assert_in_index_order(ctx: HubContext, q: Any) -> None:
    plan = query_plan(ctx, q)
    if ctx.engine.dialect.name == "sqlite":
        assert "USING" in plan and "INDEX" in plan and "TEMP B-TREE" not in plan, plan
    else:
        assert "Index" in plan and "Sort" not in plan, plan


def test_batch_and_sorted_pages_walk_an_index(ctx: HubContext) -> None:
    """No sort of a batch's (or the table's) rows: each page is an index range read in order."""
    for failed in (True, False):
        f = core.JobFilter(batchId="b", status=batches.FAILED if failed else batches.NOT_FAILED)
        assert_in_index_order(ctx, core.find_jobs_query(f, 51, oldest_first=True))
    run_time = job_sort.RUN_TIME
    ran = core.filter_jobs(core.select(Job), core.JobFilter()).where(job_sort.HAS_RUN_TIME)
    for order in ((run_time.desc(), Job.job_id.desc()), (run_time.asc(), Job.job_id.asc())):
        assert_in_index_order(ctx, ran.order_by(*order).limit(51))
        if ctx.engine.dialect.name == "sqlite":  # a range of the index, not a scan through the unfinished jobs
            assert "ix_jobs_run_time (<expr>>?)" in query_plan(ctx, ran.order_by(*order).limit(51))
    assert_in_index_order(ctx, core.find_jobs_query(core.JobFilter(status=[JobStatus.RUNNING]), 51))
    assert_in_index_order(ctx, core.find_jobs_query(core.JobFilter(serviceName="s"), 51, oldest_first=True))
    counts = core.select(Job.status, core.func.count()).where(Job.batch_id == "b").group_by(Job.status)
    plan = query_plan(ctx, counts)
    assert ("COVERING INDEX ix_jobs_batch_status" in plan) if ctx.engine.dialect.name == "sqlite" else ("ix_jobs_batch" in plan), plan
