"""The OpenAPI document describes the hub: one error model, every status a route answers,
the name rules as patterns, complete Allow headers, API pages that work offline, and a
bounded schemathesis run against a real hub (SQLite and PostgreSQL) finding nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.context import HubContext
from pairio.names import (
    FILE_BASE_NAME_PATTERN,
    INPUT_NAME_PATTERN,
    NAME_PATTERN,
    SECRET_NAME_PATTERN,
    check_file_base_name,
    check_input_name,
    check_name,
)

from .conftest import auth
from .hubtools import LiveHub, Seed

TESTS = Path(__file__).resolve().parent
# Bounds of the schemathesis run: a fixed seed, and examples per operation (with all phases,
# about a minute per database on a busy 2-core machine).
# Set PAIRIO_TEST_SCHEMATHESIS_SEED / _MAX_EXAMPLES to explore further.
SCHEMATHESIS_SEED = int(os.environ.get("PAIRIO_TEST_SCHEMATHESIS_SEED", "20261202"))
SCHEMATHESIS_MAX_EXAMPLES = int(os.environ.get("PAIRIO_TEST_SCHEMATHESIS_MAX_EXAMPLES", "25"))


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_every_error_is_documented_with_one_model(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ErrorBody"]["required"] == ["detail"] and schemas["ErrorBody"]["properties"]["detail"]["type"] == "string"
    for path, method, op in _operations(doc):
        model = "WireErrorBody" if path.startswith("/api/") else "ErrorBody"
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}, (path, method, status)
    jobs = doc["paths"]["/v1/jobs"]
    assert {"400", "401", "403", "404", "409", "413", "422"} <= set(jobs["post"]["responses"])
    assert jobs["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in jobs["get"] and {"400", "422"} <= set(jobs["get"]["responses"])
    assert {"404"} <= set(doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"])
    # the wire protocol: one operation per call, with its own body and error shape
    get_job = doc["paths"]["/api/getJob"]["post"]
    body = schemas[get_job["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert body["properties"]["type"]["const"] == "getJobRequest" and "jobId" in body["required"]
    assert {"400", "401", "404", "413", "500"} <= set(get_job["responses"])


def test_the_422_body_is_what_the_document_says(api: httpx.Client, seeded: Seed) -> None:
    r = api.post("/v1/jobs", json={"serviceName": 5}, headers=auth(seeded.key))
    assert r.status_code == 422 and isinstance(r.json()["detail"], str) and set(r.json()) == {"detail"}
    # a rule across fields that no schema can state is a 400, in the same shape
    slot = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 10, "minTimeSec": 20}
    r = api.post("/v1/compute-clients", json={"serviceName": seeded.service, "label": "x", "computeSlots": [slot]}, headers=auth(seeded.key))
    assert r.status_code == 400 and "minTimeSec is larger than timeSec" in r.json()["detail"]


def test_name_rules_are_patterns_in_the_schemas(api: httpx.Client) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    output_file = schemas["PairioJobOutputFile"]["properties"]
    assert output_file["name"]["pattern"] == NAME_PATTERN and output_file["name"]["maxLength"] == 100
    assert output_file["fileBaseName"]["pattern"] == FILE_BASE_NAME_PATTERN and output_file["fileBaseName"]["maxLength"] == 255
    secret = schemas["PairioJobSecret"]["properties"]["name"]
    assert secret["pattern"] == SECRET_NAME_PATTERN and "PATH" in secret["not"]["anyOf"][0]["enum"]
    assert schemas["ServiceCreateBody"]["properties"]["serviceName"]["pattern"] == NAME_PATTERN


@pytest.mark.parametrize(
    "value", ["a", "a.b", "a..b", ".a", "a.", "a\n", "a" * 100, "a" * 101, "a-b.c_d", "", "a/b", "é", "a[0]", "a.b[12]", "a[01]", "a[]", "a[0]\n"]
)
def test_name_pattern_and_check_agree(value: str) -> None:
    def ok(check: Any) -> bool:
        try:
            check(value)
            return True
        except ValueError:
            return False

    assert ok(check_name) == (bool(re.fullmatch(NAME_PATTERN, value)) and len(value) <= 100)
    assert ok(check_file_base_name) == (bool(re.fullmatch(FILE_BASE_NAME_PATTERN, value)) and len(value) <= 255)
    assert ok(check_input_name) == (bool(re.fullmatch(INPUT_NAME_PATTERN, value)) and len(value) <= 108)


def test_405_names_every_allowed_method(api: httpx.Client) -> None:
    methods = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
    for path in ("/v1/jobs/abc", "/v1/services", "/v1/services/s/apps/a", "/v1/compute/jobs/abc/outputs/o", "/job/abc/cancel"):
        answers = {m: api.request(m, path).status_code for m in methods}
        refused = {m for m, status in answers.items() if status == 405}
        assert refused, path
        for m in refused:
            r = api.request(m, path)
            assert r.headers["allow"] == ", ".join(sorted(set(methods) - refused)), (path, m, answers)
            if m != "HEAD":
                assert f"{m} is not allowed here" in r.json()["detail"]
    assert api.patch("/v1/jobs/abc").headers["allow"] == "DELETE, GET"
    assert api.patch("/v1/jobs/delete").headers["allow"] == "POST", "the action, not /v1/jobs/{job_id} with job_id 'delete'"
    r = api.get("/api/getJob")  # the wire protocol keeps its own answer
    assert r.status_code == 405 and r.headers["allow"] == "POST, OPTIONS" and "error" in r.json()


def test_api_pages_load_their_assets_from_the_hub(api: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = api.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources and all(s.startswith("/") for s in sources), (page, sources)
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        for s in sources:
            asset = api.get(s)
            assert asset.status_code == 200 and len(asset.content) > 1000, s
    assert api.get("/docs/oauth2-redirect").status_code == 200


@pytest.mark.timeout(900)  # a safety net, not a measure: about a minute on a quiet machine, several on a loaded one
def test_schemathesis_finds_no_failures(ctx: HubContext, seeded: Seed, tmp_path: Path) -> None:
    """Every check schemathesis has, on every operation, with the seeded user's key (so the routes
    that need one are exercised past authentication). tests/schemathesis.toml says why it
    counts 400 and 413 as acceptable answers to some requests."""
    ctx.settings.claim_max_wait_sec = 0.2  # long-polling claims would spend the run waiting
    with LiveHub(ctx) as hub:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(TESTS / "schemathesis.toml"), "run",
                f"{hub.url}/openapi.json", "--checks", "all", "--seed", str(SCHEMATHESIS_SEED),
                "--max-examples", str(SCHEMATHESIS_MAX_EXAMPLES), "--header", f"Authorization: Bearer {seeded.key}",
                "--generation-database", "none", "--no-color", "--workers", "2",
                # answers are checked, not timed: a loaded machine (or PostgreSQL's fsync behind another
                # program's writes) may hold a request for seconds; the default would call that an error
                "--request-timeout", "120",
                "--report", "ndjson", "--report-dir", str(tmp_path / "report"),
            ],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
        )
    out = result.stdout + result.stderr
    summary = out[out.rfind("SUMMARY"):] if "SUMMARY" in out else out[-3000:]
    assert result.returncode == 0, out[-20000:]
    assert re.search(r"\d+ generated, \d+ passed", summary), summary
    print(summary)
