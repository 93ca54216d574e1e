"""``pairio-bridge``: register a bridge with a hub, and run it.

    pairio-bridge register --dir DIR --service NAME [--app APP=COMMAND ...]   (once, with a user's API key)
    pairio-bridge local --dir DIR [--exit-when-idle]                          (runs jobs on this machine)
    pairio-bridge slurm --dir DIR [--exit-when-idle]                          (sbatch jobs, from a login node)
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import click
import httpx
from pydantic import ValidationError

from pairio.cli.errors import describe_expected_error
from pairio.config import resolve_client_settings
from pairio.errors import MissingApiKeyError, PairioConnectionError, error_for_response, redact
from pairio.extras import extra_of_missing_module, require_extra
from pairio.models import MAX_TIME_SEC, PairioComputeClientComputeSlot

from .config import (
    AppCommandsFile,
    BridgeConfig,
    BridgeConfigError,
    ContainerMode,
    config_file,
    load_bridge_config,
    save_bridge_config,
    update_app_commands,
)
from .containers import PullPolicy
from .dirlock import lock_bridge_dir
from .hub_api import HubApiError
from .slurm.site import SlurmSiteOptions

DEFAULT_TIME_SEC = 24 * 3600.0
log = logging.getLogger("bridge")


class BridgeCommands(click.Group):
    """Errors a user can fix are one line on stderr (exit status 1), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (BridgeConfigError, HubApiError) as e:
            raise click.ClickException(_one_line(str(e))) from None
        except Exception as e:
            message = describe_expected_error(e)
            if message is None:
                raise
            raise click.ClickException(_one_line(message)) from None


HELP_FLAGS = {"-h", "--help"}


def _one_line(message: str) -> str:
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


@click.group(cls=BridgeCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pairio", prog_name="pairio-bridge")
def main() -> None:
    """Pairio bridges: compute clients that claim a service's jobs from a hub and run them.

    \b
    Register once:  pairio-bridge register --dir DIR --service NAME --app APP="python /abs/path/main.py"
    Run:            pairio-bridge local --dir DIR     (this machine)
                    pairio-bridge slurm --dir DIR     (a Slurm cluster, from its login node)
                    pairio-bridge ssh --dir DIR ...   (a remote host over SSH)
    """
    if not HELP_FLAGS & set(sys.argv[1:]):
        require_extra("bridge", "a bridge")


# ---------------------------------------------------------------- register


def _machine_memory_gb() -> float:
    import psutil

    return round(psutil.virtual_memory().total / 1024**3, 1)


def _machine_gpus() -> int:
    from .local.resources import detect_gpu_ids

    try:
        return len(detect_gpu_ids(os.environ))
    except (OSError, subprocess.SubprocessError):
        return 0


def _parse_app_commands(values: tuple[str, ...]) -> dict[str, str]:
    commands: dict[str, str] = {}
    for value in values:
        app, sep, command = value.partition("=")
        if not sep or not app.strip() or not command.strip():
            raise click.BadParameter(f"expected APP=COMMAND, e.g. hello_world=\"python /abs/path/main.py\"; got {value!r}", param_hint="--app")
        commands[app.strip()] = command.strip()
    return commands


@main.command()
@click.option("--dir", "bridge_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="the bridge's directory (bridge.json, jobs/, cache/)")
@click.option("--service", required=True, help="the service whose jobs this bridge runs")
@click.option("--name", "label", default=None, help="a label shown on jobs it runs [default: bridge-HOSTNAME]")
@click.option("--hub-url", default=None, help="the hub [default: $PAIRIO_API_URL, else 'pairio login', else http://127.0.0.1:8000]")
@click.option("--app", "apps", multiple=True, metavar="APP=COMMAND", help="container mode none: the command that runs APP (repeatable)")
@click.option("--num-cpus", type=click.IntRange(1), default=None, help="most CPUs of one job [default: this machine's]")
@click.option("--num-gpus", type=click.IntRange(0), default=None, help="most GPUs of one job [default: this machine's]")
@click.option("--memory-gb", type=click.FloatRange(min=0, min_open=True), default=None, help="most memory of one job [default: this machine's]")
@click.option("--time-sec", type=click.FloatRange(min=0, min_open=True, max=MAX_TIME_SEC), default=DEFAULT_TIME_SEC, show_default=True, help="longest time limit of one job")
@click.option("--multiplicity", type=click.IntRange(1), default=None, help="jobs of the slot at once [default: --num-cpus; the machine's free resources limit it further]")
@click.option("--max-concurrent-jobs", type=click.IntRange(1), default=None, help="never more jobs than this at once")
@click.option(
    "--respect-machine-load", is_flag=True,
    help="local and SSH: hold a claimed job back while other programs keep the machine's CPUs busy "
    "(its timeline says so) [default: run jobs up to the slots whatever else the machine runs]",
)
@click.option("--container", type=click.Choice([m.value for m in ContainerMode]), default=ContainerMode.NONE.value, show_default=True, help="how processors run: on the host (none) or in their image's container")
@click.option("--pull-policy", type=click.Choice([p.value for p in PullPolicy]), default=PullPolicy.MISSING.value, show_default=True, help="podman/docker: when images may be pulled")
@click.option("--apptainer-limits", is_flag=True, help="apptainer: memory and CPU limits by apptainer's cgroups (needs cgroup support on the job's host) [default: the watcher's limits]")
@click.option("--slurm-partition", default=None, help="pairio-bridge slurm: the partition jobs go to [default: the cluster's]")
@click.option("--slurm-account", default=None, help="pairio-bridge slurm: the account jobs are charged to")
@click.option("--slurm-qos", default=None, help="pairio-bridge slurm: the QOS of jobs")
@click.option("--slurm-jobs-dir", default=None, help="pairio-bridge slurm: job directories on the file system the compute nodes share")
@click.option("--slurm-option", "slurm_options", multiple=True, metavar="KEY=VALUE", help="pairio-bridge slurm: any site option (README, 'Slurm site options'); VALUE may be JSON (repeatable)")
@click.option("--pass-env", "pass_env", multiple=True, metavar="NAME", help="a variable of the bridge's environment processors also get: NAME or PREFIX_* (repeatable)")
@click.option(
    "--python-warm-start/--no-python-warm-start", default=BridgeConfig.model_fields["pythonWarmStart"].default, show_default=True,
    help="local bridge, container mode none: fork the processors of apps run as 'PYTHON SCRIPT ...' from that interpreter, "
    "started once, or start a new interpreter per job (README, 'Warm start')",
)
@click.option(
    "--claim-ahead", "claim_ahead", type=click.IntRange(0, 64), default=BridgeConfig.model_fields["claimAheadJobs"].default,
    show_default=True, metavar="N",
    help="while every slot is busy and jobs run short, hold up to N more jobs, each started the moment a slot frees "
    "(0: off; README, 'Claiming ahead')",
)
@click.option("--force", is_flag=True, help="register a new compute client even if DIR already has one")
def register(
    bridge_dir: Path, service: str, label: Optional[str], hub_url: Optional[str], apps: tuple[str, ...],
    num_cpus: Optional[int], num_gpus: Optional[int], memory_gb: Optional[float], time_sec: float,
    multiplicity: Optional[int], max_concurrent_jobs: Optional[int], respect_machine_load: bool, container: str, pull_policy: str,
    apptainer_limits: bool, slurm_partition: Optional[str], slurm_account: Optional[str], slurm_qos: Optional[str], slurm_jobs_dir: Optional[str],
    slurm_options: tuple[str, ...], force: bool, pass_env: tuple[str, ...] = (), python_warm_start: bool = True,
    claim_ahead: int = 2,
) -> None:
    """Create a compute client for SERVICE on the hub and write its configuration into DIR/bridge.json.

    Uses your API key (PAIRIO_API_KEY, or the one 'pairio login' saved); your user needs
    the processJobs role in the service.
    """
    path = config_file(bridge_dir)
    if path.exists() and not force:
        raise click.ClickException(
            f"{path} exists already; run the bridge with 'pairio-bridge local --dir {bridge_dir}', "
            f"change its apps with 'pairio-bridge apps add --dir {bridge_dir} APP=COMMAND', "
            "or pass --force to register a new compute client in its place"
        )
    app_commands = _parse_app_commands(apps)
    slurm_site = _slurm_site_options(
        slurm_options, partition=slurm_partition, account=slurm_account, qos=slurm_qos, jobsDir=slurm_jobs_dir
    )
    settings = resolve_client_settings(hub_url)
    if not settings.api_key:
        raise MissingApiKeyError(settings.url)
    cpus = num_cpus or os.cpu_count() or 1
    slot = PairioComputeClientComputeSlot(
        numCpus=cpus,
        numGpus=_machine_gpus() if num_gpus is None else num_gpus,
        memoryGb=memory_gb or _machine_memory_gb(),
        timeSec=time_sec,
        multiplicity=multiplicity or cpus,
    )
    label = label or f"bridge-{socket.gethostname()}"
    created = _create_compute_client(settings.url, settings.api_key, service, label, slot)
    config = BridgeConfig(
        hubUrl=settings.url,
        serviceName=service,
        computeClientId=created["computeClient"]["computeClientId"],
        computeClientPrivateKey=created["computeClientPrivateKey"],
        label=label,
        computeSlots=[slot],
        containerMode=ContainerMode(container),
        pullPolicy=PullPolicy(pull_policy),
        apptainerLimits=apptainer_limits,
        appCommands=app_commands,
        maxConcurrentJobs=max_concurrent_jobs,
        respectMachineLoad=respect_machine_load,
        slurm=slurm_site,
        passEnv=list(pass_env),
        pythonWarmStart=python_warm_start,
        claimAheadJobs=claim_ahead,
    )
    save_bridge_config(bridge_dir, config)
    _warn_about_unknown_apps(settings.url, settings.api_key, service, list(app_commands))
    if config.containerMode is not ContainerMode.NONE and shutil.which(config.containerMode.value) is None:
        click.echo(f"warning: {config.containerMode.value} is not on this machine's PATH; jobs will fail until it is", err=True)
    click.echo(f"registered compute client {label!r} ({config.computeClientId}) for service {service!r} at {settings.url}")
    click.echo(f"configuration: {path} (keep it private: it holds the compute client's key)")
    click.echo(f"run it with: pairio-bridge local --dir {bridge_dir}   (or 'slurm' on a cluster's login node, or 'ssh')")


def _slurm_site_options(options: tuple[str, ...], **named: Optional[str]) -> SlurmSiteOptions:
    values: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, e.g. gpuStyle=gpus or prologue='[\"module load cuda\"]'; got {option!r}", param_hint="--slurm-option")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw
    values.update({k: v for k, v in named.items() if v is not None})
    try:
        return SlurmSiteOptions.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise click.BadParameter(f"invalid Slurm site options ({problems})", param_hint="--slurm-option") from None


def _create_compute_client(url: str, api_key: str, service: str, label: str, slot: PairioComputeClientComputeSlot) -> dict[str, Any]:
    body = {"serviceName": service, "label": label, "computeSlots": [slot.model_dump(mode="json")]}
    try:
        response = httpx.post(
            f"{url}/v1/compute-clients", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30.0
        )
    except httpx.TransportError as e:
        raise PairioConnectionError(
            f"could not reach the Pairio hub at {url} ({type(e).__name__}: {redact(str(e), api_key)}); "
            "check that it is running and that --hub-url or PAIRIO_API_URL points at it"
        ) from None
    if response.is_error:
        raise error_for_response(response, api_key)
    result: dict[str, Any] = response.json()
    return result


def _warn_about_unknown_apps(url: str, api_key: str, service: str, apps: list[str]) -> None:
    """Say which --app names the service has no app for (their jobs can never come); silent when the hub cannot tell."""
    if not apps:
        return
    try:
        response = httpx.get(f"{url}/v1/services/{service}/apps", headers={"Authorization": f"Bearer {api_key}"}, timeout=30.0)
        known = {a["appName"] for a in response.json()["serviceApps"]} if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        known = None
    if known is None:
        return
    for app in sorted(set(apps) - known):
        click.echo(
            f"warning: service {service!r} has no app {app!r} (it has: {', '.join(sorted(known)) or 'none'}); "
            f"no job will ever ask for it: check the name, or add the app to the service",
            err=True,
        )


# ---------------------------------------------------------------- apps


@main.group()
def apps() -> None:
    """List and change the commands that run each app (container mode none) of a registered bridge.

    A running bridge picks a change up at its next job; no restart needed.
    """


@apps.command("list")
@click.option("--dir", "bridge_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="the bridge's directory")
def apps_list(bridge_dir: Path) -> None:
    """The bridge's app commands, one per line: APP<TAB>COMMAND."""
    config = load_bridge_config(bridge_dir)
    if config.containerMode is not ContainerMode.NONE:
        click.echo(f"container mode {config.containerMode.value}: each app runs its processors' images; the commands below are not used", err=True)
    if not config.appCommands:
        click.echo("no app commands (add one: pairio-bridge apps add --dir DIR APP='python /abs/path/main.py')", err=True)
    for app, command in sorted(config.appCommands.items()):
        click.echo(f"{app}\t{command}")


@apps.command("add")
@click.option("--dir", "bridge_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="the bridge's directory")
@click.argument("commands", nargs=-1, required=True, metavar="APP=COMMAND...")
def apps_add(bridge_dir: Path, commands: tuple[str, ...]) -> None:
    """Add (or replace) the command that runs an app, e.g. hello_world="python /abs/path/main.py"."""
    added = _parse_app_commands(commands)
    config = load_bridge_config(bridge_dir)
    now = update_app_commands(bridge_dir, add=added)
    settings = resolve_client_settings(config.hubUrl)
    if settings.api_key:
        _warn_about_unknown_apps(config.hubUrl, settings.api_key, config.serviceName, list(added))
    click.echo(f"app commands of {bridge_dir}: {', '.join(sorted(now))}; a running bridge uses them from its next job")


@apps.command("remove")
@click.option("--dir", "bridge_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="the bridge's directory")
@click.argument("names", nargs=-1, required=True, metavar="APP...")
def apps_remove(bridge_dir: Path, names: tuple[str, ...]) -> None:
    """Remove apps' commands: the bridge stops running them (their jobs wait for another compute client)."""
    now = update_app_commands(bridge_dir, remove=names)
    click.echo(f"app commands of {bridge_dir}: {', '.join(sorted(now)) or 'none'}; a running bridge uses them from its next job")


# ---------------------------------------------------------------- local


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
    )
    # `kill -USR1 PID` prints every thread's stack to the log: what a bridge that seems stuck is doing
    if hasattr(signal, "SIGUSR1"):
        try:
            faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
        except (OSError, ValueError, AttributeError):  # a stderr without a file descriptor (embedded, captured)
            pass
    # httpx logs every request at INFO: far too chatty for a loop that polls.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@main.command()
@click.option("--dir", "bridge_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="the directory 'pairio-bridge register' wrote")
@click.option("--exit-when-idle", is_flag=True, help="exit once nothing runs and a claim found no job (batch use)")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def local(bridge_dir: Path, exit_when_idle: bool, log_level: str) -> None:
    """Run the bridge in DIR: jobs run as process groups on this machine.

    SIGTERM or Ctrl-C drains (no new jobs; running ones are finished and reported);
    a second one exits at once, leaving jobs running for the next start to pick up.
    """
    from .local.backend import LocalBackend

    _setup_logging(log_level)
    config = load_bridge_config(bridge_dir)
    lock_bridge_dir(bridge_dir)
    backend = LocalBackend(
        config.jobs_path, respect_machine_load=config.respectMachineLoad, python_warm_start=config.pythonWarmStart
    )
    try:
        run_bridge(config, backend, exit_when_idle=exit_when_idle, bridge_dir=bridge_dir)
    finally:
        backend.close()  # the watcher launcher; the jobs' watchers go on


def run_bridge(config: BridgeConfig, backend: Any, *, exit_when_idle: bool, bridge_dir: Optional[Path] = None) -> None:
    """Run the shared bridge loop on ``backend`` until drained (every bridge command ends here)."""
    from .hub_api import HubApi
    from .runner import BridgeRefusedError, BridgeRunner, ImmediateExit

    hub = HubApi(config.hubUrl, config.computeClientPrivateKey, timeout=config.hubTimeoutSec)
    os.umask(0o077)  # job directories and what is written in them are the bridge user's only
    app_commands = AppCommandsFile(bridge_dir) if bridge_dir is not None else None
    runner = BridgeRunner(config, backend, hub, exit_when_idle=exit_when_idle, app_commands_file=app_commands)
    runner.install_signal_handlers()
    try:
        runner.run()
    except BridgeRefusedError:
        runner.close()
        hub.close()
        raise  # one line on stderr, exit status 1 (BridgeCommands)
    except ImmediateExit as e:
        log.warning("exiting at once (%s); running jobs continue and are re-adopted by the next start", e)
        logging.shutdown()
        # Worker threads may be mid-download; their progress is on disk, so do not wait for them.
        os._exit(130)
    runner.close()
    hub.close()


def _needs_the_bridge_extra(name: str, error: ModuleNotFoundError) -> click.Command:
    """Stands in for a command whose modules need the bridge extra, which is not installed."""

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   help=f"(not installed: pip install 'pairio[bridge]'; {error})")
    def command() -> None:
        require_extra("bridge", "a bridge")

    return command


# registered after main exists; without the bridge extra (paramiko, psutil) they say how to install it
for _name, _module in (("slurm", "bridge.slurm.cli"), ("ssh", "bridge.ssh.cli")):
    try:
        main.add_command(getattr(__import__(_module, fromlist=[_name]), _name))
    except ModuleNotFoundError as _error:
        if extra_of_missing_module(_error) != "bridge":
            raise
        main.add_command(_needs_the_bridge_extra(_name, _error))
