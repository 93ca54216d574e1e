"""Slurm's native job states, mapped through one table, and the parsers of squeue and sacct output.

A job that has left the queue is never assumed completed: an unknown state stays
QUEUED (with the state named in its reason) until the exit-code file or sacct settles it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from bridge.backend import NativeOutcome, NativePhase

log = logging.getLogger(__name__)

SQUEUE_FORMAT = "%i|%T|%r"
"""``squeue -h -t all -o SQUEUE_FORMAT``: job id, long state name, reason"""
SACCT_FIELDS = "JobID,State,ExitCode,Reason"
"""``sacct -n -P -o SACCT_FIELDS``"""

SLURM_STATE_PHASE: dict[str, NativePhase] = {
    "PENDING": NativePhase.QUEUED,
    "CONFIGURING": NativePhase.QUEUED,  # nodes are booting; the script has not started
    "REQUEUED": NativePhase.QUEUED,  # going back to PENDING, will run again
    "RUNNING": NativePhase.RUNNING,
    "COMPLETING": NativePhase.RUNNING,  # the script ended but Slurm is still cleaning up; not settled yet
    "SUSPENDED": NativePhase.RUNNING,  # keeps its allocation and resumes
    "RESIZING": NativePhase.RUNNING,
    "SIGNALING": NativePhase.RUNNING,  # being signalled (e.g. at its time limit); the end follows
    "STOPPED": NativePhase.RUNNING,  # SIGSTOPped, keeps its allocation
    "STAGE_OUT": NativePhase.RUNNING,  # the script ended, a burst buffer is being staged out; not settled yet
    "REQUEUE_FED": NativePhase.QUEUED,
    "REQUEUE_HOLD": NativePhase.QUEUED,  # requeued and held: waits for a release
    "RESV_DEL_HOLD": NativePhase.QUEUED,  # its reservation was deleted: held
    "COMPLETED": NativePhase.SUCCEEDED,
    "FAILED": NativePhase.FAILED,
    "TIMEOUT": NativePhase.FAILED,
    "OUT_OF_MEMORY": NativePhase.FAILED,
    "CANCELLED": NativePhase.FAILED,
    "NODE_FAIL": NativePhase.FAILED,
    "BOOT_FAIL": NativePhase.FAILED,
    "PREEMPTED": NativePhase.FAILED,
    "DEADLINE": NativePhase.FAILED,
    "SPECIAL_EXIT": NativePhase.FAILED,
    "REVOKED": NativePhase.FAILED,  # a federated sibling ran it elsewhere
}

SLURM_STATE_ERROR: dict[str, str] = {
    "FAILED": "the Slurm job failed",
    "TIMEOUT": "the Slurm job reached its time limit and was stopped by Slurm (TIMEOUT)",
    "OUT_OF_MEMORY": "the Slurm job ran out of memory and was killed by Slurm (OUT_OF_MEMORY); ask for more memoryGb",
    "CANCELLED": "the Slurm job was cancelled on the cluster (scancel or an administrator)",
    "NODE_FAIL": "the node running the Slurm job failed (NODE_FAIL); submit the job again",
    "BOOT_FAIL": "the Slurm job's node failed to boot (BOOT_FAIL); submit the job again",
    "PREEMPTED": "the Slurm job was preempted by a higher-priority job (PREEMPTED)",
    "DEADLINE": "the Slurm job could not finish before its deadline (DEADLINE)",
    "SPECIAL_EXIT": "the Slurm job was held after a special exit (SPECIAL_EXIT); ask the cluster's administrators",
    "REVOKED": "the Slurm job was revoked because a sibling job of its federation started elsewhere (REVOKED)",
}

# squeue --json (Slurm 23.02+) gives job_state as a base state plus flags; squeue's text format (%T) names the
# flag instead of the state, in this order (Slurm's job_state_string), where it says more than the base state.
_FLAG_STATES = ("COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD")


class SlurmOutputError(ValueError):
    """A Slurm command printed something this bridge cannot read; the message quotes it."""


def base_state(state: str) -> tuple[str, Optional[str]]:
    """``"CANCELLED by 1000"`` -> ``("CANCELLED", "by 1000")``; sacct appends who cancelled."""
    name, _, rest = state.strip().partition(" ")
    return name.upper().rstrip("+"), (rest.strip() or None)


def parse_exit_code(exit_code: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    """sacct's ``"2:0"`` -> ``(2, 0)`` (exit status, signal); a bare ``"2"`` -> ``(2, None)``."""
    if exit_code is None or not exit_code.strip():
        return None, None
    status, _, signal = exit_code.strip().partition(":")
    try:
        return int(status), (int(signal) if signal else None)
    except ValueError:
        raise SlurmOutputError(f"cannot read Slurm exit code {exit_code!r}; expected 'STATUS:SIGNAL' such as '0:0'") from None


def outcome_from_slurm(state: str, exit_code: Optional[str] = None, reason: Optional[str] = None) -> NativeOutcome:
    """The outcome of one Slurm job from its native state (and sacct's ExitCode and Reason when known)."""
    name, detail = base_state(state)
    phase = SLURM_STATE_PHASE.get(name)
    reason = None if reason in (None, "", "None", "(null)") else reason
    if phase is None:
        log.warning("unknown Slurm state %r; treating the job as still queued until it settles", state)
        return NativeOutcome(NativePhase.QUEUED, reason=f"unknown Slurm state {state}")
    code, signal = parse_exit_code(exit_code)
    if phase is NativePhase.QUEUED:
        return NativeOutcome(phase, reason=reason)
    if phase is not NativePhase.FAILED:
        return NativeOutcome(phase, exit_code=code)
    error = SLURM_STATE_ERROR[name]
    if name == "CANCELLED" and detail:
        error += f" {detail}"
    if name == "FAILED":
        if signal:
            error += f" (killed by signal {signal})"
        elif code is not None:
            error += f" with exit code {code}"
    if reason and name not in ("CANCELLED",):
        error += f"; Slurm's reason: {reason}"
    return NativeOutcome(phase, error=error, exit_code=code)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def parse_squeue(text: str) -> dict[str, tuple[str, Optional[str]]]:
    """``squeue -h -t all -o "%i|%T|%r"`` -> ``{slurm_job_id: (state, reason)}``."""
    jobs: dict[str, tuple[str, Optional[str]]] = {}
    for line in _lines(text):
        parts = line.strip().split("|", 2)
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise SlurmOutputError(f"cannot read squeue line {line!r}; expected 'JOBID|STATE|REASON' (squeue -o '{SQUEUE_FORMAT}')")
        job_id, state, reason = parts
        jobs[job_id] = (state, None if reason in ("", "None", "(null)") else reason)
    return jobs


def _json_state(value: Any, job_id: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        for flag in _FLAG_STATES:  # a flag says more than the base state: COMPLETED+COMPLETING is not settled
            if flag in value[1:]:
                return flag
        return value[0]
    raise SlurmOutputError(f"squeue --json: job {job_id} has job_state {value!r}; expected a string or a list of strings")


def parse_squeue_json(text: str) -> dict[str, tuple[str, Optional[str]]]:
    """``squeue --json`` (Slurm 22.05: job_state a string; 23.02+: a list of state and flags)."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SlurmOutputError(f"squeue --json printed no JSON ({e}): {text[:200]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise SlurmOutputError(f"squeue --json printed no 'jobs' list: {text[:200]!r}")
    jobs: dict[str, tuple[str, Optional[str]]] = {}
    for job in data["jobs"]:
        if not isinstance(job, dict) or "job_id" not in job or "job_state" not in job:
            raise SlurmOutputError(f"squeue --json: a job has no job_id or job_state: {str(job)[:200]!r}")
        job_id = str(job["job_id"])
        reason = job.get("state_reason")
        reason = reason if isinstance(reason, str) and reason not in ("", "None") else None
        jobs[job_id] = (_json_state(job["job_state"], job_id), reason)
    return jobs


def parse_sacct(text: str) -> dict[str, tuple[str, str, Optional[str]]]:
    """``sacct -n -P -o JobID,State,ExitCode,Reason`` -> ``{slurm_job_id: (state, exit_code, reason)}``; steps are skipped."""
    jobs: dict[str, tuple[str, str, Optional[str]]] = {}
    for line in _lines(text):
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[0] or not parts[1]:
            raise SlurmOutputError(
                f"cannot read sacct line {line!r}; expected 'JOBID|STATE|EXITCODE|REASON' (sacct -n -P -o {SACCT_FIELDS})"
            )
        job_id, state, exit_code, reason = parts
        if "." in job_id:  # the .batch and .extern steps; the job's own line says how it ended
            continue
        parse_exit_code(exit_code)  # fail here, on the line, rather than later
        jobs[job_id] = (state, exit_code, None if reason in ("", "None", "(null)") else reason)
    return jobs
