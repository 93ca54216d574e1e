"""Inputs read remotely: a lazily staging bridge downloads an input only when the processor asks for a local copy.

A real hub process and a real ``pairio-bridge local`` process (the fixtures of
tests/test_bridge_e2e.py) run an app written with the SDK; its inputs are served by a
file server on 127.0.0.1 that records every request. A processor that only calls
``get_url()`` (as the original apps do with large NWB files) causes no download; one that
calls ``download()`` gets the file through the bridge's cache, so a second job reading the
same URL downloads nothing. A bridge set to stage ahead downloads before the job starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from bridge.config import BridgeConfig, ContainerMode
from bridge.runner import LazyInputs, lazy_inputs
from bridge.staging import InputStaging, input_staging_for
from pairio import PairioJobDefinition, PairioJobRequiredResources
from pairio.job import PairioJob
from pairio.jobfile import PairioJobFile

from . import test_bridge_e2e as e2e
from .slurm_support import SlurmLab
from .ssh_support import TestSshd, sshd  # noqa: F401 - the fixture
from .test_bridge_e2e import PAIRIO, Stack, public_get
from .test_bridge_runner import FileServer
from .test_slurm_e2e import SlurmStack
from .test_ssh_e2e import ssh_args

hub = e2e.hub
stack = e2e.stack

READER_MAIN = textwrap.dedent(
    '''
    """A test app: one processor passes its input's URL on, the other reads a local copy."""
    import json
    from pathlib import Path

    from pairio.sdk import App, BaseModel, Field, InputFile, OutputFile, ProcessorBase

    app = App("reader", description="Reads inputs remotely or locally")


    class Context(BaseModel):
        input: InputFile = Field(description="the input")
        output: OutputFile = Field(description="what the processor saw")


    class UrlOnly(ProcessorBase):
        name = "url_only"
        description = "Reports the input's URL, as an app handing it to a remote-file reader"
        label = "URL only"
        image = ""
        executable = "/app/main.py"
        attributes = {}

        @staticmethod
        def run(context: Context) -> None:
            Path("out.json").write_text(json.dumps({"url": context.input.get_url(), "staged": Path(context.input.path).exists()}))
            context.output.upload("out.json")


    class Download(ProcessorBase):
        name = "download"
        description = "Downloads the input and reports its content"
        label = "Download"
        image = ""
        executable = "/app/main.py"
        attributes = {}

        @staticmethod
        def run(context: Context) -> None:
            local = context.input.download("copy.bin")
            Path("out.json").write_text(json.dumps({"text": Path(local).read_text()}))
            context.output.upload("out.json")


    app.add_processor(UrlOnly)
    app.add_processor(Download)

    if __name__ == "__main__":
        app.run()
    '''
)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.files["/data/big.nwb"] = b"pretend this is a large NWB file"
    yield server
    server.close()


def add_reader(stack: Stack) -> str:
    """Write the reader app, make its spec with ``pairio make-app-spec``, register it; its --app argument."""
    app_dir = stack.tmp_path / "reader"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(READER_MAIN)
    result = subprocess.run(
        PAIRIO + ["make-app-spec", "--app-dir", str(app_dir)], capture_output=True, text=True, timeout=120, check=False,
        env=stack.env,
    )
    assert result.returncode == 0, f"pairio make-app-spec failed:\n{result.stdout}\n{result.stderr}"
    stack.hub.admin("add-app", stack.service, str(app_dir / "spec.json"))
    return f"reader={sys.executable} {app_dir / 'main.py'}"


def submit(stack: Stack, processor: str, url: str) -> PairioJob:
    definition = PairioJobDefinition.model_validate({
        "appName": "reader", "processorName": processor,
        "inputFiles": [{"name": "input", "fileBaseName": "big.nwb", "url": url}],
        "outputFiles": [{"name": "output", "fileBaseName": "out.json"}],
        "parameters": [],
    })
    resources = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=60)
    return stack.client.submit_job(stack.service, definition, resources, skip_cache=True)


def output_of(stack: Stack, job: PairioJob) -> dict[str, Any]:
    done = stack.wait_done(job, 90)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    result: dict[str, Any] = json.loads(public_get(done.get_output("output")).text)
    return result


def downloads(server: FileServer) -> int:
    return sum(1 for path, _range in server.requests if path == "/data/big.nwb")


def test_a_lazy_bridge_downloads_only_what_the_processor_downloads(stack: Stack, file_server: FileServer) -> None:
    stack.register("--app", add_reader(stack))  # the local bridge: lazy by default
    stack.bridge.start()
    url = f"{file_server.url}/data/big.nwb"

    seen = output_of(stack, submit(stack, "url_only", url))
    assert seen == {"url": url, "staged": False}
    assert downloads(file_server) == 0, "get_url() alone must not download the input"

    first = submit(stack, "download", url)
    assert output_of(stack, first) == {"text": "pretend this is a large NWB file"}
    assert downloads(file_server) == 1
    cached = [p for p in (stack.bridge_dir / "cache").iterdir() if not p.name.endswith((".lock", ".json"))]
    assert len(cached) == 1 and cached[0].read_bytes() == file_server.files["/data/big.nwb"]
    staged = stack.bridge_dir / "jobs" / first.jobId / "inputs" / "input" / "big.nwb"
    assert staged.read_bytes() == file_server.files["/data/big.nwb"]

    # A second job reading the same URL (a new job: submitted with skipCache) gets it from the bridge's cache.
    assert output_of(stack, submit(stack, "download", url)) == {"text": "pretend this is a large NWB file"}
    assert downloads(file_server) == 1


def test_a_bridge_set_to_stage_ahead_downloads_before_the_job_starts(stack: Stack, file_server: FileServer) -> None:
    stack.register("--app", add_reader(stack), config_updates={"inputStaging": "ahead"})
    stack.bridge.start()
    url = f"{file_server.url}/data/big.nwb"
    assert output_of(stack, submit(stack, "url_only", url)) == {"url": url, "staged": True}
    assert downloads(file_server) == 1


def test_a_lazy_input_that_cannot_be_fetched_fails_the_job_naming_the_url(stack: Stack, file_server: FileServer) -> None:
    stack.register("--app", add_reader(stack))
    stack.bridge.start()
    missing = f"{file_server.url}/data/missing.nwb"
    done = stack.wait_done(submit(stack, "download", missing), 90)
    assert done.status.value == "failed"
    assert "missing.nwb" in public_get(done.consoleOutputUrl).text and "404" in public_get(done.consoleOutputUrl).text


@pytest.mark.parametrize("kind, expected", [("local", InputStaging.LAZY), ("slurm", InputStaging.AHEAD), ("ssh", InputStaging.AHEAD)])
def test_input_staging_defaults_by_bridge_kind(kind: str, expected: InputStaging) -> None:
    assert input_staging_for(None, kind) is expected
    assert input_staging_for(InputStaging.LAZY, kind) is InputStaging.LAZY
    assert input_staging_for(InputStaging.AHEAD, kind) is InputStaging.AHEAD


def test_an_unknown_staging_setting_is_refused_saying_the_choices() -> None:
    base = {"hubUrl": "http://127.0.0.1:1", "serviceName": "s", "computeClientId": "c", "computeClientPrivateKey": "k",
            "label": "l", "computeSlots": [{"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}]}
    assert BridgeConfig.model_validate({**base, "inputStaging": "lazy"}).inputStaging is InputStaging.LAZY
    with pytest.raises(ValueError, match="'ahead' or 'lazy'"):
        BridgeConfig.model_validate({**base, "inputStaging": "later"})


CACHE = Path("/srv/bridge/cache")


@pytest.mark.parametrize(
    "kind, mode, needs_network, expected",
    [
        ("local", ContainerMode.NONE, False, LazyInputs(cache_dir=str(CACHE))),  # on the bridge's own disk: its cache
        ("slurm", ContainerMode.NONE, False, LazyInputs(cache_dir=str(CACHE))),  # the shared file system
        ("ssh", ContainerMode.NONE, False, LazyInputs(cache_dir=None)),  # another host: a cache of the job's own
        ("local", ContainerMode.PODMAN, False, None),  # --network none: it could not fetch, so ahead
        ("local", ContainerMode.DOCKER, False, None),
        ("local", ContainerMode.PODMAN, True, LazyInputs(cache_dir=None)),  # the container sees only its job directory
        ("local", ContainerMode.APPTAINER, False, LazyInputs(cache_dir=None)),  # apptainer keeps the host's network
    ],
)
def test_where_a_lazy_job_fetches_its_inputs(kind: str, mode: ContainerMode, needs_network: bool, expected: Optional[LazyInputs]) -> None:
    assert lazy_inputs(InputStaging.LAZY, kind, mode, needs_network, CACHE) == expected
    assert lazy_inputs(InputStaging.AHEAD, kind, mode, needs_network, CACHE) is None


@pytest.fixture
def ssh_stack(hub: tuple[e2e.HubProcess, str], tmp_path: Path, sshd: TestSshd) -> Iterator[Stack]:  # noqa: F811
    s = Stack(hub[0], hub[1], tmp_path, bridge_kind="ssh", bridge_args=ssh_args(sshd, tmp_path))
    try:
        yield s
    finally:
        s.close()


def test_an_ssh_bridge_set_to_lazy_fetches_on_the_remote_host(ssh_stack: Stack) -> None:
    """SSH stages ahead by default; set to lazy, nothing goes up with the job and the processor fetches its input there."""
    stack = ssh_stack
    stack.register(config_updates={"inputStaging": "lazy"})
    stack.bridge.start()
    produce = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "greeting.txt"}], text="Hello, lazy!")
    count = stack.submit("count", inputs=[{"name": "input", "fileBaseName": "in.txt", "url": produce.get_output("output")}],
                         outputs=[{"name": "output", "fileBaseName": "output.json"}])
    done = stack.wait_done(count, 60)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert json.loads(public_get(done.outputFileResults[0].url).text) == {"count": 12, "text": "Hello, lazy!"}
    remote = stack.tmp_path / "remote" / "jobs" / count.jobId
    assert json.loads((remote / "job.json").read_text())["inputStaging"] == "lazy"
    assert (remote / "inputs" / "input" / "in.txt").read_text() == "Hello, lazy!"  # fetched there, by the processor
    assert not (stack.bridge_dir / "jobs" / count.jobId / "inputs" / "input" / "in.txt").exists()  # not staged locally


def test_a_job_file_staged_ahead_reads_as_before(tmp_path: Path) -> None:
    """Processors with an older SDK refuse unknown job-file fields: an ahead job's file has none of the new ones."""
    job = PairioJobFile(jobId="j", serviceName="s", appName="a", processorName="p", workingDir="/w",
                        requiredResources=PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=1, timeSec=60))
    job.write(tmp_path / "job.json")
    written = json.loads((tmp_path / "job.json").read_text())
    assert "inputStaging" not in written and "cacheDir" not in written
    assert PairioJobFile.read(tmp_path / "job.json").inputStaging == "ahead"
    lazy = job.model_copy(update={"inputStaging": "lazy", "cacheDir": "/c"})
    assert json.loads(lazy.to_json())["inputStaging"] == "lazy" and json.loads(lazy.to_json())["cacheDir"] == "/c"


@pytest.fixture
def slurm_stack(slurm_cluster: SlurmLab, hub: tuple[e2e.HubProcess, str], tmp_path: Path) -> Iterator[SlurmStack]:
    s = SlurmStack(hub[0], hub[1], tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_a_slurm_bridge_set_to_lazy_fetches_through_its_cache_on_the_shared_file_system(slurm_stack: SlurmStack) -> None:
    """Slurm stages ahead by default (nodes without network); set to lazy, the job fetches its input through the bridge's cache."""
    stack = slurm_stack
    stack.register(config_updates={"inputStaging": "lazy"})
    stack.bridge.start()
    produce = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "greeting.txt"}], text="Hello, node!")
    count = stack.submit("count", inputs=[{"name": "input", "fileBaseName": "in.txt", "url": produce.get_output("output")}],
                         outputs=[{"name": "output", "fileBaseName": "output.json"}])
    done = stack.wait_done(count, 120)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert json.loads(public_get(done.outputFileResults[0].url).text) == {"count": 12, "text": "Hello, node!"}
    job_file = json.loads((stack.bridge_dir / "jobs" / count.jobId / "job.json").read_text())
    assert job_file["inputStaging"] == "lazy" and job_file["cacheDir"] == str((stack.bridge_dir / "cache").resolve())
    cached = [p for p in (stack.bridge_dir / "cache").iterdir() if not p.name.endswith((".lock", ".json"))]
    assert [p.read_text() for p in cached] == ["Hello, node!"]
