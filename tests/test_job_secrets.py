"""Job secrets and secret parameters in the hub: masked on the way in, hidden from users, erased at the end.

Real HTTP (``live_hub``) on SQLite and PostgreSQL; the end-to-end test with a real
``pairio-bridge local`` process is in test_job_secrets_e2e.py.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, update

from hub.context import HubContext
from hub.core import accounts
from hub.core.job_secrets import forget_erased_secrets
from hub.db.tables import ConsoleMask, Job
from pairio.models import PairioApp

from .conftest import auth
from .hubtools import LiveHub, Seed
from .test_compute_api import claim, console, register, report, submit

SECRET = "s3cr3t-T0ken-value"
B64 = base64.b64encode(SECRET.encode()).decode()
VAULT_SPEC: dict[str, Any] = {
    "name": "vault",
    "description": "a processor with secret parameters",
    "processors": [
        {
            "name": "use_password",
            "executable": "/app/main.py",
            "parameters": [
                {"name": "password", "type": "str", "required": True, "secret": True},
                {"name": "pins", "type": "List[str]", "default": [], "secret": True},
                {"name": "label", "type": "str", "default": "plain"},
            ],
        }
    ],
}
PASSWORD = "hunter2-correct-horse"


@pytest.fixture
def http(live_hub: LiveHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_hub.url, timeout=30) as client:
        yield client


@pytest.fixture
def vault(ctx: HubContext, seeded: Seed) -> str:
    with ctx.transaction() as s:
        accounts.add_app(s, seeded.service, PairioApp.model_validate(VAULT_SPEC))
    return seeded.service


def hello(name: str) -> dict[str, Any]:
    return {"appName": "hello_world", "processorName": "hello_world_1", "parameters": [{"name": "name", "value": name}]}


def vault_job(password: str = PASSWORD, label: str = "plain") -> dict[str, Any]:
    return {
        "appName": "vault", "processorName": "use_password",
        "parameters": [{"name": "password", "value": password}, {"name": "pins", "value": ["pin-4711-x"]}, {"name": "label", "value": label}],
    }


def console_text(http: httpx.Client, job_id: str) -> str:
    r = http.get(f"/v1/jobs/{job_id}/console-output")
    assert r.status_code == 200, r.text
    return r.text


def complete(http: httpx.Client, job_id: str, key: str) -> None:
    assert report(http, job_id, key, "running").status_code == 200
    r = report(http, job_id, key, "completed")
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text


def db_row(ctx: HubContext, job_id: str) -> Job:
    with ctx.read_transaction() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


# ---------------------------------------------------------------- console masking


SAMPLE = f"TOKEN={SECRET} b64={B64} url={quote(SECRET, safe='')}\n"
MASKED_SAMPLE = "TOKEN=*** b64=*** url=***\n"


def test_a_secret_split_between_two_console_uploads_is_masked_at_every_split(http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded)
    data = SAMPLE.encode()
    for cut in range(len(data) + 1):
        job = submit(http, seeded, hello(f"split-{cut}"), secrets=[{"name": "TOKEN", "value": SECRET}])
        [claimed] = claim(http, cc, maxJobs=1)
        jid = claimed["jobId"]
        assert jid == job["jobId"]
        first = console(http, jid, cc.key, 0, data[:cut])
        assert first.status_code == 200 and first.json()["consoleOutputSize"] == cut, "the bridge's offsets count raw bytes"
        second = console(http, jid, cc.key, cut, data[cut:])
        assert second.json()["consoleOutputSize"] == len(data)
        assert console_text(http, jid) == MASKED_SAMPLE, f"split at {cut}"
        complete(http, jid, cc.key)
        assert console_text(http, jid) == MASKED_SAMPLE


def test_retries_resend_raw_bytes_and_the_masked_tail_is_flushed_at_the_end(http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(http, seeded)
    job = submit(http, seeded, hello("retry"), secrets=[{"name": "TOKEN", "value": SECRET}])
    claim(http, cc)
    jid = job["jobId"]
    first = f"log {SECRET} and ".encode()
    assert console(http, jid, cc.key, 0, first).json()["consoleOutputSize"] == len(first)
    assert console(http, jid, cc.key, 0, first).json()["consoleOutputSize"] == len(first), "a retry adds nothing"
    tail = SECRET[:6].encode()  # could be the start of the secret: held back
    assert console(http, jid, cc.key, 4, first[4:] + tail).json()["consoleOutputSize"] == len(first) + len(tail)
    assert console_text(http, jid) == "log *** and "
    r = console(http, jid, cc.key, 999, b"x")
    assert r.status_code == 409 and r.json()["consoleOutputSize"] == len(first) + len(tail)
    detail = http.get(f"/v1/compute/jobs/{jid}", headers=cc.headers).json()
    assert detail["consoleOutputSize"] == len(first) + len(tail), "the compute API answers the raw offset to append at"
    assert report(http, jid, cc.key, "failed", error=f"crashed near {SECRET}").status_code == 200
    assert console_text(http, jid) == f"log *** and {SECRET[:6]}", "the held-back bytes are flushed when the job ends"
    public = http.get(f"/v1/jobs/{jid}").json()
    assert SECRET not in public["error"] and "crashed near ***" in public["error"]


def test_late_console_bytes_and_resource_logs_are_masked_without_the_plain_values(http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    cc = register(http, seeded)
    job = submit(http, seeded, hello("late"), secrets=[{"name": "TOKEN", "value": SECRET}])
    claim(http, cc)
    jid = job["jobId"]
    head = f"begin {SECRET[:9]}".encode()  # the secret is split across the terminal transition
    console(http, jid, cc.key, 0, head)
    assert report(http, jid, cc.key, "failed", error="lost").status_code == 200
    row = db_row(ctx, jid)
    assert row.secrets == [{"name": "TOKEN"}], "only the name is left"
    assert SECRET not in repr(row.__dict__)
    with ctx.read_transaction() as s:
        mask = s.get(ConsoleMask, jid)
        assert mask is not None and SECRET not in repr(mask.digests) and B64 not in repr(mask.digests)

    late = f"{SECRET[9:]} then {B64} end\n".encode()
    r = console(http, jid, cc.key, len(head), late)
    assert r.status_code == 200 and r.json()["consoleOutputSize"] == len(head) + len(late)
    assert console_text(http, jid) == "begin *** then *** end\n"
    log = f'{{"cpuPercent": 1, "cmd": "run --token {SECRET}"}}\n'.encode()
    assert http.put(f"/v1/compute/jobs/{jid}/resource-utilization-log", content=log, headers=cc.headers).status_code == 200
    stored = http.get(f"/v1/jobs/{jid}/resource-utilization-log").text
    assert SECRET not in stored and "run --token ***" in stored

    # After the grace period the digests are forgotten, and late uploads refused.
    with ctx.transaction() as s:
        s.execute(update(Job).where(Job.job_id == jid).values(timestamp_finished_sec=time.time() - 3600))
        s.execute(update(ConsoleMask).where(ConsoleMask.job_id == jid).values(expires_sec=time.time() - 1))
    forget_erased_secrets(ctx)
    with ctx.read_transaction() as s:
        assert s.get(ConsoleMask, jid) is None and s.get(Job, jid).console_pending is None  # type: ignore[union-attr]
    assert console(http, jid, cc.key, len(head) + len(late), SECRET.encode()).status_code == 409
    assert SECRET not in console_text(http, jid)


def test_resource_logs_of_running_jobs_are_masked(http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded)
    job = submit(http, seeded, hello("rlog"), secrets=[{"name": "TOKEN", "value": SECRET}])
    claim(http, cc)
    log = f'{{"note": "{B64}"}}\n'.encode()
    assert http.put(f"/v1/compute/jobs/{job['jobId']}/resource-utilization-log", content=log, headers=cc.headers).status_code == 200
    assert http.get(f"/v1/jobs/{job['jobId']}/resource-utilization-log").text == '{"note": "***"}\n'


# ---------------------------------------------------------------- who is given secrets


def test_the_compute_api_gives_secrets_only_for_held_jobs_that_are_not_terminal(http: httpx.Client, seeded: Seed) -> None:
    cc = register(http, seeded)
    other = register(http, seeded, "other")
    job = submit(http, seeded, hello("api"), secrets=[{"name": "TOKEN", "value": SECRET}])
    [claimed] = claim(http, cc)
    jid = job["jobId"]
    assert claimed["secrets"] == [{"name": "TOKEN", "value": SECRET}]
    assert http.get(f"/v1/compute/jobs/{jid}", headers=cc.headers).json()["secrets"][0]["value"] == SECRET
    assert http.get(f"/v1/compute/jobs/{jid}", headers=other.headers).status_code == 403
    assert http.get(f"/v1/compute/jobs/{jid}", headers=auth(claimed["jobPrivateKey"])).json()["secrets"][0]["value"] == SECRET
    complete(http, jid, cc.key)
    for key in (cc.key, claimed["jobPrivateKey"]):
        finished = http.get(f"/v1/compute/jobs/{jid}", headers=auth(key))
        assert finished.status_code == 200 and finished.json()["secrets"] is None and SECRET not in finished.text
    assert http.get("/v1/compute/jobs", headers=cc.headers).json()["jobs"] == []


@pytest.mark.parametrize("path", ["cancel", "dependency", "expiry", "delete"])
def test_every_path_to_the_end_erases_secrets(path: str, http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    from hub.core.compute import expire_lost_compute_clients

    cc = register(http, seeded)
    secrets = [{"name": "TOKEN", "value": SECRET}]
    if path == "cancel":
        job = submit(http, seeded, hello("c"), secrets=secrets)
        http.post(f"/v1/jobs/{job['jobId']}/cancel", headers=auth(seeded.key))
        ids = [job["jobId"]]
    elif path == "dependency":
        parent = submit(http, seeded, hello("p"))
        job = submit(http, seeded, hello("d"), secrets=secrets, jobDependencies=[parent["jobId"]])
        http.post(f"/v1/jobs/{parent['jobId']}/cancel", headers=auth(seeded.key))
        ids = [job["jobId"]]
    elif path == "expiry":
        job = submit(http, seeded, hello("e"), secrets=secrets)
        claim(http, cc)
        report(http, job["jobId"], cc.key, "running")
        console(http, job["jobId"], cc.key, 0, f"x {SECRET[:5]}".encode())
        expire_lost_compute_clients(ctx, now=time.time() + 3600)
        ids = [job["jobId"]]
    else:
        job = submit(http, seeded, hello("x"), secrets=secrets)
        claim(http, cc)
        assert http.delete(f"/v1/jobs/{job['jobId']}", headers=auth(seeded.key)).status_code == 204
        with ctx.read_transaction() as s:
            assert s.get(Job, job["jobId"]) is None and s.get(ConsoleMask, job["jobId"]) is None
        return
    for jid in ids:
        row = db_row(ctx, jid)
        assert row.status == "failed" and row.secrets == [{"name": "TOKEN"}], path
    if path == "expiry":
        assert console_text(http, ids[0]) == f"x {SECRET[:5]}", "the held-back bytes were flushed at expiry"
        late = f"{SECRET[5:]}!\n".encode()
        assert console(http, ids[0], cc.key, 2 + 5, late).status_code == 200
        assert console_text(http, ids[0]) == "x ***!\n", "late bytes after heartbeat expiry are masked"


def test_a_requeued_job_keeps_its_secrets_and_console_starts_again(http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    from hub.core.compute import expire_lost_compute_clients

    cc = register(http, seeded)
    job = submit(http, seeded, hello("requeue"), secrets=[{"name": "TOKEN", "value": SECRET}])
    claim(http, cc)
    console(http, job["jobId"], cc.key, 0, b"staging\n")
    expire_lost_compute_clients(ctx, now=time.time() + 3600)
    row = db_row(ctx, job["jobId"])
    assert row.status == "pending" and row.console_input_size == 0
    second = register(http, seeded, "second")
    [again] = claim(http, second)
    assert again["secrets"] == [{"name": "TOKEN", "value": SECRET}]
    assert console(http, job["jobId"], second.key, 0, b"run 2\n").json()["consoleOutputSize"] == 6
    assert console_text(http, job["jobId"]) == "run 2\n"


# ---------------------------------------------------------------- secret parameters


def wire(http: httpx.Client, name: str, key: str, **fields: Any) -> dict[str, Any]:
    r = http.post(f"/api/{name}", json={"type": f"{name}Request", **fields}, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def params_of(job: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p["value"] for p in job["jobDefinition"]["parameters"]}


def test_secret_parameters_are_masked_for_users_and_given_to_the_compute_client(
    http: httpx.Client, ctx: HubContext, seeded: Seed, vault: str
) -> None:
    cc = register(http, seeded)
    created = submit(http, seeded, vault_job())
    jid = created["jobId"]
    masked = {"password": "***", "pins": "***", "label": "plain"}
    assert params_of(created) == masked
    assert params_of(http.get(f"/v1/jobs/{jid}").json()) == masked
    [listed] = http.get("/v1/jobs", params={"serviceName": vault, "appName": "vault"}).json()["jobs"]
    assert params_of(listed) == masked
    assert params_of(wire(http, "getJob", seeded.key, jobId=jid)["job"]) == masked
    assert params_of(wire(http, "findJobs", seeded.key, appName="vault", serviceName=vault)["jobs"][0]) == masked
    found = http.post("/v1/jobs/find-by-definition", json={"serviceName": vault, "jobDefinition": vault_job()}).json()
    assert found["found"] and params_of(found["job"]) == masked
    for page in (f"/job/{jid}", f"/job/{jid}/live"):
        r = http.get(page)
        assert r.status_code == 200 and PASSWORD not in r.text and "pin-4711-x" not in r.text, page

    [claimed] = claim(http, cc)
    assert params_of(claimed) == {"password": PASSWORD, "pins": ["pin-4711-x"], "label": "plain"}
    assert params_of(http.get(f"/v1/compute/jobs/{jid}", headers=cc.headers).json())["password"] == PASSWORD
    console(http, jid, cc.key, 0, f"using {PASSWORD} and pin-4711-x\n".encode())
    assert console_text(http, jid) == "using *** and ***\n", "secret parameter values are masked in the console too"
    complete(http, jid, cc.key)

    assert params_of(http.get(f"/v1/compute/jobs/{jid}", headers=cc.headers).json()) == masked
    row = db_row(ctx, jid)
    assert {p["name"]: p["value"] for p in row.job_definition["parameters"]} == {"password": None, "pins": None, "label": "plain"}
    # The hash was computed with the values: the same values are a cache hit, others a new job.
    again = http.post("/v1/jobs", json={"serviceName": vault, "jobDefinition": vault_job(), "requiredResources": created["requiredResources"]},
                      headers=auth(seeded.key))
    assert again.status_code == 200 and again.json()["jobId"] == jid and params_of(again.json()) == masked
    other = submit(http, seeded, vault_job(password="another-password"))
    assert other["jobId"] != jid


def test_rerun_of_a_finished_job_explains_that_its_secrets_were_erased(
    http: httpx.Client, ctx: HubContext, seeded: Seed, vault: str
) -> None:
    from .test_ui_pages import log_in

    cc = register(http, seeded)
    job = submit(http, seeded, vault_job(label="rerun"))
    claim(http, cc)
    complete(http, job["jobId"], cc.key)
    csrf = log_in(http, seeded.key)
    page = http.get(f"/job/{job['jobId']}").text
    assert 'id="rerun-button"' not in page and "submit it anew with its secrets (password, pins)" in page
    r = http.post(f"/job/{job['jobId']}/rerun", data={"csrf_token": csrf})
    assert r.status_code == 400 and "erased" in r.text and "password" in r.text
    with ctx.read_transaction() as s:
        assert len(s.scalars(select(Job).where(Job.app_name == "vault")).all()) == 1, "no job was made"


def test_pairio_jobs_show_masks_secret_parameters(live_hub: LiveHub, seeded: Seed, vault: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_hub.url, timeout=30) as http:
        job = submit(http, seeded, vault_job(label="cli"))
    env = {**os.environ, "PAIRIO_API_URL": live_hub.url, "PAIRIO_API_KEY": seeded.key, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "pairio.cli", "jobs", "show", job["jobId"], *extra],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout and "pin-4711-x" not in result.stdout and "***" in result.stdout


# ---------------------------------------------------------------- files on disk


def test_the_data_directory_database_and_job_files_are_private(http: httpx.Client, ctx: HubContext, seeded: Seed) -> None:
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(ctx.settings.data_dir) == 0o700
    assert mode(ctx.settings.files_dir) == 0o700
    url = ctx.settings.resolved_database_url()
    if url.startswith("sqlite"):
        db = url.split("///", 1)[1]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                assert mode(db + suffix) == 0o600, suffix
    cc = register(http, seeded)
    job = submit(http, seeded, {**hello("files"), "processorName": "hello_world_2",
                               "outputFiles": [{"name": "output", "fileBaseName": "out.txt"}]})
    claim(http, cc)
    jid = job["jobId"]
    console(http, jid, cc.key, 0, b"hi\n")
    http.put(f"/v1/compute/jobs/{jid}/resource-utilization-log", content=b'{"a": 1}\n', headers=cc.headers)
    assert http.put(f"/v1/compute/jobs/{jid}/outputs/output", content=b"x", headers=cc.headers).status_code == 200
    files = ctx.files
    for path in (files.console_output_path(jid), files.resource_log_path(jid), files.output_path(jid, "output")):
        assert mode(path) == 0o600, path
    assert mode(files.job_dir(jid)) == 0o700


def test_an_existing_data_directory_and_database_are_made_private(tmp_path: Path) -> None:
    from hub.settings import HubSettings

    data = tmp_path / "old-hub"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "hub.db").touch()
    os.chmod(data / "hub.db", 0o644)
    ctx = HubContext.create(HubSettings(data_dir=data))
    try:
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(data / "hub.db").st_mode) == 0o600
    finally:
        ctx.close()


# ---------------------------------------------------------------- existing hubs


def test_the_migration_erases_what_finished_jobs_kept(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import MetaData, Table

    from hub.db.engine import make_engine
    from hub.db.migrate import alembic_config, upgrade_database

    engine = make_engine(database_url)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        table = lambda name: Table(name, MetaData(), autoload_with=conn)  # noqa: E731
        conn.execute(table("users").insert().values(user_id="alice", created_sec=0))
        conn.execute(table("services").insert().values(service_name="svc", owner_user_id="alice", created_sec=0))
        conn.execute(table("service_apps").insert().values(service_name="svc", app_name="vault", spec=VAULT_SPEC, spec_hash="h", created_sec=0, updated_sec=0))
        jobs = table("jobs")
        for job_id, status in (("finished", "completed"), ("running", "running")):
            definition = {**vault_job(), "inputFiles": [], "outputFiles": []}
            conn.execute(jobs.insert().values(
                job_id=job_id, service_name="svc", user_id="alice", app_name="vault", processor_name="use_password",
                job_definition=definition, job_definition_hash="h", tags=[], num_cpus=1, num_gpus=0, memory_gb=1, time_sec=60,
                secrets=[{"name": "TOKEN", "value": SECRET}], console_output_url="u", resource_utilization_log_url="u",
                timestamp_created_sec=0, canceled=False, status=status, is_runnable=True, console_output_size=42,
                has_resource_utilization_log=False,
            ))
    upgrade_database(engine)
    with engine.connect() as conn:
        rows = {r.job_id: r for r in conn.execute(select(Table("jobs", MetaData(), autoload_with=conn)))}
    engine.dispose()
    finished, running = rows["finished"], rows["running"]
    assert finished.secrets == [{"name": "TOKEN"}] and SECRET not in str(finished.job_definition)
    assert {p["name"]: p["value"] for p in finished.job_definition["parameters"]}["password"] is None
    assert running.secrets == [{"name": "TOKEN", "value": SECRET}], "a job still running keeps what its bridge needs"
    assert running.secret_parameter_names == ["password", "pins"] and finished.console_input_size == 42


def test_the_playground_code_leaves_secret_parameters_out(http: httpx.Client, seeded: Seed, vault: str) -> None:
    params = {"service": vault, "app": "vault", "processor": "use_password", "p.password": "***", "p.label": "shown"}
    code = http.get("/submit/code", params=params).text
    assert "PairioJobParameter(name='password', value=...),  # secret: put its value here" in code
    assert "PairioJobParameter(name='label', value='shown')," in code
    page = http.get("/submit", params={**params, "p.password": PASSWORD}).text
    assert PASSWORD not in page.split('id="python-code"')[1]
