from .conftest import auth

HELLO = {"appName": "hello_world", "processorName": "hello_world_1", "inputFiles": [], "outputFiles": [], "parameters": []}
RES = {"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 60}


def test_create_and_cache(api, seeded):
    body = {"serviceName": seeded.service, "jobDefinition": HELLO, "requiredResources": RES, "tags": ["example"]}
    r = api.post("/v1/jobs", json=body, headers=auth(seeded.key))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "pending" and job["isRunnable"] is True
    assert job["jobDefinition"]["parameters"] == [{"name": "name", "value": "world"}]
    r2 = api.post("/v1/jobs", json={**body, "tags": ["again"]}, headers=auth(seeded.key))
    assert r2.status_code == 200
    assert r2.json()["jobId"] == job["jobId"]
    assert r2.json()["tags"] == ["example", "again"]
