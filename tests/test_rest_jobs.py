"""REST API for jobs: caching, dependencies, cancel, delete, find, roles and bad input (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import auth
from .hubtools import Seed, count_chars, hello2

RES = {"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 60}


def hello1(**kw: Any) -> dict[str, Any]:
    return {"appName": "hello_world", "processorName": "hello_world_1", **kw}






def submit(api: httpx.Client, seeded: Seed, definition: dict[str, Any], key: str | None = None, **kw: Any) -> httpx.Response:
    body = {"serviceName": seeded.service, "jobDefinition": definition, "requiredResources": RES, **kw}
    return api.post("/v1/jobs", json=body, headers=auth(key or seeded.key))


def job_count(api: httpx.Client) -> int:
    return sum(api.get("/v1/job-counts").json()["counts"].values())


def test_cache_hit_returns_the_most_recent_job_and_adds_tags(api: httpx.Client, seeded: Seed) -> None:
    first = submit(api, seeded, hello1(), tags=["a"])
    assert first.status_code == 201
    again = submit(api, seeded, hello1(parameters=[{"name": "name", "value": "world"}]), tags=["a", "b"])
    assert again.status_code == 200
    assert again.json()["jobId"] == first.json()["jobId"]
    assert again.json()["tags"] == ["a", "b"]
    forced = submit(api, seeded, hello1(), skipCache=True)
    assert forced.status_code == 201 and forced.json()["jobId"] != first.json()["jobId"]
    latest = submit(api, seeded, hello1())
    assert latest.json()["jobId"] == forced.json()["jobId"], "the most recent job with the hash is returned"
    other = submit(api, seeded, hello1(parameters=[{"name": "name", "value": "Ada"}]))
    assert other.status_code == 201 and other.json()["jobDefinitionHash"] != first.json()["jobDefinitionHash"]
    assert submit(api, seeded, hello1(cacheBust=None)).json()["jobId"] == forced.json()["jobId"]
    assert submit(api, seeded, hello1(cacheBust="1")).status_code == 201


def test_failed_jobs_are_returned_unless_rerun_failing(api: httpx.Client, seeded: Seed) -> None:
    job = submit(api, seeded, hello1()).json()
    canceled = api.post(f"/v1/jobs/{job['jobId']}/cancel", headers=auth(seeded.key)).json()
    assert canceled["status"] == "failed" and canceled["canceled"] is True
    assert "canceled by alice" in canceled["error"]
    assert submit(api, seeded, hello1()).json()["jobId"] == job["jobId"]
    rerun = submit(api, seeded, hello1(), rerunFailing=True)
    assert rerun.status_code == 201 and rerun.json()["jobId"] != job["jobId"]
    assert api.get(f"/v1/jobs/{job['jobId']}").status_code == 200, "rerunFailing alone keeps the failed job"
    api.post(f"/v1/jobs/{rerun.json()['jobId']}/cancel", headers=auth(seeded.key))
    third = submit(api, seeded, hello1(), rerunFailing=True, deleteFailing=True)
    assert third.status_code == 201
    assert api.get(f"/v1/jobs/{rerun.json()['jobId']}").status_code == 404, "deleteFailing deletes the failed match"


def test_chained_job_depends_on_the_output_it_reads(api: httpx.Client, seeded: Seed) -> None:
    job1 = submit(api, seeded, hello2()).json()
    out_url = job1["outputFileUrlList"][0]
    assert out_url == job1["outputFileResults"][0]["url"]
    assert out_url.startswith("http://hub.test/v1/jobs/" + job1["jobId"])
    job2 = submit(api, seeded, count_chars(out_url)).json()
    assert job2["jobDependencies"] == [job1["jobId"]]
    assert job2["isRunnable"] is False
    assert job2["inputFileUrlList"] == [out_url]
    events = api.get(f"/v1/jobs/{job2['jobId']}/events").json()["events"]
    assert "waits for 1 dependency" in events[0]["message"]


def test_cancelled_dependency_fails_its_dependants_transitively(api: httpx.Client, seeded: Seed) -> None:
    job1 = submit(api, seeded, hello2()).json()
    job2 = submit(api, seeded, count_chars(job1["outputFileUrlList"][0])).json()
    job3 = submit(api, seeded, count_chars(job2["outputFileUrlList"][0])).json()
    api.post(f"/v1/jobs/{job1['jobId']}/cancel", headers=auth(seeded.key))
    j2 = api.get(f"/v1/jobs/{job2['jobId']}").json()
    j3 = api.get(f"/v1/jobs/{job3['jobId']}").json()
    assert j2["status"] == "failed" and job1["jobId"] in j2["error"]
    assert j3["status"] == "failed" and job2["jobId"] in j3["error"]
    # a new job on a failed dependency fails at once instead of waiting forever
    j4 = submit(api, seeded, count_chars(job1["outputFileUrlList"][0]), skipCache=True).json()
    assert j4["status"] == "failed" and job1["jobId"] in j4["error"]


def test_deleted_dependency_fails_its_dependants(api: httpx.Client, seeded: Seed) -> None:
    job1 = submit(api, seeded, hello2()).json()
    job2 = submit(api, seeded, count_chars(job1["outputFileUrlList"][0])).json()
    assert api.delete(f"/v1/jobs/{job1['jobId']}", headers=auth(seeded.key)).status_code == 204
    j2 = api.get(f"/v1/jobs/{job2['jobId']}").json()
    assert j2["status"] == "failed" and f"dependency {job1['jobId']} was deleted" in j2["error"]
    assert api.get(f"/v1/jobs/{job1['jobId']}").status_code == 404


def test_explicit_dependencies_must_exist(api: httpx.Client, seeded: Seed) -> None:
    r = submit(api, seeded, hello1(), jobDependencies=["doesnotexist"])
    assert r.status_code == 400 and "doesnotexist" in r.json()["detail"]
    job1 = submit(api, seeded, hello2()).json()
    job = submit(api, seeded, hello1(), jobDependencies=[job1["jobId"]]).json()
    assert job["jobDependencies"] == [job1["jobId"]] and job["isRunnable"] is False


def test_find_jobs_filters_and_pages(api: httpx.Client, seeded: Seed) -> None:
    ids = [submit(api, seeded, hello1(cacheBust=str(i)), tags=["bulk", f"n{i % 2}"], batchId="b1").json()["jobId"] for i in range(7)]
    page1 = api.get("/v1/jobs", params={"serviceName": seeded.service, "limit": 3}).json()
    page2 = api.get("/v1/jobs", params={"serviceName": seeded.service, "limit": 3, "cursor": page1["nextCursor"]}).json()
    page3 = api.get("/v1/jobs", params={"serviceName": seeded.service, "limit": 3, "cursor": page2["nextCursor"]}).json()
    seen = [j["jobId"] for p in (page1, page2, page3) for j in p["jobs"]]
    assert seen == list(reversed(ids)), "newest first, no job twice or missing"
    assert page3["nextCursor"] is None
    both = api.get("/v1/jobs", params=[("tag", "bulk"), ("tag", "n1")]).json()["jobs"]
    assert sorted(j["jobId"] for j in both) == sorted(ids[1::2])
    assert len(api.get("/v1/jobs", params={"batchId": "b1", "status": "pending"}).json()["jobs"]) == 7
    assert api.get("/v1/jobs", params={"batchId": "b1", "status": "failed"}).json()["jobs"] == []
    assert api.get("/v1/jobs", params={"userId": "bob"}).json()["jobs"] == []


def test_tag_pages_walk_every_tagged_job_newest_first(api: httpx.Client, seeded: Seed) -> None:
    ids = [submit(api, seeded, hello1(cacheBust=f"t{i}"), tags=["walk"] if i % 3 else []).json()["jobId"] for i in range(8)]
    # a tag added by a later submission (cache hit) pages by the job's creation time, not the tagging time
    assert submit(api, seeded, hello1(cacheBust="t0"), tags=["walk"]).status_code == 200
    seen, cursor = [], None
    while True:
        params = {"tag": "walk", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/jobs", params=params).json()
        seen += [j["jobId"] for j in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    expected = [j for i, j in enumerate(ids) if i % 3 or i == 0]
    assert seen == list(reversed(expected)), "newest first, no job twice or missing"
    both = api.get("/v1/jobs", params=[("tag", "walk"), ("tag", "walk"), ("serviceName", seeded.service), ("limit", 100)]).json()["jobs"]
    assert [j["jobId"] for j in both] == seen
    assert api.get("/v1/jobs", params={"status": "nonsense"}).status_code == 422
    assert api.get("/v1/jobs", params={"cursor": "!!!"}).status_code == 400
    assert api.get("/v1/jobs", params={"limit": 0}).status_code == 422
    j1 = submit(api, seeded, hello2()).json()
    j2 = submit(api, seeded, count_chars(j1["outputFileUrlList"][0])).json()
    by_in = api.get("/v1/jobs", params={"inputFileUrl": j1["outputFileUrlList"][0]}).json()["jobs"]
    by_out = api.get("/v1/jobs", params={"outputFileUrl": j1["outputFileUrlList"][0]}).json()["jobs"]
    assert [j["jobId"] for j in by_in] == [j2["jobId"]] and [j["jobId"] for j in by_out] == [j1["jobId"]]


def test_find_by_definition(api: httpx.Client, seeded: Seed) -> None:
    body = {"serviceName": seeded.service, "jobDefinition": hello1()}
    assert api.post("/v1/jobs/find-by-definition", json=body).json() == {"found": False, "job": None}
    job = submit(api, seeded, hello1()).json()
    found = api.post("/v1/jobs/find-by-definition", json=body).json()
    assert found["found"] is True and found["job"]["jobId"] == job["jobId"]


def test_roles_are_enforced(api: httpx.Client, seeded: Seed) -> None:
    r = submit(api, seeded, hello1(), key=seeded.other_key)
    assert r.status_code == 403 and "createJobs" in r.json()["detail"] and "add-service-user" in r.json()["detail"]
    job = submit(api, seeded, hello1()).json()
    assert api.post(f"/v1/jobs/{job['jobId']}/cancel", headers=auth(seeded.other_key)).status_code == 403
    assert api.delete(f"/v1/jobs/{job['jobId']}", headers=auth(seeded.other_key)).status_code == 403
    grant = api.put(f"/v1/services/{seeded.service}/users/bob", json={"createJobs": True}, headers=auth(seeded.key))
    assert grant.status_code == 200
    assert submit(api, seeded, hello1(cacheBust="bob"), key=seeded.other_key).status_code == 201
    assert api.delete(f"/v1/jobs/{job['jobId']}", headers=auth(seeded.other_key)).status_code == 403, "not bob's job"
    assert api.put(f"/v1/services/{seeded.service}/users/bob", json={"admin": True}, headers=auth(seeded.other_key)).status_code == 403


def test_users_never_see_private_keys_or_secrets(api: httpx.Client, seeded: Seed) -> None:
    secret = "s3cr3t-value-do-not-show"
    job = submit(api, seeded, hello1(), secrets=[{"name": "TOKEN", "value": secret}]).json()
    assert job["secrets"] is None and job["jobPrivateKey"] is None
    for text in (api.get(f"/v1/jobs/{job['jobId']}").text, api.get("/v1/jobs", params={"userId": "alice"}).text):
        assert secret not in text


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("malformed json", b"{not json", 422, "JSON"),
    ("not an object", b"[1,2]", 422, "invalid request"),
    ("unknown field", {"serviceName": "hello_world_service", "jobDefinition": hello1(), "requiredResources": RES, "sneaky": 1}, 422, "sneaky"),
    ("wrong type", {"serviceName": "hello_world_service", "jobDefinition": hello1(), "requiredResources": {**RES, "numCpus": "many"}}, 422, "numCpus"),
    ("negative cpus", {"serviceName": "hello_world_service", "jobDefinition": hello1(), "requiredResources": {**RES, "numCpus": -2}}, 422, "numCpus"),
    ("huge memory", {"serviceName": "hello_world_service", "jobDefinition": hello1(), "requiredResources": {**RES, "memoryGb": 1e300}}, 422, "memoryGb"),
    ("unknown service", {"serviceName": "nope", "jobDefinition": hello1(), "requiredResources": RES}, 404, "no service 'nope'"),
    ("unknown app", {"serviceName": "hello_world_service", "jobDefinition": {"appName": "nope", "processorName": "x"}, "requiredResources": RES}, 404, "has no app 'nope'"),
    ("unknown processor", {"serviceName": "hello_world_service", "jobDefinition": hello1(processorName="nope"), "requiredResources": RES}, 400, "no processor 'nope'"),
    ("missing input", {"serviceName": "hello_world_service", "jobDefinition": {**count_chars("https://x/y"), "inputFiles": []}, "requiredResources": RES}, 400, "needs input file(s) 'input'"),
    ("path trick", {"serviceName": "hello_world_service", "jobDefinition": {**hello2(), "outputFiles": [{"name": "output", "fileBaseName": "../../etc/passwd"}]}, "requiredResources": RES}, 422, "fileBaseName"),
    ("output name trick", {"serviceName": "hello_world_service", "jobDefinition": {**hello2(), "outputFiles": [{"name": "../output", "fileBaseName": "o.txt"}]}, "requiredResources": RES}, 422, "name"),
    ("bad tag", {"serviceName": "hello_world_service", "jobDefinition": hello1(), "requiredResources": RES, "tags": ["<b>"]}, 422, "tag"),
    ("bad input url", {"serviceName": "hello_world_service", "jobDefinition": count_chars("file:///etc/passwd"), "requiredResources": RES}, 422, "http"),
]


@pytest.mark.parametrize("label, body, status, fragment", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_gets_a_clear_error_and_changes_nothing(api: httpx.Client, seeded: Seed, label: str, body: Any, status: int, fragment: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = api.post("/v1/jobs", content=content, headers={**auth(seeded.key), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert job_count(api) == 0


def test_keys_are_checked(api: httpx.Client, seeded: Seed) -> None:
    body = {"serviceName": seeded.service, "jobDefinition": hello1(), "requiredResources": RES}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        r = api.post("/v1/jobs", json=body, headers=headers)
        assert r.status_code == 401, headers
        assert "wrong" not in r.json()["detail"]
    r = api.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer: {seeded.key}"})
    assert r.status_code == 201, "the original client's 'Bearer: <key>' form is accepted"
    assert job_count(api) == 1


def test_oversized_bodies_get_413(api: httpx.Client, seeded: Seed) -> None:
    big = {"serviceName": seeded.service, "jobDefinition": hello1(cacheBust="x" * 900), "requiredResources": RES,
           "tags": ["t"] * 10, "secrets": [{"name": "BIG", "value": "y" * 60_000}] * 20}
    r = api.post("/v1/jobs", json=big, headers=auth(seeded.key))
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(40):
            yield b"x" * 65536

    r = api.post("/v1/jobs", content=chunks(), headers={**auth(seeded.key), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert job_count(api) == 0


def test_no_500_for_junk(api: httpx.Client, seeded: Seed) -> None:
    junk = [b"", b"null", b"\xff\xfe", b'{"serviceName": null}', b'"string"', b"1e999",
            json.dumps({"serviceName": "x" * 1000, "jobDefinition": {}, "requiredResources": {}}).encode()]
    for path in ("/v1/jobs", "/v1/jobs/find-by-definition", "/v1/jobs/delete", "/v1/services", "/v1/compute-clients"):
        for body in junk:
            r = api.post(path, content=body, headers={**auth(seeded.key), "Content-Type": "application/json"})
            assert r.status_code < 500, (path, body, r.text)
    for path in ("/v1/jobs/..%2f..%2fetc", "/v1/jobs/%00", "/v1/services/%2e%2e", "/v1/users/x/stats"):
        assert api.get(path).status_code < 500, path


def test_services_apps_and_compute_clients(api: httpx.Client, seeded: Seed) -> None:
    services = api.get("/v1/services").json()["services"]
    assert [s["serviceName"] for s in services] == [seeded.service]
    apps = api.get(f"/v1/services/{seeded.service}/apps").json()["serviceApps"]
    assert [a["appName"] for a in apps] == ["hello_world"]
    spec = apps[0]["appSpecification"]
    bad = api.put(f"/v1/services/{seeded.service}/apps/other", json=spec, headers=auth(seeded.key))
    assert bad.status_code == 400
    assert api.put(f"/v1/services/{seeded.service}/apps/hello_world", json=spec, headers=auth(seeded.other_key)).status_code == 403
    assert api.put(f"/v1/services/{seeded.service}/apps/hello_world", json={**spec, "processors": "x"}, headers=auth(seeded.key)).status_code == 400
    slot = {"numCpus": 4, "numGpus": 0, "memoryGb": 8, "timeSec": 3600}
    r = api.post("/v1/compute-clients", json={"serviceName": seeded.service, "label": "laptop", "computeSlots": [slot]}, headers=auth(seeded.key))
    assert r.status_code == 201
    created = r.json()
    assert created["computeClientPrivateKey"].startswith("pairiocc_")
    listed = api.get("/v1/compute-clients", params={"serviceName": seeded.service}).json()["computeClients"]
    assert listed[0]["computeClientPrivateKey"] is None
    assert created["computeClientPrivateKey"] not in api.get(f"/v1/compute-clients/{listed[0]['computeClientId']}").text
    r = api.post("/v1/compute-clients", json={"serviceName": seeded.service, "label": "x", "computeSlots": [slot]}, headers=auth(seeded.other_key))
    assert r.status_code == 403 and "processJobs" in r.json()["detail"]


def test_user_stats_and_keys(api: httpx.Client, seeded: Seed) -> None:
    submit(api, seeded, hello1())
    stats = api.get("/v1/users/alice/stats").json()
    assert stats["consumed"]["numJobs"] == 0  # only jobs that started and ended count (tests/test_user_stats.py)
    assert set(stats) == {"userId", "consumed", "provided", "consumedDeleted", "providedDeleted"}
    assert api.get("/v1/me", headers=auth(seeded.key)).json() == {"userId": "alice"}
    new = api.post("/v1/me/api-keys", json={"label": "laptop"}, headers=auth(seeded.key)).json()
    assert api.get("/v1/me", headers=auth(new["apiKey"])).status_code == 200
    api.delete(f"/v1/me/api-keys/{new['key']['keyId']}", headers=auth(seeded.key))
    assert api.get("/v1/me", headers=auth(new["apiKey"])).status_code == 401


def test_openapi_docs_are_served(api: httpx.Client) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert "/v1/jobs" in paths and "/v1/jobs/{job_id}/cancel" in paths


def test_long_input_urls_are_stored_and_found(api: httpx.Client, seeded: Seed) -> None:
    url = "https://data.example.org/" + "a" * 4000 + "?sig=x"
    job = submit(api, seeded, count_chars(url))
    assert job.status_code == 201, job.text
    found = api.get("/v1/jobs", params={"inputFileUrl": url}).json()["jobs"]
    assert [j["jobId"] for j in found] == [job.json()["jobId"]]


def test_concurrent_identical_submissions_make_one_job(live_hub: Any, seeded: Seed) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = {"serviceName": seeded.service, "jobDefinition": hello1(cacheBust="race"), "requiredResources": RES}

    def post(_: int) -> str:
        with httpx.Client(base_url=live_hub.url, timeout=30) as c:
            r = c.post("/v1/jobs", json=body, headers=auth(seeded.key))
            assert r.status_code in (200, 201), r.text
            return str(r.json()["jobId"])

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(post, range(16)))
    assert len(ids) == 1


def test_unknown_target_compute_client_is_a_bad_request(api: httpx.Client, seeded: Seed) -> None:
    r = submit(api, seeded, hello1(), targetComputeClientIds=["nope"])
    assert r.status_code == 400 and "nope" in r.json()["detail"]


def test_a_write_is_committed_before_its_response(live_hub: Any, seeded: Seed) -> None:
    """Each 2xx means committed: the very next request sees the change (read-your-writes)."""
    with httpx.Client(base_url=live_hub.url, timeout=30) as c:
        for i in range(40):
            r = c.post("/v1/jobs", json={"serviceName": seeded.service, "jobDefinition": hello1(cacheBust=f"rw{i}"),
                                         "requiredResources": RES}, headers=auth(seeded.key))
            assert r.status_code == 201
            assert c.get(f"/v1/jobs/{r.json()['jobId']}").status_code == 200
            c.post(f"/v1/jobs/{r.json()['jobId']}/cancel", headers=auth(seeded.key))
            assert c.get(f"/v1/jobs/{r.json()['jobId']}").json()["status"] == "failed"


@pytest.mark.parametrize(
    "name, rule",
    [
        ("PYTHONWARNINGS", "names starting with PYTHON change how programs"),
        ("BROWSER", "BROWSER changes how programs"),
        ("LD_PRELOAD", "names starting with LD_ change how programs"),
        ("BASH_ENV", "BASH_ENV changes how programs"),
        ("lower_case", "1-64 characters of A-Z, 0-9 and '_'"),
    ],
)
def test_secret_names_that_change_how_programs_run_are_refused(api: httpx.Client, seeded: Seed, name: str, rule: str) -> None:
    # issue 10: such a secret became a variable of the bridge's watcher and ran commands on the bridge host
    r = submit(api, seeded, hello1(), secrets=[{"name": "GOOD_TOKEN", "value": "fine"}, {"name": name, "value": "x-value-never-shown"}])
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert f"invalid secret name {name!r}" in detail and rule in detail, detail
    assert "x-value-never-shown" not in r.text
    assert job_count(api) == 0
