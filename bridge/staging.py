"""Staging inputs: when a bridge downloads a job's inputs, through its cache (pairio/input_cache.py).

A bridge whose jobs have network stages *lazily*: nothing is downloaded before the job
starts, and the processor's ``InputFile.download()`` (or its local file name) fetches the
input then, through the bridge's cache where the processor can see it. A processor that
only passes ``get_url()`` to a reader of remote files (large NWB files read by ranges)
never downloads anything. Bridges for compute nodes without network (Slurm's default)
stage every input *ahead*, before submitting the job.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional

from pairio.input_cache import InputCache, StagingError, fetch_input

__all__ = [
    "CACHE_VISIBLE_TO_PROCESSOR", "DEFAULT_INPUT_STAGING", "InputCache", "InputStaging", "StagingError", "fetch_input",
    "input_staging_for",
]


class InputStaging(str, Enum):
    """When a job's inputs are downloaded."""

    AHEAD = "ahead"
    """before the job is submitted, all of them (compute nodes without network)"""
    LAZY = "lazy"
    """when the processor asks for a local copy; ``get_url()`` alone downloads nothing"""


# Slurm compute nodes often have no network; an SSH host's jobs get their inputs copied
# over with the job directory. A local bridge's jobs run where the bridge runs, with its network.
DEFAULT_INPUT_STAGING: dict[str, InputStaging] = {"local": InputStaging.LAZY, "slurm": InputStaging.AHEAD, "ssh": InputStaging.AHEAD}
# Where a processor runs on a file system that holds the bridge's cache (and not in a container).
CACHE_VISIBLE_TO_PROCESSOR = frozenset({"local", "slurm"})


def input_staging_for(configured: Optional[InputStaging], backend_name: str) -> InputStaging:
    """The bridge's setting, or the default of its kind."""
    if configured is not None:
        return configured
    return DEFAULT_INPUT_STAGING.get(backend_name, InputStaging.AHEAD)
