"""``pairio-bridge slurm``: the bridge on a cluster's login node; each job becomes one sbatch job."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from bridge.backend import Capacity
from bridge.config import BridgeConfig, load_bridge_config
from bridge.shell import ShellError

from .backend import SlurmBackend

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
@click.option("--exit-when-idle", is_flag=True, help="exit once nothing runs and a claim found no job (batch use)")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def slurm(bridge_dir: Path, exit_when_idle: bool, log_level: str) -> None:
    """Run the bridge in DIR on a Slurm cluster's login node: each job becomes one sbatch job.

    Site options (partition, account, prologue, ...) live under "slurm" in DIR/bridge.json;
    job directories must be on a file system the compute nodes share (the "jobsDir" site
    option, else DIR/jobs). SLURM_CONF and Slurm's other variables are honoured.
    SIGTERM or Ctrl-C drains (queued and running jobs are followed to the end); a second
    one exits at once, leaving them to the next start.
    """
    from bridge.cli import _setup_logging, run_bridge

    _setup_logging(log_level)
    config = with_site_jobs_dir(load_bridge_config(bridge_dir), bridge_dir)
    backend = SlurmBackend(config.slurm, slot_limits=slot_limits(config))
    try:
        version = backend.commands.check_reachable()
    except ShellError as e:
        raise click.ClickException(f"Slurm does not answer on this machine: {e}") from None
    log.info("%s; job directories in %s (the compute nodes must see them at the same path)", version, config.jobsDir)
    run_bridge(config, backend, exit_when_idle=exit_when_idle)
