"""Site options of the Slurm bridge: what a cluster needs beyond the job's own resources.

They live in the bridge configuration; every field has a default, so a bridge with no
site options submits to the cluster's default partition.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pairio.models import PairioJobRequiredResources

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Values that end up in an '#SBATCH --opt=value' line: Slurm reads the line up to whitespace.
_DIRECTIVE_VALUE = re.compile(r"[^\s#]+")
_JOB_NAME_PREFIX = re.compile(r"[A-Za-z0-9_.-]*")


class GpuStyle(str, Enum):
    """How a GPU request is written; clusters differ, so the site chooses."""

    GRES = "gres"
    """``--gres=gpu:N`` (the default)"""
    GRES_TYPED = "gres-typed"
    """``--gres=gpu:TYPE:N`` with ``gpuType``"""
    GPUS = "gpus"
    """``--gpus=N``"""
    GPUS_PER_NODE = "gpus-per-node"
    """``--gpus-per-node=N``"""


class MemoryStyle(str, Enum):
    MEM = "mem"
    """``--mem=<MiB>M`` for the whole job (the default)"""
    MEM_PER_CPU = "mem-per-cpu"
    """``--mem-per-cpu=<MiB>M``, for sites that reject ``--mem``"""


def _check_directive_value(field: str, value: Optional[str]) -> Optional[str]:
    if value is not None and not _DIRECTIVE_VALUE.fullmatch(value):
        raise ValueError(
            f"{field} {value!r} must be one word with no spaces, newlines or '#'; "
            f"write it as Slurm expects, e.g. {field}=\"gpu\""
        )
    return value


class PartitionRule(BaseModel):
    """Jobs that need at least these resources go to ``partition``; the first matching rule wins."""

    model_config = ConfigDict(extra="forbid")

    partition: str
    minGpus: int = Field(default=0, ge=0)
    minCpus: int = Field(default=0, ge=0)
    minMemoryGb: float = Field(default=0, ge=0)
    minTimeSec: float = Field(default=0, ge=0)

    @field_validator("partition")
    @classmethod
    def _one_word(cls, v: str) -> str:
        return _check_directive_value("partition", v)  # type: ignore[return-value]

    def matches(self, resources: PairioJobRequiredResources) -> bool:
        return (
            resources.numGpus >= self.minGpus
            and resources.numCpus >= self.minCpus
            and resources.memoryGb >= self.minMemoryGb
            and resources.timeSec >= self.minTimeSec
        )


class SlurmSiteOptions(BaseModel):
    """How this cluster wants its batch jobs written and submitted."""

    model_config = ConfigDict(extra="forbid")

    partition: Optional[str] = Field(default=None, description="default partition (none: the cluster's default)")
    gpuPartition: Optional[str] = Field(default=None, description="partition for jobs with numGpus > 0")
    partitionRules: list[PartitionRule] = Field(
        default_factory=list, description="ordered; the first rule the job's resources match chooses the partition"
    )
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    reservation: Optional[str] = None
    gpuStyle: GpuStyle = GpuStyle.GRES
    gpuType: Optional[str] = Field(default=None, description="GPU type for gpuStyle 'gres-typed', e.g. 'a100'")
    memoryStyle: MemoryStyle = MemoryStyle.MEM
    extraDirectives: list[str] = Field(
        default_factory=list, description="raw sbatch options written as '#SBATCH <option>', e.g. '--exclusive'"
    )
    prologue: list[str] = Field(
        default_factory=list, description="shell lines run before the job, e.g. 'module load python/3.11'"
    )
    exportEnv: dict[str, str] = Field(default_factory=dict, description="environment variables exported in the job")
    jobNamePrefix: str = "pairio-"
    jobsDir: Optional[str] = Field(
        default=None, description="job directories on the file system shared with the compute nodes"
    )
    maxQueuedJobs: int = Field(default=100, ge=1, description="at most this many of the bridge's jobs in the queue at once")
    python: Optional[str] = Field(
        default=None,
        description="Python on the compute nodes, with psutil, that runs the job's watcher (default: the bridge's own)",
    )
    queuePollMinSec: float = Field(default=1.0, gt=0, le=600, description="squeue interval while jobs change")
    queuePollMaxSec: float = Field(default=30.0, gt=0, le=3600, description="squeue interval after nothing changed for a while")
    squeueJson: Optional[bool] = Field(
        default=False,
        description="read squeue's fixed text format (false), squeue --json (true), or try JSON first (null); the text "
        "format costs squeue and the bridge a third of the CPU: --json prints every field of every job",
    )
    commandEnv: dict[str, str] = Field(
        default_factory=dict,
        description="environment of Slurm's commands where they run, e.g. SLURM_CONF on a login node reached over SSH",
    )
    sbatchCommand: str = "sbatch"
    squeueCommand: str = "squeue"
    scancelCommand: str = "scancel"
    sacctCommand: str = "sacct"

    @field_validator("partition", "gpuPartition", "account", "qos", "constraint", "reservation", "gpuType")
    @classmethod
    def _one_word(cls, v: Optional[str], info) -> Optional[str]:  # type: ignore[no-untyped-def]
        return _check_directive_value(info.field_name, v)

    @field_validator("extraDirectives")
    @classmethod
    def _directives(cls, v: list[str]) -> list[str]:
        for directive in v:
            if "\n" in directive or "\r" in directive:
                raise ValueError(f"extra directive {directive!r} contains a newline; give each option as its own list item")
            if not directive.startswith("--"):
                raise ValueError(
                    f"extra directive {directive!r} must be a long sbatch option starting with '--', e.g. '--exclusive' "
                    "(without '#SBATCH')"
                )
        return v

    @field_validator("prologue")
    @classmethod
    def _prologue_lines(cls, v: list[str]) -> list[str]:
        for line in v:
            if "\n" in line or "\r" in line:
                raise ValueError(f"prologue line {line!r} contains a newline; give each line as its own list item")
        return v

    @field_validator("exportEnv", "commandEnv")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(
                    f"exportEnv name {name!r} is not a valid environment variable name; "
                    "use letters, digits and '_', not starting with a digit"
                )
            if "\0" in value:
                raise ValueError(f"exportEnv value of {name} contains a NUL byte, which no environment can hold")
        return v

    @field_validator("jobNamePrefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _JOB_NAME_PREFIX.fullmatch(v):
            raise ValueError(f"jobNamePrefix {v!r} may hold only letters, digits, '_', '.' and '-'")
        return v

    @field_validator("sbatchCommand", "squeueCommand", "scancelCommand", "sacctCommand")
    @classmethod
    def _command(cls, v: str, info) -> str:  # type: ignore[no-untyped-def]
        if not v.strip() or "\n" in v:
            raise ValueError(f"{info.field_name} must name a program (a plain name on PATH or a path), got {v!r}")
        return v

    @model_validator(mode="after")
    def _poll_bounds(self) -> SlurmSiteOptions:
        if self.queuePollMaxSec < self.queuePollMinSec:
            raise ValueError(f"queuePollMaxSec ({self.queuePollMaxSec:g}) must be at least queuePollMinSec ({self.queuePollMinSec:g})")
        return self

    @model_validator(mode="after")
    def _gpu_type_for_typed_style(self) -> SlurmSiteOptions:
        if self.gpuStyle is GpuStyle.GRES_TYPED and not self.gpuType:
            raise ValueError("gpuStyle 'gres-typed' needs gpuType, e.g. \"gpuType\": \"a100\" (gives --gres=gpu:a100:N)")
        return self

    def partition_for(self, resources: PairioJobRequiredResources) -> Optional[str]:
        """The partition for a job: the first matching rule, else gpuPartition for GPU jobs, else ``partition``."""
        for rule in self.partitionRules:
            if rule.matches(resources):
                return rule.partition
        if resources.numGpus > 0 and self.gpuPartition:
            return self.gpuPartition
        return self.partition
