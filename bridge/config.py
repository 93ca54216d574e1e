"""A bridge's configuration: one ``bridge.json`` per bridge directory, written by ``pairio-bridge register``.

The file holds the compute client's private key, so it is written readable by its
owner only (0600). Paths in it may be relative; they are relative to the bridge
directory and are made absolute when the file is loaded.

``processor_command`` turns a job's processor into what the watcher runs, for each
container mode: ``none`` (a command configured per app), ``podman``, ``docker`` and
``apptainer`` (built by ``bridge.containers`` from the processor's image and executable).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pairio.models import PairioComputeClientComputeSlot, PairioJobRequiredResources
from pairio.private_file import write_private_file

from .containers import PullPolicy, apptainer_exec_command, container_name, executable_argv, oci_create_command
from .original_sdk import OriginalSdkNetwork, job_env_args, no_network_error, original_environment
from .slurm.site import SlurmSiteOptions
from .ssh.options import SshOptions
from .staging import InputStaging
from .watch import WORK_DIR

CONFIG_FILE_NAME = "bridge.json"
_PASS_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")


class ContainerMode(str, Enum):
    """How a processor is started."""

    NONE = "none"
    """No container: the app's command from ``appCommands`` runs on the host."""
    PODMAN = "podman"
    """a podman container of the processor's image, created, followed and removed by the watcher"""
    DOCKER = "docker"
    """the same through the docker CLI (Docker, or podman's Docker-compatible socket via DOCKER_HOST)"""
    APPTAINER = "apptainer"
    """``apptainer exec`` of the processor's image (docker:// unless the image names another source)"""


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
    pullPolicy: PullPolicy = Field(
        default=PullPolicy.MISSING, description="podman/docker: when an image may be pulled (never, missing, always)"
    )
    apptainerLimits: bool = Field(
        default=False,
        description="apptainer: also pass --memory/--memory-swap/--cpus (needs an apptainer with cgroup support "
        "on the job's host; without it the watcher's limits apply, as for native runs)",
    )
    appCommands: dict[str, str] = Field(
        default_factory=dict, description="container mode none: the command that runs each app, e.g. 'python /abs/main.py'"
    )
    pythonWarmStart: bool = Field(
        default=True,
        description="local bridge, container mode none: apps whose command is 'PYTHON SCRIPT ...' have each processor forked "
        "from that interpreter, started once, instead of a new interpreter per job (tens of ms of CPU less per job; see "
        "the README's 'Warm start')",
    )
    claimAheadJobs: int = Field(
        default=2, ge=0, le=64,
        description="jobs claimed ahead while every slot is busy and the jobs here typically run under 5 s, each started "
        "the moment a slot frees (0: off). A job claimed ahead that finds no free slot within claimAheadHoldSec goes back "
        "to pending; none is claimed ahead while another bridge of the service waits for such jobs",
    )
    claimAheadHoldSec: float = Field(
        default=30.0, gt=0, le=3600, description="how long a job claimed ahead waits for a free slot before it is given back"
    )
    jobsDir: str = Field(default="jobs", description="where job directories go; relative to the bridge directory")
    cacheDir: str = Field(default="cache", description="where staged inputs are cached; relative to the bridge directory")
    inputStaging: Optional[InputStaging] = Field(
        default=None,
        description="when inputs are downloaded: 'ahead' (before the job starts) or 'lazy' (when the processor downloads "
        "one; get_url() alone downloads nothing). Default: lazy on the local bridge, ahead on Slurm and SSH",
    )
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

    originalSdkNetwork: OriginalSdkNetwork = Field(
        default=OriginalSdkNetwork.HOST,
        description="container mode: the network of jobs whose image was built with the original Pairio SDK (their job process "
        "calls the hub): host (default; the host's network), bridge (the engine's; set originalSdkHubUrl), or none (this "
        "node has no network: such jobs fail, saying why). See bridge/original_sdk.py",
    )
    originalSdkHubUrl: Optional[str] = Field(
        default=None, description="the hub's URL as such jobs' containers reach it (default: hubUrl)"
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

    @field_validator("originalSdkHubUrl")
    @classmethod
    def _original_hub_url_is_http(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        return cls._hub_url_is_http(v)

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


def update_app_commands(bridge_dir: Path, add: Optional[dict[str, str]] = None, remove: tuple[str, ...] = ()) -> dict[str, str]:
    """Change the app commands in ``bridge.json`` in place (everything else as written); returns the new set.

    The file is replaced atomically, so a running bridge reads either the old or the new one.
    """
    path = config_file(bridge_dir)
    load_bridge_config(bridge_dir)  # says what is wrong with a missing or broken file
    raw = json.loads(path.read_text())
    commands = dict(raw.get("appCommands") or {})
    unknown = [app for app in remove if app not in commands]
    if unknown:
        known = ", ".join(sorted(commands)) or "none"
        raise BridgeConfigError(f"this bridge has no command for {', '.join(map(repr, unknown))} (it has: {known})")
    for app in remove:
        del commands[app]
    commands.update(add or {})
    raw["appCommands"] = commands
    try:
        BridgeConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise BridgeConfigError(f"invalid app command ({problems})") from None
    write_private_file(path, json.dumps(raw, indent=2) + "\n")
    return commands


class AppCommandsFile:
    """A running bridge's view of the app commands in its ``bridge.json``: re-read when the file changes
    (``pairio-bridge apps add/remove``), so new commands apply from the next job on, without a restart."""

    def __init__(self, bridge_dir: Path) -> None:
        self.path = config_file(bridge_dir)
        self._seen = self._stamp()

    def _stamp(self) -> Optional[tuple[int, int]]:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def changed(self) -> Optional[dict[str, str]]:
        """The app commands when the file changed since the last look (None: unchanged); raises BridgeConfigError
        for a file that no longer reads as a bridge configuration (the caller keeps the commands it has)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        return load_bridge_config(self.path.parent).appCommands


# ---------------------------------------------------------------- the processor's command line


@dataclass(frozen=True)
class ProcessorLaunch:
    """What the watcher runs for a job: the processor's argv (podman/docker: the container's ``create``) and its own options."""

    command: list[str]
    watcher_args: tuple[str, ...] = ()


def processor_command(
    config: BridgeConfig,
    *,
    app_name: str,
    image: Optional[str],
    executable: Optional[str],
    job_dir: Path,
    job_id: str,
    resources: PairioJobRequiredResources,
    needs_network: bool = False,
    fetches_inputs: bool = False,
    original_sdk: bool = False,
) -> ProcessorLaunch:
    """How a job's processor runs in ``job_dir/work``, for the bridge's container mode.

    Containers see the job directory at the same path as the host, so the paths in job.json
    hold inside them; the job's variables and secrets reach them in an env file the watcher
    writes (``bridge.containers``), never on a command line.
    """
    mode = config.containerMode
    if mode is ContainerMode.NONE and original_sdk:
        raise BridgeConfigError(
            f"app {app_name!r} is an image built with the original Pairio SDK, which runs in container mode only; "
            "run it on a bridge registered with --container podman, docker or apptainer"
        )
    if mode is ContainerMode.NONE:
        command = config.appCommands.get(app_name)
        if not command:
            known = ", ".join(sorted(config.appCommands)) or "none"
            raise BridgeConfigError(
                f"this bridge has no command for app {app_name!r} (it knows: {known}); add one with "
                f"'pairio-bridge apps add --dir BRIDGE_DIR {app_name}=\"python /abs/path/main.py\"' "
                f"(the running bridge uses it from its next job)"
            )
        return ProcessorLaunch(shlex.split(command))
    if not image:
        raise BridgeConfigError(
            f"app {app_name!r} declares no image, so container mode {mode.value!r} cannot run it; "
            "give the processor an image in its spec, or run this app on a bridge with container mode 'none'"
        )
    if not executable:
        raise BridgeConfigError(f"app {app_name!r} declares no executable for its processor; set 'executable' in its spec")
    argv = executable_argv(executable)
    watcher_args: tuple[str, ...] = ("--container-engine", mode.value, "--container-image", image)
    network: str = "bridge" if needs_network else "none"
    if original_sdk:
        if config.originalSdkNetwork is OriginalSdkNetwork.NONE:
            raise BridgeConfigError(no_network_error(app_name))
        network = config.originalSdkNetwork.value
        env = original_environment(
            job_id=job_id, compute_client_id=config.computeClientId, executable=executable,
            hub_url=config.originalSdkHubUrl or config.hubUrl, resources=resources, working_dir=job_dir.resolve() / WORK_DIR,
        )
        watcher_args = (*watcher_args, *job_env_args(env))
    if mode is ContainerMode.APPTAINER:
        command = apptainer_exec_command(
            image=image, argv=argv, job_dir=job_dir, resources=resources, engine_limits=config.apptainerLimits,
            writable_inputs=fetches_inputs,
        )
        return ProcessorLaunch(command, watcher_args)
    command = oci_create_command(
        mode.value, image=image, argv=argv, job_dir=job_dir, job_id=job_id, resources=resources, pull_policy=config.pullPolicy,
        network=network, writable_inputs=fetches_inputs,
    )
    return ProcessorLaunch(command, (*watcher_args, "--container-name", container_name(job_id)))
