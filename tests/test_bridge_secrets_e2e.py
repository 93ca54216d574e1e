"""Issue 10, end to end: a job's secrets reach its processor and nothing else (a real hub, a real local bridge).

A secret named like a variable that changes how programs run (PYTHONWARNINGS, BROWSER,
LD_PRELOAD, ...) once became a variable of the bridge's watcher and ran commands on the
bridge host. Now the hub refuses such names, the bridge refuses them again, secrets travel
in a file only the watcher reads, the processor's environment is built from an allow-list,
and secret values are masked in everything the bridge logs and writes.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pairio import PairioJobDefinition
from pairio.errors import PairioError

from . import test_bridge_e2e as e2e
from .test_bridge_e2e import RESOURCES, HubProcess, Stack, wait_for

hub = e2e.hub

TOKEN = "tok-e2e-Secret-value-1234"

# A processor that records what it sees: its environment, its watcher's environment, the secrets file.
SEEING_PROCESSOR = textwrap.dedent(
    '''
    import base64, json, os, sys
    from pathlib import Path

    job = json.loads(Path(os.environ["PAIRIO_JOB_FILE"]).read_text())
    record = Path(job["parameters"]["record_dir"])
    record.mkdir(parents=True, exist_ok=True)
    job_dir = Path(os.environ["PAIRIO_JOB_FILE"]).parent
    seen = {
        "env": dict(os.environ),
        "watcherEnviron": Path(f"/proc/{os.getppid()}/environ").read_bytes().decode("utf-8", "replace"),
        "secretsFileLeft": (job_dir / "secrets.json").exists(),
    }
    (record / f"seen-{job['jobId']}.json").write_text(json.dumps(seen))
    token = os.environ["TOKEN"]
    print("token", token, base64.b64encode(token.encode()).decode(), flush=True)
    sys.exit(int(job["parameters"].get("exit_code", 0)))
    '''
)


@pytest.fixture
def stack(hub: tuple[HubProcess, str], tmp_path: Path) -> Iterator[Stack]:
    s = Stack(hub[0], hub[1], tmp_path)
    s.env.update(AWS_SECRET_ACCESS_KEY="operator-aws-key", GITHUB_TOKEN="operator-github-token", LAB_SHARED_SETTING="passed-through")
    try:
        yield s
    finally:
        s.close()


def the_exploit(marker: Path) -> dict[str, str]:
    """The issue's secrets: Python's warnings filter imports antigravity, which opens $BROWSER with a shell."""
    return {"PYTHONWARNINGS": "all:0:antigravity.x:0:0", "BROWSER": f'/bin/sh -c "id >> {marker}" #%s'}


def definition(stack: Stack, **parameters: object) -> PairioJobDefinition:
    parameters.setdefault("record_dir", str(stack.record_dir))
    return PairioJobDefinition.model_validate({
        "appName": "testapp", "processorName": "work",
        "parameters": [{"name": k, "value": v} for k, v in parameters.items()],
    })


def test_the_issues_exploit_is_refused_at_create_job_and_nothing_runs(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    stack.register()
    stack.bridge.start()
    response = httpx.post(
        f"{stack.hub.url}/v1/jobs",
        json={"serviceName": stack.service, "jobDefinition": definition(stack).model_dump(mode="json"),
              "requiredResources": RESOURCES.model_dump(), "secrets": [{"name": k, "value": v} for k, v in the_exploit(marker).items()]},
        headers={"Authorization": f"Bearer {stack.key}"}, timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "invalid secret name 'PYTHONWARNINGS'" in response.json()["detail"], response.text
    assert "names starting with PYTHON change how programs" in response.json()["detail"]
    with pytest.raises(PairioError, match="invalid secret name 'BROWSER'"):
        stack.client.submit_job(stack.service, definition(stack), RESOURCES, skip_cache=True, secrets={"BROWSER": "x"})
    # the bridge runs, and runs an honest job, but nothing ran the exploit
    honest = stack.submit("work", message="honest")
    assert stack.wait_done(honest).status.value == "completed", stack.bridge.log
    assert not marker.exists()
    assert not (stack.bridge_dir / "jobs").exists() or len(list((stack.bridge_dir / "jobs").iterdir())) == 1


def test_a_refused_secret_name_that_reaches_the_bridge_fails_the_job_and_starts_nothing(stack: Stack, tmp_path: Path) -> None:
    """A job row from before the rule (or a hub without it): the bridge checks the names again before anything runs."""
    marker = tmp_path / "pwned"
    stack.register()
    job = stack.client.submit_job(stack.service, definition(stack), RESOURCES, skip_cache=True, secrets={"MYAPP_TOKEN": "fine"})
    rows = [{"name": k, "value": v} for k, v in the_exploit(marker).items()]
    with sqlite3.connect(stack.hub.data_dir / "hub.db", timeout=30) as db:  # past the hub's validation
        assert db.execute("UPDATE jobs SET secrets = ? WHERE job_id = ?", (json.dumps(rows), job.jobId)).rowcount == 1
    stack.bridge.start()
    failed = stack.wait_done(job)
    assert failed.status.value == "failed"
    assert "secret 'PYTHONWARNINGS' was refused: names starting with PYTHON change how programs" in (failed.error or ""), failed.error
    assert not marker.exists()
    job_dir = stack.bridge_dir / "jobs" / job.jobId
    assert not (job_dir / "watcher.json").exists() and not (job_dir / "local_backend.json").exists(), "a watcher was started"
    assert not (job_dir / "secrets.json").exists() and not (job_dir / "console.txt").exists()
    assert stack.runs_of(job) == 0


def test_secrets_reach_only_the_processor_and_are_masked_in_everything_the_bridge_keeps(stack: Stack) -> None:
    stack.processor.write_text(SEEING_PROCESSOR)
    stack.register("--pass-env", "LAB_SHARED_*")
    stack.bridge.start()
    job = stack.client.submit_job(stack.service, definition(stack, exit_code=3), RESOURCES, skip_cache=True, secrets={"TOKEN": TOKEN})
    failed = stack.wait_done(job)
    assert failed.status.value == "failed" and "exited with code 3" in (failed.error or ""), failed.error
    encoded = base64.b64encode(TOKEN.encode()).decode()
    assert "token *** ***" in (failed.error or ""), failed.error

    seen = json.loads((stack.record_dir / f"seen-{job.jobId}.json").read_text())
    assert seen["env"]["TOKEN"] == TOKEN
    assert seen["env"]["PAIRIO_JOB_ID"] == job.jobId
    assert seen["env"]["LAB_SHARED_SETTING"] == "passed-through"  # passEnv
    for name in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "PAIRIO_API_KEY", "PAIRIO_API_URL"):
        assert name not in seen["env"], name
    assert TOKEN not in seen["watcherEnviron"] and "operator-aws-key" not in seen["watcherEnviron"]
    assert seen["secretsFileLeft"] is False

    job_dir = stack.bridge_dir / "jobs" / job.jobId
    wait_for(lambda: json.loads((job_dir / "state.json").read_text())["phase"] == "reported", 15, "the job's state to be final")
    assert "token *** ***" in (job_dir / "console.txt").read_text()
    assert job_dir.stat().st_mode & 0o777 == 0o700
    for path in job_dir.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, f"{path} has mode {path.stat().st_mode & 0o777:o}"
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and encoded.encode() not in data, path
    assert "ended on the backend: failed" in stack.bridge.log
    assert TOKEN not in stack.bridge.log and encoded not in stack.bridge.log
    assert TOKEN not in stack.client.get_console_output(job.jobId)
