"""Images built with the original Pairio SDK run unchanged on our bridges (issue 12, point 4).

The image holds ``pairio==0.5.9`` from PyPI (the ``.venv-original`` site-packages, see
scripts/ensure-original-pairio.sh) on the session's offline busybox+python test image, and
``tests/data/original_hello_world``: the seed's hello_world app written with the original
SDK's API. Its spec is made by the original ``pairio make-app-spec-file`` and registered with
``"originalSdk": true`` on each processor (hub/core/original_sdk.py says why). A real hub and a
real ``pairio-bridge local`` in podman container mode run the seed's three examples; the job
process inside reports its status and uploads its outputs and logs through the wire calls.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import test_bridge_e2e as e2e
from .container_support import PodmanSetup, podman_setup, podman_socket  # noqa: F401  (fixture)
from .test_bridge_e2e import Stack, public_get, wait_for
from .test_bridge_examples import job_id_of, run_example
from .test_original_pairio import ORIGINAL_VENV, original_bin, original_env  # noqa: F401  (fixture)

hub = e2e.hub
stack = e2e.stack

# A safety net, not a measure: the first test builds the image, and a whole job runs in each.
pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parent.parent
APP_DIR = REPO / "tests" / "data" / "original_hello_world"
IMAGE = "localhost/pairio-original-hello-world:test"
CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
COPY site-packages/ /opt/original-pairio/
COPY app/ /app/
COPY pairio /usr/bin/pairio
COPY bash /bin/bash
ENV PYTHONPATH=/opt/original-pairio PYTHONDONTWRITEBYTECODE=1
"""
# The original SDK's console script, as pip would write it.
PAIRIO_SCRIPT = """\
#!/usr/bin/python3
import sys
from pairio.cli import main
sys.exit(main())
"""
# The original compute client starts '/bin/bash /tmp/run.sh'; busybox has no bash, and run.sh needs none of it.
BASH_SHIM = '#!/bin/sh\nexec /bin/sh "$@"\n'
JOB_KEY_PREFIX = "pairiojob_"
# pubnub 8.1.0 and the packages only it brings (top-level names in site-packages)
COMPUTE_CLIENT_ONLY = frozenset({
    "pubnub", "aiohttp", "aiohappyeyeballs", "aiosignal", "attr", "attrs", "cbor2", "Cryptodome", "pycryptodomex",
    "frozenlist", "multidict", "propcache", "yarl",
})


@pytest.fixture(scope="module")
def original_image(podman_setup: PodmanSetup, original_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    """The app's image, built offline: the test image plus pairio 0.5.9 and its dependencies, and the app in /app."""
    context = tmp_path_factory.mktemp("original-image")
    site = next((ORIGINAL_VENV / "lib").glob("python3*/site-packages"))
    shutil.copytree(site, context / "site-packages", ignore=_not_in_the_image(site))
    shutil.copytree(APP_DIR, context / "app", ignore=shutil.ignore_patterns("__pycache__", "spec.json"))
    (context / "pairio").write_text(PAIRIO_SCRIPT)
    (context / "pairio").chmod(0o755)
    (context / "bash").write_text(BASH_SHIM)
    (context / "bash").chmod(0o755)
    (context / "Containerfile").write_text(CONTAINERFILE)
    podman_setup.podman(
        "build", "--pull=never", "--network", "none", "-f", str(context / "Containerfile"),
        "--build-arg", f"BASE={podman_setup.image}", "-t", IMAGE, str(context), timeout=600,
    )
    return IMAGE


def _not_in_the_image(site: Path) -> Callable[[str, list[str]], set[str]]:
    """pip's own files, caches, and what only the original compute client needs (pubnub and its
    dependencies, scripts/ensure-original-pairio.sh): an image made with pairio 0.5.9 has none of them."""
    everywhere = shutil.ignore_patterns("pip", "pip-*", "setuptools*", "_distutils_hack", "__pycache__")

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(everywhere(directory, names))
        if Path(directory) == site:
            ignored |= {name for name in names if name.split("-")[0] in COMPUTE_CLIENT_ONLY}
        return ignored

    return ignore


def original_spec(original_bin: Path, out: Path) -> Path:  # noqa: F811
    """The spec as the original SDK writes it (``pairio make-app-spec-file``), unchanged."""
    subprocess.run(
        [str(original_bin / "pairio"), "make-app-spec-file", "--app-dir", str(APP_DIR), "--spec-output-file", str(out)],
        capture_output=True, text=True, timeout=120, check=False, env=original_env(original_bin),
    )
    assert "originalSdk" not in out.read_text()
    return out


def add_original_app(stack: Stack, original_bin: Path) -> None:  # noqa: F811
    """Registered by the service admin as an app of original-SDK images."""
    printed = stack.hub.admin("add-app", stack.service, str(original_spec(original_bin, stack.tmp_path / "spec.json")), "--original-sdk")
    assert "original Pairio SDK" in printed
    spec = httpx.get(f"{stack.hub.url}/v1/services/{stack.service}/apps/hello_world", timeout=30).json()
    assert all(p["originalSdk"] for p in spec["appSpecification"]["processors"]), spec


def test_the_seed_examples_run_from_an_original_sdk_image_in_podman(
    stack: Stack, original_image: str, original_bin: Path, podman_setup: PodmanSetup  # noqa: F811
) -> None:
    add_original_app(stack, original_bin)
    stack.register("--container", "podman", "--pull-policy", "never")
    stack.bridge.start()
    run_the_seed_examples(stack, podman_setup)


@pytest.fixture
def slurm_stack(slurm_cluster: Any, hub: tuple[e2e.HubProcess, str], tmp_path: Path) -> Iterator[Stack]:
    from .test_slurm_e2e import SlurmStack

    s = SlurmStack(hub[0], hub[1], tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_the_seed_examples_run_from_an_original_sdk_image_on_the_slurm_bridge(
    slurm_stack: Stack, original_image: str, original_bin: Path, podman_setup: PodmanSetup  # noqa: F811
) -> None:
    add_original_app(slurm_stack, original_bin)
    slurm_stack.register("--container", "podman", "--pull-policy", "never")
    slurm_stack.bridge.start()
    run_the_seed_examples(slurm_stack, podman_setup)


def run_the_seed_examples(stack: Stack, podman: PodmanSetup) -> None:
    printed = run_example(stack, "example1.py") + run_example(stack, "example2.py") + run_example(stack, "example3.py")
    url1, url2, _, url3_count = (words[0] for words in printed)
    jobs = {url: stack.client.get_job(job_id_of(stack, url)) for url in (url1, url2, url3_count)}

    hello1 = stack.wait_done(jobs[url1], 180)
    assert hello1.status.value == "completed", (hello1.error, stack.bridge.log)
    # the child's console output, uploaded by the job itself through getSignedUploadUrl and a PUT
    assert "Hello, world!" in public_get(hello1.consoleOutputUrl).text
    hello2 = stack.wait_done(jobs[url2], 180)
    assert hello2.status.value == "completed", (hello2.error, stack.bridge.log)
    assert public_get(hello2.get_output("output")).text == "Hello, world!"  # served at the URL fixed at creation
    count = stack.wait_done(jobs[url3_count], 180)
    assert count.status.value == "completed", (count.error, stack.bridge.log)
    assert json.loads(public_get(count.get_output("output")).text) == {"num_characters": 13}
    assert "13 characters" in public_get(count.consoleOutputUrl).text

    for job in (hello1, hello2, count):
        # the bridge's samples of the container, sent once the container has ended (after the job's own 'completed')
        page_url = f"{stack.hub.url}/job/{job.jobId}"
        wait_for(lambda url=page_url: '<svg id="resource-plot"' in public_get(url).text, 60, f"the resource plot of {job.jobId}")
    page = public_get(f"{stack.hub.url}/job/{count.jobId}").text
    assert "13 characters" in page and "output.json" in page
    # the job private key reached the job in its env file only: never in the bridge's log or a console
    assert JOB_KEY_PREFIX not in stack.bridge.log
    for job in (hello1, hello2, count):
        # the original SDK prints the key in its parent's output (the container's): masked on the way to disk
        parent_output = (stack.bridge_dir / "jobs" / job.jobId / "console.txt").read_text()
        assert "(Job private key: ***)" in parent_output and JOB_KEY_PREFIX not in parent_output, parent_output
    for job in (hello1, hello2, count):
        assert JOB_KEY_PREFIX not in public_get(job.consoleOutputUrl).text
    # the job reports 'completed' itself, before its container ends: the watcher removes it right after
    wait_for(lambda: not [n for n in podman.container_names() if n.startswith("pairio-")], 60, "every container to be removed")


def test_a_cancel_stops_an_original_sdk_job_in_its_container(
    stack: Stack, original_image: str, original_bin: Path, podman_setup: PodmanSetup  # noqa: F811
) -> None:
    add_original_app(stack, original_bin)
    stack.register("--container", "podman", "--pull-policy", "never")
    stack.bridge.start()
    definition = e2e.PairioJobDefinition.model_validate({
        "appName": "hello_world", "processorName": "wait", "inputFiles": [], "outputFiles": [], "parameters": [{"name": "seconds", "value": 300}],
    })
    job = stack.client.submit_job(stack.service, definition, e2e.RESOURCES, skip_cache=True)
    stack.wait_status(job, "running", 120)
    # the job's own console monitor uploads what the processor printed while it runs
    wait_for(lambda: "waited" in public_get(job.consoleOutputUrl).text, 120, "the job's console output")
    stack.client.cancel_job(job.jobId)
    done = stack.wait_done(job, 60)
    assert done.status.value == "failed" and "canceled" in (done.error or ""), done.error
    wait_for(lambda: not [n for n in podman_setup.container_names() if n == f"pairio-{job.jobId}"], 60, "the container to be removed")


def test_a_bridge_without_network_leaves_them_pending_for_one_that_can_run_them(stack: Stack, original_bin: Path) -> None:  # noqa: F811
    """Its claims say it runs no original-SDK image, so the hub never hands it one (the launch's own
    refusal, for older hubs: test_the_network_and_hub_url_options)."""
    add_original_app(stack, original_bin)
    stack.register("--container", "podman", "--pull-policy", "never", config_updates={"originalSdkNetwork": "none"})
    url = run_example(stack, "example1.py")[0][0]
    stack.bridge.start("--exit-when-idle")  # one claim that finds nothing it can run, then it exits
    assert stack.bridge.process is not None and stack.bridge.process.wait(timeout=120) == 0, stack.bridge.log
    assert stack.client.get_job(job_id_of(stack, url)).status.value == "pending", stack.bridge.log


# ---------------------------------------------------------------- the job's own calls, against a real hub


def _claimed_job(stack: Stack) -> tuple[str, str, str]:
    """A hello_world_2 job claimed through the bridge API: its id, its private key and the compute client's id."""
    created = _call(stack, "createComputeClient", stack.key, serviceNames=[stack.service], computeClientName="probe", userId="")
    assert created.status_code == 200, created.text
    cc_id, cc_key = created.json()["computeClientId"], created.json()["computeClientPrivateKey"]
    job = stack.client.submit_job(
        stack.service,
        e2e.PairioJobDefinition.model_validate({
            "appName": "hello_world", "processorName": "hello_world_2", "inputFiles": [],
            "outputFiles": [{"name": "output", "fileBaseName": "output.txt"}], "parameters": [],
        }),
        e2e.RESOURCES, skip_cache=True,
    )
    claimed = httpx.post(
        f"{stack.hub.url}/v1/compute/claim", json={"maxJobs": 1}, headers={"Authorization": f"Bearer {cc_key}"}, timeout=60
    )
    claimed.raise_for_status()
    [found] = [j for j in claimed.json()["jobs"] if j["jobId"] == job.jobId]
    return job.jobId, found["jobPrivateKey"], cc_id


def _call(stack: Stack, name: str, key: str = "", colon: bool = False, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer{':' if colon else ''} {key}"} if key else {}
    return httpx.post(f"{stack.hub.url}/api/{name}", json={"type": f"{name}Request", **body}, headers=headers, timeout=30)


def test_the_job_key_reports_uploads_and_stops_working_when_the_job_is_final(stack: Stack, original_bin: Path) -> None:  # noqa: F811
    add_original_app(stack, original_bin)
    job_id, key, cc_id = _claimed_job(stack)

    assert _call(stack, "setJobStatus", key, colon=True, jobId=job_id, computeClientId=cc_id, status="running").status_code == 200
    # a repeat (the bridge's own report, or a retry) is a no-op
    assert _call(stack, "setJobStatus", key, jobId=job_id, computeClientId=cc_id, status="running").status_code == 200
    assert _call(stack, "setJobStatus", "wrong", jobId=job_id, computeClientId=cc_id, status="running").status_code == 401

    bad = _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="output", outputName="nope", size=3)
    assert bad.status_code == 400 and "outputFiles" in bad.json()["error"]
    got = _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="output", outputName="output", size=5)
    assert got.status_code == 200, got.text
    signed, download = got.json()["signedUrl"], got.json()["downloadUrl"]
    assert httpx.put(signed, content=b"toolong", timeout=30).status_code == 400  # not the declared size
    tampered = signed[:-3] + ("AAA" if not signed.endswith("AAA") else "BBB")
    assert httpx.put(tampered, content=b"hello", timeout=30).status_code == 401
    assert httpx.put(signed, content=b"hello", timeout=30).status_code == 200
    assert public_get(download).text == "hello"
    big = b"x" * (11 * 1024 * 1024)  # over the hub's JSON body limit: outputs may be as large as the upload limit
    signed_big = _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="output", outputName="output", size=len(big)).json()
    assert httpx.put(signed_big["signedUrl"], content=big, timeout=60).status_code == 200
    assert len(public_get(download).content) == len(big)
    assert httpx.put(signed, content=b"hello", timeout=30).status_code == 200  # a repeated upload overwrites
    assert download == stack.client.get_job(job_id).get_output("output")

    other = _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="other", otherName="figs/a.txt", size=2).json()
    assert httpx.put(other["signedUrl"], content=b"hi", timeout=30).status_code == 200
    assert public_get(other["downloadUrl"]).text == "hi"
    assert _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="other", otherName="figs/a.txt", size=2).status_code == 400
    assert _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="other", otherName="../x", size=2).status_code == 400

    # getJob: without a key as the SDK sends it; with includePrivateKey the job's own key comes back
    plain = _call(stack, "getJob", jobId=job_id, includePrivateKey=False).json()["job"]
    assert plain["status"] == "running" and plain["jobPrivateKey"] is None
    mine = _call(stack, "getJob", key, jobId=job_id, includePrivateKey=True, computeClientId=cc_id)
    assert mine.status_code == 200 and mine.json()["job"]["jobPrivateKey"] == key
    assert _call(stack, "getJob", key, jobId=job_id, includePrivateKey=True).json()["job"]["jobPrivateKey"] is None
    assert _call(stack, "getJob", stack.key, jobId=job_id, includePrivateKey=True, computeClientId=cc_id).json()["job"]["jobPrivateKey"] is None

    assert _call(stack, "setJobStatus", key, colon=True, jobId=job_id, computeClientId=cc_id, status="completed").status_code == 200
    # never a second terminal status; the key now works only for the monitors' last log uploads
    late = _call(stack, "setJobStatus", key, jobId=job_id, computeClientId=cc_id, status="failed", error="late")
    assert late.status_code == 400 and "final" in late.json()["error"]
    assert stack.client.get_job(job_id).status.value == "completed"
    console = _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="consoleOutput", size=6).json()
    assert httpx.put(console["signedUrl"], content=b"done!\n", timeout=30).status_code == 200
    assert public_get(console["downloadUrl"]).text == "done!\n"
    assert _call(stack, "getSignedUploadUrl", key, jobId=job_id, uploadType="output", outputName="output", size=1).status_code == 401


def test_a_cancel_shows_as_a_status_change_to_the_job(stack: Stack, original_bin: Path) -> None:  # noqa: F811
    add_original_app(stack, original_bin)
    job_id, key, cc_id = _claimed_job(stack)
    assert _call(stack, "setJobStatus", key, jobId=job_id, computeClientId=cc_id, status="running").status_code == 200
    stack.client.cancel_job(job_id)
    seen = _call(stack, "getJob", jobId=job_id, includePrivateKey=False).json()["job"]
    assert seen["status"] != "running" and "canceled" in seen["error"]


# ---------------------------------------------------------------- the original compute client's calls (issue 12, point 6)

ORIGINAL_CLIENT_POLL = """\
import json, sys
from pairio.common.api_requests import get_runnable_jobs_for_compute_client, set_job_status
runnable, running = get_runnable_jobs_for_compute_client(compute_client_id=sys.argv[1], compute_client_private_key=sys.argv[2])
for job in runnable:
    # as the original compute client does when it starts a job (pending -> starting; a no-op here)
    set_job_status(job_id=job.jobId, job_private_key=job.jobPrivateKey, status='starting', compute_client_id=sys.argv[1], error=None)
print(json.dumps({"runnable": [[j.jobId, j.jobPrivateKey, j.status, j.secrets] for j in runnable], "running": [j.jobId for j in running]}))
"""


def test_the_original_clients_poll_hands_over_jobs_with_their_keys(stack: Stack, original_bin: Path, tmp_path: Path) -> None:  # noqa: F811
    add_original_app(stack, original_bin)
    created = _call(stack, "createComputeClient", stack.key, serviceNames=[stack.service], computeClientName="old client", userId="")
    cc_id, cc_key = created.json()["computeClientId"], created.json()["computeClientPrivateKey"]
    job = stack.client.submit_job(
        stack.service,
        e2e.PairioJobDefinition.model_validate({"appName": "hello_world", "processorName": "hello_world_1", "inputFiles": [], "outputFiles": [], "parameters": []}),
        e2e.RESOURCES, skip_cache=True,
    )
    script = tmp_path / "poll.py"
    script.write_text(ORIGINAL_CLIENT_POLL)

    def poll(key: str = cc_key) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(original_bin / "python"), "-I", str(script), cc_id, key], capture_output=True, text=True, timeout=120, check=False,
            env=original_env(original_bin, PAIRIO_API_URL=stack.hub.url), cwd=tmp_path,
        )

    refused = poll("pairiocc_wrong")
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    first = poll()
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout.strip().splitlines()[-1])
    [[job_id, job_key, status, secrets]] = answer["runnable"]
    assert job_id == job.jobId and job_key.startswith(JOB_KEY_PREFIX) and status == "starting" and secrets is None
    # the key works for the job's own calls; the job is this client's, and the next poll hands it over no more
    assert _call(stack, "setJobStatus", job_key, colon=True, jobId=job_id, computeClientId=cc_id, status="running").status_code == 200
    second = json.loads(poll().stdout.strip().splitlines()[-1])
    assert second == {"runnable": [], "running": [job_id]}


# ---------------------------------------------------------------- the container's command line (rendering only)


def _launch(tmp_path: Path, **config: Any) -> Any:
    from bridge.config import processor_command

    from .test_bridge_runner import RESOURCES, make_config

    return processor_command(
        make_config(containerMode="podman", **config), app_name="hello_world", image=IMAGE, executable="/app/main.py",
        job_dir=tmp_path / "job1", job_id="job1", resources=RESOURCES, original_sdk=True,
    )


def test_the_original_contract_is_on_the_watchers_options_and_the_key_is_not(tmp_path: Path) -> None:
    launch = _launch(tmp_path)
    env = dict(a.removeprefix("--job-env=").split("=", 1) for a in launch.watcher_args if a.startswith("--job-env="))
    work = str((tmp_path / "job1").resolve() / "work")
    assert env == {
        "JOB_ID": "job1", "COMPUTE_CLIENT_ID": "cc1", "PROCESSOR_EXECUTABLE": "/app/main.py", "PAIRIO_API_URL": "http://127.0.0.1:8000",
        "JOB_TIMEOUT_SEC": "60", "PAIRIO_JOB_CLEANUP_DIR": work, "PAIRIO_JOB_WORKING_DIR": work, "PYTHONUNBUFFERED": "1",
        "KACHERY_CLOUD_DIR": "/tmp/.kachery-cloud",
    }
    assert "JOB_PRIVATE_KEY" not in " ".join([*launch.command, *launch.watcher_args])  # it comes in the env file
    assert launch.command[launch.command.index("--network") + 1] == "host"
    assert launch.command[-2:] == ["python", "/app/main.py"]  # parent mode, as the original run.sh starts it


def test_the_network_and_hub_url_options(tmp_path: Path) -> None:
    from bridge.config import BridgeConfigError

    launch = _launch(tmp_path, originalSdkNetwork="bridge", originalSdkHubUrl="http://host.containers.internal:8000/")
    assert launch.command[launch.command.index("--network") + 1] == "bridge"
    assert "--job-env=PAIRIO_API_URL=http://host.containers.internal:8000" in launch.watcher_args
    with pytest.raises(BridgeConfigError, match="no network"):
        _launch(tmp_path, originalSdkNetwork="none")
    with pytest.raises(BridgeConfigError, match="container mode only"):
        from bridge.config import processor_command

        from .test_bridge_runner import RESOURCES, make_config

        processor_command(
            make_config(), app_name="hello_world", image=IMAGE, executable="/app/main.py", job_dir=tmp_path / "j",
            job_id="j", resources=RESOURCES, original_sdk=True,
        )


# The original compute client's own job handling (ComputeClientDaemon._handle_jobs: the poll, then
# JobManager starting each job with 'docker run -it ... /bin/bash /tmp/run.sh'), driven directly on the
# host's network. The whole client (registration, start() with its PubNub subscription) runs in a
# network namespace of its own in tests/test_original_compute_client.py.
ORIGINAL_CLIENT_ROUND = """\
import sys
from pairio.compute_client.ComputeClientDaemon import ComputeClientDaemon
daemon = ComputeClientDaemon(dir='.', compute_client_id=sys.argv[1], compute_client_private_key=sys.argv[2],
                             compute_client_name='old client', exit_when_idle=False)
daemon._handle_jobs()
"""


def test_the_original_compute_client_runs_a_job_with_podman_standing_in_for_docker(
    stack: Stack, original_image: str, original_bin: Path, podman_socket: str, tmp_path: Path  # noqa: F811
) -> None:
    add_original_app(stack, original_bin)
    created = _call(stack, "createComputeClient", stack.key, serviceNames=[stack.service], computeClientName="old client", userId="")
    cc_id, cc_key = created.json()["computeClientId"], created.json()["computeClientPrivateKey"]
    url = run_example(stack, "example1.py")[0][0]
    job_id = job_id_of(stack, url)
    client_dir = tmp_path / "old-client"
    client_dir.mkdir()
    script = client_dir / "round.py"
    script.write_text(ORIGINAL_CLIENT_ROUND)
    port = stack.hub.url.rsplit(":", 1)[1]
    # 'docker run -it' needs a terminal: script(1) gives the client one, as a person's shell would
    command = f"{original_bin / 'python'} -I {script} {cc_id} {cc_key}"
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=300, check=False, cwd=client_dir,
        env=original_env(original_bin, PAIRIO_API_URL=f"http://localhost:{port}", DOCKER_HOST=podman_socket),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job = stack.wait_done(stack.client.get_job(job_id), 180)
    assert job.status.value == "completed", (job.error, result.stdout)
    assert job.computeClientId == cc_id
    assert "Hello, world!" in public_get(job.consoleOutputUrl).text


# ---------------------------------------------------------------- the key's end (an in-process hub, to move the clock of a job)


def test_the_job_key_and_its_signed_urls_stop_working_after_the_grace(live_hub: Any, ctx: Any, seeded: Any) -> None:
    from sqlalchemy import update

    from hub.core import compute
    from hub.core.compute import FINAL_FLUSH_GRACE_SEC
    from hub.db.tables import Job

    from .test_wire_protocol import greeting, job_request

    def send(name: str, key: str = "", **body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{live_hub.url}/api/{name}", json={"type": f"{name}Request", **body}, headers=headers, timeout=30)

    created = send("createComputeClient", seeded.key, serviceNames=[seeded.service], computeClientName="lab", userId="").json()
    cc_id, cc_key = created["computeClientId"], created["computeClientPrivateKey"]
    job_id = send("createJob", seeded.key, **job_request(seeded, greeting())).json()["job"]["jobId"]
    [claimed] = compute.claim_jobs(ctx, cc_key, 1)
    key = claimed.job.jobPrivateKey
    assert send("setJobStatus", key, jobId=job_id, computeClientId=cc_id, status="running").status_code == 200
    assert send("setJobStatus", key, jobId=job_id, computeClientId=cc_id, status="failed", error="boom").status_code == 200
    # within the grace: the monitors' last console upload is taken
    signed = send("getSignedUploadUrl", key, jobId=job_id, uploadType="consoleOutput", size=4).json()["signedUrl"]
    assert httpx.put(signed, content=b"last", timeout=30).status_code == 200
    with ctx.transaction() as s:
        s.execute(update(Job).where(Job.job_id == job_id).values(timestamp_finished_sec=Job.timestamp_finished_sec - FINAL_FLUSH_GRACE_SEC - 1))
    late = send("getSignedUploadUrl", key, jobId=job_id, uploadType="consoleOutput", size=4)
    assert late.status_code == 401 and "no longer works" in late.json()["error"]
    assert httpx.put(signed, content=b"last", timeout=30).status_code == 401
    rest = httpx.get(f"{live_hub.url}/v1/compute/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert rest.status_code == 401 and "no longer works" in rest.text
    # the compute client's own key still reads its job
    assert httpx.get(f"{live_hub.url}/v1/compute/jobs/{job_id}", headers={"Authorization": f"Bearer {cc_key}"}, timeout=30).status_code == 200
