"""End to end: a real hub process (``pairio hub serve``) and real ``pairio-bridge local`` processes.

The processor is a small script written here (it reads PAIRIO_JOB_FILE and writes its
outputs where the job file says), so these tests depend on the bridge and the hub
only. Each test registers its own bridge for its own service, so a job left over by
one test is never claimed by the next. Processes record what they did in files
(start/end times, pids, run counts), which is how the tests see concurrency, cancels
and "exactly once".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import httpx
import psutil
import pytest

from pairio import PairioClient, PairioJobDefinition, PairioJobRequiredResources
from pairio.job import PairioJob

from .hubtools import free_port

PAIRIO = [sys.executable, "-m", "pairio.cli"]
PAIRIO_BRIDGE = [sys.executable, "-c", "from bridge.cli import main; main()"]
RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=120)

PROCESSOR = textwrap.dedent(
    '''
    """A test processor: behaviour chosen by the job's processor name and parameters."""
    import json, os, sys, time
    from pathlib import Path

    job = json.loads(Path(os.environ["PAIRIO_JOB_FILE"]).read_text())
    p = job["parameters"]
    record = Path(p["record_dir"]) if p.get("record_dir") else None
    if record:
        record.mkdir(parents=True, exist_ok=True)
        with open(record / f"runs-{job['jobId']}.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")
        (record / f"pid-{job['jobId']}").write_text(str(os.getpid()))
    start = time.time()
    print(p.get("message", ""), flush=True)
    for i in range(int(p.get("lines", 0))):
        print(f"line {i}", flush=True)
        time.sleep(float(p.get("line_interval", 0)))
    time.sleep(float(p.get("sleep", 0)))
    while p.get("go_file") and not Path(p["go_file"]).exists():  # until the test lets it end
        time.sleep(0.05)
    if job["processorName"] == "produce" and not p.get("skip_output"):
        Path(job["outputs"][0]["path"]).write_text(p["text"])
    if job["processorName"] == "count":
        entry = job["inputs"][0]
        if job.get("inputStaging") == "lazy":  # the local bridge's default: this processor fetches its input
            from pairio.input_cache import fetch_input
            fetch_input(entry["url"], Path(entry["path"]), Path(job["cacheDir"]) if job.get("cacheDir") else None)
        text = Path(entry["path"]).read_text()
        Path(job["outputs"][0]["path"]).write_text(json.dumps({"count": len(text), "text": text}))
    if record:
        (record / f"span-{job['jobId']}.json").write_text(json.dumps({"start": start, "end": time.time()}))
    print("done", flush=True)
    sys.exit(int(p.get("exit_code", 0)))
    '''
)

COMMON_PARAMETERS = [
    {"name": "message", "type": "str", "default": ""},
    {"name": "sleep", "type": "float", "default": 0.0},
    {"name": "exit_code", "type": "int", "default": 0},
    {"name": "record_dir", "type": "str", "default": ""},
    {"name": "lines", "type": "int", "default": 0},
    {"name": "line_interval", "type": "float", "default": 0.0},
    {"name": "index", "type": "int", "default": 0},
    {"name": "go_file", "type": "str", "default": ""},
]

TEST_APP_SPEC: dict[str, Any] = {
    "name": "testapp",
    "description": "processors for the bridge's end-to-end tests",
    "processors": [
        {"name": "work", "executable": "/app/main.py", "parameters": COMMON_PARAMETERS},
        {
            "name": "produce", "executable": "/app/main.py", "outputs": [{"name": "output"}],
            "parameters": COMMON_PARAMETERS + [{"name": "text", "type": "str", "default": ""}, {"name": "skip_output", "type": "bool", "default": False}],
        },
        {
            "name": "count", "executable": "/app/main.py", "inputs": [{"name": "input"}], "outputs": [{"name": "output"}],
            "parameters": COMMON_PARAMETERS,
        },
    ],
}


def wait_for(condition: Callable[[], Any], timeout_sec: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_sec
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_sec} s waiting for {what}")
        time.sleep(interval)


class OutputCollector:
    """Collects a subprocess's combined output as it comes, so a failing test can show it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)


class HubProcess:
    """``pairio hub serve`` on a free port, restartable on the same port and data directory."""

    def __init__(self, data_dir: Path, settings_env: Optional[dict[str, str]] = None) -> None:
        self.data_dir = data_dir
        self.settings_env = settings_env or {}
        """PAIRIO_HUB_* variables for its settings"""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen[str]] = None
        self.output: Optional[OutputCollector] = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            PAIRIO + ["hub", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PAIRIO_HUB_CLAIM_RECHECK_INTERVAL_SEC": "0.5", **self.settings_env},
        )
        self.output = OutputCollector(self.process)
        wait_for(self._answers, 30, f"the hub at {self.url}")

    def _answers(self) -> bool:
        assert self.process is not None and self.output is not None
        if self.process.poll() is not None:
            raise AssertionError(f"pairio hub serve exited with {self.process.returncode}:\n{self.output.text}")
        try:
            return httpx.get(f"{self.url}/docs", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def admin(self, *args: str) -> str:
        if not (self.data_dir / "hub.db").exists():  # pairio admin refuses a directory with no hub database
            subprocess.run(PAIRIO + ["hub", "init", "--data-dir", str(self.data_dir)], capture_output=True, timeout=60, check=True)
        result = subprocess.run(
            PAIRIO + ["admin", "--data-dir", str(self.data_dir), *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"pairio admin {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout


UNTIL_STOPPED_SEC = 600.0
"""how long a job that must be stopped sleeps: far beyond every wait in these tests"""
LONG_POLL_SEC = 600.0
"""the longest wait the module's hub lets a claim or a heartbeat have: far beyond every wait in these tests, so a
bridge that hears of something within one heard of it through the hub answering early or a signal, not a timeout"""
LONG_POLL_HUB_ENV = {
    "PAIRIO_HUB_CLAIM_MAX_WAIT_SEC": str(LONG_POLL_SEC),
    "PAIRIO_HUB_HEARTBEAT_TIMEOUT_SEC": str(4 * LONG_POLL_SEC),  # the hub caps a heartbeat's wait at a quarter of it
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str]]:
    """One hub for the module, with a user 'alice' created by ``pairio admin``; yields it and her key.

    Its long polls may last LONG_POLL_SEC (see LONG_POLL_HUB_ENV); bridges ask for short ones unless a test says otherwise."""
    data_dir = tmp_path_factory.mktemp("hub")
    h = HubProcess(data_dir, LONG_POLL_HUB_ENV)
    key = h.admin("create-user", "alice").strip().splitlines()[-1]
    h.start()
    try:
        yield h, key
    finally:
        h.stop()


class BridgeProcess:
    """``pairio-bridge KIND --dir DIR [ARGS]`` as its own process (KIND: local, slurm, ssh)."""

    def __init__(self, bridge_dir: Path, env: dict[str, str], kind: str = "local", args: tuple[str, ...] = ()) -> None:
        self.bridge_dir = bridge_dir
        self.env = env
        self.kind = kind
        self.args = args
        self.process: Optional[subprocess.Popen[str]] = None
        self.outputs: list[OutputCollector] = []

    def start(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            PAIRIO_BRIDGE + [self.kind, "--dir", str(self.bridge_dir), *self.args, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
        )
        self.outputs.append(OutputCollector(self.process))

    @property
    def log(self) -> str:
        return "\n---- restarted ----\n".join(o.text for o in self.outputs)

    def log_with_stacks(self) -> str:
        """The log now, after the bridge printed every thread's stack (SIGUSR1): for a test that timed out."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10  # a liveness bound: the dump is written at once
            while "Current thread" not in self.log and "Thread 0x" not in self.log and time.monotonic() < deadline:
                time.sleep(0.1)
        return self.log

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # drains
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGTERM)  # a second one exits at once
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Stack:
    """A service of its own on the shared hub, the test app, and a bridge registered for it.

    ``bridge_kind`` and ``bridge_args`` choose the bridge (``pairio-bridge KIND --dir DIR ARGS``);
    ``register(config_updates=...)`` adds settings to its bridge.json (e.g. Slurm site options).
    """

    def __init__(self, hub: HubProcess, key: str, tmp_path: Path, bridge_kind: str = "local", bridge_args: tuple[str, ...] = ()) -> None:
        self.hub = hub
        self.key = key
        self.tmp_path = tmp_path
        self.service = f"svc_{uuid.uuid4().hex[:10]}"
        self.record_dir = tmp_path / "records"
        self.client = PairioClient(hub.url, key)
        self.processor = tmp_path / "processor.py"
        self.processor.write_text(PROCESSOR)
        self.env = {
            **os.environ, "PAIRIO_API_URL": hub.url, "PAIRIO_API_KEY": key, "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "PYTHONUNBUFFERED": "1",
        }
        headers = {"Authorization": f"Bearer {key}"}
        httpx.post(f"{hub.url}/v1/services", json={"serviceName": self.service}, headers=headers, timeout=30).raise_for_status()
        httpx.put(f"{hub.url}/v1/services/{self.service}/apps/testapp", json=TEST_APP_SPEC, headers=headers, timeout=30).raise_for_status()
        self.bridge_dir = tmp_path / "bridge"
        self.bridge = BridgeProcess(self.bridge_dir, self.env, bridge_kind, bridge_args)

    def register(self, *extra: str, config_updates: Optional[dict[str, Any]] = None) -> None:
        result = subprocess.run(
            PAIRIO_BRIDGE + [
                "register", "--dir", str(self.bridge_dir), "--service", self.service, "--name", "e2e bridge",
                "--app", f"testapp={sys.executable} {self.processor}", *extra,
            ],
            capture_output=True, text=True, timeout=60, env=self.env, check=False,
        )
        assert result.returncode == 0, f"pairio-bridge register failed:\n{result.stdout}\n{result.stderr}"
        # Faster cycles than the defaults keep the tests short; other programs' CPU load
        # (tests running beside these) must not keep the bridge from claiming.
        config_path = self.bridge_dir / "bridge.json"
        config = json.loads(config_path.read_text())
        config.update(pollIntervalSec=0.2, heartbeatIntervalSec=0.5, claimWaitSec=5, considerMachineLoad=False)
        config.update(config_updates or {})
        config_path.write_text(json.dumps(config))

    def submit(self, processor: str, *, inputs: Optional[list[dict[str, str]]] = None, outputs: Optional[list[dict[str, str]]] = None, **parameters: Any) -> PairioJob:
        parameters.setdefault("record_dir", str(self.record_dir))
        definition = PairioJobDefinition.model_validate({
            "appName": "testapp", "processorName": processor,
            "inputFiles": inputs or [], "outputFiles": outputs or [],
            "parameters": [{"name": k, "value": v} for k, v in parameters.items()],
        })
        return self.client.submit_job(self.service, definition, RESOURCES, skip_cache=True)

    def wait_done(self, job: PairioJob, timeout_sec: float = 30) -> PairioJob:
        def done() -> Optional[PairioJob]:
            j = self.client.get_job(job.jobId)
            return j if j.status.is_terminal else None

        try:
            return wait_for(done, timeout_sec, f"job {job.jobId} to finish", interval=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}; bridge log:\n{self.bridge.log}") from None

    def wait_status(self, job: PairioJob, status: str, timeout_sec: float = 30) -> None:
        try:
            wait_for(lambda: self.client.get_job(job.jobId).status.value == status, timeout_sec, f"job {job.jobId} to be {status}", 0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; bridge log:\n{self.bridge.log}") from None

    def runs_of(self, job: PairioJob) -> int:
        path = self.record_dir / f"runs-{job.jobId}.txt"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def close(self) -> None:
        self.bridge.stop()
        self.client.close()


@pytest.fixture
def stack(hub: tuple[HubProcess, str], tmp_path: Path) -> Iterator[Stack]:
    s = Stack(hub[0], hub[1], tmp_path)
    try:
        yield s
    finally:
        s.close()


def public_get(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response


# ---------------------------------------------------------------- the tests


def test_jobs_complete_with_console_output_outputs_and_a_chained_input(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    produce = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "greeting.txt"}],
                           message="Hello, world!", text="Hello, Pairio!", sleep=0.5)
    output_url = produce.get_output("output")
    # Submitted at once: the hub holds it until the first job's output exists, then the bridge stages it.
    count = stack.submit("count", inputs=[{"name": "input", "fileBaseName": "in.txt", "url": output_url}],
                         outputs=[{"name": "output", "fileBaseName": "output.json"}])
    assert not count.isRunnable

    done = stack.wait_done(produce)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert "Hello, world!" in public_get(done.consoleOutputUrl).text
    assert public_get(output_url).text == "Hello, Pairio!"

    chained = stack.wait_done(count)
    assert chained.status.value == "completed", (chained.error, stack.bridge.log)
    result = json.loads(public_get(chained.outputFileResults[0].url).text)
    assert result == {"count": len("Hello, Pairio!"), "text": "Hello, Pairio!"}
    assert chained.timestampStartedSec is not None and done.timestampFinishedSec is not None
    assert chained.timestampStartedSec >= done.timestampFinishedSec
    # the staged input is in the job's directory, as a file of its own
    staged = stack.bridge_dir / "jobs" / count.jobId / "inputs" / "input" / "in.txt"
    assert staged.read_text() == "Hello, Pairio!"
    # and the resource log went up with the job
    assert public_get(chained.resourceUtilizationLogUrl).status_code == 200


def test_outputs_named_with_url_characters_are_served_and_chained(stack: Stack) -> None:
    """File names with '?', '#' or '%' get percent-encoded URLs that answer, and stage as inputs of the next job."""
    stack.register()
    stack.bridge.start()
    names = ["a?b.txt", "x#y.txt", "%2e%2e"]
    pairs = []
    for i, name in enumerate(names):
        produce = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": name}], text=f"content {i}")
        url = produce.get_output("output")
        assert url.endswith("/outputs/output/" + {"a?b.txt": "a%3Fb.txt", "x#y.txt": "x%23y.txt", "%2e%2e": "%252e%252e"}[name])
        count = stack.submit("count", inputs=[{"name": "input", "fileBaseName": name, "url": url}],
                             outputs=[{"name": "output", "fileBaseName": "output.json"}])
        assert count.jobDependencies == [produce.jobId], "the input URL is recognised as the first job's output"
        pairs.append((name, produce, url, count))
    for i, (name, produce, url, count) in enumerate(pairs):
        done = stack.wait_done(produce)
        assert done.status.value == "completed", (name, done.error, stack.bridge.log)
        assert done.outputFileResults[0].url == url
        assert public_get(url).text == f"content {i}", name
        chained = stack.wait_done(count)
        assert chained.status.value == "completed", (name, chained.error, stack.bridge.log)
        assert json.loads(public_get(chained.outputFileResults[0].url).text)["text"] == f"content {i}"
        assert (stack.bridge_dir / "jobs" / count.jobId / "inputs" / "input" / name).read_text() == f"content {i}"


def test_failures_say_why(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    failing = stack.submit("work", message="about to fail", exit_code=3)
    missing = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "x.txt"}], skip_output=True, index=1)
    failed = stack.wait_done(failing)
    assert failed.status.value == "failed"
    assert "exited with code 3" in (failed.error or ""), failed.error
    assert "about to fail" in public_get(failed.consoleOutputUrl).text
    no_output = stack.wait_done(missing)
    assert no_output.status.value == "failed"
    assert "did not produce output 'output'" in (no_output.error or ""), no_output.error


def test_cancel_stops_a_running_job_before_it_ends_on_its_own(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    job = stack.submit("work", message="long", sleep=UNTIL_STOPPED_SEC)  # far beyond the waits below
    pid_file = stack.record_dir / f"pid-{job.jobId}"
    stack.wait_status(job, "running", 60)
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the processor to start"))
    canceled_at = time.monotonic()
    stack.client.cancel_job(job.jobId)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 60, "the processor to stop")
    print(f"\ncancel -> processor gone: {time.monotonic() - canceled_at:.2f} s")  # information only
    failed = stack.wait_done(job, 60)
    assert failed.status.value == "failed" and "canceled" in (failed.error or ""), failed.error


def test_twenty_jobs_never_more_than_two_at_once(stack: Stack) -> None:
    stack.register("--num-cpus", "1", "--multiplicity", "2")
    stack.bridge.start()
    jobs = [stack.submit("work", index=i, sleep=0.3) for i in range(20)]
    for job in jobs:
        done = stack.wait_done(job, 60)
        assert done.status.value == "completed", done.error
    most = most_at_once(stack, jobs)
    assert most <= 2, f"{most} jobs ran at once"
    assert most == 2, "the two slots were never used together"
    assert all(stack.runs_of(j) == 1 for j in jobs)


def most_at_once(stack: Stack, jobs: list[Any]) -> int:
    """The most jobs whose recorded (start, end) spans overlapped; touching spans do not overlap."""
    spans = [json.loads((stack.record_dir / f"span-{j.jobId}.json").read_text()) for j in jobs]
    # an end sorts before a start at the same instant
    events = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    at_once, most = 0, 0
    for _, change in events:
        at_once += change
        most = max(most, at_once)
    return most


def test_a_bridge_killed_mid_job_finishes_it_exactly_once_after_restart(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    job = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "out.txt"}], text="survived",
                       message="before", lines=6, line_interval=0.5)
    stack.wait_status(job, "running")
    wait_for(lambda: stack.runs_of(job) == 1, 15, "the processor to start")
    stack.bridge.kill()  # SIGKILL: no chance to clean up
    time.sleep(1.0)
    stack.bridge.start()
    done = stack.wait_done(job, 30)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert stack.runs_of(job) == 1
    console = public_get(done.consoleOutputUrl).text
    assert console.startswith("before\n") and "line 5" in console and console.endswith("done\n")
    assert console.count("line 0") == 1
    assert public_get(done.outputFileResults[0].url).text == "survived"
    assert "re-adopted job" in stack.bridge.log


def test_the_hub_restarted_mid_job_loses_nothing(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    job = stack.submit("produce", outputs=[{"name": "output", "fileBaseName": "out.txt"}], text="kept",
                       message="first", lines=8, line_interval=0.4)
    stack.wait_status(job, "running")
    wait_for(lambda: "line 1" in stack.client.get_console_output(job.jobId), 15, "console output to reach the hub")
    stack.hub.kill()
    time.sleep(2.0)  # the job goes on printing while the hub is down
    stack.hub.start()
    done = stack.wait_done(job, 45)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    console = public_get(done.consoleOutputUrl).text
    expected = "first\n" + "".join(f"line {i}\n" for i in range(8)) + "done\n"
    assert console == expected
    assert public_get(done.outputFileResults[0].url).text == "kept"
    assert stack.runs_of(job) == 1


def test_sigterm_drains_and_exit_when_idle_exits(stack: Stack) -> None:
    stack.register()
    go_file = stack.tmp_path / "go"
    job = stack.submit("work", message="batch", go_file=str(go_file))  # runs until go_file exists
    stack.bridge.start("--exit-when-idle")
    assert stack.bridge.process is not None
    stack.wait_status(job, "running", 60)
    stack.bridge.process.send_signal(signal.SIGTERM)  # drains: the running job still completes
    wait_for(lambda: "draining" in stack.bridge.log, 60, "the bridge to drain")
    assert stack.bridge.process.poll() is None, "a draining bridge waits for its running job"
    go_file.write_text("")
    assert stack.wait_done(job, 60).status.value == "completed"
    assert stack.bridge.process.wait(timeout=60) == 0, stack.bridge.log


def test_a_second_sigterm_exits_at_once_and_the_next_start_adopts_the_job(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    assert stack.bridge.process is not None
    go_file = stack.tmp_path / "go"
    job = stack.submit("work", message="detached", go_file=str(go_file))  # runs until go_file exists
    stack.wait_status(job, "running", 60)
    pid = int(wait_for(lambda: (stack.record_dir / f"pid-{job.jobId}").exists() and (stack.record_dir / f"pid-{job.jobId}").read_text(), 60, "the processor"))
    stack.bridge.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    stack.bridge.process.send_signal(signal.SIGTERM)
    # a drain would wait for the job, which never ends by itself: only the second SIGTERM exits (with 130)
    assert stack.bridge.process.wait(timeout=60) == 130, stack.bridge.log
    assert psutil.pid_exists(pid), "the job must keep running without its bridge"
    stack.bridge.start("--exit-when-idle")
    go_file.write_text("")
    assert stack.wait_done(job, 60).status.value == "completed", stack.bridge.log
    assert stack.bridge.process.wait(timeout=60) == 0, stack.bridge.log
    assert stack.runs_of(job) == 1


def test_sigterm_while_idle_exits_without_waiting_out_the_long_poll(stack: Stack) -> None:
    # An idle bridge's claim waits LONG_POLL_SEC at the hub (the module's hub allows it): exiting within
    # the wait below, far shorter, proves the signal cut the long poll short.
    stack.register(config_updates={"claimWaitSec": LONG_POLL_SEC})
    stack.bridge.start()
    assert stack.bridge.process is not None
    wait_for(lambda: "status:" in stack.bridge.log, 60, "the bridge to start")
    time.sleep(0.5)  # now, most likely, in a claim's long poll
    started = time.monotonic()
    stack.bridge.process.send_signal(signal.SIGTERM)
    assert stack.bridge.process.wait(timeout=60) == 0, stack.bridge.log
    print(f"\nSIGTERM -> exit: {time.monotonic() - started:.2f} s")  # information only


def test_the_resource_log_reaches_the_hub_while_the_job_runs(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    job = stack.submit("work", message="long", sleep=30)
    stack.wait_status(job, "running")
    url = stack.client.get_job(job.jobId).resourceUtilizationLogUrl

    def samples() -> list[dict[str, Any]]:
        response = httpx.get(url, timeout=30)
        return [json.loads(line) for line in response.text.splitlines()] if response.status_code == 200 else []

    found = wait_for(samples, 25, "resource samples of the running job")
    assert stack.client.get_job(job.jobId).status.value == "running"
    assert {"timestampSec", "cpuPercent", "rssBytes"} <= set(found[0])
    stack.client.cancel_job(job.jobId)
    stack.wait_done(job)


def test_app_commands_change_while_the_bridge_runs(stack: Stack) -> None:
    """``pairio-bridge apps add/remove/list`` on a registered bridge; the running bridge uses the change at its next job."""
    stack.register()

    def apps(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(PAIRIO_BRIDGE + ["apps", *args], capture_output=True, text=True, timeout=60, env=stack.env, check=False)

    d = str(stack.bridge_dir)
    assert apps("add", "--dir", d, "testapp=/bin/false").returncode == 0
    stack.bridge.start()
    broken = stack.wait_done(stack.submit("work", message="first"))
    assert broken.status.value == "failed" and "exited with code 1" in (broken.error or ""), broken.error

    fixed = apps("add", "--dir", d, f"testapp={sys.executable} {stack.processor}")
    assert fixed.returncode == 0 and "from its next job" in fixed.stdout, fixed.stderr
    assert stack.wait_done(stack.submit("work", message="second")).status.value == "completed", stack.bridge.log
    assert "app commands changed in bridge.json" in stack.bridge.log
    assert apps("list", "--dir", d).stdout == f"testapp\t{sys.executable} {stack.processor}\n"

    other = apps("add", "--dir", d, "otherapp=/bin/true")  # an app the service does not have: said at once
    assert other.returncode == 0 and f"service {stack.service!r} has no app 'otherapp' (it has: testapp)" in other.stderr
    unknown = apps("remove", "--dir", d, "nope")
    assert unknown.returncode == 1 and "no command for 'nope'" in unknown.stderr
    assert apps("remove", "--dir", d, "otherapp").returncode == 0
    assert json.loads((stack.bridge_dir / "bridge.json").read_text())["appCommands"] == {"testapp": f"{sys.executable} {stack.processor}"}
    assert (stack.bridge_dir / "bridge.json").stat().st_mode & 0o777 == 0o600
