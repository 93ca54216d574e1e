"""The original compute client, unchanged, runs a job of our hub end to end (issue 12, point 6).

``pairio register-compute-client`` and ``pairio start-compute-client`` are the console scripts
of pairio==0.5.9 in ``.venv-original`` (with pubnub, which the client needs:
scripts/ensure-original-pairio.sh). The first prints a link to its own site; the same path on
our hub (hub/ui/register_compute_client.py) gives the code it asks for. The second runs in its
docker mode, with podman's docker-compatible service standing in for docker.

Network: the client subscribes to PubNub's cloud as it starts, so it runs in a network namespace
of the test's own with only loopback up (tests/netns_support.py): PubNub is unreachable there,
and the hub comes in by a loopback relay. The podman service runs in the same namespace, so the
job's container (``--network host``, as the client asks for a ``http://localhost:`` hub) reaches
the hub the same way.

Timing: without PubNub messages the client asks for jobs on its first pass and then every 10
minutes, so the job is submitted before the client starts. The client runs without
``--exit-when-idle`` (that flag is inverted in 0.5.9: it exits right after starting a job, and
the job's ``docker run`` would then lose its terminal) and is stopped once the job completed.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from . import test_bridge_e2e as e2e
from .container_support import PodmanSetup, podman_service, podman_setup  # noqa: F401  (fixture)
from .netns_support import LoopbackRelay, NetworkNamespace, network_namespace
from .test_bridge_e2e import Stack, public_get, wait_for
from .test_bridge_examples import job_id_of, run_example
from .test_original_images import IMAGE, add_original_app, original_image  # noqa: F401  (fixture)
from .test_original_pairio import original_bin, original_env  # noqa: F401  (fixture)
from .test_ui_pages import csrf_of, log_in

hub = e2e.hub
stack = e2e.stack
# One test that builds the app's image and runs a real client through a whole job: more than the default 120 s on a busy machine.
pytestmark = pytest.mark.timeout(600)

ORIGINAL_SITE = "https://pairio.vercel.app"
CLIENT_NAME = "old-lab-machine"


@dataclass(frozen=True)
class IsolatedSite:
    """The namespace the original client runs in, its way to the hub, and the docker CLI's DOCKER_HOST there."""

    namespace: NetworkNamespace
    hub_url: str
    docker_host: str
    containers_before: frozenset[str]


def original_containers(podman: PodmanSetup) -> set[str]:
    out = podman.podman("ps", "--all", "--filter", f"ancestor={IMAGE}", "--format", "{{.ID}}")
    return set(out.stdout.split())


@pytest.fixture
def site(stack: Stack, podman_setup: PodmanSetup, original_image: str, tmp_path: Path) -> Iterator[IsolatedSite]:  # noqa: F811
    """The namespace, the relay to the hub's port, and a podman service inside; the containers the
    original client left (it runs them without --rm) are removed on the way out."""
    before = frozenset(original_containers(podman_setup))
    port = int(stack.hub.url.rsplit(":", 1)[1])
    with network_namespace("pairio-orig") as namespace:
        relay = LoopbackRelay(namespace, port)
        try:
            with podman_service(podman_setup, tmp_path / "podman.sock", namespace.command([])) as docker_host:
                try:
                    yield IsolatedSite(namespace, f"http://localhost:{port}", docker_host, before)
                finally:
                    for container in original_containers(podman_setup) - before:
                        podman_setup.podman("rm", "--force", container, check=False)
        finally:
            relay.close()


def register_through_our_hub(stack: Stack, site: IsolatedSite, original_bin: Path, client_dir: Path) -> dict[str, str]:  # noqa: F811
    """``pairio register-compute-client`` as a migrating site runs it: the user opens the printed
    path on our hub, registers there and pastes the code back."""
    process = subprocess.Popen(
        site.namespace.command([str(original_bin / "pairio"), "register-compute-client", "--service-name", stack.service,
                                "--compute-client-name", CLIENT_NAME]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=client_dir,
        env=original_env(original_bin, PYTHONUNBUFFERED="1"),
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        printed = []
        while not any(line.startswith(ORIGINAL_SITE) for line in printed):
            line = process.stdout.readline()
            assert line, f"no registration link printed:\n{''.join(printed)}"
            printed.append(line.strip())
        link = next(line for line in printed if line.startswith(ORIGINAL_SITE))
        path = link.removeprefix(ORIGINAL_SITE)
        assert path == f"/register_compute_client/{stack.service}/{CLIENT_NAME}"
        with httpx.Client(base_url=stack.hub.url, timeout=30) as browser:
            log_in(browser, stack.key)
            form = browser.get(path)
            assert form.status_code == 200, form.text
            page = browser.post(path, data={"csrf_token": csrf_of(form.text)})
            assert page.status_code == 200, page.text
        code = page.text.split('id="registration-code" class="secret-once">', 1)[1].split("<", 1)[0]
        rest, _ = process.communicate(code + "\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "The compute client has been registered" in rest
    saved = (client_dir / "pairio-compute-client.yaml").read_text()
    registered = dict(json.loads(base64.b64decode(code)))
    assert registered["computeClientId"] in saved and registered["computeClientPrivateKey"] in saved
    return registered


def test_the_original_compute_client_registers_and_runs_a_job_from_our_hub(
    stack: Stack, site: IsolatedSite, original_bin: Path, podman_setup: PodmanSetup, tmp_path: Path  # noqa: F811
) -> None:
    add_original_app(stack, original_bin)
    client_dir = tmp_path / "old-client"
    client_dir.mkdir()
    registered = register_through_our_hub(stack, site, original_bin, client_dir)
    job_id = job_id_of(stack, run_example(stack, "example1.py")[0][0])

    # 'docker run -it' needs a terminal: script(1) gives the client one, as a person's shell would
    command = shlex.join([str(original_bin / "pairio"), "start-compute-client"])
    log_path = tmp_path / "original-client.log"
    with open(log_path, "w") as log:
        client = subprocess.Popen(
            site.namespace.command(["script", "-qec", command, "/dev/null"]), cwd=client_dir, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=original_env(original_bin, PAIRIO_API_URL=site.hub_url, DOCKER_HOST=site.docker_host, PYTHONUNBUFFERED="1"),
        )
    try:
        try:
            job = stack.wait_done(stack.client.get_job(job_id), 300)
        except AssertionError as e:
            raise AssertionError(f"{e}\nthe original client printed:\n{log_path.read_text()}") from None
        printed = log_path.read_text()
        assert job.status.value == "completed", (job.error, printed)
        assert job.computeClientId == registered["computeClientId"]
        assert "Hello, world!" in public_get(job.consoleOutputUrl).text
        # the real start(): the pubsub look-up, a subscription that cannot reach PubNub, the first poll, docker
        assert "Getting pubsub info" in printed and "Checking for new jobs" in printed, printed
        assert f"Starting job {job_id} hello_world:hello_world_1" in printed and "docker run -it" in printed, printed
        assert "ps.pndsn.com" in printed, printed  # it tried, in a namespace with nowhere to go
        seen = stack.client.get_job(job_id)
        assert seen.status.value == "completed"  # nothing after the job's own report changed it
    finally:
        os.killpg(client.pid, signal.SIGTERM)
        client.wait(timeout=60)
    # stopped: the client, its cleanup process and the job's docker CLI are gone from the namespace
    wait_for(
        lambda: not [c for c in site.namespace.command_lines().values() if "start-compute-client" in c or c.startswith("docker ")],
        60, "the original client's processes to end",
    )
    # the quirk of its docker mode: no --rm, so the finished container stays (the fixture removes it)
    [left] = original_containers(podman_setup) - site.containers_before
    state = podman_setup.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.Args}}", left).stdout
    assert state.startswith("exited 0") and "/tmp/run.sh" in state, state
