"""A bridge's configuration: one ``bridge.json`` per bridge directory, written by ``pairio-bridge register``.

The file holds the compute client's private key, so it is written readable by its
owner only (0600). Paths in it may be relative; they are relative to the bridge
directory and are made absolute when the file is loaded.

``processor_command`` turns a job's processor into the argv the backend runs, for
each container mode: ``none`` (a command configured per app), ``docker`` and
``apptainer`` (built from the processor's image and executable).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pairio.jobfile import JOB_FILE_ENV
from pairio.models import PairioComputeClientComputeSlot, PairioJobRequiredResources
from pairio.private_file import write_private_file

from .slurm.site import SlurmSiteOptions
from .ssh.options import SshOptions
from .watch import THREAD_COUNT_VARIABLES

CONFIG_FILE_NAME = "bridge.json"
# Environment variables the watcher sets for the processor; containers must receive them too.
PROCESSOR_ENV_NAMES = (JOB_FILE_ENV, "PAIRIO_JOB_ID", *THREAD_COUNT_VARIABLES, "CUDA_VISIBLE_DEVICES")
_PASS_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
# Image references apptainer understands without a docker:// prefix.
_APPTAINER_SCHEMES = ("docker://", "docker-archive:", "library://", "oras://", "shub://", "http://", "https://", "instance://")


class ContainerMode(str, Enum):
    """How a processor is started."""

    NONE = "none"
    """No container: the app's command from ``appCommands`` runs on the host."""
    DOCKER = "docker"
    """``docker run`` of the processor's image."""
    APPTAINER = "apptainer"
    """``apptainer exec`` of the processor's image (docker:// unless the image names another source)."""


class BridgeConfigError(Exception):
    """The bridge directory or its configuration is missing or wrong; the message says how to fix it."""


class BridgeConfig(BaseModel):
    """The contents of ``DIR/bridge.json``."""

    model_config = ConfigDict(extra="forbid")

    hubUrl: str
    serviceName: str
    computeClientId: str
    computeClientPrivateKey: str = Field(repr=False)
    label: str
    computeSlots: list[PairioComputeClientComputeSlot] = Field(min_length=1)
    containerMode: ContainerMode = ContainerMode.NONE
    appCommands: dict[str, str] = Field(
        default_factory=dict, description="container mode none: the command that runs each app, e.g. 'python /abs/main.py'"
    )
    jobsDir: str = Field(default="jobs", description="where job directories go; relative to the bridge directory")
    cacheDir: str = Field(default="cache", description="where staged inputs are cached; relative to the bridge directory")
    jobDirCleanupAgeSec: float = Field(default=7 * 24 * 3600.0, ge=0, description="reported jobs' directories are deleted after this")
    claimWaitSec: float = Field(default=10.0, ge=0, le=3600, description="long-poll of a claim while the bridge is idle")
    pollIntervalSec: float = Field(default=0.5, gt=0, le=600, description="how often running jobs are polled")
    heartbeatIntervalSec: float = Field(default=2.0, gt=0, le=600, description="how often the hub is told the bridge lives")
    hubTimeoutSec: float = Field(default=10.0, gt=0, le=60, description="how long one call waits for the hub's answer (claims: their wait more)")
    maxConcurrentJobs: Optional[int] = Field(default=None, ge=1, description="at most this many jobs at once (default: the slots')")
    slurm: SlurmSiteOptions = Field(
        default_factory=SlurmSiteOptions, description="pairio-bridge slurm: how this cluster wants its batch jobs (site options)"
    )
    respectMachineLoad: bool = Field(
        default=False,
        description="local and SSH: a claimed job waits while other programs keep the host's CPUs busy (default: jobs run up to the slots)",
    )
    ssh: Optional[SshOptions] = Field(default=None, description="the SSH bridge: the remote host and how to reach it")
    passEnv: list[str] = Field(
        default_factory=list,
        description="variables of the bridge's environment its processors also get (NAME, or PREFIX_* for all starting so); "
        "besides these they see only PATH, HOME, LANG, LC_*, TZ, TMPDIR, USER, LOGNAME and what Pairio sets",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_old_load_setting(cls, data: object) -> object:
        # Older bridge.json files carry considerMachineLoad, written with its old default (true) by
        # every register; honouring it would keep busy machines from running jobs: respectMachineLoad replaces it.
        if isinstance(data, dict) and "considerMachineLoad" in data:
            data = {k: v for k, v in data.items() if k != "considerMachineLoad"}
        return data

    @field_validator("hubUrl")
    @classmethod
    def _hub_url_is_http(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"hubUrl must start with http:// or https://, got {v!r}")
        return v

    @field_validator("passEnv")
    @classmethod
    def _pass_env_names(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if not _PASS_ENV_RE.fullmatch(pattern):
                raise ValueError(
                    f"passEnv entry {pattern!r} is not a variable name (letters, digits and '_') or a PREFIX_* pattern"
                )
        return v

    @field_validator("appCommands")
    @classmethod
    def _commands_parse(cls, v: dict[str, str]) -> dict[str, str]:
        for app, command in v.items():
            try:
                argv = shlex.split(command)
            except ValueError as e:
                raise ValueError(f"the command of app {app!r} is not valid shell syntax ({e}): {command!r}") from None
            if not argv:
                raise ValueError(f"the command of app {app!r} is empty")
        return v

    def __repr__(self) -> str:
        return f"BridgeConfig(hubUrl={self.hubUrl!r}, serviceName={self.serviceName!r}, computeClientId={self.computeClientId!r})"

    @property
    def jobs_path(self) -> Path:
        return Path(self.jobsDir)

    @property
    def cache_path(self) -> Path:
        return Path(self.cacheDir)

    @property
    def max_jobs_at_once(self) -> int:
        slots_total = sum(slot.multiplicity for slot in self.computeSlots)
        return min(slots_total, self.maxConcurrentJobs) if self.maxConcurrentJobs else slots_total


def config_file(bridge_dir: Path) -> Path:
    return bridge_dir / CONFIG_FILE_NAME


def load_bridge_config(bridge_dir: Path) -> BridgeConfig:
    """The bridge's configuration, with its directories made absolute (relative ones are under ``bridge_dir``)."""
    path = config_file(bridge_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BridgeConfigError(
            f"no {CONFIG_FILE_NAME} in {bridge_dir}: run 'pairio-bridge register --dir {bridge_dir} --service NAME' first"
        ) from None
    except (OSError, ValueError) as e:
        raise BridgeConfigError(f"cannot read {path} ({e}); fix it, or delete it and run 'pairio-bridge register' again") from None
    try:
        config = BridgeConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in e.errors())
        raise BridgeConfigError(f"{path} is not a valid bridge configuration ({problems}); fix those fields") from None
    base = bridge_dir.resolve()
    return config.model_copy(
        update={"jobsDir": str(base / config.jobsDir), "cacheDir": str(base / config.cacheDir)}
    )


def save_bridge_config(bridge_dir: Path, config: BridgeConfig) -> Path:
    """Write ``bridge.json`` atomically, readable by its owner only (it holds the compute client key)."""
    bridge_dir.mkdir(parents=True, exist_ok=True)
    path = config_file(bridge_dir)
    return write_private_file(path, config.model_dump_json(indent=2) + "\n")


# ---------------------------------------------------------------- the processor's command line


def processor_command(
    config: BridgeConfig,
    *,
    app_name: str,
    image: Optional[str],
    executable: Optional[str],
    job_dir: Path,
    resources: PairioJobRequiredResources,
    env_names: Sequence[str] = (),
) -> list[str]:
    """The argv that runs a job's processor in ``job_dir/work``, for the bridge's container mode.

    Containers see the job directory at the same path as the host, so the paths in
    job.json are valid inside them; the watcher's environment (job file, thread counts,
    GPUs) and ``env_names`` (the job's secrets) are passed through by name, so values
    never appear on a command line.
    """
    if config.containerMode is ContainerMode.NONE:
        command = config.appCommands.get(app_name)
        if not command:
            known = ", ".join(sorted(config.appCommands)) or "none"
            raise BridgeConfigError(
                f"this bridge has no command for app {app_name!r} (it knows: {known}); add one with "
                f"'pairio-bridge register ... --app {app_name}=\"python /abs/path/main.py\"' "
                f"or in 'appCommands' of its {CONFIG_FILE_NAME}"
            )
        return shlex.split(command)
    if not image:
        raise BridgeConfigError(
            f"app {app_name!r} declares no image, so container mode {config.containerMode.value!r} cannot run it; "
            "give the processor an image in its spec, or run this app on a bridge with container mode 'none'"
        )
    if not executable:
        raise BridgeConfigError(f"app {app_name!r} declares no executable for its processor; set 'executable' in its spec")
    job_dir = job_dir.resolve()
    work_dir = job_dir / "work"
    if config.containerMode is ContainerMode.DOCKER:
        return docker_command(image, executable, job_dir, work_dir, resources, env_names)
    return apptainer_command(image, executable, job_dir, work_dir, resources)


def docker_command(
    image: str, executable: str, job_dir: Path, work_dir: Path, resources: PairioJobRequiredResources, env_names: Sequence[str] = ()
) -> list[str]:
    argv = [
        "docker", "run", "--rm", "--init",
        # a recognisable name lets an operator (or a restarted bridge) find the container
        "--name", f"pairio-{job_dir.name}",
        # files the processor writes belong to the bridge's user, not root
        "--user", f"{os.getuid()}:{os.getgid()}",
        "-v", f"{job_dir}:{job_dir}",
        "-w", str(work_dir),
        "--cpus", str(resources.numCpus),
        # processes in the container are not children of the watcher, so docker enforces memory
        "--memory", f"{max(1, int(resources.memoryGb * 1024))}m",
    ]
    for name in dict.fromkeys([*PROCESSOR_ENV_NAMES, *env_names]):
        argv += ["-e", name]
    if resources.numGpus > 0:
        argv += ["--gpus", "all"]
    return argv + [image, executable]


def apptainer_command(image: str, executable: str, job_dir: Path, work_dir: Path, resources: PairioJobRequiredResources) -> list[str]:
    # apptainer passes the host environment through, so the watcher's variables arrive as they are
    argv = ["apptainer", "exec", "--bind", f"{job_dir}:{job_dir}", "--pwd", str(work_dir)]
    if resources.numGpus > 0:
        argv.append("--nv")
    return argv + [apptainer_image(image), executable]


def apptainer_image(image: str) -> str:
    if image.startswith(_APPTAINER_SCHEMES) or image.endswith(".sif") or image.startswith("/"):
        return image
    return f"docker://{image}"
