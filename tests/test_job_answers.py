"""A job's answer, built from its columns without the model (hub/core/job_answers.py), is exactly
what the model gives: for creations, cache hits, GET /v1/jobs/{id} and pages (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import update

from hub.context import HubContext
from hub.core import accounts
from hub.db.tables import Job
from hub.schemas import JobDetailPublic, JobPublic
from pairio.models import PairioApp

from .conftest import auth
from .hubtools import Seed, count_chars, hello2

RES = {"numCpus": 2, "numGpus": 0, "memoryGb": 4, "timeSec": 60}
VAULT = {
    "name": "vault",
    "processors": [
        {
            "name": "use_password",
            "parameters": [
                {"name": "password", "type": "str", "required": True, "secret": True},
                {"name": "pins", "type": "List[str]", "default": [], "secret": True},
                {"name": "label", "type": "str", "default": "plain"},
            ],
        }
    ],
}


def submit(api: httpx.Client, seeded: Seed, definition: dict[str, Any], **kw: Any) -> httpx.Response:
    body = {"serviceName": seeded.service, "jobDefinition": definition, "requiredResources": RES, **kw}
    return api.post("/v1/jobs", json=body, headers=auth(seeded.key))


def assert_as_the_model_gives(api: httpx.Client, answer: dict[str, Any]) -> None:
    job_id = answer["jobId"]
    got = api.get(f"/v1/jobs/{job_id}")
    assert got.status_code == 200, got.text
    detail = got.json()
    # GET adds why the job waits (JobDetailPublic); the rest is the creation's or cache hit's answer
    assert {k: v for k, v in detail.items() if k not in ("waitingReason", "queuePosition")} == answer
    model = JobPublic.model_validate(answer)
    assert model.model_dump(mode="json") == answer, "validating the answer changes nothing"
    assert got.content == JobDetailPublic.model_validate(detail).model_dump_json(by_alias=True).encode(), "byte for byte what the model gives"
    page = api.get("/v1/jobs", params={"jobId": job_id}).json()["jobs"]
    assert page == [answer], "pages (models built by jobs_public) answer the same"


def test_every_kind_of_job_is_answered_as_the_model_gives_it(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    with ctx.transaction() as s:
        accounts.add_app(s, seeded.service, PairioApp.model_validate(VAULT))
    producer = submit(api, seeded, hello2("answers"), tags=["t1", "t2"], batchId="batch-1")
    assert producer.status_code == 201
    consumer = submit(api, seeded, count_chars(producer.json()["outputFileResults"][0]["url"]))
    assert consumer.status_code == 201 and consumer.json()["jobDependencies"] == [producer.json()["jobId"]]
    listed = submit(api, seeded, hello2("listed"), jobDependencies=[producer.json()["jobId"]])
    secret = submit(
        api, seeded,
        {"appName": "vault", "processorName": "use_password", "parameters": [{"name": "password", "value": "pw-1234567"}]},
        secrets=[{"name": "TOKEN", "value": "tok-abcdefgh"}],
    )
    assert secret.status_code == 201
    assert "pw-1234567" not in secret.text and "tok-abcdefgh" not in secret.text and secret.json()["secrets"] is None
    canceled = submit(api, seeded, hello2("canceled"))
    assert api.post(f"/v1/jobs/{canceled.json()['jobId']}/cancel", headers=auth(seeded.key)).status_code == 200
    failed_dependency = submit(api, seeded, hello2("after a failure"), jobDependencies=[canceled.json()["jobId"]])
    assert failed_dependency.status_code == 201 and failed_dependency.json()["status"] == "failed"

    for created in (producer, consumer, listed, secret, failed_dependency):
        assert_as_the_model_gives(api, created.json())
    for job in (producer, consumer, secret, canceled):
        request = api.get(f"/v1/jobs/{job.json()['jobId']}").json()
        hit = api.post(
            "/v1/jobs",
            json={"serviceName": seeded.service, "jobDefinition": request["jobDefinition"] if job is not secret else
                  {"appName": "vault", "processorName": "use_password", "parameters": [{"name": "password", "value": "pw-1234567"}]},
                  "requiredResources": RES},
            headers=auth(seeded.key),
        )
        assert hit.status_code == 200 and hit.json()["jobId"] == job.json()["jobId"], hit.text
        assert_as_the_model_gives(api, hit.json())
    new_tag = submit(api, seeded, hello2("answers"), tags=["t3"])  # a cache hit that writes (a new tag)
    assert new_tag.status_code == 200 and new_tag.json()["tags"] == ["t1", "t2", "t3"]
    assert_as_the_model_gives(api, new_tag.json())


def test_a_stored_definition_of_an_older_shape_is_answered_through_the_model(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    job = submit(api, seeded, hello2("older")).json()
    with ctx.transaction() as s:
        row = s.get(Job, job["jobId"])
        assert row is not None
        older = {k: v for k, v in row.job_definition.items() if k != "cacheBust"}
        s.execute(update(Job).where(Job.job_id == job["jobId"]).values(job_definition=older))
    detail = api.get(f"/v1/jobs/{job['jobId']}").json()
    assert {k: v for k, v in detail.items() if k not in ("waitingReason", "queuePosition")} == job
    assert api.get("/v1/jobs/no-such-job").status_code == 404


def test_a_revoked_key_or_a_role_taken_away_is_refused_at_once(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    with ctx.transaction() as s:
        key, plain = accounts.create_api_key(s, seeded.user)
        key_id = key.key_id
        accounts.set_service_user(s, seeded.service, seeded.other_user, admin=False, create_jobs=True, process_jobs=False)
    body = {"serviceName": seeded.service, "jobDefinition": hello2("revoked"), "requiredResources": RES}
    assert api.post("/v1/jobs", json=body, headers=auth(plain)).status_code == 201
    assert api.post("/v1/jobs", json=body, headers=auth(plain)).status_code == 200
    assert api.post("/v1/jobs", json=body, headers=auth(seeded.other_key)).status_code == 200
    with ctx.transaction() as s:
        accounts.revoke_api_key(s, seeded.user, key_id)
        accounts.set_service_user(s, seeded.service, seeded.other_user, admin=False, create_jobs=False, process_jobs=False)
    refused = api.post("/v1/jobs", json=body, headers=auth(plain))
    assert refused.status_code == 401, refused.text
    assert api.post("/v1/jobs", json=body, headers=auth(seeded.other_key)).status_code == 403


def test_a_new_app_version_gives_new_jobs_and_its_own_checks(api: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    with ctx.transaction() as s:
        accounts.add_app(s, seeded.service, PairioApp.model_validate(VAULT))
    first = submit(api, seeded, {"appName": "vault", "processorName": "use_password", "parameters": [{"name": "password", "value": "x"}]})
    assert first.status_code == 201
    newer = {**VAULT, "version": "2", "processors": [{**VAULT["processors"][0], "parameters": [
        *VAULT["processors"][0]["parameters"], {"name": "extra", "type": "int", "required": True}]}]}
    with ctx.transaction() as s:
        accounts.add_app(s, seeded.service, PairioApp.model_validate(newer))
    again = submit(api, seeded, {"appName": "vault", "processorName": "use_password", "parameters": [{"name": "password", "value": "x"}]})
    assert again.status_code == 400 and "extra" in again.text, "checked against the new version"
    extra = submit(api, seeded, {"appName": "vault", "processorName": "use_password",
                                 "parameters": [{"name": "password", "value": "x"}, {"name": "extra", "value": 1}]})
    assert extra.status_code == 201, extra.text
    assert submit(api, seeded, {"appName": "vault", "processorName": "use_password",
                                "parameters": [{"name": "password", "value": "x"}, {"name": "extra", "value": 1}]}).json()["jobId"] == extra.json()["jobId"]
