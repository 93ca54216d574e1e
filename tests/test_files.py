"""Public job files: console output, output files and resource logs, with ranges, HEAD and path checks."""

from __future__ import annotations

from typing import Any

import httpx

from hub.context import HubContext

from .hubtools import Seed, count_chars
from .test_compute_api import claim, get_job, hello1, hello2, register, report, submit, upload

CONTENT = b"0123456789abcdefghij"


def uploaded_output(api: httpx.Client, seeded: Seed) -> tuple[dict[str, Any], str]:
    """A running job with its output uploaded; returns the job and the output's URL path."""
    cc = register(api, seeded)
    job = submit(api, seeded, hello2())
    claim(api, cc)
    report(api, job["jobId"], cc.key, "running")
    assert upload(api, job["jobId"], "output", cc.key, CONTENT).status_code == 200
    url = get_job(api, job["jobId"])["outputFileResults"][0]["url"]
    return job, httpx.URL(url).path


def test_output_file_is_served_with_length_type_and_ranges(api: httpx.Client, seeded: Seed) -> None:
    job, path = uploaded_output(api, seeded)
    assert path == f"/v1/jobs/{job['jobId']}/outputs/output/output.txt"
    whole = api.get(path)
    assert whole.status_code == 200 and whole.content == CONTENT
    assert whole.headers["content-length"] == str(len(CONTENT))
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-security-policy"] == "sandbox", "uploaded content never runs as a hub page"

    part = api.get(path, headers={"Range": "bytes=2-5"})
    assert part.status_code == 206 and part.content == b"2345"
    assert part.headers["content-range"] == f"bytes 2-5/{len(CONTENT)}"
    assert part.headers["content-length"] == "4"
    assert api.get(path, headers={"Range": "bytes=-3"}).content == b"hij"
    assert api.get(path, headers={"Range": "bytes=15-"}).content == b"fghij"
    assert api.get(path, headers={"Range": "bytes=100-200"}).status_code == 416

    head = api.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(CONTENT))


def test_output_urls_404_until_uploaded_and_for_wrong_names(api: httpx.Client, seeded: Seed) -> None:
    job = submit(api, seeded, hello2())
    base = f"/v1/jobs/{job['jobId']}/outputs"
    r = api.get(f"{base}/output/output.txt")
    assert r.status_code == 404 and "not uploaded yet" in r.json()["detail"]
    _, path = uploaded_output(api, seeded)
    uploaded_base = path.rsplit("/", 2)[0]
    for bad in ("output/other.txt", "nosuch/output.txt", "output/%2e%2e", "%2e%2e/output.txt", "output/..%2F..%2Fhub.db"):
        assert api.get(f"{uploaded_base}/{bad}").status_code == 404, bad
    assert api.get(f"{uploaded_base}/output/output.txt").status_code == 200


def test_path_tricks_never_reach_the_disk(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    (ctx.settings.data_dir / "secret.txt").write_text("do not serve")
    job, _ = uploaded_output(api, seeded)
    jid = job["jobId"]
    for path in (
        "/v1/jobs/%2e%2e/console-output",
        "/v1/jobs/..%2F..%2Fsecret.txt/console-output",
        f"/v1/jobs/{jid}/outputs/%2e%2e/%2e%2e",
        f"/v1/jobs/{jid}/outputs/output/..%2F..%2F..%2Fsecret.txt",
        f"/v1/jobs/{jid}%2F..%2F..%2F/resource-utilization-log",
        "/v1/jobs/nosuchjob/console-output",
        "/v1/jobs/nosuchjob/outputs/output/output.txt",
        "/v1/jobs/nosuchjob/resource-utilization-log",
    ):
        r = api.get(path)
        assert r.status_code == 404, path
        assert b"do not serve" not in r.content


def test_console_output_is_empty_until_written_and_supports_ranges(api: httpx.Client, seeded: Seed) -> None:
    job = submit(api, seeded, hello1())
    path = f"/v1/jobs/{job['jobId']}/console-output"
    empty = api.get(path)
    assert empty.status_code == 200 and empty.content == b"" and empty.headers["content-type"].startswith("text/plain")
    cc = register(api, seeded)
    claim(api, cc)
    api.post(f"/v1/compute/jobs/{job['jobId']}/console-output", params={"offset": 0}, content=b"line 1\nline 2\n", headers=cc.headers)
    full = api.get(path)
    assert full.content == b"line 1\nline 2\n" and full.headers["cache-control"] == "no-cache"
    assert api.get(path, headers={"Range": "bytes=7-"}).content == b"line 2\n"
    assert api.head(path).headers["content-length"] == "14"


def test_resource_log_is_served_once_uploaded(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    job = submit(api, seeded, hello1())
    claim(api, cc)
    path = f"/v1/jobs/{job['jobId']}/resource-utilization-log"
    r = api.get(path)
    assert r.status_code == 404 and "no resource utilization log yet" in r.json()["detail"]
    log = b'{"timestamp": 1, "cpu_percent": 12.5}\n'
    api.put(f"/v1/compute/jobs/{job['jobId']}/resource-utilization-log", content=log, headers=cc.headers)
    served = api.get(path)
    assert served.status_code == 200 and served.content == log
    assert served.headers["content-length"] == str(len(log))
    assert api.get(path, headers={"Range": "bytes=0-0"}).content == b"{"


def test_files_of_a_deleted_job_are_gone(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    job, path = uploaded_output(api, seeded)
    assert api.delete(f"/v1/jobs/{job['jobId']}", headers={"Authorization": f"Bearer {seeded.key}"}).status_code == 204
    assert api.get(path).status_code == 404
    assert not ctx.files.job_dir(job["jobId"]).exists()


def test_range_headers_are_answered_as_rfc_9110_says(api: httpx.Client, seeded: Seed) -> None:
    _, path = uploaded_output(api, seeded)
    size = len(CONTENT)
    for ignored in ("bytes=5-2", "bytes=abc", "items=0-1", "bytes=", "bytes=-", "bytes=0-1,4-5", "bytes=1-2-3"):
        r = api.get(path, headers={"Range": ignored})
        assert r.status_code == 200 and r.content == CONTENT and "content-range" not in r.headers, ignored
    for unsatisfiable in ("bytes=20-", "bytes=100-200", "bytes=-0", "bytes=99999999999999999999999999-"):
        r = api.get(path, headers={"Range": unsatisfiable})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}", unsatisfiable
    suffix = api.get(path, headers={"Range": "bytes=-100"})
    assert suffix.status_code == 206 and suffix.content == CONTENT and suffix.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    clipped = api.get(path, headers={"Range": "bytes=18-99999999999999999999999"})
    assert clipped.status_code == 206 and clipped.content == b"ij"
    assert api.get(path, headers={"Range": " Bytes = 1-1 "}).content == b"1"
    etag = api.head(path).headers["etag"]
    assert api.get(path, headers={"Range": "bytes=1-1", "If-Range": etag}).content == b"1"
    for stale in ('"other"', "W/" + etag):
        r = api.get(path, headers={"Range": "bytes=100-", "If-Range": stale})
        assert r.status_code == 200 and r.content == CONTENT, stale
    assert api.get(path, headers={"Range": "bytes=100-", "If-Range": etag}).status_code == 416


def test_range_decisions_unit() -> None:
    from hub.ranges import ByteRange, Unsatisfiable, WholeFile, decide_range

    assert decide_range(None, 10) == WholeFile()
    assert decide_range("bytes=0-0", 10) == ByteRange(0, 1)
    assert decide_range("bytes=9-", 10) == ByteRange(9, 10)
    assert decide_range("bytes=-3", 10) == ByteRange(7, 10)
    assert decide_range("bytes=0-", 0) == Unsatisfiable(0)
    assert decide_range("bytes=-5", 0) == Unsatisfiable(0)
    assert decide_range("bytes=3-2", 10) == WholeFile()
    assert decide_range("bytes=0-1, 5-6", 10) == WholeFile()
    assert decide_range("bytes=" + "9" * 5000 + "-", 10) == Unsatisfiable(10)


def test_output_names_with_url_characters_have_encoded_urls_that_chain(api: httpx.Client, seeded: Seed) -> None:
    cc = register(api, seeded)
    for name, encoded in (("a?b.txt", "a%3Fb.txt"), ("x#y.txt", "x%23y.txt"), ("%2e%2e", "%252e%252e"), ("a b+c.txt", "a%20b%2Bc.txt")):
        definition = hello2(name)
        definition["outputFiles"][0]["fileBaseName"] = name
        job = submit(api, seeded, definition)
        url = job["outputFileResults"][0]["url"]
        assert url.endswith(f"/v1/jobs/{job['jobId']}/outputs/output/{encoded}") and job["outputFileUrlList"] == [url]
        consumer = submit(api, seeded, count_chars(url))
        assert consumer["jobDependencies"] == [job["jobId"]] and not consumer["isRunnable"]
        claim(api, cc)
        report(api, job["jobId"], cc.key, "running")
        assert upload(api, job["jobId"], "output", cc.key, name.encode()).status_code == 200
        served = api.get(httpx.URL(url).raw_path.decode())
        assert served.status_code == 200 and served.content == name.encode(), name
        found = api.get("/v1/jobs", params={"outputFileUrl": url}).json()["jobs"]
        assert [j["jobId"] for j in found] == [job["jobId"]]
