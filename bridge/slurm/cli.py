"""``pairio-bridge slurm``: the bridge on a cluster's login node; each job becomes one sbatch job."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from bridge.backend import Capacity
from bridge.config import BridgeConfig, load_bridge_config
from bridge.dirlock import lock_bridge_dir
from bridge.shell import ShellError

from .backend import SlurmBackend

if TYPE_CHECKING:
    from bridge.remote_jobs import RemoteJobs

log = logging.getLogger("bridge")


def slot_limits(config: BridgeConfig) -> Capacity:
    """The most one job may ask for: the bridge's largest slot (Slurm decides where jobs fit)."""
    return Capacity(
        numCpus=max(s.numCpus for s in config.computeSlots),
        numGpus=max(s.numGpus for s in config.computeSlots),
        memoryGb=max(s.memoryGb for s in config.computeSlots),
    )


def with_site_jobs_dir(config: BridgeConfig, bridge_dir: Path) -> BridgeConfig:
    """The site's ``jobsDir`` (on the shared file system) replaces the bridge's own jobs directory."""
    if not config.slurm.jobsDir:
        return config
    jobs_dir = Path(config.slurm.jobsDir).expanduser()
    if not jobs_dir.is_absolute():
        jobs_dir = bridge_dir.resolve() / jobs_dir
    return config.model_copy(update={"jobsDir": str(jobs_dir)})


@click.command()
@click.option("--dir", "bridge_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="the directory 'pairio-bridge register' wrote")
@click.option("--ssh", "destination", metavar="USER@HOST[:PORT]", default=None, help="drive Slurm on a login node reached over SSH [saved in DIR/bridge.json]")
@click.option("--identity", type=click.Path(dir_okay=False, path_type=Path), default=None, help="with --ssh: private key file [default: ~/.ssh/id_* and ssh-agent]")
@click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path), default=None, help="with --ssh: known_hosts file [default: ~/.ssh/known_hosts]")
@click.option("--accept-new-host-key", is_flag=True, help="with --ssh: trust a login node missing from known_hosts on this first use, recording its key")
@click.option("--exit-when-idle", is_flag=True, help="exit once nothing runs and a claim found no job (batch use)")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def slurm(
    bridge_dir: Path, destination: Optional[str], identity: Optional[Path], known_hosts: Optional[Path],
    accept_new_host_key: bool, exit_when_idle: bool, log_level: str,
) -> None:
    """Run the bridge in DIR for a Slurm cluster: each job becomes one sbatch job.

    On a login node, job directories must be on a file system the compute nodes share
    (the "jobsDir" site option, else DIR/jobs). With --ssh the bridge runs anywhere that
    reaches the hub and the login node: job directories are copied to the cluster (under
    "jobsDir", else ~/pairio-bridge/<compute client id>) and Slurm's commands run there.
    Site options (partition, account, prologue, ...) live under "slurm" in DIR/bridge.json;
    SLURM_CONF and Slurm's other variables are honoured ("commandEnv" sets them over SSH).
    SIGTERM or Ctrl-C drains (queued and running jobs are followed to the end); a second
    one exits at once, leaving them to the next start.
    """
    from bridge.cli import _setup_logging, run_bridge

    _setup_logging(log_level)
    config = load_bridge_config(bridge_dir)
    lock_bridge_dir(bridge_dir)
    from bridge.ssh.cli import absolute_or_none

    flags = {"destination": destination, "identityFile": absolute_or_none(identity), "knownHostsFile": absolute_or_none(known_hosts)}
    remote = None
    if any(v is not None for v in flags.values()) or config.ssh is not None:
        remote = _remote_cluster(bridge_dir, config, flags, accept_new_host_key)
    else:
        config = with_site_jobs_dir(config, bridge_dir)
    backend = SlurmBackend(config.slurm, slot_limits=slot_limits(config), remote=remote)
    try:
        try:
            version = backend.commands.check_reachable()
        except ShellError as e:
            where = "on this machine" if remote is None else f"on {backend.shell.description}"
            hint = "" if remote is None else " (over SSH, set SLURM_CONF and PATH with the 'commandEnv' site option if a login shell would)"
            raise click.ClickException(" ".join(f"Slurm does not answer {where}: {e}{hint}".split())) from None
        if remote is None:
            log.info("%s; job directories in %s (the compute nodes must see them at the same path)", version, config.jobsDir)
        else:
            log.info("%s on %s; job directories copied to %s/jobs", version, backend.shell.description, remote.root)
        run_bridge(config, backend, exit_when_idle=exit_when_idle, bridge_dir=bridge_dir)
    finally:
        backend.close()  # the end-file watcher; the jobs go on
        if remote is not None:
            remote.close()
            remote.shell.close()


def _remote_cluster(bridge_dir: Path, config: BridgeConfig, flags: dict[str, Any], accept_new_host_key: bool) -> "RemoteJobs":
    """Connect to the login node and prepare the bridge's directory there (the SSH bridge's options and checks)."""
    from bridge.remote_jobs import RemoteJobs
    from bridge.ssh.cli import claim_remote_dir, connect_asking_for_passphrase, default_remote_dir, resolve_ssh_options
    from bridge.ssh.connection import SshShell

    logging.getLogger("paramiko").setLevel(logging.WARNING)
    options = resolve_ssh_options(bridge_dir, config, flags, accept_new_host_key)
    shell = SshShell(options)
    try:
        connect_asking_for_passphrase(shell, options)
        root = shell.absolute_path(config.slurm.jobsDir or options.remoteDir or default_remote_dir(config))
        claim_remote_dir(shell, root, config.computeClientId, bridge_dir)
        python = config.slurm.python or options.remotePython
        remote = RemoteJobs(shell, root, python=python, agent_python=options.remotePython, command_timeout_sec=options.commandTimeoutSec)
        remote.probe()  # the login node runs Python 3 (the agent that mirrors job directories)
    except ShellError as e:
        shell.close()
        raise click.ClickException(" ".join(str(e).split())) from None
    return remote
