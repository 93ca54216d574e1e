"""The Slurm backend: jobs become sbatch jobs on a cluster (issue 4).

This package so far holds the pure layer: site options (``site``), the batch script and
sbatch command line (``script``), and native states and command outputs (``states``).
"""

from .script import render_sbatch_script, sbatch_argv, slurm_resource_options
from .site import GpuStyle, MemoryStyle, PartitionRule, SlurmSiteOptions
from .states import (
    SLURM_STATE_PHASE,
    SlurmOutputError,
    outcome_from_slurm,
    parse_sacct,
    parse_squeue,
    parse_squeue_json,
)

__all__ = [
    "SLURM_STATE_PHASE",
    "GpuStyle",
    "MemoryStyle",
    "PartitionRule",
    "SlurmOutputError",
    "SlurmSiteOptions",
    "outcome_from_slurm",
    "parse_sacct",
    "parse_squeue",
    "parse_squeue_json",
    "render_sbatch_script",
    "sbatch_argv",
    "slurm_resource_options",
]
