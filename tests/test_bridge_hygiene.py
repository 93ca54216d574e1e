"""A bridge process's hygiene, end to end with a real hub and real ``pairio-bridge local`` processes.

One bridge per directory; a key the hub refuses ends the bridge with a message saying
what to do; an idle bridge exits at once on SIGTERM; a hub that stops answering (SIGSTOP)
is logged, and the bridge carries on when it answers again.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator

import httpx
import psutil
import pytest

from .test_bridge_e2e import BridgeProcess, HubProcess, Stack, hub, stack, wait_for  # noqa: F401 - fixtures


def started(stack: Stack) -> None:
    wait_for(lambda: "status:" in stack.bridge.log, 30, "the bridge to start")


def test_a_second_bridge_on_the_same_directory_exits_at_once_naming_the_first(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    first = stack.bridge.process
    assert first is not None
    job = stack.submit("work", message="mine", sleep=3.0)
    stack.wait_status(job, "running")
    second = BridgeProcess(stack.bridge_dir, stack.env)
    second.start()
    assert second.process is not None
    assert second.process.wait(timeout=30) == 1, second.log
    assert f"pid {first.pid}" in second.log and "give this bridge a directory of its own" in second.log, second.log
    assert "Traceback" not in second.log, second.log
    done = stack.wait_done(job)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    assert first.poll() is None, stack.bridge.log
    assert stack.runs_of(job) == 1
    assert "Traceback" not in stack.bridge.log, stack.bridge.log


def test_a_bridge_whose_compute_client_was_deleted_exits_saying_how_to_fix_it(stack: Stack) -> None:
    stack.register()
    stack.bridge.start()
    started(stack)
    client_id = json.loads((stack.bridge_dir / "bridge.json").read_text())["computeClientId"]
    httpx.delete(
        f"{stack.hub.url}/v1/compute-clients/{client_id}", headers={"Authorization": f"Bearer {stack.key}"}, timeout=30
    ).raise_for_status()
    assert stack.bridge.process is not None
    assert stack.bridge.process.wait(timeout=90) == 1, stack.bridge.log
    log = stack.bridge.log
    # The heartbeat thread and the main loop's claim may both be refused in one round, so the count can pass 3.
    refused = re.search(r"refused this bridge (\d+) times in a row", log)
    assert refused is not None and int(refused.group(1)) >= 3 and "pairio-bridge register --dir" in log, log
    assert log.count("the hub refuses this bridge") >= 3, log
    assert "Traceback" not in log, log


def test_sigterm_ends_an_idle_bridge_at_once_even_while_the_hub_refuses_it(stack: Stack) -> None:
    stack.register()
    config_path = stack.bridge_dir / "bridge.json"
    config = json.loads(config_path.read_text())
    config["computeClientPrivateKey"] = "not-a-key-this-hub-knows"
    config_path.write_text(json.dumps(config))
    stack.bridge.start()
    assert stack.bridge.process is not None
    wait_for(lambda: "the hub refuses this bridge" in stack.bridge.log, 30, "a refusal")
    stack.bridge.process.send_signal(signal.SIGTERM)
    # A safety net only: it exits within the next loop cycle, not after the refusal's backoff.
    assert stack.bridge.process.wait(timeout=30) == 0, stack.bridge.log
    assert "drained" in stack.bridge.log, stack.bridge.log


@pytest.fixture
def paused_hub(stack: Stack) -> Iterator[list[psutil.Process]]:
    """The hub's processes, SIGCONTed at the end whatever the test did to them."""
    assert stack.hub.process is not None
    main = psutil.Process(stack.hub.process.pid)
    processes = [main, *main.children(recursive=True)]
    try:
        yield processes
    finally:
        for p in processes:
            try:
                p.resume()
            except psutil.NoSuchProcess:
                pass


def test_a_stopped_hub_is_logged_and_the_bridge_carries_on_when_it_answers(stack: Stack, paused_hub: list[psutil.Process]) -> None:
    stack.register(config_updates={"hubTimeoutSec": 2.0})
    stack.bridge.start()
    job = stack.submit("work", message="through", lines=10, line_interval=0.5)
    stack.wait_status(job, "running")
    for p in paused_hub:
        p.suspend()  # SIGSTOP: connections are accepted by the kernel, never answered
    wait_for(lambda: "is not answering" in stack.bridge.log, 60, "the bridge to say the hub does not answer")
    for p in paused_hub:
        p.resume()
    done = stack.wait_done(job, 90)
    assert done.status.value == "completed", (done.error, stack.bridge.log)
    wait_for(lambda: "answers again" in stack.bridge.log, 30, "the bridge to say the hub answers again")
    log = stack.bridge.log
    assert log.count("is not answering") == 1, log
    assert stack.runs_of(job) == 1
    assert stack.bridge.process is not None and stack.bridge.process.poll() is None, log
