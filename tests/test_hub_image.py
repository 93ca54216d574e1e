"""The hub's container image (hub/Containerfile), built offline and started with podman: it serves,
answers /healthz, keeps its SQLite database on the data volume, and runs as an unprivileged user.

The base is the tests' busybox+python image (tests/container_support.py) instead of python:3.11-slim,
so nothing is pulled; the staged context is what scripts/stage-hub-image.py copies from this Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from .container_support import PodmanSetup, podman_setup  # noqa: F401  (fixture)
from .hubtools import REPO, free_port

HUB_IMAGE = "localhost/pairio-hub-test:1"


@pytest.fixture(scope="module")
def hub_image(podman_setup: PodmanSetup, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    context = tmp_path_factory.mktemp("hub-image") / "context"
    subprocess.run([sys.executable, str(REPO / "scripts" / "stage-hub-image.py"), str(context)], check=True, timeout=300)
    podman_setup.podman(
        "build", "--pull=never", "--network", "none", "-f", str(context / "Containerfile"),
        "--build-arg", f"BASE={podman_setup.image}", "-t", HUB_IMAGE, str(context), timeout=600,
    )
    return HUB_IMAGE


@pytest.fixture
def hub_container(podman_setup: PodmanSetup, hub_image: str) -> Iterator[tuple[str, str]]:  # noqa: F811
    port = free_port()
    name = f"pairio-hub-test-{port}"
    volume = f"pairio-hub-data-{port}"
    # host network: the test reaches it on 127.0.0.1 without the engine's port forwarding
    podman_setup.podman(
        "run", "-d", "--name", name, "--network", "host", "-v", f"{volume}:/data", hub_image,
        "python", "-m", "pairio.cli", "hub", "serve", "--host", "127.0.0.1", "--port", str(port),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                logs = podman_setup.podman("logs", name, check=False).stderr
                pytest.fail(f"the hub's container did not answer /healthz: {logs[-3000:]}")
            time.sleep(0.3)
        yield name, url
    finally:
        podman_setup.podman("rm", "--force", name, check=False)
        podman_setup.podman("volume", "rm", "--force", volume, check=False)


def test_the_hub_image_serves_as_an_unprivileged_user_with_its_data_on_the_volume(
    podman_setup: PodmanSetup, hub_container: tuple[str, str]  # noqa: F811
) -> None:
    name, url = hub_container
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["version"] != "0+unknown", health
    created = podman_setup.podman("exec", name, "python", "-m", "pairio.cli", "admin", "create-user", "alice", check=False)
    assert created.returncode == 0, created.stderr
    key = podman_setup.podman("exec", name, "python", "-m", "pairio.cli", "admin", "create-api-key", "alice").stdout.strip().split()[-1]
    me = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert me.status_code == 200 and me.json()["userId"] == "alice", me.text
    assert httpx.get(f"{url}/", timeout=10, follow_redirects=True).status_code == 200  # the web UI
    user = podman_setup.podman("exec", name, "id", "-u").stdout.strip()
    assert user == "10001"
    listing = podman_setup.podman("exec", name, "ls", "-ln", "/data").stdout
    assert "hub.db" in listing and " 10001 " in listing, listing
    inspect = json.loads(podman_setup.podman("image", "inspect", HUB_IMAGE).stdout)[0]
    assert inspect["Config"]["Env"] and any(e == "PAIRIO_HUB_DATA_DIR=/data" for e in inspect["Config"]["Env"])
