"""Jobs of images built with the original Pairio SDK (pairio 0.5.x): the bridge side of their contract.

**Which jobs.** Those whose processor says ``"originalSdk": true`` in the app spec the
service admin registered (hub/core/original_sdk.py says why the flag is set there and
nothing else tells). Nothing a job submitter sends turns this on.

**Environment.** The image runs unchanged: its ``main.py`` starts in the original SDK's
parent mode, which reports ``running``, starts the processor as a child and its monitors,
uploads outputs and logs itself, and reports ``completed`` or ``failed``. It gets the
variables the original compute client gave it (shared docs/app-protocol.md section 1):
``JOB_ID``, ``COMPUTE_CLIENT_ID`` (this bridge's), ``PROCESSOR_EXECUTABLE``,
``PAIRIO_API_URL``, ``JOB_TIMEOUT_SEC``, ``PAIRIO_JOB_WORKING_DIR`` and
``PAIRIO_JOB_CLEANUP_DIR`` (both the container's working directory, the job directory's
``work/``: the SDK's cleanup deletes every file under it, and the job directory itself,
mounted at its host path, may lie under the container's /tmp), ``PYTHONUNBUFFERED`` and
``KACHERY_CLOUD_DIR``; these are not secret and reach the watcher as ``--job-env``
options. ``JOB_PRIVATE_KEY`` is a secret: it travels like the job's secrets, in the job
directory's 0600 secrets file and then the container's env file, never on a command line,
and it is masked in the console output and in everything the bridge logs.

**Network.** The job must reach the hub from inside its container, so such jobs (and only
they) get a network, chosen by the bridge's ``originalSdkNetwork``:

- ``host`` (default): the host's network namespace, so a hub at 127.0.0.1 (or any address
  the host reaches) works as the bridge's own hub URL. The cost: the container shares the
  host's loopback, so it can reach services that listen only there. The image is the one
  the service admin registered, and it still runs as the bridge's user, with its limits;
  use ``bridge`` on hosts with loopback-only services that must not be reachable.
- ``bridge``: the engine's own network (NAT); ``originalSdkHubUrl`` must then be an address
  the container reaches (e.g. ``http://host.containers.internal:8000`` for podman).
- ``none``: nodes without network cannot run them; such a job fails at once with a message
  saying so, rather than hanging in its first call to the hub.

**Reports.** The job process reports its own status; the bridge's reports coexist with
them (a repeated ``running`` is a no-op on the hub). When the container ends, the bridge
does not upload outputs or stream the console (the job did); it asks the hub for the job's
status and reports ``failed`` only when the job ended without a final status of its own.
Cancel stops the container, as for any job; the hub also shows the job as no longer
``running`` to its getJob, which the original SDK's job-status monitor notices.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

from pairio.models import PairioJobRequiredResources

JOB_KEY_VARIABLE = "JOB_PRIVATE_KEY"
KACHERY_CLOUD_DIR = "/tmp/.kachery-cloud"


class OriginalSdkNetwork(str, Enum):
    """The network a container of an original-SDK image gets (it must reach the hub)."""

    HOST = "host"
    """the host's network: the bridge's hub URL works as it is, 127.0.0.1 included"""
    BRIDGE = "bridge"
    """the engine's NAT network: set originalSdkHubUrl to an address containers reach"""
    NONE = "none"
    """no network on this node: such jobs fail at once, saying why"""


def no_network_error(app_name: str) -> str:
    return (
        f"app {app_name!r} is an image built with the original Pairio SDK, whose job process must call the hub from "
        "inside its container, and this bridge gives containers no network (originalSdkNetwork 'none'); run the app "
        "on a bridge whose nodes reach the hub, or rebuild its image with Pairio's SDK"
    )


def original_environment(
    *, job_id: str, compute_client_id: str, executable: str, hub_url: str, resources: PairioJobRequiredResources, working_dir: Path
) -> dict[str, str]:
    """The original SDK's non-secret variables (JOB_PRIVATE_KEY goes with the secrets)."""
    return {
        "JOB_ID": job_id,
        "COMPUTE_CLIENT_ID": compute_client_id,
        "PROCESSOR_EXECUTABLE": executable,
        "PAIRIO_API_URL": hub_url.rstrip("/"),
        "JOB_TIMEOUT_SEC": str(int(resources.timeSec)),
        "PAIRIO_JOB_CLEANUP_DIR": str(working_dir),
        "PAIRIO_JOB_WORKING_DIR": str(working_dir),
        "PYTHONUNBUFFERED": "1",
        "KACHERY_CLOUD_DIR": KACHERY_CLOUD_DIR,
    }


def job_env_args(env: dict[str, str]) -> tuple[str, ...]:
    """The watcher's ``--job-env NAME=VALUE`` options (values that are not secret only)."""
    return tuple(f"--job-env={name}={value}" for name, value in env.items())


def key_secret(job_private_key: Optional[str], job_id: str) -> dict[str, str]:
    """The job private key as a secret of the job's environment; refuses a job without one."""
    if not job_private_key:
        raise ValueError(
            f"job {job_id} runs an image built with the original Pairio SDK, which needs the job's private key, and the "
            "bridge no longer has it (it is handed out once, at the claim, and the bridge restarted since); submit the job again"
        )
    return {JOB_KEY_VARIABLE: job_private_key}
