"""The container engines' command lines: one place per engine, built from a job's resources and the bridge's settings.

podman and docker: the watcher runs the ``create`` argv built here, then starts, follows, stops
and removes the container itself (bridge/watch.py), under the name ``pairio-<jobId>`` so that a
restarted bridge can find it. apptainer: the ``exec`` argv runs under the watcher like a native
processor. Either way the job's variables and secrets reach the container only through an env
file the watcher writes in the job directory (``watch.CONTAINER_ENV_FILE``, mode 0600), never
through a command line, where ``ps`` would show them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from pairio.models import PairioJobRequiredResources

from .watch import CONTAINER_ENV_FILE, JOB_TMP_DIR, WORK_DIR

CONTAINER_NAME_PREFIX = "pairio-"
# Enough for any real processor's threads and subprocesses; stops a fork bomb from taking the host.
DEFAULT_PIDS_LIMIT = 4096
# An engine refuses a memory limit under a few MB; a tiny memoryGb still gets a container that starts.
MIN_MEMORY_MB = 6
# Image references apptainer understands without a docker:// prefix.
_APPTAINER_SCHEMES = ("docker://", "docker-archive:", "library://", "oras://", "shub://", "http://", "https://", "instance://")


class PullPolicy(str, Enum):
    """When podman/docker may fetch a job's image from its registry."""

    NEVER = "never"
    """only images already on the bridge host run (offline hosts; a missing image fails the job at once)"""
    MISSING = "missing"
    """pull an image the host does not have yet"""
    ALWAYS = "always"
    """pull before every job, so a moved tag is followed"""


def container_name(job_id: str) -> str:
    return f"{CONTAINER_NAME_PREFIX}{job_id}"


def executable_argv(executable: str) -> list[str]:
    """``main.py`` files in app images are not executable: they run with the image's python."""
    return ["python", executable] if executable.endswith(".py") else [executable]


def memory_limit_mb(memory_gb: float) -> int:
    return max(MIN_MEMORY_MB, int(memory_gb * 1024))


def oci_create_command(
    engine: str,
    *,
    image: str,
    argv: Sequence[str],
    job_dir: Path,
    job_id: str,
    resources: PairioJobRequiredResources,
    pull_policy: PullPolicy = PullPolicy.MISSING,
    network: "bool | str" = False,
) -> list[str]:
    """``podman create`` / ``docker create`` of the job's container; the watcher starts it.

    The job directory is mounted at the same path, so the paths in job.json hold inside; /tmp is
    the job's own ``tmp/`` (jobs never fill the host's /tmp); files written inside belong to the
    bridge's user. Never ``run --rm``: docker through podman's socket loses the exit code with it.
    """
    job_dir = job_dir.resolve()
    memory = f"{memory_limit_mb(resources.memoryGb)}m"
    return [
        engine, "create",
        "--name", container_name(job_id),
        "--label", f"pairio.job={job_id}",
        "--pull", pull_policy.value,
        "--cpus", f"{resources.numCpus:g}",
        # the same swap limit: the memory limit must not be met by swapping
        "--memory", memory, "--memory-swap", memory,
        "--pids-limit", str(DEFAULT_PIDS_LIMIT),
        "--network", network if isinstance(network, str) else "bridge" if network else "none",
        "--env-file", str(job_dir / CONTAINER_ENV_FILE),
        *owner_options(engine),
        "-v", f"{job_dir}:{job_dir}",
        "-v", f"{job_dir / JOB_TMP_DIR}:/tmp",
        "-w", str(job_dir / WORK_DIR),
        image, *argv,
    ]  # fmt: skip


def owner_options(engine: str) -> list[str]:
    """Run as the bridge's user, so outputs are its files on the host.

    Rootless podman maps the user's own id into the container with ``keep-id`` (a plain ``--user``
    would be a sub-id there); docker and rootful podman take the uid and gid as they are.
    """
    if engine == "podman" and os.getuid() != 0:
        return ["--userns", "keep-id"]
    return ["--user", f"{os.getuid()}:{os.getgid()}"]


def apptainer_exec_command(
    *, image: str, argv: Sequence[str], job_dir: Path, resources: PairioJobRequiredResources
) -> list[str]:
    """``apptainer exec`` with nothing of the host but the job directory and a job-local /tmp."""
    job_dir = job_dir.resolve()
    command = [
        "apptainer", "exec", "--containall", "--cleanenv",
        "--bind", f"{job_dir}:{job_dir}",
        "--bind", f"{job_dir / JOB_TMP_DIR}:/tmp",
        "--pwd", str(job_dir / WORK_DIR),
        "--env-file", str(job_dir / CONTAINER_ENV_FILE),
    ]  # fmt: skip
    if resources.numGpus > 0:
        command.append("--nv")  # CUDA_VISIBLE_DEVICES in the env file picks the job's GPUs
    return [*command, apptainer_image(image), *argv]


def apptainer_image(image: str) -> str:
    if image.startswith(_APPTAINER_SCHEMES) or image.endswith(".sif") or image.startswith("/"):
        return image
    return f"docker://{image}"
