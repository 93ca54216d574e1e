"""Slurm's commands (sbatch, squeue, sacct, scancel), each call one command through the shell seam.

Nothing here decides what a state means (that is ``states``) or when to ask (that is
the backend); these methods run a command, check it worked and parse what it printed.
Errors say which command failed and quote Slurm's own words.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Optional

from bridge.shell import CommandResult, Shell, ShellError

from .site import SlurmSiteOptions
from .states import SACCT_FIELDS, SQUEUE_FORMAT, SlurmOutputError, parse_sacct, parse_squeue, parse_squeue_json

log = logging.getLogger(__name__)

# sbatch's words when the controller, not the job, is the problem: the job was probably not queued.
_TRANSIENT_SBATCH = re.compile(
    r"Unable to contact slurm controller|Socket timed out|temporarily unavailable|Slurm temporarily unable|"
    r"Transport endpoint|Connection refused|Zero Bytes were transmitted",
    re.IGNORECASE,
)
_SLURM_JOB_ID = re.compile(r"\d+(_\d+)?")
_ACCOUNTING_OFF = re.compile(r"accounting storage is disabled|slurmdbd|Connection refused|not running a supported accounting", re.IGNORECASE)
_UNKNOWN_JOB = "Invalid job id specified"


class SlurmCommandError(ShellError):
    """A Slurm command failed; the message quotes what it printed."""


class SlurmUnavailableError(SlurmCommandError):
    """The Slurm controller did not answer; try again later."""


class SbatchRejectedError(SlurmCommandError):
    """sbatch refused the job (bad partition, impossible resources, ...): the job cannot run as asked."""


def check_slurm_job_id(text: str) -> str:
    if not _SLURM_JOB_ID.fullmatch(text):
        raise ValueError(f"{text!r} is not a Slurm job id")
    return text


class SlurmCommands:
    def __init__(self, site: SlurmSiteOptions, shell: Shell, *, env: Optional[Mapping[str, str]] = None) -> None:
        """``env``: variables the commands need there (SLURM_CONF on a remote login node's non-login shell)."""
        self.site = site
        self.shell = shell
        self.env = dict(env or {})
        self._squeue_json: Optional[bool] = site.squeueJson
        self._accounting_available = True

    def _run(
        self, argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, stdin: Optional[bytes] = None,
        timeout: float = 60.0,
    ) -> CommandResult:
        return self.shell.run(argv, env={**self.env, **(env or {})}, stdin=stdin, timeout=timeout)

    # ------------------------------------------------------------ sbatch

    def submit(self, argv: Sequence[str]) -> str:
        """Run an ``sbatch --parsable`` command line; the Slurm job id.

        Nothing of the job's goes into sbatch's environment: secrets reach the watcher in the
        job directory's secrets.json, never sbatch, its environment or a command line.
        """
        result = self._run(argv, timeout=120.0)
        if result.exit_code != 0:
            message = result.output_summary() or f"sbatch exited with status {result.exit_code} and printed nothing"
            if _TRANSIENT_SBATCH.search(message):
                raise SlurmUnavailableError(f"sbatch could not reach the Slurm controller: {message}")
            raise SbatchRejectedError(message)
        first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        job_id = first.split(";", 1)[0].strip()  # --parsable prints "ID" or "ID;CLUSTER"
        if not _SLURM_JOB_ID.fullmatch(job_id):
            raise SlurmCommandError(f"sbatch --parsable printed {result.stdout.strip()!r}, not a job id")
        return job_id

    # ------------------------------------------------------------ squeue

    def queue(self, slurm_job_ids: Sequence[str]) -> dict[str, tuple[str, Optional[str]]]:
        """One squeue call for all the given jobs, in every state: ``{id: (state, reason)}``.

        Jobs Slurm no longer lists (they ended longer ago than MinJobAge) are absent.
        """
        if not slurm_job_ids:
            return {}
        ids = ",".join(slurm_job_ids)
        if self._squeue_json is not False:
            result = self._run([self.site.squeueCommand, "--json", "-t", "all", "-j", ids])
            if result.exit_code == 0:
                try:
                    jobs = parse_squeue_json(result.stdout)
                except SlurmOutputError:
                    if self._squeue_json:
                        raise
                else:
                    self._squeue_json = True
                    return {i: jobs[i] for i in slurm_job_ids if i in jobs}
            elif self._is_unknown_job(result):
                return {}
            elif self._squeue_json:
                raise SlurmUnavailableError(f"squeue --json failed: {result.output_summary()}")
            if self._squeue_json is None:
                log.info("squeue --json is not available here (%s); using squeue's text format", result.output_summary(200) or "unreadable output")
                self._squeue_json = False
        result = self._run([self.site.squeueCommand, "-h", "-t", "all", "-j", ids, "-o", SQUEUE_FORMAT])
        if result.exit_code != 0:
            if self._is_unknown_job(result):
                return {}
            raise SlurmUnavailableError(f"squeue failed with status {result.exit_code}: {result.output_summary()}")
        jobs = parse_squeue(result.stdout)
        return {i: jobs[i] for i in slurm_job_ids if i in jobs}

    @staticmethod
    def _is_unknown_job(result: CommandResult) -> bool:
        # squeue -j with a single id that Slurm has forgotten fails instead of listing nothing
        return result.exit_code == 1 and _UNKNOWN_JOB in (result.stderr + result.stdout)

    def find_by_name(self, job_name: str) -> list[str]:
        """Ids of the user's Slurm jobs named ``job_name`` that Slurm still lists, oldest first."""
        result = self._run([self.site.squeueCommand, "-h", "-t", "all", "--me", "-n", job_name, "-o", "%i"])
        if result.exit_code != 0:
            raise SlurmUnavailableError(f"squeue -n {job_name} failed: {result.output_summary()}")
        ids = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        return sorted(ids, key=lambda i: [int(p) for p in i.split("_")])

    # ------------------------------------------------------------ sacct

    def accounting(self, slurm_job_ids: Sequence[str]) -> Optional[dict[str, tuple[str, str, Optional[str]]]]:
        """One sacct call for jobs that left the queue; None when the cluster keeps no accounting."""
        if not slurm_job_ids or not self._accounting_available:
            return None
        argv = [self.site.sacctCommand, "-n", "-P", "-X", "-j", ",".join(slurm_job_ids), "-o", SACCT_FIELDS]
        try:
            result = self._run(argv)
        except ShellError as e:
            log.info("sacct cannot be used (%s); jobs that leave the queue are settled from their files only", e)
            self._accounting_available = False
            return None
        if result.exit_code != 0:
            if _ACCOUNTING_OFF.search(result.output_summary()):
                log.info("this cluster keeps no accounting (sacct: %s); settling jobs from their files", result.output_summary(200))
                self._accounting_available = False
                return None
            raise SlurmCommandError(f"sacct failed with status {result.exit_code}: {result.output_summary()}")
        return parse_sacct(result.stdout)

    # ------------------------------------------------------------ scancel

    def cancel(self, slurm_job_ids: Sequence[str]) -> None:
        """One scancel for all; ids Slurm has forgotten are fine (scancel is silent about them)."""
        if not slurm_job_ids:
            return
        result = self._run([self.site.scancelCommand, *slurm_job_ids])
        if result.exit_code != 0:
            summary = result.output_summary()
            if "already completing or completed" in summary or _UNKNOWN_JOB in summary:
                return
            raise SlurmCommandError(f"scancel failed with status {result.exit_code}: {summary}")

    # ------------------------------------------------------------ start-up check

    def check_reachable(self) -> str:
        """The cluster's answer to ``squeue --version`` and a queue query; raises with how to fix it."""
        version = self._run([self.site.squeueCommand, "--version"]).check().stdout.strip()
        probe = self._run([self.site.squeueCommand, "-h", "--me", "-o", "%i"])
        if probe.exit_code != 0:
            raise SlurmUnavailableError(
                f"{self.site.squeueCommand} cannot reach the Slurm controller: {probe.output_summary()}; "
                "check SLURM_CONF and that slurmctld runs (sinfo should answer on this machine)"
            )
        return version
