"""End to end: a job's secret printed by its processor never reaches anything the hub shows or keeps.

A real hub process (``pairio hub serve`` on SQLite) and a real ``pairio-bridge local``.
"""

from __future__ import annotations

import base64
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from pairio import PairioJobDefinition

from .test_bridge_e2e import RESOURCES, HubProcess, Stack, wait_for

TOKEN = "tok-9f3a1c77e2b64d0a"
ENCODINGS = [TOKEN, base64.b64encode(TOKEN.encode()).decode(), quote(TOKEN, safe=""), quote_plus(TOKEN)]

# Prints the secret raw, base64 and URL-encoded, and once split over two writes a second apart
# (so over two console uploads).
PRINTING_PROCESSOR = textwrap.dedent(
    '''
    import base64, os, sys, time
    from urllib.parse import quote
    token = os.environ["TOKEN"]
    print("raw", token, flush=True)
    print("b64", base64.b64encode(token.encode()).decode(), flush=True)
    print("url", quote(token, safe=""), flush=True)
    print("split", token[:7], end="", flush=True)
    time.sleep(1.5)
    print(token[7:], "end", flush=True)
    '''
)


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str]]:
    """A hub of its own whose housekeeping (which empties SQLite's write-ahead log) runs often."""
    data_dir = tmp_path_factory.mktemp("secrets-hub")
    h = HubProcess(data_dir)
    key = h.admin("create-user", "alice").strip().splitlines()[-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRIO_HUB_EXPIRY_CHECK_INTERVAL_SEC", "0.3")
        h.start()
    try:
        yield h, key
    finally:
        h.stop()


def leaks(data: bytes) -> list[str]:
    return [e for e in ENCODINGS if e.encode() in data]


def test_a_printed_secret_is_masked_everywhere_and_gone_from_the_database(hub: tuple[HubProcess, str], tmp_path: Path) -> None:
    h, key = hub
    stack = Stack(h, key, tmp_path)
    try:
        stack.processor.write_text(PRINTING_PROCESSOR)
        stack.register()
        stack.bridge.start()
        definition = PairioJobDefinition.model_validate({"appName": "testapp", "processorName": "work", "parameters": []})
        job = stack.client.submit_job(stack.service, definition, RESOURCES, skip_cache=True, secrets={"TOKEN": TOKEN})
        done = stack.wait_done(job, 60)
        assert done.status.value == "completed", (done.error, stack.bridge.log)

        console = wait_for(lambda: (t := httpx.get(done.consoleOutputUrl, timeout=30).text).endswith("end\n") and t, 20, "the console")
        assert console.count("***") == 4 and "split ***" in console, console
        for path in (f"/job/{job.jobId}", f"/job/{job.jobId}/live", f"/job/{job.jobId}/console", f"/job/{job.jobId}/console.json?end=100000",
                     f"/v1/jobs/{job.jobId}", f"/v1/jobs/{job.jobId}/console-output", f"/v1/jobs/{job.jobId}/resource-utilization-log"):
            r = httpx.get(h.url + path, timeout=30)
            assert r.status_code in (200, 404) and leaks(r.content) == [], path
        bridge_key = json.loads((stack.bridge_dir / "bridge.json").read_text())["computeClientPrivateKey"]
        finished = httpx.get(f"{h.url}/v1/compute/jobs/{job.jobId}", headers={"Authorization": f"Bearer {bridge_key}"}, timeout=30)
        assert finished.status_code == 200 and finished.json()["secrets"] is None and leaks(finished.content) == []

        def database_is_clean() -> bool:
            return all(leaks(p.read_bytes()) == [] for p in h.data_dir.iterdir() if p.name.startswith("hub.db"))

        wait_for(database_is_clean, 20, "the secret to leave hub.db and its write-ahead log")
        for p in h.data_dir.rglob("*"):
            if p.is_file():
                assert leaks(p.read_bytes()) == [], p
        assert oct(os.stat(h.data_dir).st_mode & 0o777) == oct(0o700)
        assert oct(os.stat(h.data_dir / "hub.db").st_mode & 0o777) == oct(0o600)
    finally:
        stack.close()
