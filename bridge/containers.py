"""The container engines' command lines: one place per engine, built from a job's resources and the bridge's settings.

podman and docker: the watcher runs the ``create`` argv built here, then starts, follows, stops
and removes the container itself (bridge/watch.py), under the name ``pairio-<jobId>`` so that a
restarted bridge can find it. apptainer: the ``exec`` argv runs under the watcher like a native
processor. Either way the job's variables and secrets reach the container only through an env
file the watcher writes in the job directory (``watch.CONTAINER_ENV_FILE``, mode 0600), never
through a command line, where ``ps`` would show them. GPU flags are added by the watcher on the
job's host (``watch.with_gpu_options``), where the job's GPUs are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from pairio.models import PairioJobRequiredResources

from .watch import CONTAINER_ENV_FILE, INPUTS_DIR, JOB_FILE, JOB_TMP_DIR, OUTPUTS_DIR, OWNER_PLACEHOLDER, WORK_DIR

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
    writable_inputs: bool = False,
) -> list[str]:
    """``podman create`` / ``docker create`` of the job's container; the watcher starts it.

    The parts of the job directory a processor uses are mounted at their own paths (``job_mounts``),
    so the paths in job.json hold inside; /tmp is the job's own ``tmp/`` (jobs never fill the host's
    /tmp); files written inside belong to the job's user on the host it runs on (``watch.with_owner``:
    over SSH or Slurm that is not the bridge's host). Never ``run --rm``: docker through podman's
    socket loses the exit code with it.
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
        OWNER_PLACEHOLDER,  # the owner on the host the container runs on: the watcher there fills it in
        *[option for source, target, mode in job_mounts(job_dir, writable_inputs) for option in ("-v", f"{source}:{target}:{mode}")],
        "-w", str(job_dir / WORK_DIR),
        image, *argv,
    ]  # fmt: skip


def job_mounts(job_dir: Path, writable_inputs: bool = False) -> list[tuple[Path, str, str]]:
    """What of the job directory a container sees, as (host path, path inside, ro|rw).

    The job file and the staged inputs read-only (staged inputs are hard links to the bridge's cache:
    written through, they would change every job's copy); the outputs and the working directory
    writable, at the same paths as on the host; the job's ``tmp/`` as /tmp. ``writable_inputs``: the
    processor fetches its inputs itself (lazy staging), into the job's own directory, never the cache.
    Never the whole directory: the watcher's files there (watcher.json, result.json, the cancel mark,
    the env file) are the bridge's, and a processor in a container must not be able to write them.
    """
    return [
        (job_dir / JOB_FILE, str(job_dir / JOB_FILE), "ro"),
        (job_dir / INPUTS_DIR, str(job_dir / INPUTS_DIR), "rw" if writable_inputs else "ro"),
        (job_dir / OUTPUTS_DIR, str(job_dir / OUTPUTS_DIR), "rw"),
        (job_dir / WORK_DIR, str(job_dir / WORK_DIR), "rw"),
        (job_dir / JOB_TMP_DIR, "/tmp", "rw"),
    ]


def apptainer_exec_command(
    *, image: str, argv: Sequence[str], job_dir: Path, resources: PairioJobRequiredResources, engine_limits: bool = False,
    writable_inputs: bool = False,
) -> list[str]:
    """``apptainer exec`` with nothing of the host but the job's files (``job_mounts``) and a job-local /tmp.

    ``engine_limits``: memory and CPU limits by apptainer's cgroups (apptainer 1.1 or later with cgroup
    support on the host, or every job fails at start); otherwise the watcher enforces memory and time.
    """
    job_dir = job_dir.resolve()
    command = [
        "apptainer", "exec", "--containall", "--cleanenv",
        *[option for source, target, mode in job_mounts(job_dir, writable_inputs) for option in ("--bind", f"{source}:{target}:{mode}")],
        "--pwd", str(job_dir / WORK_DIR),
        "--env-file", str(job_dir / CONTAINER_ENV_FILE),
    ]  # fmt: skip
    if engine_limits:
        memory = f"{memory_limit_mb(resources.memoryGb)}M"
        command += ["--memory", memory, "--memory-swap", memory, "--cpus", f"{resources.numCpus:g}"]
    if resources.numGpus > 0:
        command.append("--nv")  # CUDA_VISIBLE_DEVICES in the env file picks the job's GPUs
    return [*command, apptainer_image(image), *argv]


def apptainer_image(image: str) -> str:
    if image.startswith(_APPTAINER_SCHEMES) or image.endswith(".sif") or image.startswith("/"):
        return image
    return f"docker://{image}"
