"""The ``pairio`` command: admin on a hub's database, ``hub serve``, ``login`` and ``jobs``.

The main flows run the real command in a subprocess, as a user would; error cases
run through click's CliRunner in-process, which is much faster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import httpx
import pytest
from click.testing import CliRunner, Result

from hub.app import create_app
from hub.context import HubContext
from hub.files import JobFiles
from hub.settings import HubSettings
from pairio import (
    JobStatus,
    PairioClient,
    PairioJobDefinition,
    PairioJobRequiredResources,
    RetryPolicy,
)
from pairio.cli import main
from pairio.config import config_path, load_config_file

from .conftest import PUBLIC_URL
from .hubtools import (
    HELLO_WORLD_SPEC,
    REPO,
    LiveHub,
    Seed,
    SyncASGITransport,
    free_port,
    postgres_schema,
)

PAIRIO = [sys.executable, "-m", "pairio.cli"]
RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=4, timeSec=60)
HELLO = PairioJobDefinition(appName="hello_world", processorName="hello_world_1")
_ENV_TO_CLEAR = ("PAIRIO_API_URL", "PAIRIO_API_KEY", "PAIRIO_HUB_DATA_DIR", "PAIRIO_HUB_DATABASE_URL", "PAIRIO_HUB_PUBLIC_URL")


@pytest.fixture(autouse=True)
def no_user_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the developer's PAIRIO_* settings nor their ~/.config/pairio reach these tests."""
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def run_pairio(args: list[str], *, env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``pairio ARGS`` as its own process with this process's (cleaned) environment plus ``env``."""
    result = subprocess.run(
        PAIRIO + args, capture_output=True, text=True, timeout=60, cwd=cwd, check=False, env={**os.environ, **(env or {})}
    )
    if ok:
        assert result.returncode == 0, f"pairio {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def invoke(args: list[str], input: Optional[str] = None) -> Result:
    return CliRunner().invoke(main, args, input=input, prog_name="pairio")


def assert_one_line_error(result: "Result | subprocess.CompletedProcess[str]", *fragments: str) -> None:
    stderr = result.stderr
    code = result.exit_code if isinstance(result, Result) else result.returncode
    assert code == 1, (code, result.stdout, stderr)
    assert "Traceback" not in stderr and stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr
    for fragment in fragments:
        assert fragment in stderr


@dataclass
class HubDatabase:
    """A hub's data directory, and the environment that points admin commands at its database."""

    data_dir: Path
    env: dict[str, str]

    def settings(self) -> HubSettings:
        return HubSettings(data_dir=self.data_dir, database_url=self.env.get("PAIRIO_HUB_DATABASE_URL"), public_url=PUBLIC_URL)

    def admin(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return run_pairio(["admin", "--data-dir", str(self.data_dir), *args], env=self.env, ok=ok)


def init_hub(data_dir: Path) -> Path:
    """A hub data directory with its database, as after 'pairio hub init' (pairio admin refuses one without)."""
    assert invoke(["hub", "init", "--data-dir", str(data_dir)]).exit_code == 0
    return data_dir


@pytest.fixture(params=["sqlite", "postgres"])
def hub_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubDatabase]:
    if request.param == "sqlite":
        yield HubDatabase(init_hub(tmp_path / "hub"), {})
    else:
        with postgres_schema() as url:
            yield HubDatabase(tmp_path / "hub", {"PAIRIO_HUB_DATABASE_URL": url})


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(HELLO_WORLD_SPEC))
    return path


# ---------------------------------------------------------------- pairio admin


def test_admin_sets_up_a_hub_whose_keys_work(hub_database: HubDatabase, spec_file: Path) -> None:
    created = hub_database.admin("create-user", "carol")
    key = created.stdout.splitlines()[-1]
    assert "created user 'carol'" in created.stdout and key.startswith("pairio_")
    hub_database.admin("create-service", "svc", "--owner", "carol")
    key2 = hub_database.admin("create-user", "dave").stdout.splitlines()[-1]
    granted = hub_database.admin("add-service-user", "svc", "dave", "--create-jobs")
    assert "createJobs" in granted.stdout and "admin" not in granted.stdout
    assert "processors: hello_world_1, hello_world_2, count_characters, typed" in hub_database.admin("add-app", "svc", str(spec_file)).stdout
    assert "dave(createJobs)" in hub_database.admin("list-services").stdout

    # The keys printed work against a hub on the same database settings.
    ctx = HubContext.create(hub_database.settings())
    transport = SyncASGITransport(create_app(ctx=ctx))
    try:
        with PairioClient(PUBLIC_URL, key, transport=transport) as carol, PairioClient(PUBLIC_URL, key2, transport=transport) as dave:
            assert carol.me() == "carol"
            job = dave.submit_job(service_name="svc", job_definition=HELLO, required_resources=RESOURCES)
            assert job.userId == "dave" and job.status == JobStatus.PENDING
    finally:
        transport.close()
        ctx.close()


def test_admin_errors_are_one_line_messages(tmp_path: Path, spec_file: Path) -> None:
    data_dir = str(init_hub(tmp_path / "hub"))
    admin = ["admin", "--data-dir", data_dir]
    assert invoke([*admin, "create-user", "carol"]).exit_code == 0
    assert_one_line_error(invoke([*admin, "create-user", "carol"]), "user 'carol' exists already")
    assert_one_line_error(invoke([*admin, "create-user", "bad name"]), "invalid user name")
    assert_one_line_error(invoke([*admin, "create-service", "svc", "--owner", "nobody"]), "no user 'nobody'")
    assert_one_line_error(invoke([*admin, "add-app", "nosuch", str(spec_file)]), "no service 'nosuch'")
    assert_one_line_error(invoke([*admin, "list-apps", "nosuch"]), "no service 'nosuch'")

    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "x",\n  processors: []}')
    assert_one_line_error(invoke([*admin, "add-app", "svc", str(bad_json)]), "is not valid JSON", "line 2")
    bad_spec = tmp_path / "bad-spec.json"
    bad_spec.write_text(json.dumps({"name": "../escape", "processors": []}))
    assert invoke([*admin, "create-service", "svc", "--owner", "carol"]).exit_code == 0
    assert_one_line_error(invoke([*admin, "add-app", "svc", str(bad_spec)]), "invalid app spec", "invalid name '../escape'")

    # And as a real process: the message, the exit status, no traceback.
    assert_one_line_error(run_pairio([*admin, "create-user", "carol"], ok=False), "exists already")


def test_admin_lists_and_keys(tmp_path: Path, spec_file: Path) -> None:
    admin = ["admin", "--data-dir", str(init_hub(tmp_path / "hub"))]
    for args in (["create-user", "carol"], ["create-service", "svc", "--owner", "carol"], ["add-app", "svc", str(spec_file)]):
        assert invoke([*admin, *args]).exit_code == 0
    second = invoke([*admin, "create-api-key", "carol", "--label", "laptop"])
    assert second.exit_code == 0 and second.stdout.splitlines()[-1].startswith("pairio_")
    assert_one_line_error(invoke([*admin, "create-api-key", "nobody"]), "no user 'nobody'")

    users = invoke([*admin, "list-users"]).stdout.splitlines()
    assert users[0].split() == ["USER", "KEYS", "CREATED"] and users[1].split()[:2] == ["carol", "2"]
    apps = invoke([*admin, "list-apps", "svc"]).stdout.splitlines()
    assert apps[1].split()[:2] == ["svc", "hello_world"]
    assert invoke([*admin, "list-compute-clients"]).stdout.split() == ["ID", "SERVICE", "LABEL", "USER", "SLOTS", "LAST", "ACTIVE"]


# ---------------------------------------------------------------- pairio hub serve, login, jobs


class ServedHub:
    """``pairio hub serve`` in a subprocess, with its output collected as it comes."""

    def __init__(self, data_dir: Path, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            PAIRIO + ["hub", "serve", "--port", str(self.port), "--data-dir", str(data_dir), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_serving(self, timeout_sec: float = 30) -> None:
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"pairio hub serve exited with {self.process.returncode}:\n{self.output}")
            try:
                if httpx.get(f"{self.url}/docs", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"pairio hub serve did not answer within {timeout_sec} s:\n{self.output}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)


@pytest.fixture
def served_hub(tmp_path: Path) -> Iterator[ServedHub]:
    hub = ServedHub(tmp_path / "hub-data", cwd=tmp_path)
    try:
        hub.wait_until_serving()
        yield hub
    finally:
        hub.stop()


def test_hub_serve_login_and_jobs(served_hub: ServedHub, spec_file: Path, tmp_path: Path) -> None:
    data_dir = str(served_hub.data_dir)
    out = served_hub.output
    assert f"Pairio hub at {served_hub.url}" in out
    assert f"sqlite:///{served_hub.data_dir.resolve()}/hub.db" in out
    assert f"pairio admin --data-dir {served_hub.data_dir.resolve()} create-user NAME" in out
    assert f"export PAIRIO_API_URL={served_hub.url}" in out and "export PAIRIO_API_KEY=" in out

    # The first key, made while the hub runs, on the same data directory.
    key = run_pairio(["admin", "--data-dir", data_dir, "create-user", "carol"]).stdout.splitlines()[-1]
    run_pairio(["admin", "--data-dir", data_dir, "create-service", "hello_world_service", "--owner", "carol"])
    run_pairio(["admin", "--data-dir", data_dir, "add-app", "hello_world_service", str(spec_file)])

    logged_in = run_pairio(["login", "--url", served_hub.url, "--api-key", key])
    assert "as 'carol'" in logged_in.stdout
    assert stat.S_IMODE(config_path().stat().st_mode) == 0o600
    assert load_config_file().api_keys == {served_hub.url: key}

    # From here on the key comes from the config file, for this process and for the command.
    with PairioClient() as client:
        assert client.url == served_hub.url
        job = client.submit_job(service_name="hello_world_service", job_definition=HELLO, required_resources=RESOURCES, tags=["cli"])
    assert job.job_url == f"{served_hub.url}/job/{job.jobId}", "public URL defaults to http://HOST:PORT"

    listed = run_pairio(["jobs", "list", "--service", "hello_world_service", "--tag", "cli"]).stdout.splitlines()
    assert listed[0].split()[:2] == ["JOB", "ID"] and listed[1].split()[:2] == [job.jobId, "pending"]
    as_json = json.loads(run_pairio(["jobs", "list", "--status", "pending", "--json"]).stdout)
    assert [j["jobId"] for j in as_json] == [job.jobId] and as_json[0]["jobUrl"] == job.job_url

    shown = run_pairio(["jobs", "show", job.jobId]).stdout
    assert job.jobId in shown and "hello_world / hello_world_1" in shown and "created by carol" in shown
    shown_json = json.loads(run_pairio(["jobs", "show", job.jobId, "--json"]).stdout)
    assert shown_json["status"] == "pending" and shown_json["events"][0]["message"] == "created by carol"

    no_logs = run_pairio(["jobs", "logs", job.jobId])
    assert no_logs.stdout == "" and "no console output yet" in no_logs.stderr
    console = JobFiles(served_hub.data_dir / "files").console_output_path(job.jobId)
    console.parent.mkdir(parents=True, exist_ok=True)
    console.write_text("Hello, world!\n")
    assert run_pairio(["jobs", "logs", job.jobId]).stdout == "Hello, world!\n"

    cancelled = run_pairio(["jobs", "cancel", job.jobId]).stdout
    assert cancelled.startswith(f"job {job.jobId}: failed") and "canceled by carol" in cancelled
    assert "deleted 1 job(s)" in run_pairio(["jobs", "delete", job.jobId]).stdout
    assert_one_line_error(run_pairio(["jobs", "show", job.jobId], ok=False), f"no job '{job.jobId}'", "HTTP 404")


def test_login_checks_the_key_before_saving(live_hub: LiveHub, seeded: Seed) -> None:
    rejected = invoke(["login", "--url", live_hub.url, "--api-key", "pairio_wrong"])
    assert_one_line_error(rejected, "does not accept this key", "Nothing was saved")
    assert not config_path().exists()

    prompted = invoke(["login", "--url", live_hub.url], input=f"{seeded.key}\n")
    assert prompted.exit_code == 0, prompted.output
    assert seeded.key not in prompted.output, "the key is read without being echoed"
    assert load_config_file().api_keys == {live_hub.url: seeded.key}

    listed = invoke(["jobs", "list"])
    assert listed.exit_code == 0 and "no jobs match" in listed.stderr


def test_jobs_commands_explain_a_missing_key_and_an_unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(invoke(["jobs", "--url", url, "cancel", "abc"]), "no Pairio API key", "pairio admin create-user NAME")
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt: 0.0)  # the retries themselves, without their waits
    assert_one_line_error(invoke(["jobs", "--url", url, "list"]), f"could not reach the Pairio hub at {url}", "after 4 attempt(s)")


def test_help_lists_the_command_groups() -> None:
    command = [shutil.which("pairio") or ""] if shutil.which("pairio") else PAIRIO
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for group in ("hub", "admin", "login", "jobs"):
        assert f"\n  {group} " in result.stdout


def test_hub_serve_shows_the_database_without_its_password(tmp_path: Path) -> None:
    from pairio.cli.hub import database_for_display

    settings = HubSettings(data_dir=tmp_path, database_url="postgresql+psycopg://pairio:s3cret@db.example.org/pairio")
    assert database_for_display(settings) == "postgresql+psycopg://pairio:***@db.example.org/pairio"
    assert database_for_display(HubSettings(data_dir=tmp_path)) == f"sqlite:///{tmp_path.resolve()}/hub.db"


def test_the_quick_start_refuses_a_port_another_program_holds() -> None:
    """Something else on the quick start's port (here a plain HTTP server): it stops before it changes
    anything, naming the port and how to pick another, instead of talking to a program that is no hub."""
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAIRIO_")}
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "quickstart.sh")], env={**env, "PAIRIO_QUICKSTART_PORT": str(port)},
            capture_output=True, text=True, timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"another program listens on http://127.0.0.1:{port}" in result.stderr
    assert "PAIRIO_QUICKSTART_PORT=8001" in result.stderr and result.stdout == ""


def test_admin_refuses_a_data_directory_without_a_hub_database(tmp_path: Path) -> None:
    """A mistyped --data-dir must not quietly become a new, empty hub database."""
    elsewhere = tmp_path / "typo"
    result = invoke(["admin", "--data-dir", str(elsewhere), "create-user", "carol"])
    assert_one_line_error(result, f"no hub database in {elsewhere}", f"pairio hub init --data-dir {elsewhere}")
    assert not (elsewhere / "hub.db").exists()
    assert invoke(["hub", "init", "--data-dir", str(elsewhere)]).exit_code == 0
    assert invoke(["admin", "--data-dir", str(elsewhere), "create-user", "carol"]).exit_code == 0


def test_jobs_commands_take_url_and_key_before_or_after_the_subcommand(live_hub: LiveHub, seeded: Seed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIRIO_API_KEY", raising=False)
    monkeypatch.delenv("PAIRIO_API_URL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(live_hub.ctx.settings.data_dir / "no-login"))  # nothing saved by 'pairio login'
    with PairioClient(live_hub.url, seeded.key) as alice:
        job = alice.submit_job(service_name=seeded.service, job_definition=HELLO, required_resources=RESOURCES)
    for args in (
        ["jobs", "--url", live_hub.url, "--key", seeded.key, "show", job.jobId],
        ["jobs", "show", job.jobId, "--url", live_hub.url, "--key", seeded.key],
        ["jobs", "--url", live_hub.url, "show", "--api-key", seeded.key, job.jobId],
    ):
        shown = invoke(args)
        assert shown.exit_code == 0 and job.jobId in shown.stdout, (args, shown.output)
    assert_one_line_error(invoke(["jobs", "cancel", job.jobId, "--url", live_hub.url]), "no Pairio API key")  # reading needs none


def test_shell_completion_as_the_readme_sets_it_up() -> None:
    """The README's completion lines: both commands answer click's completion protocol."""
    for program, variable, words, expected in (
        ("pairio", "_PAIRIO_COMPLETE", "pairio jo", "plain,jobs"),
        ("pairio-bridge", "_PAIRIO_BRIDGE_COMPLETE", "pairio-bridge lo", "plain,local"),
    ):
        env = {**os.environ, variable: "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "1"}
        out = subprocess.run([str(Path(sys.executable).parent / program)], env=env, capture_output=True, text=True, timeout=60)
        assert expected in out.stdout.splitlines(), (program, out.stdout, out.stderr)
        source = subprocess.run([str(Path(sys.executable).parent / program)], env={**os.environ, variable: "bash_source"}, capture_output=True, text=True, timeout=60)
        assert "complete -o nosort -F" in source.stdout, source.stdout
