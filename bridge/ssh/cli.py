"""``pairio-bridge ssh``: run the bridge in DIR with its jobs on a remote host reached over SSH.

    pairio-bridge ssh --dir DIR --host USER@HOST[:PORT] [--identity FILE] [--known-hosts FILE]
                      [--accept-new-host-key] [--jump-host USER@HOST[:PORT]] [--remote-dir PATH]
                      [--remote-python PYTHON] [--no-agent] [--exit-when-idle]

The options are saved in the ``ssh`` section of DIR/bridge.json, so the next start needs only
``--dir``; options given again replace the saved ones. ``--accept-new-host-key`` is never
saved: it trusts a new host for this start only (its key is then in known_hosts).
"""

from __future__ import annotations

import json
import logging
import posixpath
import sys
from pathlib import Path
from typing import Any, Optional

import click

from bridge.config import BridgeConfig, BridgeConfigError, ContainerMode, config_file, load_bridge_config, save_bridge_config
from bridge.dirlock import lock_bridge_dir
from bridge.shell import Shell, ShellError

from .options import SshOptions, parse_destination

log = logging.getLogger("bridge")


def merged_ssh_options(saved: Optional[SshOptions], flags: dict[str, Any]) -> SshOptions:
    """The saved options with the command line's on top (flags that are None are not given)."""
    values: dict[str, Any] = saved.model_dump(exclude_defaults=True) if saved is not None else {}
    destination = flags.pop("destination", None)
    if destination:
        try:
            parsed = parse_destination(destination)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--host") from None
        values.update(host=parsed.host, port=parsed.port, user=parsed.user)
    values.update({k: v for k, v in flags.items() if v is not None})
    if "host" not in values:
        raise click.UsageError("no remote host: pass --host USER@HOST[:PORT] (it is saved in DIR/bridge.json for the next start)")
    try:
        return SshOptions.model_validate(values)
    except ValueError as e:
        raise click.UsageError(f"invalid SSH options: {e}") from None


def save_ssh_options(bridge_dir: Path, options: SshOptions) -> None:
    """Store the options in bridge.json as written (its relative paths stay relative)."""
    raw = json.loads(config_file(bridge_dir).read_text())
    raw["ssh"] = options.model_dump(mode="json", exclude_defaults=True, exclude={"acceptNewHostKey"})
    save_bridge_config(bridge_dir, BridgeConfig.model_validate(raw))


def default_remote_dir(config: BridgeConfig) -> str:
    """One directory per bridge, so that one bridge's clean-up never touches another's jobs."""
    return f"pairio-bridge/{config.computeClientId}"


def claim_remote_dir(shell: Shell, root: str, compute_client_id: str, scratch: Path) -> None:
    """Mark ``root`` as this bridge's (``.pairio/owner.json``), or refuse one that another bridge uses:
    each bridge removes ended jobs' directories it no longer keeps, which would be another's jobs."""
    owner_file = posixpath.join(root, ".pairio", "owner.json")
    local = scratch / ".remote-owner.json"
    try:
        if shell.stat(owner_file) is not None:
            shell.get_file(owner_file, local)
            owner = json.loads(local.read_text()).get("computeClientId")
            if owner != compute_client_id:
                raise BridgeConfigError(
                    f"the remote directory {root} on {shell.description} belongs to another bridge (compute client {owner}); "
                    "give this bridge a directory of its own with --remote-dir"
                )
            return
        shell.makedirs(posixpath.dirname(owner_file))
        local.write_text(json.dumps({"computeClientId": compute_client_id}))
        shell.put_file(local, owner_file, mode=0o644)
    finally:
        local.unlink(missing_ok=True)


def resolve_ssh_options(bridge_dir: Path, config: BridgeConfig, flags: dict[str, Any], accept_new_host_key: bool) -> SshOptions:
    """The saved options with the given flags on top; flags given are saved for the next start
    (``--accept-new-host-key`` never is: it trusts a new host for this start only)."""
    given = any(v is not None for v in flags.values())
    options = merged_ssh_options(config.ssh, dict(flags))
    if given:
        save_ssh_options(bridge_dir, options)
    if accept_new_host_key:
        options = options.model_copy(update={"acceptNewHostKey": True})
    return options


def connect_asking_for_passphrase(shell: Any, options: SshOptions) -> None:
    """Connect; an encrypted key's passphrase is asked on a terminal (never stored), else the error says so."""
    from .connection import KeyPassphraseNeededError

    try:
        shell.connect()
    except KeyPassphraseNeededError:
        if not sys.stdin.isatty():
            raise
        shell.passphrase = click.prompt(f"passphrase of {options.identity_path}", hide_input=True, err=True)
        shell.connect()


def absolute_or_none(path: Optional[Path]) -> Optional[str]:
    return str(path.expanduser().resolve()) if path is not None else None


@click.command("ssh")
@click.option("--dir", "bridge_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="the directory 'pairio-bridge register' wrote")
@click.option("--host", "destination", metavar="USER@HOST[:PORT]", default=None, help="the remote host [saved; default: the saved one]")
@click.option("--identity", type=click.Path(dir_okay=False, path_type=Path), default=None, help="private key file [default: ~/.ssh/id_* and ssh-agent]")
@click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path), default=None, help="known_hosts file the host key is checked against [default: ~/.ssh/known_hosts]")
@click.option("--accept-new-host-key", is_flag=True, help="trust a host missing from known_hosts on this first use, recording its key there (a changed key is always refused)")
@click.option("--jump-host", metavar="USER@HOST[:PORT]", default=None, help="connect through this host (like ssh -J)")
@click.option("--remote-dir", default=None, help="the bridge's directory on the remote host, one per bridge [default: ~/pairio-bridge/<compute client id>]")
@click.option("--remote-python", default=None, help="Python 3 on the remote host [default: python3]")
@click.option("--no-agent", is_flag=True, default=None, help="do not offer ssh-agent's keys")
@click.option("--exit-when-idle", is_flag=True, help="exit once nothing runs and a claim found no job (batch use)")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def ssh(
    bridge_dir: Path, destination: Optional[str], identity: Optional[Path], known_hosts: Optional[Path], accept_new_host_key: bool,
    jump_host: Optional[str], remote_dir: Optional[str], remote_python: Optional[str], no_agent: Optional[bool],
    exit_when_idle: bool, log_level: str,
) -> None:
    """Run the bridge in DIR: jobs run on a remote host over SSH (one connection, jobs detached there).

    Needs Python 3 on the remote host (psutil optional on Linux). In container mode podman or docker
    (register --container) the engine there is checked at connect, then the images of the service's apps (the log
    names each missing one and how to fix it). SIGTERM or Ctrl-C drains;
    a second one exits at once, leaving the remote jobs running for the next start to pick up.
    """
    from bridge.cli import _setup_logging, run_bridge
    from bridge.remote_jobs import RemoteJobs, container_engine_problem

    from .backend import SshBackend
    from .connection import SshShell

    _setup_logging(log_level)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    config = load_bridge_config(bridge_dir)
    lock_bridge_dir(bridge_dir)
    flags: dict[str, Any] = {
        "destination": destination, "identityFile": absolute_or_none(identity), "knownHostsFile": absolute_or_none(known_hosts),
        "jumpHost": jump_host, "remoteDir": remote_dir, "remotePython": remote_python,
        "useAgent": False if no_agent else None,
    }  # fmt: skip
    options = resolve_ssh_options(bridge_dir, config, flags, accept_new_host_key)
    shell = SshShell(options)
    try:
        connect_asking_for_passphrase(shell, options)
        root = shell.absolute_path(options.remoteDir or default_remote_dir(config))
        claim_remote_dir(shell, root, config.computeClientId, bridge_dir)
        remote = RemoteJobs(shell, root, python=options.remotePython, command_timeout_sec=options.commandTimeoutSec)
        engine = config.containerMode.value if config.containerMode is not ContainerMode.NONE else ""
        host = remote.probe(container_engine=engine)
        problem = container_engine_problem(host, engine, shell.description) if engine else None
        if problem is not None:
            raise BridgeConfigError(problem)
        if not host.psutil and not host.procfs:
            raise BridgeConfigError(
                f"{shell.description} has neither psutil for {options.remotePython} nor Linux's /proc, so jobs cannot be "
                f"supervised there; install psutil ({options.remotePython} -m pip install --user psutil)"
            )
    except ShellError as e:
        shell.close()
        raise click.ClickException(" ".join(str(e).split())) from None
    gpu_ids = options.gpus if options.gpus is not None else host.gpus or []
    log.info(
        "connected to %s (%s): %d CPUs, %.1f GB available, GPUs: %s, Python %s%s; jobs in %s",
        shell.description, host.hostname, len(host.cpus), (host.mem_available_bytes or 0) / 1024**3,
        ",".join(gpu_ids) or "none", host.python, "" if host.psutil else " (no psutil: the watcher reads /proc)", root,
    )  # fmt: skip
    if host.container_engine:
        log.info("jobs run in containers: %s", host.container_engine.get("version") or host.container_engine.get("name"))
    _warn_about_slots(config, len(host.cpus), len(gpu_ids), host.mem_available_bytes)

    backend = SshBackend(
        remote, config.jobs_path, gpu_ids=gpu_ids, pin_cpus=options.pinCpus,
        respect_machine_load=config.respectMachineLoad, download_inputs=options.remoteDownloads,
    )  # fmt: skip
    try:
        run_bridge(config, backend, exit_when_idle=exit_when_idle, bridge_dir=bridge_dir)
    finally:
        backend.close()
        shell.close()

def _warn_about_slots(config: BridgeConfig, cpus: int, gpus: int, memory_bytes: Optional[int]) -> None:
    """A slot the remote host can never fill would leave its jobs pending: say so at start."""
    for slot in config.computeSlots:
        problems = []
        if slot.numCpus > cpus:
            problems.append(f"{slot.numCpus} CPUs (the host has {cpus})")
        if slot.numGpus > gpus:
            problems.append(f"{slot.numGpus} GPUs (the host has {gpus})")
        if memory_bytes is not None and slot.memoryGb * 1024**3 > memory_bytes:
            problems.append(f"{slot.memoryGb:g} GB (the host has {memory_bytes / 1024**3:.1f} GB available)")
        if problems:
            log.warning(
                "the compute slot allows jobs of %s; such jobs will wait: register with --num-cpus/--num-gpus/--memory-gb that fit the remote host",
                ", ".join(problems),
            )
