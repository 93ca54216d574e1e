"""The job URL opens a readable page; nothing from user input is rendered unescaped."""

from __future__ import annotations

import httpx

from .conftest import auth
from .hubtools import Seed

RES = {"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 60}


def test_job_page_shows_the_job_and_escapes_user_input(api: httpx.Client, seeded: Seed) -> None:
    evil = "<script>alert('x')</script>"
    body = {
        "serviceName": seeded.service,
        "jobDefinition": {"appName": "hello_world", "processorName": "hello_world_1", "parameters": [{"name": "name", "value": evil}]},
        "requiredResources": RES,
    }
    job = api.post("/v1/jobs", json=body, headers=auth(seeded.key)).json()
    page = api.get(f"/job/{job['jobId']}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert job["jobId"] in page.text and "pending" in page.text
    assert evil not in page.text
    assert "&lt;script&gt;" in page.text
    missing = api.get("/job/doesnotexist")
    assert missing.status_code == 404 and "not found" in missing.text.lower()
