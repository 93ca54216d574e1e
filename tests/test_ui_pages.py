"""The web UI without a browser: every page renders, escapes user input, and changes state only with a session and a CSRF token."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from hub.context import HubContext
from hub.core import accounts
from hub.db.tables import Job
from hub.ui.jobfiles import _complete_end, read_console
from pairio.models import PairioComputeClientComputeSlot

from .conftest import auth
from .hubtools import Seed, count_chars, hello2

RES = {"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 60}
EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def create_job(api: httpx.Client, key: str, definition: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"serviceName": "hello_world_service", "jobDefinition": definition, "requiredResources": RES, "skipCache": True, **extra}
    response = api.post("/v1/jobs", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return dict(response.json())


def hello1(name: str = "world") -> dict[str, Any]:
    return {"appName": "hello_world", "processorName": "hello_world_1", "parameters": [{"name": "name", "value": name}]}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def log_in(api: httpx.Client, key: str) -> str:
    """Log in through the settings page; returns the session's CSRF token."""
    page = api.get("/settings")
    response = api.post("/login", data={"csrf_token": csrf_of(page.text), "apiKey": key, "next": "/settings"})
    assert response.status_code == 303, response.text
    return csrf_of(api.get("/settings").text)


def write_console(ctx: HubContext, job_id: str, data: bytes) -> None:
    path = ctx.files.console_output_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with ctx.transaction() as s:
        s.execute(update(Job).where(Job.job_id == job_id).values(console_output_size=len(data)))


def test_every_page_renders_and_user_input_stays_inert(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    job = create_job(api, seeded.key, hello1(EVIL), tags=["evil-tag"])
    write_console(ctx, job["jobId"], f"Hello, {EVIL}!\n</pre><b>bold</b>\n".encode())
    with ctx.transaction() as s:
        cc, _ = accounts.register_compute_client(
            s, seeded.service, seeded.user, f"laptop {EVIL}",
            [PairioComputeClientComputeSlot(numCpus=2, numGpus=0, memoryGb=4, timeSec=3600)], description=EVIL,
        )
        cc_id = cc.compute_client_id
    pages = [
        "/jobs", f"/jobs?tag=evil-tag&service={seeded.service}", f"/job/{job['jobId']}", f"/job/{job['jobId']}/console",
        "/services", f"/service/{seeded.service}", f"/service/{seeded.service}/app/hello_world", f"/compute-client/{cc_id}",
        "/submit", f"/submit?service={seeded.service}&app=hello_world&processor=typed", "/settings",
    ]
    for path in pages:
        page = api.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert page.headers["content-type"].startswith("text/html"), path
        assert "script-src 'self'" in page.headers["content-security-policy"], path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        assert len(re.findall("<script", page.text)) == 1 and re.search(r'<script src="/static/pairio.js\?v=\w+" defer></script>', page.text), path
    job_page = api.get(f"/job/{job['jobId']}").text
    assert "&lt;script&gt;alert(" in job_page  # the parameter, shown as text
    assert "Hello, &lt;script&gt;" in job_page and "&lt;/pre&gt;&lt;b&gt;bold" in job_page  # the console output
    assert "hello_world_1" in job_page and "pending" in job_page
    assert "&lt;script&gt;" in api.get(f"/compute-client/{cc_id}").text
    live = api.get(f"/job/{job['jobId']}/live").json()
    assert live["status"] == "pending" and live["console"]["text"].startswith("Hello, <script>")  # JSON; the page inserts it as text
    assert api.get("/static/pairio.js").status_code == 200 and api.get("/static/pairio.css").status_code == 200


def test_missing_things_are_404_pages(api: httpx.Client, seeded: Seed) -> None:
    for path in ("/job/doesnotexist", "/service/nope", f"/service/{seeded.service}/app/nope", "/compute-client/nope"):
        page = api.get(path)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html"), path
        assert "Not found" in page.text
    assert api.get("/job/nope/live").json()["detail"].startswith("no job")
    assert api.get("/jobs?status=bogus").status_code == 400


def test_login_session_cookie_and_logout(api: httpx.Client, seeded: Seed) -> None:
    page = api.get("/settings")
    assert 'type="password"' in page.text and 'for="api-key"' in page.text
    token = csrf_of(page.text)
    # no CSRF token, or one that does not match the cookie: refused
    assert api.post("/login", data={"apiKey": seeded.key}).status_code == 403
    assert api.post("/login", data={"apiKey": seeded.key, "csrf_token": "x" * 43}).status_code == 403
    wrong = api.post("/login", data={"apiKey": "pairio_wrong", "csrf_token": token})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    response = api.post("/login", data={"apiKey": seeded.key, "csrf_token": token, "next": "//evil.example/x"})
    assert response.status_code == 303 and response.headers["location"].startswith("/settings")
    cookie = response.headers["set-cookie"]
    assert "pairio_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert seeded.key not in cookie
    settings = api.get("/settings")
    assert "Logged in as <strong>alice</strong>" in settings.text and seeded.key not in settings.text
    assert settings.headers["cache-control"] == "no-store"
    # log out needs the CSRF token too
    assert api.post("/logout", data={}).status_code == 403
    assert api.post("/logout", data={"csrf_token": csrf_of(settings.text)}).status_code == 303
    assert "Logged in as" not in api.get("/settings").text


def test_cookies_are_secure_behind_https(api: httpx.Client, seeded: Seed) -> None:
    page = api.get("/settings", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in page.headers["set-cookie"]
    api.cookies.set("pairio_login_csrf", csrf_of(page.text))  # a Secure cookie is not sent back over http; a browser on https would
    response = api.post("/login", data={"apiKey": seeded.key, "csrf_token": csrf_of(page.text)}, headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 303 and "Secure" in response.headers["set-cookie"]


def test_cancel_needs_a_session_a_csrf_token_and_the_right_user(api: httpx.Client, seeded: Seed) -> None:
    job = create_job(api, seeded.key, hello1())
    assert 'id="cancel-button"' not in api.get(f"/job/{job['jobId']}").text  # anonymous readers see no buttons
    assert api.post(f"/job/{job['jobId']}/cancel", data={"csrf_token": "x"}).status_code == 401
    bob = log_in(api, seeded.other_key)
    assert 'id="cancel-button"' not in api.get(f"/job/{job['jobId']}").text
    assert api.post(f"/job/{job['jobId']}/cancel", data={"csrf_token": bob}).status_code == 403
    api.cookies.clear()
    alice = log_in(api, seeded.key)
    assert 'id="cancel-button"' in api.get(f"/job/{job['jobId']}").text
    assert api.post(f"/job/{job['jobId']}/cancel", data={}).status_code == 403  # no token
    foreign = api.post(f"/job/{job['jobId']}/cancel", data={"csrf_token": alice}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    done = api.post(f"/job/{job['jobId']}/cancel", data={"csrf_token": alice})
    assert done.status_code == 303 and done.headers["location"] == f"/job/{job['jobId']}?notice=canceled"
    after = api.get(f"/v1/jobs/{job['jobId']}").json()
    assert after["status"] == "failed" and after["canceled"] and "canceled by alice" in after["error"]
    page = api.get(done.headers["location"]).text
    assert "Cancel requested" in page
    # a cancelled job reads as cancelled, not as a failure; its error is preformatted text
    assert '<p class="status-line"><span class="status status-canceled" data-status="failed"' in page
    assert '<pre class="error job-error" id="job-error" role="status">' in page
    assert "status-canceled" in api.get("/jobs").text


def test_rerun_and_delete(api: httpx.Client, seeded: Seed) -> None:
    job = create_job(api, seeded.key, hello1("again"), tags=["t1"])
    token = log_in(api, seeded.key)
    rerun = api.post(f"/job/{job['jobId']}/rerun", data={"csrf_token": token})
    assert rerun.status_code == 303
    new_id = rerun.headers["location"].split("/job/")[1].split("?")[0]
    assert new_id != job["jobId"]
    new = api.get(f"/v1/jobs/{new_id}").json()
    assert new["jobDefinitionHash"] == job["jobDefinitionHash"] and new["tags"] == ["t1"]
    assert f"rerun of job {job['jobId']}" in api.get(f"/job/{new_id}").text
    deleted = api.post(f"/job/{job['jobId']}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert api.get(f"/v1/jobs/{job['jobId']}").status_code == 404


def test_jobs_page_filters_counts_and_pages(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    jobs = [create_job(api, seeded.key, hello1(f"n{i}"), tags=["even" if i % 2 == 0 else "odd"]) for i in range(55)]
    other = create_job(api, seeded.key, hello2("x"), batchId="batch-7")
    with ctx.transaction() as s:
        s.execute(update(Job).where(Job.job_id == jobs[0]["jobId"]).values(status="completed"))
    page = api.get("/jobs")
    assert 'id="count-all">56<' in page.text and 'id="count-completed">1<' in page.text and 'id="count-pending">55<' in page.text
    assert page.text.count('<a class="mono" href="/job/') == 50
    assert page.text.index(other["jobId"]) < page.text.index(jobs[-1]["jobId"])  # newest first
    older = re.search(r'<a rel="next" href="([^"]+)"', page.text)
    assert older
    page2 = api.get(older.group(1).replace("&amp;", "&"))
    assert page2.text.count('<a class="mono" href="/job/') == 6 and jobs[0]["jobId"] in page2.text
    odd = api.get("/jobs?tag=odd")
    assert odd.text.count('<a class="mono" href="/job/') == 27 and 'id="count-all">27<' in odd.text
    assert jobs[1]["jobId"] in odd.text and jobs[2]["jobId"] not in odd.text
    completed = api.get("/jobs?status=completed")
    assert completed.text.count('<a class="mono" href="/job/') == 1 and jobs[0]["jobId"] in completed.text
    assert 'id="count-pending">55<' in completed.text  # counts ignore the status filter, so each is a link
    by_processor = api.get("/jobs?processor=hello_world_2")
    assert by_processor.text.count('<a class="mono" href="/job/') == 1
    assert api.get("/jobs?batch=batch-7").text.count('<a class="mono" href="/job/') == 1
    assert api.get("/jobs?user=bob").text.count('<a class="mono" href="/job/') == 0
    assert api.get(f"/jobs?service={seeded.service}&app=hello_world").text.count('<a class="mono" href="/job/') == 50


def test_playground_submits_a_typed_job_and_shows_the_python(api: httpx.Client, seeded: Seed) -> None:
    url = f"/submit?service={seeded.service}&app=hello_world&processor=typed"
    form = api.get(url).text
    assert 'for="p-n"' in form and 'name="p.mode"' in form and "Log in" in form and 'id="submit-button"' not in form
    code = api.get("/submit/code", params={"service": seeded.service, "app": "hello_world", "processor": "typed", "p.n": "3", "tags": "a,b"})
    assert code.status_code == 200
    assert "submit_job(" in code.text and "PairioJobParameter(name='n', value=3)" in code.text and "tags=['a', 'b']" in code.text
    compile(code.text, "submitted.py", "exec")
    token = log_in(api, seeded.key)
    assert 'id="submit-button"' in api.get(url).text
    fields = {
        "csrf_token": token, "service": seeded.service, "app": "hello_world", "processor": "typed",
        "p.n": "7", "p.x": "2.5", "p.flag": "true", "p.names": "a, b", "p.mode": "slow", "p.maybe": "",
        "r.numCpus": "2", "r.numGpus": "0", "r.memoryGb": "1.5", "r.timeSec": "120", "tags": "from-ui",
    }
    bad = api.post("/submit", data={**fields, "p.n": "seven"})
    assert bad.status_code == 400 and "is not a whole number" in bad.text and 'value="seven"' in bad.text
    response = api.post("/submit", data=fields)
    assert response.status_code == 303, response.text
    job_id = response.headers["location"].split("/job/")[1].split("?")[0]
    job = api.get(f"/v1/jobs/{job_id}").json()
    params = {p["name"]: p["value"] for p in job["jobDefinition"]["parameters"]}
    assert params == {"n": 7, "x": 2.5, "flag": True, "names": ["a", "b"], "mode": "slow", "maybe": None}
    assert job["requiredResources"] == {"numCpus": 2, "numGpus": 0, "memoryGb": 1.5, "timeSec": 120.0}
    assert job["tags"] == ["from-ui"] and job["userId"] == "alice"
    # an input URL chains jobs
    producer = create_job(api, seeded.key, hello2("chain"))
    chained = api.post("/submit", data={
        "csrf_token": token, "service": seeded.service, "app": "hello_world", "processor": "count_characters",
        "in.input.url": producer["outputFileResults"][0]["url"], "out.output.file": "count.json", "p.include_whitespace": "false",
    })
    assert chained.status_code == 303, chained.text
    chained_job = api.get(f"/v1/jobs/{chained.headers['location'].split('/job/')[1].split('?')[0]}").json()
    assert chained_job["jobDependencies"] == [producer["jobId"]]
    assert chained_job["jobDefinition"]["inputFiles"][0]["fileBaseName"] == "output.txt"


def test_large_console_output_is_shown_in_pieces(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    job = create_job(api, seeded.key, hello1())
    line = "é" * 50 + "\n"  # two bytes per character: pieces must not split one
    data = (line * 20_000).encode()  # ~2 MB
    write_console(ctx, job["jobId"], data)
    page = api.get(f"/job/{job['jobId']}").text
    shown = page.split('id="console"', 1)[1].split("</pre>", 1)[0]
    assert 60_000 < len(shown.encode()) < 80_000
    assert 'id="console-earlier"' in page and "hidden" not in page.split('id="console-earlier"', 1)[1].split(">", 1)[0]
    offset, pieces = 0, []
    while True:
        live = api.get(f"/job/{job['jobId']}/live", params={"consoleOffset": offset}).json()["console"]
        assert live["start"] == offset and live["end"] - live["start"] <= 256 * 1024
        if live["end"] == offset:
            break
        pieces.append(live["text"])
        offset = live["end"]
    assert "".join(pieces).encode() == data
    earlier = api.get(f"/job/{job['jobId']}/console.json", params={"end": 1002}).json()  # 1002 is inside an 'é'
    assert earlier["start"] == 0 and earlier["end"] == 1001 and earlier["text"] == data[:1001].decode()
    console_page = api.get(f"/job/{job['jobId']}/console", params={"start": 1})
    assert console_page.status_code == 200 and 'rel="next"' in console_page.text


def test_utf8_boundaries(tmp_path: Any) -> None:
    assert _complete_end("aé".encode()[:-1]) == 1
    assert _complete_end("a€".encode()) == 4 and _complete_end("a€".encode()[:-1]) == 1
    path = tmp_path / "c.txt"
    path.write_bytes("€€€".encode())
    chunk = read_console(path, 1, 5)  # starts inside the first character, ends inside the third
    assert chunk.text == "€" and (chunk.start, chunk.end, chunk.size) == (3, 6, 9)


def test_resource_plot(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    job = create_job(api, seeded.key, hello1("plot"))
    t0 = time.time()
    samples = [{"timestampSec": t0 + i, "cpuPercent": 50.0 + 10 * i, "rssBytes": (100 + 20 * i) * 1024**2, "numProcesses": 1} for i in range(6)]
    path = ctx.files.resource_log_path(job["jobId"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in samples) + "not json\n")
    assert 'id="resource-plot"' not in api.get(f"/job/{job['jobId']}").text
    with ctx.transaction() as s:
        s.execute(update(Job).where(Job.job_id == job["jobId"]).values(has_resource_utilization_log=True))
    page = api.get(f"/job/{job['jobId']}").text
    assert '<svg id="resource-plot"' in page and page.count("<polyline") == 2
    assert "peak 100% of a core" in page and "peak 200.0 MB" in page


def test_service_roles_are_editable_by_admins_only(api: httpx.Client, seeded: Seed) -> None:
    bob = log_in(api, seeded.other_key)
    assert api.post(f"/service/{seeded.service}/users", data={"csrf_token": bob, "user": "bob", "admin": "on"}).status_code == 403
    api.cookies.clear()
    alice = log_in(api, seeded.key)
    page = api.get(f"/service/{seeded.service}").text
    assert 'name="createJobs"' in page and "Add a user" in page
    saved = api.post(f"/service/{seeded.service}/users", data={"csrf_token": alice, "user": "bob", "createJobs": "on"})
    assert saved.status_code == 303
    roles = {u["userId"]: u for u in api.get(f"/v1/services/{seeded.service}").json()["users"]}
    assert roles["bob"]["createJobs"] and not roles["bob"]["admin"]
    removed = api.post(f"/service/{seeded.service}/users/bob/remove", data={"csrf_token": alice})
    assert removed.status_code == 303
    assert "bob" not in {u["userId"] for u in api.get(f"/v1/services/{seeded.service}").json()["users"]}


def test_api_keys_are_shown_once_and_revoking_the_session_key_logs_out(api: httpx.Client, seeded: Seed) -> None:
    token = log_in(api, seeded.key)
    created = api.post("/settings/api-keys", data={"csrf_token": token, "label": "<b>laptop</b>"})
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    new_key = re.search(r'id="new-api-key" class="secret-once">([^<]+)<', created.text)
    assert new_key and api.get("/v1/me", headers=auth(new_key.group(1))).json() == {"userId": "alice"}
    assert "&lt;b&gt;laptop&lt;/b&gt;" in created.text
    assert new_key.group(1) not in api.get("/settings").text
    session_key_id = re.search(r'<td class="mono">([A-Za-z0-9]+)</td><td>.*?this session', api.get("/settings").text, re.S)
    assert session_key_id
    revoked = api.post(f"/settings/api-keys/{session_key_id.group(1)}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    assert "Logged in as" not in api.get("/settings").text
    assert api.get("/v1/me", headers=auth(seeded.key)).status_code == 401


@pytest.mark.parametrize("path", ["/jobs", "/jobs?status=pending", "/jobs?user=alice", "/jobs?service=hello_world_service"])
def test_the_jobs_page_walks_an_index(ctx: HubContext, path: str) -> None:
    """Newest-first pages come from an index in order (no sort of the whole table), for each common filter.

    On PostgreSQL the tables are tiny, so the planner is told not to scan them sequentially;
    it must still find an index that yields the rows in order (no Sort node).
    """
    from urllib.parse import parse_qsl, urlsplit

    from hub.core import jobs as core
    from hub.ui.jobs_pages import FILTER_FIELDS, job_filter_from

    params = dict(parse_qsl(urlsplit(path).query))
    f = job_filter_from({k: params.get(k, "") for k in FILTER_FIELDS})
    q = core._filtered(core.select(Job), f).order_by(Job.timestamp_created_sec.desc(), Job.job_id.desc()).limit(51)
    sql = str(q.compile(dialect=ctx.engine.dialect, compile_kwargs={"literal_binds": True}))
    with ctx.engine.connect() as conn:
        if ctx.engine.dialect.name == "sqlite":
            plan = " / ".join(str(row[-1]) for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan
        else:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " / ".join(str(row[0]) for row in conn.execute(text("EXPLAIN " + sql)))
            assert "Index" in plan and "Sort" not in plan, plan


def test_job_page_links_dependencies_both_ways(api: httpx.Client, seeded: Seed) -> None:
    first = create_job(api, seeded.key, hello2("deps"))
    second = create_job(api, seeded.key, count_chars(first["outputFileResults"][0]["url"]))
    first_page = api.get(f"/job/{first['jobId']}").text
    second_page = api.get(f"/job/{second['jobId']}").text
    assert f'href="/job/{second["jobId"]}"' in first_page.split("Needed by", 1)[1]
    assert f'href="/job/{first["jobId"]}"' in second_page.split("Depends on", 1)[1]
    assert "waits for its dependencies" in second_page


def test_console_offsets_are_validated_and_pieces_bounded(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    job = create_job(api, seeded.key, hello1())
    data = b"x" * (600 * 1024)
    write_console(ctx, job["jobId"], data)
    base = f"/job/{job['jobId']}"
    for bad in ("-5", "-4", "-1", "1e3", "abc", "9" * 40, str(2**53 + 1)):
        for path, name in ((f"{base}/console.json", "end"), (f"{base}/live", "consoleOffset"), (f"{base}/console", "start")):
            r = api.get(path, params={name: bad})
            assert r.status_code == 400, (path, bad, r.status_code)
            assert f"{name} must be a byte offset" in r.text
    for end in ("0", "1", str(len(data)), str(2**53)):
        piece = api.get(f"{base}/console.json", params={"end": end}).json()
        assert piece["end"] - piece["start"] <= 256 * 1024 and len(piece["text"]) <= 256 * 1024
    live = api.get(f"{base}/live", params={"consoleOffset": 0}).json()["console"]
    assert live["end"] - live["start"] == 256 * 1024


def test_jobs_page_refuses_cursors_it_did_not_make(api: httpx.Client, seeded: Seed) -> None:
    for cursor in ("x" * 401, "not-base64!", "MTIzfGFi"[:-1]):
        assert api.get("/jobs", params={"cursor": cursor}).status_code == 400, cursor
