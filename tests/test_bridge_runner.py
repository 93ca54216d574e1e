"""The bridge's parts on their own: configuration, processor command lines, job state, staging.

Staging runs against a small HTTP server on 127.0.0.1 that can drop a download midway,
so resuming with Range and the size check are exercised for real.
"""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from click.testing import CliRunner

from bridge.backend import Backend, Capacity, JobSubmission, NativeOutcome, NativePhase, SubmitError
from bridge.cli import main as bridge_main
from bridge.config import (
    AppCommandsFile,
    BridgeConfig,
    BridgeConfigError,
    ContainerMode,
    load_bridge_config,
    processor_command,
    save_bridge_config,
    update_app_commands,
)
from bridge.jobdir import JobDir, JobState, RecordedOutcome, RunnerPhase, job_dirs, remove_old_job_dirs
from bridge.runner import BridgeRunner, build_job_file
from bridge.staging import InputCache, StagingError
from pairio.models import PairioComputeClientComputeSlot, PairioJobData, PairioJobRequiredResources

SLOT = PairioComputeClientComputeSlot(numCpus=4, numGpus=0, memoryGb=8, timeSec=3600, multiplicity=2)
RESOURCES = PairioJobRequiredResources(numCpus=2, numGpus=0, memoryGb=1.5, timeSec=60)
GPU_RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=1, memoryGb=1, timeSec=60)


def make_config(**overrides: Any) -> BridgeConfig:
    fields: dict[str, Any] = dict(
        hubUrl="http://127.0.0.1:8000/", serviceName="svc", computeClientId="cc1", computeClientPrivateKey="secret-key",
        label="test bridge", computeSlots=[SLOT], appCommands={"hello_world": "python '/abs path/main.py' --flag"},
    )
    fields.update(overrides)
    return BridgeConfig.model_validate(fields)


# ---------------------------------------------------------------- configuration


def test_config_round_trips_privately_with_absolute_dirs(tmp_path: Path) -> None:
    bridge_dir = tmp_path / "b"
    path = save_bridge_config(bridge_dir, make_config())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_bridge_config(bridge_dir)
    assert loaded.hubUrl == "http://127.0.0.1:8000"
    assert loaded.jobs_path == (bridge_dir / "jobs").resolve()
    assert loaded.cache_path == (bridge_dir / "cache").resolve()
    assert loaded.max_jobs_at_once == 2
    assert "secret-key" not in repr(loaded)


def test_config_errors_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(BridgeConfigError, match="pairio-bridge register --dir"):
        load_bridge_config(tmp_path)
    (tmp_path / "bridge.json").write_text(json.dumps({"hubUrl": "ftp://x"}))
    with pytest.raises(BridgeConfigError, match="hubUrl") as e:
        load_bridge_config(tmp_path)
    assert "serviceName" in str(e.value)


def test_jobs_run_up_to_the_slots_unless_told_to_respect_the_machines_load(tmp_path: Path) -> None:
    save_bridge_config(tmp_path, make_config())
    assert load_bridge_config(tmp_path).respectMachineLoad is False
    # files written before the option carry considerMachineLoad (true, its old default): it no longer holds jobs back
    raw = json.loads((tmp_path / "bridge.json").read_text())
    (tmp_path / "bridge.json").write_text(json.dumps({**raw, "considerMachineLoad": True}))
    assert load_bridge_config(tmp_path).respectMachineLoad is False
    (tmp_path / "bridge.json").write_text(json.dumps({**raw, "respectMachineLoad": True}))
    assert load_bridge_config(tmp_path).respectMachineLoad is True


def test_max_concurrent_jobs_caps_the_slots() -> None:
    assert make_config(maxConcurrentJobs=1).max_jobs_at_once == 1
    assert make_config(maxConcurrentJobs=10).max_jobs_at_once == 2


# ---------------------------------------------------------------- processor command lines


def test_mode_none_runs_the_apps_command(tmp_path: Path) -> None:
    launch = processor_command(make_config(), app_name="hello_world", image="ignored", executable="/app/main.py", job_dir=tmp_path, job_id="J", resources=RESOURCES)
    assert launch.command == ["python", "/abs path/main.py", "--flag"] and launch.watcher_args == ()


def test_mode_none_without_a_command_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BridgeConfigError, match=r"apps add --dir BRIDGE_DIR other=") as e:
        processor_command(make_config(), app_name="other", image=None, executable=None, job_dir=tmp_path, job_id="J", resources=RESOURCES)
    assert "hello_world" in str(e.value)


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_oci_create_command(tmp_path: Path, engine: str) -> None:
    job_dir = tmp_path / "jobs" / "J1"
    launch = processor_command(
        make_config(containerMode=engine, pullPolicy="never"), app_name="a", image="ghcr.io/x/app:1", executable="/app/main.py",
        job_dir=job_dir, job_id="J1", resources=RESOURCES,
    )
    argv, d = launch.command, str(job_dir.resolve())
    assert argv[:2] == [engine, "create"]  # never 'run --rm': docker through podman's socket loses the exit code
    assert argv[-3:] == ["ghcr.io/x/app:1", "python", "/app/main.py"]  # main.py files are not executable
    pairs = list(zip(argv, argv[1:]))
    for pair in [
        ("--name", "pairio-J1"), ("--pull", "never"), ("--cpus", "2"), ("--memory", "1536m"), ("--memory-swap", "1536m"),
        ("--pids-limit", "4096"), ("--network", "none"), ("--env-file", f"{d}/container.env"),
        ("--pairio-owner", "-v"), ("-v", f"{d}/job.json:{d}/job.json:ro"), ("-v", f"{d}/inputs:{d}/inputs:ro"),
        ("-v", f"{d}/outputs:{d}/outputs:rw"), ("-v", f"{d}/work:{d}/work:rw"), ("-v", f"{d}/tmp:/tmp:rw"), ("-w", f"{d}/work"),
    ]:
        assert pair in pairs, pair
    assert "-e" not in argv and "--env" not in argv  # values go through the env file only
    assert f"{d}:{d}" not in argv  # never the whole job directory: the watcher's files there are not the job's
    assert launch.watcher_args == ("--container-engine", engine, "--container-image", "ghcr.io/x/app:1", "--container-name", "pairio-J1")
    plain = processor_command(make_config(containerMode=engine), app_name="a", image="i", executable="/app/run", job_dir=job_dir, job_id="J1", resources=RESOURCES)
    assert plain.command[-2:] == ["i", "/app/run"] and ("--pull", "missing") in list(zip(plain.command, plain.command[1:]))
    networked = processor_command(make_config(containerMode=engine), app_name="a", image="i", executable="e", job_dir=job_dir, job_id="J1", resources=RESOURCES, needs_network=True)
    assert ("--network", "bridge") in list(zip(networked.command, networked.command[1:]))  # the spec's needsNetwork
    assert ("-v", f"{d}/inputs:{d}/inputs:ro") in list(zip(networked.command, networked.command[1:]))
    fetching = processor_command(
        make_config(containerMode=engine), app_name="a", image="i", executable="e", job_dir=job_dir, job_id="J1",
        resources=RESOURCES, needs_network=True, fetches_inputs=True,
    )  # lazy inputs: fetched into the job's own inputs/, never hard links to the bridge's cache
    assert ("-v", f"{d}/inputs:{d}/inputs:rw") in list(zip(fetching.command, fetching.command[1:]))
    gpu = processor_command(make_config(containerMode=engine), app_name="a", image="i", executable="e", job_dir=job_dir, job_id="J1", resources=GPU_RESOURCES)
    assert gpu.command[:2] == [engine, "create"]  # the watcher adds the flags for the GPUs the job is given on its host


def test_gpu_flags_name_exactly_the_jobs_gpus() -> None:
    """podman: one CDI device per GPU; docker: --gpus with a quoted device list; inside, GPUs count from 0."""
    from bridge.watch import container_environment, gpu_options, with_gpu_options

    assert gpu_options("podman", ["1", "3"]) == ["--device", "nvidia.com/gpu=1", "--device", "nvidia.com/gpu=3"]
    assert gpu_options("docker", ["1", "3"]) == ["--gpus", '"device=1,3"']
    assert gpu_options("podman", []) == [] and gpu_options("docker", []) == []  # no GPU asked: none in the container
    create = ["podman", "create", "--name", "pairio-J", "img", "python", "main.py"]
    assert with_gpu_options(create, ["2"]) == ["podman", "create", "--device", "nvidia.com/gpu=2", "--name", "pairio-J", "img", "python", "main.py"]
    assert with_gpu_options(["/usr/bin/docker", *create[1:]], ["0"])[2:4] == ["--gpus", '"device=0"']
    with pytest.raises(ValueError):
        with_gpu_options(["podman", "run", "img"], ["0"])
    job_env = {"PATH": "/host/bin", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "1,3", "X": "y"}
    assert container_environment(job_env, "podman", ["1", "3"])["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert container_environment(job_env, "docker", [])["CUDA_VISIBLE_DEVICES"] == ""
    inside = container_environment(job_env, "apptainer", ["1", "3"])  # --nv shows all of the host's GPUs
    assert inside["CUDA_VISIBLE_DEVICES"] == "1,3" and "PATH" not in inside and inside["TMPDIR"] == "/tmp"


def test_apptainer_command(tmp_path: Path) -> None:
    d = str(tmp_path.resolve())
    config = make_config(containerMode=ContainerMode.APPTAINER)
    launch = processor_command(config, app_name="a", image="ghcr.io/x/app:1", executable="/app/main.py", job_dir=tmp_path, job_id="J", resources=RESOURCES)
    assert launch.command == [
        "apptainer", "exec", "--containall", "--cleanenv", "--bind", f"{d}/job.json:{d}/job.json:ro",
        "--bind", f"{d}/inputs:{d}/inputs:ro", "--bind", f"{d}/outputs:{d}/outputs:rw", "--bind", f"{d}/work:{d}/work:rw",
        "--bind", f"{d}/tmp:/tmp:rw",
        "--pwd", f"{d}/work", "--env-file", f"{d}/container.env", "docker://ghcr.io/x/app:1", "python", "/app/main.py",
    ]
    assert launch.watcher_args == ("--container-engine", "apptainer", "--container-image", "ghcr.io/x/app:1")
    gpu = processor_command(config, app_name="a", image="/images/app.sif", executable="run", job_dir=tmp_path, job_id="J", resources=GPU_RESOURCES)
    assert "--nv" in gpu.command and gpu.command[-2:] == ["/images/app.sif", "run"]
    assert "--memory" not in gpu.command  # the watcher's limits, as for native runs
    limited = processor_command(
        make_config(containerMode=ContainerMode.APPTAINER, apptainerLimits=True), app_name="a", image="/images/app.sif",
        executable="run", job_dir=tmp_path, job_id="J", resources=RESOURCES,
    ).command
    pairs = list(zip(limited, limited[1:]))
    assert ("--memory", "1536M") in pairs and ("--memory-swap", "1536M") in pairs and ("--cpus", "2") in pairs


def test_container_modes_need_an_image(tmp_path: Path) -> None:
    with pytest.raises(BridgeConfigError, match="declares no image"):
        processor_command(make_config(containerMode="docker"), app_name="a", image="", executable="e", job_dir=tmp_path, job_id="J", resources=RESOURCES)


# ---------------------------------------------------------------- job directories and state


def test_state_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    d = JobDir(tmp_path / "jobs" / "J1")
    d.create()
    assert d.read_state() is None
    state = JobState(jobId="J1")
    d.write_state(state)
    state.phase, state.nativeId, state.submitAttempted = RunnerPhase.SUBMITTED, "1234", True
    d.write_state(state)
    state.phase, state.outcome = RunnerPhase.FINISHED, RecordedOutcome.of(NativeOutcome(NativePhase.FAILED, error="boom", exit_code=3))
    d.write_state(state)
    again = d.read_state()
    assert again is not None and again.phase is RunnerPhase.FINISHED and again.nativeId == "1234"
    assert again.outcome is not None and again.outcome.exitCode == 3 and again.outcome.error == "boom"
    assert sorted(p.name for p in d.path.iterdir()) == ["inputs", "outputs", "state.json", "work"]  # no temp file left


def test_console_chunks_and_resource_log_lines(tmp_path: Path) -> None:
    d = JobDir(tmp_path / "J1")
    d.create()
    assert d.read_console_chunk(0, 10) == b"" and d.resource_log() is None
    d.console_file.write_bytes(b"hello world")
    assert d.read_console_chunk(6, 100) == b"world"
    d.resource_log_file.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a":')
    assert d.resource_log() == b'{"a": 1}\n{"a": 2}\n'  # the line being written is left out


def test_old_reported_job_dirs_are_removed(tmp_path: Path) -> None:
    for job_id, phase in (("old", RunnerPhase.REPORTED), ("running", RunnerPhase.SUBMITTED)):
        d = JobDir(tmp_path / job_id)
        d.create()
        d.write_state(JobState(jobId=job_id, phase=phase))
    assert remove_old_job_dirs(tmp_path, 3600) == []
    import time

    assert remove_old_job_dirs(tmp_path, 3600, now=time.time() + 7200) == ["old"]
    assert [d.job_id for d in job_dirs(tmp_path)] == ["running"]


def test_job_file_points_at_the_job_directory(tmp_path: Path) -> None:
    job = PairioJobData.model_validate({
        "jobId": "J1", "serviceName": "svc", "userId": "u",
        "jobDefinition": {
            "appName": "hello_world", "processorName": "count_characters",
            "inputFiles": [{"name": "input", "fileBaseName": "in.txt", "url": "http://h/x"}],
            "outputFiles": [{"name": "output", "fileBaseName": "output.json"}],
            "parameters": [{"name": "include_whitespace", "value": False}],
        },
        "jobDefinitionHash": "h", "requiredResources": RESOURCES.model_dump(), "consoleOutputUrl": "u",
        "resourceUtilizationLogUrl": "u", "timestampCreatedSec": 0, "status": "starting", "isRunnable": True,
    })
    d = JobDir(tmp_path / "J1")
    d.create()
    job_file = build_job_file(job, d)
    assert job_file.inputs[0].path == str((d.path / "inputs/input/in.txt").resolve())
    assert job_file.outputs[0].path == str((d.path / "outputs/output/output.json").resolve())
    assert (d.path / "outputs/output").is_dir()
    assert job_file.parameters == {"include_whitespace": False}
    assert job_file.workingDir == str(d.work_dir.resolve())


# ---------------------------------------------------------------- staging


class FileServer:
    """Serves ``files`` on 127.0.0.1 with Range support; can cut the first N responses short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.cut_after_bytes: dict[str, int] = {}
        self.cuts_left = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append((self.path, self.headers.get("Range", "")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                range_header = self.headers.get("Range")
                if range_header:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cuts_left > 0 and self.path in server.cut_after_bytes:
                    server.cuts_left -= 1
                    self.wfile.write(body[: server.cut_after_bytes[self.path]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[InputCache]:
    c = InputCache(tmp_path / "cache", initial_delay_sec=0.01)
    yield c
    c.close()


def test_an_input_is_downloaded_once_and_linked_read_only(file_server: FileServer, cache: InputCache, tmp_path: Path) -> None:
    file_server.files["/a.txt"] = b"abc" * 1000
    first = cache.stage(f"{file_server.url}/a.txt", tmp_path / "j1/inputs/input/a.txt")
    second = cache.stage(f"{file_server.url}/a.txt", tmp_path / "j2/inputs/input/a.txt")
    assert first.read_bytes() == second.read_bytes() == b"abc" * 1000
    assert len(file_server.requests) == 1
    assert os.stat(first).st_ino == os.stat(second).st_ino  # hard links to the cached copy
    assert not os.access(first, os.W_OK) or os.geteuid() == 0  # a processor cannot spoil the cache


def test_concurrent_jobs_share_one_download(file_server: FileServer, cache: InputCache, tmp_path: Path) -> None:
    file_server.files["/big.bin"] = os.urandom(3 * 1024 * 1024)
    url = f"{file_server.url}/big.bin"
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: cache.stage(url, tmp_path / f"j{i}/in.bin"), range(8)))
    assert all(p.read_bytes() == file_server.files["/big.bin"] for p in paths)
    assert len(file_server.requests) == 1


def test_a_dropped_download_resumes_with_range(file_server: FileServer, cache: InputCache, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 17)
    file_server.files["/x.bin"] = data
    file_server.cut_after_bytes["/x.bin"] = 1024 * 1024
    file_server.cuts_left = 1
    path = cache.stage(f"{file_server.url}/x.bin", tmp_path / "in.bin")
    assert path.read_bytes() == data
    assert [r for _, r in file_server.requests] == ["", f"bytes={1024 * 1024}-"]


def test_a_download_that_keeps_failing_says_so(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/x.bin"] = b"x" * 100_000
    file_server.cut_after_bytes["/x.bin"] = 10
    file_server.cuts_left = 100
    cache = InputCache(tmp_path / "cache", max_attempts=3, initial_delay_sec=0.01)
    # each attempt resumes and gets 10 more bytes, then is cut again
    with pytest.raises(StagingError, match="after 3 attempts"):
        cache.stage(f"{file_server.url}/x.bin", tmp_path / "in.bin")
    assert not cache.cached_path(f"{file_server.url}/x.bin").exists()
    file_server.cuts_left = 0
    assert cache.stage(f"{file_server.url}/x.bin", tmp_path / "in.bin").read_bytes() == b"x" * 100_000
    cache.close()


def test_a_missing_input_fails_at_once(file_server: FileServer, cache: InputCache, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="HTTP 404"):
        cache.stage(f"{file_server.url}/nope", tmp_path / "in.bin")
    assert len(file_server.requests) == 1


# ---------------------------------------------------------------- the command line


def test_register_refuses_to_overwrite_and_explains(tmp_path: Path) -> None:
    save_bridge_config(tmp_path, make_config())
    result = CliRunner().invoke(bridge_main, ["register", "--dir", str(tmp_path), "--service", "svc"])
    assert result.exit_code == 1 and "--force" in result.output


def test_local_without_registration_says_what_to_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(bridge_main, ["local", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "pairio-bridge register --dir" in result.output and "Traceback" not in result.output


def test_register_rejects_a_malformed_app_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(bridge_main, ["register", "--dir", str(tmp_path), "--service", "svc", "--app", "hello_world"])
    assert result.exit_code == 2 and "APP=COMMAND" in result.output


# ---------------------------------------------------------------- what a bridge says of itself


class _NamedBackend:
    def __init__(self, name: str, remote: "str | None" = None) -> None:
        self.name = name
        self.remote = remote

    def remote_host(self) -> "str | None":
        return self.remote


@pytest.mark.parametrize("backend", ["local", "slurm", "ssh"])
def test_every_backend_describes_itself_and_its_claims_as_the_hub_expects(backend: str) -> None:
    from bridge.runner import bridge_info, claim_scope
    from hub.routes.v1_compute import BridgeInfoBody, ClaimBody

    remote = None if backend == "local" else "alice@lab1.example.org:22"  # ssh, or slurm over ssh
    config = make_config(appCommands={"hello_world": "python main.py", "bad name": "python x.py"})
    info = bridge_info(config, _NamedBackend(backend, remote))  # type: ignore[arg-type]
    assert BridgeInfoBody.model_validate(info).model_dump(exclude_none=True) == info
    assert info["backend"] == backend and info["apps"] == ["hello_world"] and info["containerMode"] == "none"
    assert info.get("remoteHost") == remote
    scope = ClaimBody.model_validate({"maxJobs": 1, **claim_scope(config)}).scope()
    assert scope is not None and scope.apps == frozenset({"hello_world"}) and scope.container_mode == "none"


def test_a_container_bridge_claims_images_and_original_sdk_images_only_with_a_network() -> None:
    from bridge.runner import bridge_info, claim_scope

    assert claim_scope(make_config(containerMode="podman")) == {"containerMode": "podman", "originalSdkImages": True}
    assert claim_scope(make_config(containerMode="docker", originalSdkNetwork="none"))["originalSdkImages"] is False
    assert "apps" not in bridge_info(make_config(containerMode="apptainer"), _NamedBackend("slurm"))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the main loop beside a claim


class _EndingBackend(Backend):
    """One running job; counts polls and tells the runner, when asked to, that a job may have ended."""

    name = "local"

    def __init__(self) -> None:
        self.polls = 0
        self.polled = threading.Event()
        self.on_end: Optional[Callable[[], None]] = None
        self.canceled: list[str] = []
        self.cancel_called = threading.Event()

    def capacity(self) -> Capacity:
        return Capacity(numCpus=8, numGpus=0, memoryGb=16)

    def submit(self, job: JobSubmission) -> str:
        raise SubmitError("this test submits nothing")

    def poll(self, native_ids: list[str]) -> dict[str, NativeOutcome]:
        self.polls += 1
        self.polled.set()
        return {native_id: NativeOutcome(NativePhase.RUNNING) for native_id in native_ids}

    def cancel(self, native_ids: list[str]) -> None:
        self.canceled.extend(native_ids)
        self.cancel_called.set()

    def notify_job_end(self, callback: Callable[[], None]) -> None:
        self.on_end = callback


class _WaitingHub:
    """A hub whose claims wait until the test lets them go (a long poll with nothing to hand out)."""

    hub_url = "http://hub.test"

    def __init__(self) -> None:
        self.claims = 0
        self.claim_waiting = threading.Event()
        self.release = threading.Event()

    def my_active_jobs(self) -> list[PairioJobData]:
        return []

    def claim(self, max_jobs: int, wait_sec: float, capacity: object, runs: object = None, ahead: int = 0) -> list[PairioJobData]:
        self.claims += 1
        self.claim_waiting.set()
        assert self.release.wait(120), "the test never let the claim go"
        return []


@contextmanager
def _busy_runner_in_its_loop(tmp_path: Path) -> Iterator[tuple[BridgeRunner, "_EndingBackend", "_WaitingHub"]]:
    """A runner with one running job (so it is busy), its main loop in a thread, its claims held at the hub."""
    config = make_config(jobsDir=str(tmp_path / "jobs"), cacheDir=str(tmp_path / "cache"), pollIntervalSec=600, claimWaitSec=600)
    d = JobDir(config.jobs_path / "job1")
    d.create()
    d.write_state(JobState(jobId="job1", phase=RunnerPhase.SUBMITTED, nativeId="native-1", submitAttempted=True, runningReported=True))
    backend, hub = _EndingBackend(), _WaitingHub()
    runner = BridgeRunner(config, backend, hub)  # type: ignore[arg-type]
    runner._adopt_local_jobs()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            runner.run_cycle()

    main_loop = threading.Thread(target=loop, daemon=True)
    main_loop.start()
    try:
        yield runner, backend, hub
    finally:
        stop.set()
        hub.release.set()
        runner._wake.set()
        main_loop.join(60)
        runner.close()
    assert not main_loop.is_alive()


def test_a_job_end_is_polled_at_once_while_a_claim_waits_at_the_hub(tmp_path: Path) -> None:
    """A busy bridge claims in its claim thread: a job's end on the backend does not wait for the claim's long poll."""
    with _busy_runner_in_its_loop(tmp_path) as (runner, backend, hub):
        assert hub.claim_waiting.wait(60), "the busy bridge never claimed"
        assert backend.polled.wait(60)
        polls = backend.polls
        backend.polled.clear()
        assert backend.on_end is not None
        backend.on_end()  # the backend says a job may have ended; the claim still waits at the hub
        assert backend.polled.wait(60), "the job's end waited for the claim's long poll"
        assert backend.polls == polls + 1 and hub.claims == 1 and not hub.release.is_set()


def test_a_job_end_is_polled_again_once_the_worker_holding_the_job_is_done(tmp_path: Path) -> None:
    """A job a worker holds (its console output or a note going out) is left out of polls; when the backend said a
    job ended meanwhile, the runner polls again as soon as the worker is done, not at the next poll interval."""
    with _busy_runner_in_its_loop(tmp_path) as (runner, backend, hub):
        assert hub.claim_waiting.wait(60) and backend.polled.wait(60)
        polls = backend.polls
        backend.polled.clear()
        runner._jobs["job1"].busy = True  # as a worker sending its console output would
        assert backend.on_end is not None
        backend.on_end()
        for _ in range(600):  # until the loop has taken the end event (a poll that left the held job out)
            if not runner._job_ended.is_set() and runner._recheck_when_free:
                break
            time.sleep(0.1)
        assert runner._recheck_when_free == {"job1"} and backend.polls == polls
        runner._jobs["job1"].busy = False  # the worker is done; it wakes the loop
        runner._wake.set()
        assert backend.polled.wait(60), "the held job was not polled once its worker was done"
        assert backend.polls == polls + 1 and not hub.release.is_set()


def test_a_stop_asked_while_a_worker_holds_the_job_is_sent_once_the_worker_is_done(tmp_path: Path) -> None:
    """The hub asks (through a heartbeat) to stop a job while a worker holds it (sending its ``running`` report or a
    note): the backend is asked to stop it as soon as the worker is done. The heartbeat lists the job as stopping from
    then on, so the hub does not ask again: a cancel once waited for Slurm's time limit so."""
    with _busy_runner_in_its_loop(tmp_path) as (runner, backend, hub):
        assert hub.claim_waiting.wait(60) and backend.polled.wait(60)
        runner._jobs["job1"].busy = True  # as a worker sending its running report would
        with runner._stop_requests_lock:
            runner._stop_requests.add("job1")  # as the heartbeat thread does with the hub's answer
        runner._wake.set()
        for _ in range(600):  # until the loop has taken the request
            if runner._jobs["job1"].cancel_requested:
                break
            time.sleep(0.1)
        assert runner._jobs["job1"].cancel_requested and backend.canceled == []  # held: not sent yet
        runner._jobs["job1"].busy = False  # the worker is done; it wakes the loop
        runner._wake.set()
        assert backend.cancel_called.wait(60), "the stop asked while the job was held was never sent"
        assert backend.canceled == ["native-1"]


class _SlowAppCommandsFile(AppCommandsFile):
    """bridge.json read slowly: the first look that finds a change holds until the test lets it go."""

    def __init__(self, bridge_dir: Path) -> None:
        super().__init__(bridge_dir)
        self.reading, self.go_on = threading.Event(), threading.Event()

    def changed(self) -> Optional[dict[str, str]]:
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp  # as AppCommandsFile: noted as seen, then read
        self.reading.set()
        assert self.go_on.wait(120), "the test never let the read go"
        return load_bridge_config(self.path.parent).appCommands


def test_a_job_prepared_while_the_main_loop_reads_changed_app_commands_gets_the_new_command(tmp_path: Path) -> None:
    """The main loop (before a claim) and a worker (before a job's command) both look at bridge.json: the one that
    comes second waits for the first to take up the change, instead of finding it 'seen' and using the old command
    (a job claimed just after 'pairio-bridge apps add' ran with the command from before)."""
    bridge_dir = tmp_path / "b"
    save_bridge_config(bridge_dir, make_config(appCommands={"hello_world": "/bin/false"}))
    watched = _SlowAppCommandsFile(bridge_dir)
    runner = BridgeRunner(make_config(appCommands={"hello_world": "/bin/false"}), _EndingBackend(), _WaitingHub(), app_commands_file=watched)  # type: ignore[arg-type]
    try:
        update_app_commands(bridge_dir, add={"hello_world": "/bin/true"})
        main_loop = threading.Thread(target=runner._refresh_app_commands)
        main_loop.start()
        assert watched.reading.wait(120)
        seen: list[dict[str, str]] = []

        def worker() -> None:
            runner._refresh_app_commands()
            seen.append(dict(runner.config.appCommands))

        preparing = threading.Thread(target=worker)
        preparing.start()
        watched.go_on.set()
        main_loop.join(120)
        preparing.join(120)
        assert seen == [{"hello_world": "/bin/true"}]
    finally:
        runner.close()


def test_jobs_are_claimed_ahead_only_while_the_jobs_here_run_short() -> None:
    runner = BridgeRunner(make_config(claimAheadJobs=2), _EndingBackend(), _WaitingHub())  # type: ignore[arg-type]
    assert runner._ahead_room() == 2  # before any job ended: yes (long ones go back once, and then it stops)
    runner._note_run_time(0.05)
    assert runner._ahead_room() == 2
    for _ in range(20):  # jobs of a minute: a slot frees seldom, and a held job would mostly go back
        runner._note_run_time(60.0)
    assert runner._ahead_room() == 0
    runner._note_run_time(0.05)  # one short job among long ones does not turn it on again
    assert runner._ahead_room() == 0
    for _ in range(40):
        runner._note_run_time(0.05)
    assert runner._ahead_room() == 2
    assert BridgeRunner(make_config(claimAheadJobs=0), _EndingBackend(), _WaitingHub())._ahead_room() == 0  # type: ignore[arg-type]


def test_a_claim_of_its_own_while_every_slot_is_busy_asks_for_a_whole_refill_of_jobs_ahead(tmp_path: Path) -> None:
    from bridge.runner import TrackedJob

    runner = BridgeRunner(make_config(claimAheadJobs=2), _EndingBackend(), _WaitingHub())  # type: ignore[arg-type]
    runner._reconcile_needed = False  # as once its jobs were compared with the hub's at the start

    def track(job_id: str, phase: RunnerPhase) -> None:
        runner._jobs[job_id] = TrackedJob(dir=JobDir(tmp_path / job_id), state=JobState(jobId=job_id, phase=phase), resources=RESOURCES)

    track("a", RunnerPhase.SUBMITTED)
    track("b", RunnerPhase.SUBMITTED)  # both slots busy, nothing held
    request = runner._claim_request()
    assert request is not None and request.max_jobs == 2 and request.ahead == 2
    track("c", RunnerPhase.STAGED)  # one held: room for one more
    assert runner._claim_request() is None  # not a claim of its own for it: a finish report's claim tops it up
    request = runner._claim_request(leaving=1)  # the finish report of a or b: c takes that slot, two may come ahead
    assert request is not None and request.max_jobs == 2 and request.ahead == 2
    track("d", RunnerPhase.STAGED)
    request = runner._claim_request(leaving=1)
    assert request is not None and request.max_jobs == 1
    track("e", RunnerPhase.STAGED)
    assert runner._claim_request(leaving=1) is None  # two held already beyond the slot c will take
