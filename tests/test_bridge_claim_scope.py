"""A real ``pairio-bridge local`` claims only jobs of the apps it has a command for, takes up an app
added while it runs, and describes itself on its compute client's page."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from typing import Any

import httpx

import pairio
from pairio import PairioJobDefinition

from .test_bridge_e2e import PAIRIO_BRIDGE, RESOURCES, TEST_APP_SPEC, HubProcess, Stack, hub, stack, wait_for  # noqa: F401 - fixtures

OTHER_APP_SPEC: dict[str, Any] = {**TEST_APP_SPEC, "name": "otherapp", "description": "an app the bridge has no command for at first"}


def test_a_bridge_claims_only_its_apps_and_takes_up_an_app_added_while_it_runs(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    httpx.put(f"{stack.hub.url}/v1/services/{stack.service}/apps/otherapp", json=OTHER_APP_SPEC, headers=headers, timeout=30).raise_for_status()
    stack.register()
    stack.bridge.start()
    definition = PairioJobDefinition.model_validate({
        "appName": "otherapp", "processorName": "work", "parameters": [{"name": "message", "value": "other"}],
    })
    other = stack.client.submit_job(stack.service, definition, RESOURCES, skip_cache=True)
    mine = stack.submit("work", message="mine")  # newer: claimed first all the same
    assert stack.wait_done(mine).status.value == "completed", stack.bridge.log
    assert stack.client.get_job(other.jobId).status.value == "pending"  # not claimed, so not failed

    page_url = f"{stack.hub.url}/compute-client/{json.loads((stack.bridge_dir / 'bridge.json').read_text())['computeClientId']}"

    def described() -> str | None:
        text = httpx.get(page_url, timeout=30).text
        return text if platform.node() in text else None

    page = wait_for(described, 30, "the bridge's description")
    for shown in ("local", f">{pairio.__version__}<", ">testapp</a>"):
        assert shown in page, (shown, page)
    assert ">otherapp</a>" not in page

    added = subprocess.run(
        PAIRIO_BRIDGE + ["apps", "add", "--dir", str(stack.bridge_dir), f"otherapp={sys.executable} {stack.processor}"],
        capture_output=True, text=True, timeout=60, env=stack.env, check=False,
    )
    assert added.returncode == 0, added.stderr
    assert stack.wait_done(other, timeout_sec=60).status.value == "completed", stack.bridge.log  # no restart
    wait_for(lambda: ">otherapp</a>" in httpx.get(page_url, timeout=30).text, 30, "the page to list the added app")
