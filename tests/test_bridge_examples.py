"""End to end with the real apps: a hub process, a ``pairio-bridge local`` process, the seed's examples.

Unlike tests/test_bridge_e2e.py (whose processor is a bare script), the jobs here run
apps written with the SDK: ``apps/hello_world`` as the README sets it up, and a small
``sleeper`` app written here whose spec comes from ``pairio make-app-spec`` and is
registered with ``pairio admin add-app``. The examples in ``examples/`` run as the user
would run them: as their own processes, configured by the environment only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import psutil
import pytest

from pairio import PairioJobDefinition, PairioJobRequiredResources
from pairio.job import PairioJob

from . import test_bridge_e2e as e2e
from .test_bridge_e2e import PAIRIO, Stack, public_get, wait_for

# The fixtures of test_bridge_e2e: one hub process for this module, with user alice;
# a service of its own per test, with a bridge registered for it and stopped at the end.
hub = e2e.hub
stack = e2e.stack

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
HELLO_WORLD_COMMAND = f"hello_world={sys.executable} {REPO / 'apps' / 'hello_world' / 'main.py'}"

SLEEPER_MAIN = textwrap.dedent(
    '''
    """A test app: processors that sleep, record when they ran, or take memory."""
    import json
    import os
    import time
    from pathlib import Path

    from pydantic import BaseModel, Field

    from pairio.app import App, ProcessorBase

    app = App(name="sleeper", description="Processors for the end-to-end tests", executable="/app/main.py")


    class SleepContext(BaseModel):
        seconds: float = Field(description="How long to sleep", default=0.0)
        record_dir: str = Field(description="Where to record the pid and start/end times", default="")
        index: int = Field(description="Tells otherwise equal jobs apart", default=0)


    class Sleep(ProcessorBase):
        name = "sleep"
        description = "Sleeps, recording when it started and ended"

        @staticmethod
        def run(context: SleepContext) -> None:
            start = time.time()
            record = Path(context.record_dir) if context.record_dir else None
            if record:
                record.mkdir(parents=True, exist_ok=True)
                job_id = os.environ["PAIRIO_JOB_ID"]
                (record / f"pid-{job_id}").write_text(str(os.getpid()))
            print(f"sleeping {context.seconds} s", flush=True)
            time.sleep(context.seconds)
            if record:
                (record / f"span-{job_id}.json").write_text(json.dumps({"start": start, "end": time.time()}))
            print("awake", flush=True)


    class AllocateContext(BaseModel):
        megabytes: int = Field(description="How much memory to take", default=400)
        hold_seconds: float = Field(description="How long to hold it", default=30.0)


    class Allocate(ProcessorBase):
        name = "allocate"
        description = "Takes memory (touching every page) and holds it"

        @staticmethod
        def run(context: AllocateContext) -> None:
            block = b"\\x01" * (context.megabytes * 1024 * 1024)
            print(f"holding {len(block)} bytes", flush=True)
            time.sleep(context.hold_seconds)
            print("released", flush=True)


    app.add_processor(Sleep)
    app.add_processor(Allocate)

    if __name__ == "__main__":
        app.run()
    '''
)


def run_example(stack: Stack, name: str) -> list[list[str]]:
    """Run ``examples/<name>`` as the user would; the words of each line it printed."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, check=False,
        env={**stack.env, "PAIRIO_SERVICE_NAME": stack.service}, cwd=stack.tmp_path,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return [line.split() for line in result.stdout.splitlines() if line.strip()]


def job_id_of(stack: Stack, url: str) -> str:
    prefix = f"{stack.hub.url}/job/"
    assert url.startswith(prefix), f"{url!r} is not a job URL of the hub at {stack.hub.url}"
    return url[len(prefix):]


def add_hello_world(stack: Stack) -> None:
    stack.hub.admin("add-app", stack.service, str(REPO / "apps" / "hello_world" / "spec.json"))


def add_sleeper(stack: Stack) -> str:
    """Write the sleeper app, make its spec with ``pairio make-app-spec``, register it; its --app argument."""
    app_dir = stack.tmp_path / "sleeper"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(SLEEPER_MAIN)
    result = subprocess.run(
        PAIRIO + ["make-app-spec", "--app-dir", str(app_dir)], capture_output=True, text=True, timeout=120, check=False,
        env=stack.env,
    )
    assert result.returncode == 0, f"pairio make-app-spec failed:\n{result.stdout}\n{result.stderr}"
    spec = json.loads((app_dir / "spec.json").read_text())
    assert {p["name"] for p in spec["processors"]} == {"sleep", "allocate"}
    stack.hub.admin("add-app", stack.service, str(app_dir / "spec.json"))
    return f"sleeper={sys.executable} {app_dir / 'main.py'}"


UNTIL_KILLED_SEC = 600.0
"""how long a job that a limit must end would run: far beyond the tests' waits (at most 120 s)"""


def submit_sleeper(
    stack: Stack, processor: str, *, num_cpus: int = 1, memory_gb: float = 0.5, time_sec: float = 60, **parameters: Any
) -> PairioJob:
    definition = PairioJobDefinition.model_validate({
        "appName": "sleeper", "processorName": processor, "inputFiles": [], "outputFiles": [],
        "parameters": [{"name": k, "value": v} for k, v in parameters.items()],
    })
    resources = PairioJobRequiredResources(numCpus=num_cpus, numGpus=0, memoryGb=memory_gb, timeSec=time_sec)
    return stack.client.submit_job(stack.service, definition, resources, skip_cache=True)


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start_examples_stack(stack: Stack) -> None:
    # The examples ask for memoryGb=4, and the local bridge runs a job only when the machine has that much free.
    available_gb = psutil.virtual_memory().available / 1024**3
    if available_gb < 4.5:
        pytest.skip(f"the examples ask for 4 GB of memory; this machine has {available_gb:.1f} GB available")
    add_hello_world(stack)
    stack.register("--app", HELLO_WORLD_COMMAND)
    stack.bridge.start()


# ---------------------------------------------------------------- the tests


def test_the_three_examples_run_end_to_end(stack: Stack) -> None:
    start_examples_stack(stack)
    printed = run_example(stack, "example1.py") + run_example(stack, "example2.py") + run_example(stack, "example3.py")
    assert [len(words) for words in printed] == [2, 2, 2, 3], printed
    for words in printed:
        job_id_of(stack, words[0])
        assert words[1] in ("pending", "starting", "running", "completed"), words
    assert printed[3][2] in ("True", "False"), printed[3]  # example3's second line adds isRunnable
    url1, url2, url3_first, url3_count = (words[0] for words in printed)
    assert url3_first == url2, "example3's first job is example2's job: same definition, so a cache hit"

    jobs = {p: stack.client.find_jobs(service_name=stack.service, processor_name=p) for p in ("hello_world_1", "hello_world_2", "count_characters")}
    assert {p: len(found) for p, found in jobs.items()} == {"hello_world_1": 1, "hello_world_2": 1, "count_characters": 1}
    assert jobs["hello_world_1"][0].job_url == url1
    assert jobs["hello_world_2"][0].job_url == url2
    assert jobs["count_characters"][0].job_url == url3_count

    hello1 = stack.wait_done(jobs["hello_world_1"][0], 60)
    assert hello1.status.value == "completed", (hello1.error, stack.bridge.log)
    assert "Hello, world!" in public_get(hello1.consoleOutputUrl).text

    hello2 = stack.wait_done(jobs["hello_world_2"][0], 60)
    assert hello2.status.value == "completed", (hello2.error, stack.bridge.log)
    assert public_get(hello2.get_output("output")).text == "Hello, world!"

    count = stack.wait_done(jobs["count_characters"][0], 60)
    assert count.status.value == "completed", (count.error, stack.bridge.log)
    assert json.loads(public_get(count.get_output("output")).text) == {"num_characters": 13}
    assert count.jobDefinition.inputFiles[0].url == hello2.get_output("output")

    for url in (url1, url2, url3_count):
        page = public_get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), url
        assert job_id_of(stack, url) in page.text


def test_a_resubmitted_example_is_a_cache_hit(stack: Stack) -> None:
    start_examples_stack(stack)
    [[url, _]] = run_example(stack, "example1.py")
    done = stack.wait_done(stack.client.get_job(job_id_of(stack, url)), 60)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert run_example(stack, "example1.py") == [[url, "completed"]]
    assert len(stack.client.find_jobs(service_name=stack.service, processor_name="hello_world_1")) == 1


@pytest.mark.timeout(600)  # a safety net, not a measure: liveness bounds of up to 120 s each, far below the 600 s alternative
def test_a_job_over_its_time_limit_is_killed_and_fails(stack: Stack) -> None:
    sleeper = add_sleeper(stack)
    stack.register("--app", sleeper)
    stack.bridge.start()
    wait_for(lambda: "status:" in stack.bridge.log, 60, "the bridge to start")
    # it would sleep far longer than the waits below: only the time limit ends it within them
    job = submit_sleeper(stack, "sleep", time_sec=2, seconds=UNTIL_KILLED_SEC, record_dir=str(stack.record_dir))
    submitted = time.monotonic()
    failed = stack.wait_done(job, 120)
    print(f"\nsubmit -> failed: {time.monotonic() - submitted:.1f} s")  # information only
    assert failed.status.value == "failed", (failed.error, stack.bridge.log)
    assert "time limit of 2 s" in (failed.error or ""), failed.error
    assert f"sleeping {UNTIL_KILLED_SEC:.1f} s" in public_get(failed.consoleOutputUrl).text
    pid = int((stack.record_dir / f"pid-{job.jobId}").read_text())
    wait_for(lambda: process_gone(pid), 60, "the processor to be gone")


@pytest.mark.timeout(600)  # a safety net, not a measure: liveness bounds of up to 120 s each, far below the 600 s alternative
def test_a_job_over_its_memory_limit_is_killed_and_fails(stack: Stack) -> None:
    sleeper = add_sleeper(stack)
    stack.register("--app", sleeper)
    stack.bridge.start()
    wait_for(lambda: "status:" in stack.bridge.log, 60, "the bridge to start")
    # it would hold its memory (and run under its time limit) far longer than the wait below:
    # only the memory limit ends it within it
    job = submit_sleeper(
        stack, "allocate", memory_gb=0.1, time_sec=2 * UNTIL_KILLED_SEC, megabytes=400, hold_seconds=UNTIL_KILLED_SEC
    )
    submitted = time.monotonic()
    failed = stack.wait_done(job, 120)
    print(f"\nsubmit -> failed: {time.monotonic() - submitted:.1f} s")  # information only
    assert failed.status.value == "failed", (failed.error, stack.bridge.log)
    assert "over its memory limit of 0.1 GB" in (failed.error or ""), failed.error


def test_fifty_jobs_on_two_slots_never_more_than_two_at_once(stack: Stack) -> None:
    sleeper = add_sleeper(stack)
    stack.register("--app", sleeper, "--num-cpus", "1", "--multiplicity", "2")
    stack.bridge.start()
    jobs = [submit_sleeper(stack, "sleep", seconds=0.2, index=i, record_dir=str(stack.record_dir)) for i in range(50)]
    failures: list[tuple[str, Optional[str]]] = []
    for job in jobs:
        done = stack.wait_done(job, 90)
        if done.status.value != "completed":
            failures.append((job.jobId, done.error))
    assert not failures, failures
    most = e2e.most_at_once(stack, jobs)
    assert most <= 2, f"{most} jobs ran at once"
    assert most == 2, "the two slots were never used together"
