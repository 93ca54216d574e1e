"""The original wire protocol (POST /api/<callName>): shapes, semantics, auth and bad input."""

from __future__ import annotations

import copy
import json
from typing import Any, Optional

import httpx
import pytest
from sqlalchemy import func, select

from hub.context import HubContext
from hub.core import accounts
from hub.db.tables import Job
from pairio.models import PairioComputeClientComputeSlot

from .hubtools import LiveHub, Seed

# The Job shape of shared/docs/wire-protocol.md, exactly.
JOB_KEYS = {
    "jobId", "jobPrivateKey", "serviceName", "userId", "batchId", "tags", "jobDefinition",
    "jobDefinitionHash", "jobDependencies", "requiredResources", "targetComputeClientIds", "secrets",
    "inputFileUrlList", "outputFileUrlList", "outputFileResults", "consoleOutputUrl",
    "resourceUtilizationLogUrl", "timestampCreatedSec", "timestampStartingSec", "timestampStartedSec",
    "timestampFinishedSec", "canceled", "status", "isRunnable", "error", "computeClientId",
    "computeClientName", "computeClientUserId", "imageUri",
}
# The prototype's Service App, Processor and ComputeClient shapes (app-protocol.md, section 5), exactly.
SERVICE_APP_KEYS = {"serviceName", "appName", "appSpecificationUri", "appSpecificationCommit", "appSpecification"}
PROCESSOR_KEYS = {"name", "description", "label", "image", "executable", "inputs", "outputs", "parameters", "attributes"}
COMPUTE_CLIENT_KEYS = {
    "serviceNames", "computeClientId", "computeClientPrivateKey", "computeClientName", "userId",
    "processJobsForUsers", "description", "computeSlots",
}
STATS_KEYS = {"numJobs", "cpuHours", "gpuHours", "gbHours", "jobHours"}
SECRET_VALUE = "s3cret-value-never-shown"


# ---------------------------------------------------------------- helpers


def send(api: httpx.Client, name: str, fields: dict[str, Any], key: Optional[str] = None, colon: bool = False) -> httpx.Response:
    """POST /api/<name>; ``colon`` sends the prototype client's ``Bearer: <key>`` header."""
    headers = {"Authorization": f"Bearer{':' if colon else ''} {key}"} if key else {}
    return api.post(f"/api/{name}", json={"type": f"{name}Request", **fields}, headers=headers)


def call(api: httpx.Client, name: str, key: Optional[str] = None, *, colon: bool = False, **fields: Any) -> httpx.Response:
    return send(api, name, fields, key, colon)


def ok(resp: httpx.Response, name: str) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["type"] == f"{name}Response"
    return body


def error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"], body
    return str(body["error"])


def greeting(name: str = "world", **extra: Any) -> dict[str, Any]:
    return {
        "appName": "hello_world",
        "processorName": "hello_world_2",
        "inputFiles": [],
        "outputFiles": [{"name": "output", "fileBaseName": "output.txt"}],
        "parameters": [{"name": "name", "value": name}],
        **extra,
    }


def count_characters(input_url: str) -> dict[str, Any]:
    return {
        "appName": "hello_world",
        "processorName": "count_characters",
        "inputFiles": [{"name": "input", "fileBaseName": "input.txt", "url": input_url}],
        "outputFiles": [{"name": "output", "fileBaseName": "output.json"}],
        "parameters": [],
    }


RESOURCES = {"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 60}


def job_request(seed: Seed, definition: Optional[dict[str, Any]] = None, **extra: Any) -> dict[str, Any]:
    """A createJob body as the prototype's Python client writes it."""
    return {
        "serviceName": seed.service,
        "userId": "",
        "batchId": "",
        "tags": [],
        "jobDefinition": definition or greeting(),
        "requiredResources": RESOURCES,
        "secrets": [],
        "jobDependencies": [],
        "skipCache": False,
        "rerunFailing": False,
        "deleteFailing": False,
        **extra,
    }


def create(api: httpx.Client, seed: Seed, definition: Optional[dict[str, Any]] = None, **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = ok(send(api, "createJob", job_request(seed, definition, **extra), seed.key), "createJob")["job"]
    return job


def get_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = ok(call(api, "getJob", jobId=job_id, includePrivateKey=False), "getJob")["job"]
    return job


def job_count(ctx: HubContext) -> int:
    with ctx.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


# ---------------------------------------------------------------- shapes


def test_create_and_get_job_have_the_doc_shape_and_hide_secrets(api: httpx.Client, seeded: Seed) -> None:
    secrets = [{"name": "TOKEN", "value": SECRET_VALUE}]
    resp = send(api, "createJob", job_request(seeded, tags=["t1"], secrets=secrets), seeded.key, colon=True)
    job = ok(resp, "createJob")["job"]
    assert set(job) == JOB_KEYS
    assert SECRET_VALUE not in resp.text
    assert job["jobPrivateKey"] is None and job["secrets"] is None
    assert (job["serviceName"], job["userId"], job["batchId"], job["tags"]) == (seeded.service, "alice", "", ["t1"])
    assert (job["status"], job["isRunnable"], job["canceled"], job["error"]) == ("pending", True, False, None)
    assert "cacheBust" not in job["jobDefinition"]  # absent, not null: clients validate it as an optional string
    assert job["jobDependencies"] == [] and job["inputFileUrlList"] == []
    assert job["requiredResources"] == {"numCpus": 1, "numGpus": 0, "memoryGb": 4.0, "timeSec": 60.0}
    [url] = job["outputFileUrlList"]
    assert url.startswith("http://hub.test/") and url.endswith("/output.txt")
    assert job["outputFileResults"] == [{"name": "output", "fileBaseName": "output.txt", "url": url, "size": None}]
    assert job["consoleOutputUrl"].startswith("http://hub.test/")
    assert job["timestampCreatedSec"] > 0 and job["timestampStartedSec"] is None

    # A user asking for the private key still gets null.
    resp = call(api, "getJob", seeded.key, jobId=job["jobId"], includePrivateKey=True, computeClientId="whatever")
    again = ok(resp, "getJob")["job"]
    assert again == job
    # without includePrivateKey, getJob reads on the event loop (one prebuilt statement): the same answer
    assert get_job(api, job["jobId"]) == job
    assert SECRET_VALUE not in resp.text

    resp = call(api, "findJobs", serviceName=seeded.service)
    assert SECRET_VALUE not in resp.text and ok(resp, "findJobs")["jobs"] == [job]


def test_both_authorization_header_forms_are_accepted(api: httpx.Client, seeded: Seed) -> None:
    with_colon = create_with(api, seeded, colon=True, name="colon")
    without = create_with(api, seeded, colon=False, name="plain")
    assert with_colon["userId"] == without["userId"] == "alice"


def create_with(api: httpx.Client, seed: Seed, *, colon: bool, name: str) -> dict[str, Any]:
    resp = send(api, "createJob", job_request(seed, greeting(name)), seed.key, colon=colon)
    job: dict[str, Any] = ok(resp, "createJob")["job"]
    return job


def test_services_apps_compute_clients_and_user_stats(api: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    slot = PairioComputeClientComputeSlot(numCpus=4, numGpus=0, memoryGb=8, timeSec=3600)
    with ctx.transaction() as s:
        cc, cc_key = accounts.register_compute_client(s, seeded.service, "alice", "laptop", [slot])
        cc_id = cc.compute_client_id

    service = ok(call(api, "getService", serviceName=seeded.service), "getService")["service"]
    assert set(service) == {"serviceName", "userId", "users"}
    assert service["serviceName"] == seeded.service and service["userId"] == "alice"
    assert service["users"][0] == {"userId": "alice", "admin": True, "createJobs": True, "processJobs": True}
    assert [x["serviceName"] for x in ok(call(api, "getServices"), "getServices")["services"]] == [seeded.service]
    assert ok(call(api, "getServices", userId="alice"), "getServices")["services"] == [service]
    assert ok(call(api, "getServices", userId="bob"), "getServices")["services"] == []

    app = ok(call(api, "getServiceApp", serviceName=seeded.service, appName="hello_world"), "getServiceApp")["serviceApp"]
    assert set(app) == SERVICE_APP_KEYS
    assert (app["serviceName"], app["appName"]) == (seeded.service, "hello_world")
    assert app["appSpecificationUri"] == "" and app["appSpecificationCommit"] == ""
    processors = app["appSpecification"]["processors"]
    assert [p["name"] for p in processors] == ["hello_world_1", "hello_world_2", "count_characters", "typed"]
    for p in processors:
        assert set(p) == PROCESSOR_KEYS
        for x in p["parameters"]:
            assert {"name", "type", "description"} <= set(x) <= {"name", "type", "description", "defaultValue", "options"}
    for fields in ({}, {"serviceName": seeded.service}, {"appName": "hello_world"}):
        assert ok(send(api, "getServiceApps", fields), "getServiceApps")["serviceApps"] == [app]
    assert ok(call(api, "getServiceApps", appName="nope"), "getServiceApps")["serviceApps"] == []

    resp = call(api, "getComputeClient", computeClientId=cc_id)
    client = ok(resp, "getComputeClient")["computeClient"]
    assert cc_key not in resp.text
    assert client["computeClientId"] == cc_id and client["computeClientPrivateKey"] is None
    assert set(client) == COMPUTE_CLIENT_KEYS
    assert (client["serviceNames"], client["userId"], client["computeClientName"]) == ([seeded.service], "alice", "laptop")
    assert client["computeSlots"] == [slot.model_dump(mode="json")] and client["processJobsForUsers"] is None
    resp = call(api, "getComputeClients", serviceName=seeded.service)
    assert ok(resp, "getComputeClients")["computeClients"] == [client] and cc_key not in resp.text
    assert ok(call(api, "getComputeClients", serviceName="other"), "getComputeClients")["computeClients"] == []

    create(api, seeded)
    stats = ok(call(api, "computeUserStats", userId="alice"), "computeUserStats")["userStats"]
    assert set(stats) == {"userId", "consumed", "provided", "consumedDeleted", "providedDeleted"}
    assert stats["userId"] == "alice"
    for part in ("consumed", "provided", "consumedDeleted", "providedDeleted"):
        assert set(stats[part]) == STATS_KEYS
    # A pending job counts for nothing yet: the original counts only jobs that started and ended.
    assert stats["consumed"]["numJobs"] == 0 and stats["provided"]["numJobs"] == 0

    not_found: list[tuple[str, dict[str, Any], str]] = [
        ("getService", {"serviceName": "nope"}, "no service 'nope'"),
        ("getServiceApp", {"serviceName": seeded.service, "appName": "nope"}, "no app 'nope'"),
        ("getComputeClient", {"computeClientId": "nope"}, "no compute client 'nope'"),
        ("getJob", {"jobId": "nope", "includePrivateKey": False}, "no job 'nope'"),
    ]
    for name, fields, fragment in not_found:
        assert fragment in error(send(api, name, fields), 404)


# ---------------------------------------------------------------- cache, dependencies, cancel, delete


def test_cache_by_definition(api: httpx.Client, seeded: Seed) -> None:
    first = create(api, seeded, tags=["a"])
    hit = create(api, seeded, tags=["b", "a"])
    assert hit["jobId"] == first["jobId"]
    assert hit["tags"] == ["a", "b"]  # new tags are added to the cached job
    assert get_job(api, first["jobId"])["tags"] == ["a", "b"]

    # Absent and null cacheBust hash the same; a default given explicitly is the same as left out.
    assert create(api, seeded, greeting(cacheBust=None))["jobId"] == first["jobId"]
    defaults_left_out = create(api, seeded, {**greeting(), "parameters": []})
    assert defaults_left_out["jobId"] == first["jobId"]
    busted = create(api, seeded, greeting(cacheBust="again"))
    assert busted["jobId"] != first["jobId"] and busted["jobDefinition"]["cacheBust"] == "again"

    fresh = create(api, seeded, skipCache=True)
    assert fresh["jobId"] != first["jobId"] and fresh["jobDefinitionHash"] == first["jobDefinitionHash"]
    assert create(api, seeded)["jobId"] == fresh["jobId"]  # the most recent match

    found = ok(call(api, "findJobByDefinition", serviceName=seeded.service, jobDefinition=greeting()), "findJobByDefinition")
    assert found["found"] is True and found["job"]["jobId"] == fresh["jobId"] and set(found["job"]) == JOB_KEYS
    resp = call(api, "findJobByDefinition", serviceName=seeded.service, jobDefinition=greeting("nobody"))
    missing = ok(resp, "findJobByDefinition")
    assert missing == {"type": "findJobByDefinitionResponse", "found": False}


def test_rerun_failing_and_delete_failing(api: httpx.Client, seeded: Seed) -> None:
    first = create(api, seeded)
    assert ok(call(api, "cancelJob", seeded.key, jobId=first["jobId"]), "cancelJob") == {"type": "cancelJobResponse"}
    failed = get_job(api, first["jobId"])
    assert failed["status"] == "failed" and failed["canceled"] is True and "cancel" in failed["error"]

    assert create(api, seeded)["jobId"] == first["jobId"]  # a failed match is still a cache hit
    second = create(api, seeded, rerunFailing=True)
    assert second["jobId"] != first["jobId"] and second["status"] == "pending"
    assert get_job(api, first["jobId"])["status"] == "failed"  # kept without deleteFailing

    ok(call(api, "cancelJob", seeded.key, jobId=second["jobId"]), "cancelJob")
    third = create(api, seeded, rerunFailing=True, deleteFailing=True)
    assert third["jobId"] not in (first["jobId"], second["jobId"])
    error(call(api, "getJob", jobId=second["jobId"], includePrivateKey=False), 404)


def test_chained_jobs_wait_and_fail_when_their_dependency_is_deleted(api: httpx.Client, seeded: Seed) -> None:
    producer = create(api, seeded)
    [output_url] = producer["outputFileUrlList"]
    consumer = create(api, seeded, count_characters(output_url))
    assert consumer["jobDependencies"] == [producer["jobId"]]
    assert consumer["isRunnable"] is False and consumer["inputFileUrlList"] == [output_url]

    def find(**filters: Any) -> list[str]:
        return [j["jobId"] for j in ok(call(api, "findJobs", **filters), "findJobs")["jobs"]]

    assert find(inputFileUrl=output_url) == [consumer["jobId"]]
    assert find(outputFileUrl=output_url) == [producer["jobId"]]

    resp = call(api, "deleteJobs", seeded.key, userId="", jobIds=[producer["jobId"]])
    assert ok(resp, "deleteJobs") == {"type": "deleteJobsResponse"}
    error(call(api, "getJob", jobId=producer["jobId"], includePrivateKey=False), 404)
    orphan = get_job(api, consumer["jobId"])
    assert orphan["status"] == "failed" and producer["jobId"] in orphan["error"]
    assert ok(call(api, "computeUserStats", userId="alice"), "computeUserStats")["userStats"]["consumedDeleted"]["numJobs"] == 0  # never started

    # A job created on a failed dependency fails at once, naming it.
    ok(call(api, "deleteJobs", seeded.key, userId="alice", jobIds=[orphan["jobId"]]), "deleteJobs")
    upstream = create(api, seeded, greeting("upstream"))
    ok(call(api, "cancelJob", seeded.key, jobId=upstream["jobId"]), "cancelJob")
    downstream = create(api, seeded, count_characters(upstream["outputFileUrlList"][0]))
    assert downstream["status"] == "failed" and upstream["jobId"] in downstream["error"]


def test_find_jobs_filters(api: httpx.Client, seeded: Seed) -> None:
    a = create(api, seeded, greeting("a"), tags=["x", "y"], batchId="batch1")
    b = create(api, seeded, greeting("b"), tags=["x"])
    c = create(api, seeded, greeting("c"), tags=["y"])
    ok(call(api, "cancelJob", seeded.key, jobId=c["jobId"]), "cancelJob")

    def find(**filters: Any) -> list[str]:
        return [j["jobId"] for j in ok(call(api, "findJobs", **filters), "findJobs")["jobs"]]

    assert find(serviceName=seeded.service) == [c["jobId"], b["jobId"], a["jobId"]]  # newest first
    assert find(tags=["x"]) == [b["jobId"], a["jobId"]]
    assert find(tags=["x", "y"]) == [a["jobId"]]
    assert find(tags={"$all": ["x", "y"]}) == [a["jobId"]]
    assert find(tags={"$all": ["y"]}, status="failed") == [c["jobId"]]
    assert find(tags=["y"], status=["pending", "running"]) == [a["jobId"]]
    assert find(userId="alice", limit=2) == [c["jobId"], b["jobId"]]
    assert find(batchId="batch1") == [a["jobId"]]
    assert find(jobId=b["jobId"]) == [b["jobId"]]
    assert find(appName="hello_world", processorName="hello_world_2", limit=1) == [c["jobId"]]
    assert find(userId="bob") == []
    assert a["batchId"] == "batch1" and b["batchId"] == ""

    no_filter: list[dict[str, Any]] = [{}, {"status": "pending"}, {"status": ["pending"], "limit": 5}, {"tags": []}]
    for filters in no_filter:
        assert "at least one filter" in error(send(api, "findJobs", filters), 400)
    bad_filters: list[tuple[dict[str, Any], str]] = [
        ({"userId": "alice", "status": "waiting"}, "status"),
        ({"tags": {"$any": ["x"]}}, "$all"),
        ({"tags": "x"}, "tags"),
        ({"userId": "alice", "limit": 0}, "limit"),
        ({"userId": "alice", "limit": 1001}, "limit"),
        ({"userId": "alice", "limit": "10"}, "limit"),
        ({"userId": "alice", "cursor": "abc"}, "cursor: unknown field"),
    ]
    for filters, fragment in bad_filters:
        assert fragment in error(send(api, "findJobs", filters), 400)


# ---------------------------------------------------------------- auth


def test_keys_and_roles(api: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    job = create(api, seeded)
    body = job_request(seeded, greeting("other"))
    cases: list[tuple[str, Optional[str], dict[str, Any], str]] = [
        ("createJob", None, body, "no API key"),
        ("createJob", "pairio_not-a-key", body, "not valid"),
        ("createJob", seeded.key, {**body, "userId": "bob"}, "userId does not match"),
        ("createJob", seeded.other_key, body, "createJobs"),  # 403 in REST, 401 here
        ("cancelJob", None, {"jobId": job["jobId"]}, "no API key"),
        ("cancelJob", seeded.other_key, {"jobId": job["jobId"]}, "owner"),
        ("deleteJobs", None, {"userId": "", "jobIds": [job["jobId"]]}, "no API key"),
        ("deleteJobs", seeded.key, {"userId": "bob", "jobIds": [job["jobId"]]}, "userId does not match"),
        ("deleteJobs", seeded.other_key, {"userId": "bob", "jobIds": [job["jobId"]]}, "createJobs"),
    ]
    for name, key, fields, fragment in cases:
        message = error(send(api, name, fields, key), 401)
        assert fragment in message, (name, message)
        for secret in (seeded.key, seeded.other_key, "pairio_not-a-key"):
            assert secret not in message
    assert job_count(ctx) == 1
    assert get_job(api, job["jobId"])["status"] == "pending"

    # A user with the createJobs role may create jobs.
    with ctx.transaction() as s:
        accounts.set_service_user(s, seeded.service, "bob", admin=False, create_jobs=True, process_jobs=False)
    bobs = ok(send(api, "createJob", body, seeded.other_key), "createJob")["job"]
    assert bobs["userId"] == "bob"
    assert "belongs to alice" in error(call(api, "deleteJobs", seeded.other_key, userId="bob", jobIds=[job["jobId"]]), 401)


# ---------------------------------------------------------------- bad input


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of body with the value at a dotted path (list indexes as numbers) replaced."""
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


def _bad_create_bodies(seed: Seed) -> list[tuple[str, dict[str, Any], int, str]]:
    """(what, body without type, status, fragment of the error) for createJob."""
    good = job_request(seed)
    chained = job_request(seed, count_characters("https://example.org/in.txt"))
    typed_definition = {**greeting(), "processorName": "typed", "outputFiles": [], "parameters": [{"name": "n", "value": 1}]}
    typed = job_request(seed, typed_definition)
    return [
        ("unknown field", {**good, "colour": "blue"}, 400, "colour: unknown field"),
        ("unknown nested field", _set(good, "jobDefinition.outputFiles.0.url", "x"), 400, "outputFiles.0.url: unknown field"),
        ("numCpus as text", _set(good, "requiredResources.numCpus", "four"), 400, "numCpus"),
        ("numCpus as a numeric string", _set(good, "requiredResources.numCpus", "4"), 400, "numCpus"),
        ("tags as a string", {**good, "tags": "a"}, 400, "tags"),
        ("jobDefinition as a list", {**good, "jobDefinition": []}, 400, "jobDefinition"),
        ("skipCache as a string", {**good, "skipCache": "yes"}, 400, "skipCache"),
        ("missing requiredResources", {k: v for k, v in good.items() if k != "requiredResources"}, 400, "requiredResources"),
        ("negative numCpus", _set(good, "requiredResources.numCpus", -1), 400, "numCpus"),
        ("zero numCpus", _set(good, "requiredResources.numCpus", 0), 400, "numCpus"),
        ("negative numGpus", _set(good, "requiredResources.numGpus", -1), 400, "numGpus"),
        ("zero memory", _set(good, "requiredResources.memoryGb", 0), 400, "memoryGb"),
        ("negative time", _set(good, "requiredResources.timeSec", -5), 400, "timeSec"),
        ("huge memory", _set(good, "requiredResources.memoryGb", 1e12), 400, "memoryGb"),
        ("huge numCpus", _set(good, "requiredResources.numCpus", 10**9), 400, "numCpus"),
        ("unknown service", {**good, "serviceName": "nope"}, 404, "no service 'nope'"),
        ("unknown app", _set(good, "jobDefinition.appName", "nope"), 404, "no app 'nope'"),
        ("unknown processor", _set(good, "jobDefinition.processorName", "nope"), 400, "no processor 'nope'"),
        ("missing required input", _set(chained, "jobDefinition.inputFiles", []), 400, "needs input file(s) 'input'"),
        ("missing output", _set(good, "jobDefinition.outputFiles", []), 400, "produces output(s) 'output'"),
        ("unknown parameter", _set(good, "jobDefinition.parameters.0.name", "colour"), 400, "no parameter 'colour'"),
        ("parameter of the wrong type", _set(typed, "jobDefinition.parameters.0.value", "x"), 400, "type int"),
        ("missing required parameter", _set(typed, "jobDefinition.parameters", []), 400, "needs parameter 'n'"),
        ("parameter value an object", _set(good, "jobDefinition.parameters.0.value", {"a": 1}), 400, "parameter values"),
        ("fileBaseName ../x", _set(good, "jobDefinition.outputFiles.0.fileBaseName", "../x"), 400, "fileBaseName"),
        ("fileBaseName a/b", _set(good, "jobDefinition.outputFiles.0.fileBaseName", "a/b"), 400, "path separator"),
        ("fileBaseName .hidden", _set(good, "jobDefinition.outputFiles.0.fileBaseName", ".hidden"), 400, "starts with '.'"),
        ("fileBaseName with NUL", _set(good, "jobDefinition.outputFiles.0.fileBaseName", "x\u0000y"), 400, "NUL"),
        ("input fileBaseName ..", _set(chained, "jobDefinition.inputFiles.0.fileBaseName", ".."), 400, "fileBaseName"),
        ("output name ../output", _set(good, "jobDefinition.outputFiles.0.name", "../output"), 400, "invalid name"),
        ("input url not http", _set(chained, "jobDefinition.inputFiles.0.url", "file:///etc/passwd"), 400, "http"),
        ("tag with a space", {**good, "tags": ["bad tag"]}, 400, "invalid tag"),
        ("batchId with a slash", {**good, "batchId": "a/b"}, 400, "batchId"),
        ("unknown dependency", {**good, "jobDependencies": ["nope"]}, 400, "names job 'nope'"),
        ("unknown target compute client", {**good, "targetComputeClientIds": ["nope"]}, 400, "compute client 'nope', which does not exist"),
        ("secret with an unknown field", {**good, "secrets": [{"name": "K", "value": SECRET_VALUE, "x": 1}]}, 400, "secrets.0.x"),
        ("secret value not a string", {**good, "secrets": [{"name": "K", "value": 5}]}, 400, "secrets.0.value"),
    ]


BAD_RAW_BODIES: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"type": "createJobRequest",', "not valid JSON: Expecting property name"),
    ("empty body", b"", "not valid JSON"),
    ("not UTF-8", b'{"type": "createJobRequest", "x": "\xff"}', "not UTF-8"),
    ("a list", b"[]", "JSON object"),
    ("a string", b'"createJobRequest"', "JSON object"),
    ("missing type", b'{"serviceName": "hello_world_service"}', "createJobRequest"),
    ("wrong type", b'{"type": "getJobRequest"}', "takes type 'createJobRequest'"),
    ("type not a string", b'{"type": 5}', "type is not a string"),
    ("NaN", b'{"type": "createJobRequest", "requiredResources": {"numCpus": 1, "memoryGb": NaN}}', "NaN is not a JSON number"),
    ("Infinity", b'{"type": "createJobRequest", "requiredResources": {"timeSec": Infinity}}', "Infinity is not a JSON number"),
    ("lone surrogate", b'{"type": "createJobRequest", "serviceName": "\\ud800"}', "surrogate"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("integer with 5000 digits", b'{"type": "createJobRequest", "x": ' + b"9" * 5000 + b"}", "not valid JSON"),
]


def test_bad_input_gets_a_clear_error_and_creates_nothing(api: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    for what, body, status, fragment in _bad_create_bodies(seeded):
        message = error(send(api, "createJob", body, seeded.key), status)
        assert fragment in message, (what, message)
        assert SECRET_VALUE not in message and seeded.key not in message, what
    for what, raw, fragment in BAD_RAW_BODIES:
        headers = {"Authorization": f"Bearer {seeded.key}", "Content-Type": "application/json"}
        resp = api.post("/api/createJob", content=raw, headers=headers)
        message = error(resp, 400)
        assert fragment in message, (what, message)
    # Overflowing numbers: 1e999 is infinity, which no resource field takes.
    overflowing = json.dumps({"type": "createJobRequest", **job_request(seeded)}).replace('"memoryGb": 4', '"memoryGb": 1e999')
    assert "1e999" in overflowing
    resp = api.post("/api/createJob", content=overflowing, headers={"Authorization": f"Bearer {seeded.key}"})
    assert "memoryGb" in error(resp, 400)
    # NUL in an id would make PostgreSQL fail; it is refused before any query.
    assert "NUL" in error(call(api, "getJob", jobId="a\u0000b", includePrivateKey=False), 400)
    assert "NUL" in error(call(api, "findJobs", tags=["a\u0000"]), 400)
    assert "unknown field" in error(call(api, "getJob", jobId="x", includePrivateKey=False, verbose=True), 400)
    assert "jobId" in error(call(api, "getJob", includePrivateKey=False), 400)
    assert "jobIds" in error(call(api, "deleteJobs", seeded.key, userId="", jobIds="abc"), 400)
    assert job_count(ctx) == 0
    assert ok(call(api, "findJobs", serviceName=seeded.service), "findJobs")["jobs"] == []


def test_body_over_the_limit_is_413(api: httpx.Client, seeded: Seed, ctx: HubContext) -> None:
    body = job_request(seeded, tags=["t"])
    body["jobDefinition"]["cacheBust"] = "x" * 1000
    body["padding"] = "x" * (2 * 1024 * 1024)
    message = error(send(api, "createJob", body, seeded.key), 413)
    assert "limit" in message
    assert job_count(ctx) == 0


def test_methods_unknown_calls_and_cors(api: httpx.Client, seeded: Seed) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        resp = api.request(method, "/api/getJob")
        assert "use POST" in error(resp, 405)
        assert "POST" in resp.headers["allow"]
    plain_options = api.options("/api/getJob")  # not a CORS preflight: no Origin
    assert plain_options.status_code == 204 and "POST" in plain_options.headers["allow"]
    assert "unknown call 'getJobz'" in error(api.post("/api/getJobz", json={"type": "getJobzRequest"}), 404)
    assert "createJob" in error(api.post("/api/createJob/extra", json={}), 404)
    error(api.get("/api/nothing/here"), 404)

    preflight = api.options(
        "/api/createJob",
        headers={
            "Origin": "https://neurosift.app",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] in ("*", "https://neurosift.app")
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "POST" in preflight.headers["access-control-allow-methods"]

    resp = api.post(
        "/api/getService",
        json={"type": "getServiceRequest", "serviceName": seeded.service},
        headers={"Origin": "https://neurosift.app", "Authorization": f"Bearer {seeded.key}"},
    )
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] in ("*", "https://neurosift.app")


# ---------------------------------------------------------------- real HTTP


def test_prototype_client_over_real_http(live_hub: LiveHub, seeded: Seed) -> None:
    """What the prototype's Python client does: <PAIRIO_API_URL>/api/<call> with 'Bearer: <key>'."""
    headers = {"Authorization": f"Bearer: {seeded.key}"}
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        resp = client.post("/api/createJob", json={"type": "createJobRequest", **job_request(seeded)}, headers=headers)
        job = ok(resp, "createJob")["job"]
        assert set(job) == JOB_KEYS and job["consoleOutputUrl"].startswith(live_hub.url)
        resp = client.post("/api/getJob", json={"type": "getJobRequest", "jobId": job["jobId"], "includePrivateKey": False})
        assert ok(resp, "getJob")["job"]["jobId"] == job["jobId"]

        # A chunked body (no Content-Length) is cut off by the size limit while streaming.
        def chunks() -> Any:
            yield b'{"type": "createJobRequest", "padding": "'
            for _ in range(40):
                yield b"x" * 65536
            yield b'"}'

        resp = client.post("/api/createJob", content=chunks(), headers=headers)
        assert "limit" in error(resp, 413)
        assert error(client.get("/api/createJob"), 405)


DOC_CALLS = [
    "createJob", "getJob", "findJobByDefinition", "findJobs", "cancelJob", "deleteJobs", "getService", "getServices",
    "getServiceApp", "getServiceApps", "getComputeClient", "getComputeClients", "computeUserStats",
    # app-protocol.md section 5: the web UI's calls and the job process's setJobStatus
    "addService", "setServiceInfo", "addServiceApp", "setServiceAppInfo", "deleteServiceApp", "createComputeClient",
    "setComputeClientInfo", "deleteComputeClient", "pingComputeClients", "resetUserApiKey", "setJobStatus",
]


@pytest.mark.parametrize("name", DOC_CALLS)
def test_every_call_checks_its_type(name: str) -> None:
    """Every call in the doc is served, and each refuses another call's type (no database needed)."""
    from hub.errors import BadRequest
    from hub.routes.wire import CALLS, parse_body

    assert name in CALLS
    with pytest.raises(BadRequest, match=f"takes type '{name}Request'"):
        parse_body(CALLS[name], b'{"type": "someOtherRequest"}')


@pytest.mark.parametrize(
    "name, rule", [("PYTHONWARNINGS", "names starting with PYTHON"), ("BROWSER", "BROWSER changes how programs"), ("PATH", "PATH changes")]
)
def test_create_job_refuses_secret_names_that_change_how_programs_run(
    api: httpx.Client, seeded: Seed, name: str, rule: str
) -> None:
    secrets = [{"name": name, "value": SECRET_VALUE}]
    message = error(send(api, "createJob", job_request(seeded, secrets=secrets), seeded.key), 400)
    assert name in message and rule in message, message
    assert SECRET_VALUE not in message
    found = ok(send(api, "findJobs", {"serviceName": seeded.service}, seeded.key), "findJobs")
    assert found["jobs"] == []
