"""The Python client against a real hub: in-process (ASGI) and over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import runpy
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx
import pytest

import pairio
import pairio.client
from hub.app import create_app
from hub.context import HubContext
from pairio import (
    AuthenticationError,
    BadRequestError,
    JobStatus,
    JobWaitTimeoutError,
    MissingApiKeyError,
    NotFoundError,
    PairioClient,
    PairioConfigError,
    PairioConnectionError,
    PairioError,
    PairioHTTPError,
    PairioJob,
    PairioJobDefinition,
    PairioJobInputFile,
    PairioJobOutputFile,
    PairioJobParameter,
    PairioJobRequiredResources,
    PayloadTooLargeError,
    PermissionDeniedError,
    RetryPolicy,
    ServerError,
    UnknownOutputError,
    cancel_job,
    delete_jobs,
    find_jobs,
    get_job,
    set_default_client,
    submit_job,
)
from pairio.config import (
    DEFAULT_HUB_URL,
    config_path,
    resolve_client_settings,
    save_login,
)
from pairio.errors import error_for_response

from .conftest import PUBLIC_URL
from .hubtools import HELLO_WORLD_SPEC, REPO, Seed, SyncASGITransport, free_port

RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=4, timeSec=60)
NO_WAIT = RetryPolicy(max_attempts=4, initial_delay_sec=0.0)


def hello(name: str = "world") -> PairioJobDefinition:
    return PairioJobDefinition(
        appName="hello_world", processorName="hello_world_1",
        parameters=[PairioJobParameter(name="name", value=name)],
    )


def hello_with_output() -> PairioJobDefinition:
    return PairioJobDefinition(
        appName="hello_world", processorName="hello_world_2",
        outputFiles=[PairioJobOutputFile(name="output", fileBaseName="output.txt")],
        parameters=[PairioJobParameter(name="name", value="world")],
    )


@pytest.fixture(autouse=True)
def no_user_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Keep the developer's own PAIRIO_API_* and ~/.config/pairio out of the tests."""
    monkeypatch.delenv("PAIRIO_API_URL", raising=False)
    monkeypatch.delenv("PAIRIO_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    set_default_client(None)
    yield
    set_default_client(None)
    pairio.client._resolved_defaults.clear()


@dataclass
class HubUnderTest:
    """A hub and how to reach it: in-process through a transport, or at a URL over real HTTP."""

    url: str
    transport: Optional[httpx.BaseTransport]
    seed: Seed
    ctx: HubContext
    clients: list[PairioClient] = field(default_factory=list)

    def client(self, api_key: Optional[str], **kwargs: object) -> PairioClient:
        client = PairioClient(self.url, api_key, transport=self.transport, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client


@pytest.fixture(params=["in-process", "http"])
def hub(request: pytest.FixtureRequest, ctx: HubContext, seeded: Seed) -> Iterator[HubUnderTest]:
    if request.param == "in-process":
        transport = SyncASGITransport(create_app(ctx=ctx))
        under_test = HubUnderTest(PUBLIC_URL, transport, seeded, ctx)
        yield under_test
        for c in under_test.clients:
            c.close()
        transport.close()
    else:
        live = request.getfixturevalue("live_hub")
        under_test = HubUnderTest(live.url, None, seeded, ctx)
        yield under_test
        for c in under_test.clients:
            c.close()


@pytest.fixture
def alice(hub: HubUnderTest) -> PairioClient:
    return hub.client(hub.seed.key)


@pytest.fixture
def bob(hub: HubUnderTest) -> PairioClient:
    return hub.client(hub.seed.other_key)


# ---------------------------------------------------------------- the seed README's examples


def test_seed_examples_through_module_functions(hub: HubUnderTest, alice: PairioClient) -> None:
    set_default_client(alice)
    service = hub.seed.service

    job = submit_job(service_name=service, job_definition=hello(), required_resources=RESOURCES, tags=["example"], rerun_failing=True)
    assert isinstance(job, PairioJob)
    assert job.status == JobStatus.PENDING and job.isRunnable
    assert job.job_url == f"{hub.url}/job/{job.jobId}"

    job1 = submit_job(service_name=service, job_definition=hello_with_output(), required_resources=RESOURCES, tags=["example"])
    output_url = job1.get_output("output")
    assert output_url == job1.outputFileResults[0].url and output_url.startswith(hub.url)

    job2 = submit_job(
        service_name=service,
        job_definition=PairioJobDefinition(
            appName="hello_world", processorName="count_characters",
            inputFiles=[PairioJobInputFile(name="input", fileBaseName="input.txt", url=output_url)],
            outputFiles=[PairioJobOutputFile(name="output", fileBaseName="output.json")],
            parameters=[PairioJobParameter(name="include_whitespace", value=True)],
        ),
        required_resources=RESOURCES, tags=["example"], rerun_failing=True,
    )
    assert job2.jobDependencies == [job1.jobId]
    assert job2.isRunnable is False and job2.status == JobStatus.PENDING
    assert get_job(job2.jobId).jobDependencies == [job1.jobId]


def test_example_scripts_run_as_written(live_hub: object, seeded: Seed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/example*.py, configured only by the environment, as a user runs them."""
    url = live_hub.url  # type: ignore[attr-defined]
    monkeypatch.setenv("PAIRIO_API_URL", url)
    monkeypatch.setenv("PAIRIO_API_KEY", seeded.key)
    monkeypatch.delenv("PAIRIO_SERVICE_NAME", raising=False)  # the examples default to hello_world_service
    for name in ("example1.py", "example2.py", "example3.py"):
        runpy.run_path(str(REPO / "examples" / name), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    job_urls = [line.split()[0] for line in lines]
    assert all(u.startswith(f"{url}/job/") for u in job_urls)
    assert lines[0].endswith(" pending")
    assert job_urls[1] == job_urls[2], "example3's first job is example2's job (a cache hit)"
    assert lines[3].endswith(" pending False"), "example3's second job waits for the first"


# ---------------------------------------------------------------- caching rules


def test_cache_hit_returns_the_same_job_and_adds_tags(hub: HubUnderTest, alice: PairioClient) -> None:
    first = alice.submit_job(service_name=hub.seed.service, job_definition=hello("cache"), required_resources=RESOURCES, tags=["a"])
    again = alice.submit_job(service_name=hub.seed.service, job_definition=hello("cache"), required_resources=RESOURCES, tags=["b"])
    assert again.jobId == first.jobId
    assert again.tags == ["a", "b"]
    found = alice.find_job_by_definition(hub.seed.service, hello("cache"))
    assert found is not None and found.jobId == first.jobId
    assert alice.find_job_by_definition(hub.seed.service, hello("never submitted")) is None


def test_skip_cache_makes_a_new_job(hub: HubUnderTest, alice: PairioClient) -> None:
    first = alice.submit_job(service_name=hub.seed.service, job_definition=hello("skip"), required_resources=RESOURCES)
    second = alice.submit_job(service_name=hub.seed.service, job_definition=hello("skip"), required_resources=RESOURCES, skip_cache=True)
    assert second.jobId != first.jobId
    assert second.jobDefinitionHash == first.jobDefinitionHash


def test_rerun_failing_and_delete_failing(hub: HubUnderTest, alice: PairioClient) -> None:
    service = hub.seed.service
    failed = alice.submit_job(service_name=service, job_definition=hello("flaky"), required_resources=RESOURCES)
    failed.cancel()  # a pending job fails at once when cancelled
    assert failed.status == JobStatus.FAILED and failed.canceled and failed.error

    same = alice.submit_job(service_name=service, job_definition=hello("flaky"), required_resources=RESOURCES)
    assert same.jobId == failed.jobId and same.status == JobStatus.FAILED, "without rerun_failing the failed job is returned"

    rerun = alice.submit_job(service_name=service, job_definition=hello("flaky"), required_resources=RESOURCES, rerun_failing=True)
    assert rerun.jobId != failed.jobId and rerun.status == JobStatus.PENDING
    assert alice.get_job(failed.jobId).status == JobStatus.FAILED, "rerun_failing alone keeps the failed job"

    rerun.cancel()
    replaced = alice.submit_job(
        service_name=service, job_definition=hello("flaky"), required_resources=RESOURCES, rerun_failing=True, delete_failing=True
    )
    assert replaced.jobId not in (rerun.jobId, failed.jobId)
    with pytest.raises(NotFoundError):
        alice.get_job(rerun.jobId)


# ---------------------------------------------------------------- find, cancel, delete, wait


def test_find_jobs_filters_and_pages(hub: HubUnderTest, alice: PairioClient) -> None:
    service = hub.seed.service
    made = [
        alice.submit_job(service_name=service, job_definition=hello(f"n{i}"), required_resources=RESOURCES, tags=["batch", f"i{i % 2}"])
        for i in range(5)
    ]
    made[0].cancel()
    newest_first = [j.jobId for j in reversed(made)]

    assert [j.jobId for j in alice.find_jobs(service_name=service, tags=["batch"])] == newest_first
    assert [j.jobId for j in alice.iter_jobs(service_name=service, tags=["batch"], page_size=2)] == newest_first
    assert [j.jobId for j in alice.find_jobs(service_name=service, limit=3)] == newest_first[:3]
    assert {j.jobId for j in alice.find_jobs(tags=["batch", "i0"])} == {made[0].jobId, made[2].jobId, made[4].jobId}
    assert [j.jobId for j in alice.find_jobs(service_name=service, status="failed")] == [made[0].jobId]
    assert len(alice.find_jobs(service_name=service, status=[JobStatus.PENDING, JobStatus.FAILED])) == 5
    assert alice.find_jobs(service_name=service, processor_name="count_characters") == []

    set_default_client(alice)
    assert [j.jobId for j in find_jobs(service_name=service, status=JobStatus.PENDING, limit=2)] == newest_first[:2]
    with pytest.raises(TypeError, match="unknown job filter"):
        alice.find_jobs(servce_name=service)  # type: ignore[call-arg]


def test_cancel_and_delete(hub: HubUnderTest, alice: PairioClient) -> None:
    set_default_client(alice)
    job = submit_job(service_name=hub.seed.service, job_definition=hello("to cancel"), required_resources=RESOURCES)
    cancelled = cancel_job(job.jobId)
    assert cancelled.status == JobStatus.FAILED and cancelled.canceled
    assert "cancel" in (cancelled.error or "")
    assert cancel_job(job.jobId).status == JobStatus.FAILED, "cancelling twice is harmless"
    assert any("cancel" in e.message for e in job.get_events())

    other = submit_job(service_name=hub.seed.service, job_definition=hello("to delete"), required_resources=RESOURCES)
    delete_jobs([job.jobId, other.jobId])
    for job_id in (job.jobId, other.jobId):
        with pytest.raises(NotFoundError, match="no job"):
            get_job(job_id)


def test_wait_until_done(hub: HubUnderTest, alice: PairioClient, capsys: pytest.CaptureFixture[str]) -> None:
    pending = alice.submit_job(service_name=hub.seed.service, job_definition=hello("waiting"), required_resources=RESOURCES)
    with pytest.raises(JobWaitTimeoutError, match="still pending") as info:
        pending.wait_until_done(wait_sec=0.3, poll_interval_sec=0.05)
    assert isinstance(info.value, TimeoutError)

    alice.cancel_job(pending.jobId)  # fails it: the local object still says pending
    assert pending.status == JobStatus.PENDING
    assert pending.wait_until_done(wait_sec=5) is pending
    assert pending.status == JobStatus.FAILED
    assert capsys.readouterr().out == f"job {pending.jobId}: failed\n"

    assert pending.wait_until_done(wait_sec=0) is pending, "an already finished job returns at once"
    assert capsys.readouterr().out == ""


def test_outputs_console_output_and_refresh(hub: HubUnderTest, alice: PairioClient) -> None:
    job = alice.submit_job(service_name=hub.seed.service, job_definition=hello_with_output(), required_resources=RESOURCES)
    with pytest.raises(UnknownOutputError, match="its outputs are: 'output'"):
        job.get_output("result")
    assert job.get_console_output() == ""
    path = hub.ctx.files.console_output_path(job.jobId)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("Hello, world!\n")
    assert job.get_console_output() == "Hello, world!\n"
    alice.cancel_job(job.jobId)
    assert job.refresh().status == JobStatus.FAILED


def test_services_and_apps(hub: HubUnderTest, alice: PairioClient, bob: PairioClient) -> None:
    assert alice.me() == "alice"
    assert [s.serviceName for s in alice.list_services()] == [hub.seed.service]
    assert [s.serviceName for s in alice.list_services(user_id="bob")] == []
    apps = alice.list_apps(hub.seed.service)
    assert [a.appName for a in apps] == ["hello_world"]
    assert {p.name for p in apps[0].processors} >= {"hello_world_1", "hello_world_2", "count_characters"}
    new_version = {**HELLO_WORLD_SPEC, "version": "2"}
    assert alice.put_app(hub.seed.service, new_version).appSpecification.version == "2"
    assert alice.get_app(hub.seed.service, "hello_world").appSpecification.version == "2"
    with pytest.raises(PermissionDeniedError):
        bob.put_app(hub.seed.service, new_version)
    assert alice.list_compute_clients(hub.seed.service) == []


# ---------------------------------------------------------------- errors


def test_typed_errors_carry_the_hubs_message(hub: HubUnderTest, alice: PairioClient, bob: PairioClient) -> None:
    service = hub.seed.service
    with pytest.raises(AuthenticationError, match="not valid") as e401:
        hub.client("pairio_not-a-real-key").submit_job(service_name=service, job_definition=hello(), required_resources=RESOURCES)
    assert e401.value.status_code == 401 and e401.value.response.status_code == 401

    with pytest.raises(PermissionDeniedError, match="add-service-user") as e403:
        bob.submit_job(service_name=service, job_definition=hello(), required_resources=RESOURCES)
    assert e403.value.status_code == 403

    with pytest.raises(NotFoundError, match="no job 'nope'"):
        alice.get_job("nope")
    with pytest.raises(NotFoundError, match="no service"):
        alice.submit_job(service_name="no_such_service", job_definition=hello(), required_resources=RESOURCES)

    bad_resources = PairioJobRequiredResources.model_construct(numCpus=0, numGpus=0, memoryGb=4, timeSec=60)
    with pytest.raises(BadRequestError, match="numCpus") as e422:
        alice.submit_job(service_name=service, job_definition=hello(), required_resources=bad_resources)
    assert e422.value.status_code == 422

    with pytest.raises(BadRequestError, match="no processor 'nope'") as e400:
        alice.submit_job(service_name=service, job_definition={"appName": "hello_world", "processorName": "nope"}, required_resources=RESOURCES)
    assert e400.value.status_code == 400

    huge = hello().model_copy(update={"parameters": [PairioJobParameter(name=f"p{i}", value="x" * 90_000) for i in range(15)]})
    with pytest.raises(PayloadTooLargeError):
        alice.submit_job(service_name=service, job_definition=huge, required_resources=RESOURCES)


def test_missing_key_says_how_to_get_one(hub: HubUnderTest) -> None:
    anonymous = hub.client(None)
    assert not anonymous.has_api_key
    with pytest.raises(MissingApiKeyError) as info:
        anonymous.submit_job(service_name=hub.seed.service, job_definition=hello(), required_resources=RESOURCES)
    message = str(info.value)
    assert "PAIRIO_API_KEY" in message and "pairio login" in message and "pairio admin create-user NAME" in message
    assert isinstance(info.value, PairioConfigError)
    assert anonymous.list_services(), "reads need no key"


def test_the_key_never_appears_in_errors_or_reprs(hub: HubUnderTest) -> None:
    key = "pairio_SECRETSECRETSECRET"
    client = hub.client(key)
    assert key not in repr(client)
    with pytest.raises(AuthenticationError) as info:
        client.me()
    for text in (str(info.value), repr(info.value), repr(info.value.request), repr(info.value.request.headers)):
        assert key not in text

    unreachable = PairioClient(f"http://127.0.0.1:{free_port()}", key, retry_policy=RetryPolicy(max_attempts=1))
    with pytest.raises(PairioConnectionError) as conn:
        unreachable.me()
    assert key not in str(conn.value) and "PAIRIO_API_URL" in str(conn.value)

    # A hub (or proxy) that echoes the key back in its message: the client redacts it.
    request = httpx.Request("GET", "http://hub.test/v1/me", headers={"Authorization": f"Bearer {key}"})
    echoed = error_for_response(httpx.Response(401, json={"detail": f"bad key {key}"}, request=request), key)
    assert key not in str(echoed) and "bad key ***" in str(echoed)


def test_error_classes_by_status() -> None:
    request = httpx.Request("GET", "http://hub.test/v1/jobs/x")
    for status, cls in [(400, BadRequestError), (422, BadRequestError), (401, AuthenticationError), (403, PermissionDeniedError),
                        (404, NotFoundError), (413, PayloadTooLargeError), (500, ServerError), (503, ServerError)]:
        error = error_for_response(httpx.Response(status, json={"detail": "why"}, request=request))
        assert type(error) is cls and error.message == "why" and isinstance(error, PairioHTTPError)
    plain = error_for_response(httpx.Response(502, text="<html>Bad Gateway</html>", request=request))
    assert isinstance(plain, ServerError) and "Bad Gateway" in plain.message
    assert issubclass(PairioHTTPError, PairioError)


# ---------------------------------------------------------------- retries


@dataclass
class FlakyHandler:
    """Forwards to the hub in-process, but the first ``failures`` calls fail as ``fail`` says."""

    hub: httpx.BaseTransport
    failures: int
    fail: Callable[[httpx.Request, httpx.BaseTransport], httpx.Response]
    calls: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.failures:
            return self.fail(request, self.hub)
        return self.hub.handle_request(request)


def refuse_connection(request: httpx.Request, hub: httpx.BaseTransport) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def unavailable(request: httpx.Request, hub: httpx.BaseTransport) -> httpx.Response:
    return httpx.Response(503, text="upstream restarting")


def lose_the_response(request: httpx.Request, hub: httpx.BaseTransport) -> httpx.Response:
    hub.handle_request(request)  # the hub acts on the request, but its answer never arrives
    raise httpx.ReadError("connection reset by peer", request=request)


def time_out_reading(request: httpx.Request, hub: httpx.BaseTransport) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.fixture
def in_process(app: object, seeded: Seed) -> Iterator[httpx.BaseTransport]:
    transport = SyncASGITransport(app)
    yield transport
    transport.close()


def flaky_client(in_process: httpx.BaseTransport, seeded: Seed, failures: int, fail: Callable[..., httpx.Response]) -> tuple[PairioClient, FlakyHandler]:
    handler = FlakyHandler(in_process, failures, fail)
    return PairioClient(PUBLIC_URL, seeded.key, transport=httpx.MockTransport(handler), retry_policy=NO_WAIT), handler


@pytest.mark.parametrize("fail", [refuse_connection, unavailable, time_out_reading, lose_the_response])
def test_reads_are_retried(in_process: httpx.BaseTransport, seeded: Seed, fail: Callable[..., httpx.Response]) -> None:
    client, handler = flaky_client(in_process, seeded, failures=3, fail=fail)
    assert [s.serviceName for s in client.list_services()] == [seeded.service]
    assert handler.calls == 4


def test_retries_give_up_with_a_connection_error(in_process: httpx.BaseTransport, seeded: Seed) -> None:
    client, handler = flaky_client(in_process, seeded, failures=100, fail=time_out_reading)
    with pytest.raises(PairioConnectionError, match="after 4 attempt"):
        client.get_job("anything")
    assert handler.calls == NO_WAIT.max_attempts


def test_creating_with_the_cache_is_retried_and_makes_one_job(in_process: httpx.BaseTransport, seeded: Seed) -> None:
    client, handler = flaky_client(in_process, seeded, failures=1, fail=lose_the_response)
    job = client.submit_job(service_name=seeded.service, job_definition=hello("once"), required_resources=RESOURCES)
    assert handler.calls == 2
    assert [j.jobId for j in client.find_jobs(service_name=seeded.service)] == [job.jobId]


def test_creating_with_skip_cache_is_not_repeated_blindly(in_process: httpx.BaseTransport, seeded: Seed) -> None:
    client, handler = flaky_client(in_process, seeded, failures=1, fail=lose_the_response)
    with pytest.raises(PairioConnectionError):
        client.submit_job(service_name=seeded.service, job_definition=hello("once"), required_resources=RESOURCES, skip_cache=True)
    assert handler.calls == 1
    assert len(client.find_jobs(service_name=seeded.service)) == 1, "the hub made the job once; the client did not repeat it"

    client, handler = flaky_client(in_process, seeded, failures=1, fail=unavailable)
    with pytest.raises(ServerError):
        client.submit_job(service_name=seeded.service, job_definition=hello("once"), required_resources=RESOURCES, skip_cache=True)
    assert handler.calls == 1

    # A connection that was never made cannot have created anything: that is retried.
    client, handler = flaky_client(in_process, seeded, failures=1, fail=refuse_connection)
    client.submit_job(service_name=seeded.service, job_definition=hello("once"), required_resources=RESOURCES, skip_cache=True)
    assert handler.calls == 2
    assert len(client.find_jobs(service_name=seeded.service)) == 2


# ---------------------------------------------------------------- where the URL and key come from


def test_settings_come_from_arguments_then_env_then_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_client_settings().url == DEFAULT_HUB_URL
    assert resolve_client_settings().api_key is None

    path = save_login("http://hub-a.example:8000/", "key-a")
    assert path == config_path() and path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    settings = resolve_client_settings()
    assert (settings.url, settings.api_key) == ("http://hub-a.example:8000", "key-a")
    assert "key-a" not in repr(settings)

    monkeypatch.setenv("PAIRIO_API_URL", "http://hub-b.example")
    settings = resolve_client_settings()
    assert (settings.url, settings.api_key) == ("http://hub-b.example", None), "hub A's saved key is not sent to hub B"

    monkeypatch.setenv("PAIRIO_API_KEY", "key-env")
    assert resolve_client_settings().api_key == "key-env"
    settings = resolve_client_settings("http://hub-a.example:8000", "key-arg")
    assert (settings.url, settings.api_key, settings.url_source) == ("http://hub-a.example:8000", "key-arg", "argument")

    client = PairioClient()
    assert client.url == "http://hub-b.example" and client.has_api_key
    assert pairio.default_client().url == "http://hub-b.example"
    monkeypatch.setenv("PAIRIO_API_URL", "http://hub-c.example")
    assert pairio.default_client().url == "http://hub-c.example", "the default client follows the environment"


def test_config_file_problems_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(PairioConfigError, match="pairio login"):
        resolve_client_settings()
    with pytest.raises(PairioConfigError, match="http:// or https://"):
        PairioClient("hub.example:8000", "k")
