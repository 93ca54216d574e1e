"""End to end in container mode: a hub process, ``pairio-bridge local`` registered with ``--container podman``,
and the seed's examples running the hello_world app from an image built from ``apps/hello_world/Containerfile``.

The image is built offline: its base is the session's busybox+python test image, and
``scripts/stage-app-image.py`` stages the app and Pairio's SDK as the build context.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import test_bridge_e2e as e2e
from .container_support import PodmanSetup, podman_setup  # noqa: F401  (fixture)
from .test_bridge_e2e import Stack, public_get
from .test_bridge_examples import REPO, job_id_of, run_example

hub = e2e.hub
stack = e2e.stack

HELLO_WORLD_IMAGE = "localhost/pairio-hello-world:test"


@pytest.fixture(scope="module")
def hello_world_image(podman_setup: PodmanSetup, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("hello-world-image") / "context"
    subprocess.run([sys.executable, str(REPO / "scripts" / "stage-app-image.py"), str(REPO / "apps" / "hello_world"), str(context)], check=True, timeout=120)
    podman_setup.podman(
        "build", "--pull=never", "--network", "none", "-f", str(REPO / "apps" / "hello_world" / "Containerfile"),
        "--build-arg", f"BASE={podman_setup.image}", "-t", HELLO_WORLD_IMAGE, str(context), timeout=300,
    )
    return HELLO_WORLD_IMAGE


def add_hello_world_with_image(stack: Stack, image: str) -> None:
    spec = json.loads((REPO / "apps" / "hello_world" / "spec.json").read_text())
    for processor in spec["processors"]:
        processor["image"] = image
    path = stack.tmp_path / "hello_world_spec.json"
    path.write_text(json.dumps(spec))
    stack.hub.admin("add-app", stack.service, str(path))


def test_the_three_examples_run_in_podman_containers(stack: Stack, hello_world_image: str, podman_setup: PodmanSetup) -> None:
    add_hello_world_with_image(stack, hello_world_image)
    stack.register("--container", "podman", "--pull-policy", "never")
    stack.bridge.start()
    printed = run_example(stack, "example1.py") + run_example(stack, "example2.py") + run_example(stack, "example3.py")
    url1, url2, _, url3_count = (words[0] for words in printed)
    jobs = {url: stack.client.get_job(job_id_of(stack, url)) for url in (url1, url2, url3_count)}

    hello1 = stack.wait_done(jobs[url1], 90)
    assert hello1.status.value == "completed", (hello1.error, stack.bridge.log)
    assert "Hello, world!" in public_get(hello1.consoleOutputUrl).text
    # the digest of the image the container ran is recorded on the job: in GET /v1/jobs/{id} and on its page
    digest = podman_setup.podman("image", "inspect", "--format", "{{.Digest}}", hello_world_image).stdout.strip()
    assert hello1.imageDigest is not None and hello1.imageDigest.startswith("sha256:"), (hello1.imageDigest, stack.bridge.log)
    assert hello1.imageDigest == digest
    assert hello1.imageDigest in public_get(f"{stack.hub.url}/job/{hello1.jobId}").text
    hello2 = stack.wait_done(jobs[url2], 90)
    assert hello2.status.value == "completed", (hello2.error, stack.bridge.log)
    assert public_get(hello2.get_output("output")).text == "Hello, world!"
    count = stack.wait_done(jobs[url3_count], 90)
    assert count.status.value == "completed", (count.error, stack.bridge.log)
    assert json.loads(public_get(count.get_output("output")).text) == {"num_characters": 13}
    assert not [name for name in podman_setup.container_names() if name.startswith("pairio-")]  # every container removed
    # outputs written inside the container belong to the bridge's user on the host
    job_dirs = [p for p in (stack.bridge_dir / "jobs").iterdir() if p.is_dir()] if (stack.bridge_dir / "jobs").is_dir() else []
    for job_dir in job_dirs:
        for path in job_dir.rglob("*"):
            assert path.stat().st_uid == Path(stack.bridge_dir).stat().st_uid, path
