"""Pure parts of the local backend: resources -> watcher options, GPU detection, free capacity.

Kept free of processes and files so each rule is tested on its own (tests/test_watch.py).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from bridge.backend import Capacity
from bridge.watch import allowed_environment, resource_environment
from pairio.models import PairioJobRequiredResources


def local_directives(resources: PairioJobRequiredResources, gpu_ids: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The watcher options that enforce ``resources``, and the environment the job will see.

    The environment is computed by the watcher itself (it also runs on Slurm nodes and SSH
    hosts); it is returned here so the whole mapping can be read and tested in one place.
    """
    if len(gpu_ids) != resources.numGpus:
        raise ValueError(f"the job asks for {resources.numGpus} GPUs but {len(gpu_ids)} were assigned ({list(gpu_ids)})")
    args = [
        "--time-sec", f"{resources.timeSec:g}",
        "--memory-gb", f"{resources.memoryGb:g}",
        "--num-cpus", str(resources.numCpus),
    ]  # fmt: skip
    if gpu_ids:
        args += ["--gpus", ",".join(gpu_ids)]
    return args, resource_environment(resources.numCpus, gpu_ids)


def inherited_environment(bridge_env: Mapping[str, str], pass_env: Sequence[str] = ()) -> dict[str, str]:
    """What a watcher (and its processor) gets of the bridge's environment: an allow-list and ``passEnv``.

    A processor is someone else's code: PAIRIO_API_KEY, a hub's database URL or an
    operator's AWS_* must not reach it (see ``bridge.watch.allowed_environment``).
    """
    return allowed_environment(dict(bridge_env), pass_env)


# ---------------------------------------------------------------- GPUs


def parse_cuda_visible_devices(value: str) -> list[str]:
    """GPU ids (indices or UUIDs) listed in CUDA_VISIBLE_DEVICES; "" and "-1" mean none."""
    ids = [part.strip() for part in value.split(",") if part.strip()]
    # CUDA stops at the first invalid id, and -1 is the usual way of saying "no GPU".
    if ids and ids[0] in ("-1", "NoDevFiles"):
        return []
    return ids


def parse_nvidia_smi_list(text: str) -> list[str]:
    """Indices from ``nvidia-smi -L`` lines like ``GPU 0: NVIDIA H100 (UUID: GPU-...)``."""
    ids = []
    for line in text.splitlines():
        head, sep, _ = line.partition(":")
        if sep and head.startswith("GPU "):
            index = head[len("GPU ") :].strip()
            if index.isdigit():
                ids.append(index)
    return ids


def detect_gpu_ids(env: Mapping[str, str]) -> list[str]:
    """This machine's GPUs the bridge may hand out: CUDA_VISIBLE_DEVICES when set, else ``nvidia-smi -L``."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_cuda_visible_devices(env["CUDA_VISIBLE_DEVICES"])
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi_list(out.stdout) if out.returncode == 0 else []


def choose_gpus(available: Sequence[str], taken: set[str], count: int) -> Optional[list[str]]:
    """The first ``count`` free GPUs in machine order, or None when too few are free."""
    free = [g for g in available if g not in taken]
    return free[:count] if len(free) >= count else None


# ---------------------------------------------------------------- capacity


@dataclass(frozen=True)
class MachineSnapshot:
    cpu_count: int
    busy_cpus: float
    """CPUs in use right now by every process, our jobs included (0 to ignore the machine's load)"""
    available_memory_gb: float
    gpu_ids: tuple[str, ...]
    own_busy_cpus: Optional[float] = None
    """of ``busy_cpus``, those the bridge and its jobs' processes use (None: not measured; reservations stand for them)"""


@dataclass(frozen=True)
class JobReservation:
    """What one running job holds."""

    num_cpus: int
    memory_gb: float
    gpu_ids: tuple[str, ...]
    used_memory_gb: float = 0.0
    """its last sampled RSS: memory it already took out of the machine's available memory"""


@dataclass(frozen=True)
class DeclaredLimits:
    """What the bridge's owner lets it use on this machine; None means all of it."""

    num_cpus: Optional[int] = None
    num_gpus: Optional[int] = None
    memory_gb: Optional[float] = None


def busy_reason(machine: MachineSnapshot, running: Sequence[JobReservation], wanted_cpus: int, load_average: float) -> Optional[str]:
    """Why a job of ``wanted_cpus`` should wait for other programs to leave it room, or None.

    Only for bridges that respect the machine's load. Our running jobs hold their reserved CPUs;
    only the load of other programs counts against the rest, so a bridge whose own work (its
    jobs, their watchers, itself) keeps the CPUs busy never holds its next job for that.
    """
    reserved_cpus = sum(j.num_cpus for j in running)
    detail = ""
    if machine.own_busy_cpus is None:
        taken = max(reserved_cpus, machine.busy_cpus)  # busy CPUs beyond the reserved ones are someone else's
    else:
        foreign = max(0.0, machine.busy_cpus - machine.own_busy_cpus)
        taken = reserved_cpus + foreign
        detail = f"; other programs use {foreign:.1f} of them"
    free = math.floor(machine.cpu_count - taken + 0.5)
    if free >= wanted_cpus:
        return None
    return f"the host is busy, load {load_average:.1f} on {machine.cpu_count} CPUs{detail}"


def free_capacity(machine: MachineSnapshot, running: Sequence[JobReservation], declared: DeclaredLimits) -> Capacity:
    """What a new job may ask for now: the smaller of the declared limits and the machine's real room.

    Our jobs' own load is part of ``busy_cpus`` and their memory is already gone from
    ``available_memory_gb``; counting it again under their reservations would halve the
    machine, so only the part of a reservation not yet in use is subtracted.
    """
    reserved_cpus = sum(j.num_cpus for j in running)
    # Reserved CPUs are ours whether or not busy; beyond them, busy CPUs belong to someone else.
    real_cpus = math.floor(machine.cpu_count - max(reserved_cpus, machine.busy_cpus) + 0.5)
    reserved_memory_not_yet_used = sum(max(0.0, j.memory_gb - j.used_memory_gb) for j in running)
    real_memory = machine.available_memory_gb - reserved_memory_not_yet_used
    taken_gpus = {g for j in running for g in j.gpu_ids}
    real_gpus = len([g for g in machine.gpu_ids if g not in taken_gpus])

    cpus, gpus, memory = real_cpus, real_gpus, real_memory
    if declared.num_cpus is not None:
        cpus = min(cpus, declared.num_cpus - reserved_cpus)
    if declared.num_gpus is not None:
        gpus = min(gpus, declared.num_gpus - len(taken_gpus))
    if declared.memory_gb is not None:
        memory = min(memory, declared.memory_gb - sum(j.memory_gb for j in running))
    return Capacity(numCpus=max(0, cpus), numGpus=max(0, gpus), memoryGb=max(0.0, round(memory, 3)))
