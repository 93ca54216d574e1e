"""SlurmBackend: each job becomes one sbatch job; all of the bridge's jobs are followed with one squeue per poll.

How a job is run and followed:

- ``submit`` copies the watcher (bridge/watch.py) into the job directory, writes the batch
  script (``script.render_sbatch_script``) and runs ``sbatch --parsable``. The job directory
  must be on a file system the compute nodes share: inputs are staged and outputs
  collected there by the bridge on the login node, so compute nodes need no network.
  A refusal (bad partition, impossible resources) fails the job at once with sbatch's
  message; an unreachable controller hands it back to be submitted later.
- ``poll`` asks ``squeue`` once for all jobs, and only when it is due: the interval grows
  from ``queuePollMinSec`` to ``queuePollMaxSec`` while nothing changes, and is reset by a
  change, a submission, a cancel or a result file appearing (a thread looks for those files
  every ``END_FILES_CHECK_SEC`` and has the runner poll at once; not over SSH). A job that has ended is
  settled from its files first (the watcher's result.json, the script's exit-code file),
  then from Slurm's state (TIMEOUT, CANCELLED, ... killed the script before it could
  write them), then from ``sacct`` where accounting exists; a job Slurm no longer lists
  and that left nothing is lost, never assumed completed.
- With a ``RemoteJobs`` (``pairio-bridge slurm --ssh``: the login node is reached over SSH),
  the job directory is uploaded to the cluster's file system before ``sbatch`` and mirrored
  back in ``poll`` (console, resource log, outputs, result) with one command for all jobs.
- Container mode (``--container podman|docker|apptainer``): the processor's command is the engine's, built on
  the bridge's host as for the local bridge, and the watcher runs it inside the allocation with the same limits.
  The engine's own settings (CONTAINERS_CONF, DOCKER_HOST, ...) reach it through the environment sbatch copies
  into the job; the watcher gives them to the engine only. A job Slurm stops (scancel, TIMEOUT) or whose watcher
  is killed loses its podman/docker container to the batch script's exit trap (``script.container_removal``);
  the watcher's ``--gpus`` are the allocation's (``script.gpu_ids_expression``).
- The native id is ``<slurm job id>:<job dir>``, so a restarted bridge needs nothing else;
  ``adopt`` finds a job whose id was never recorded by its name (``pairio-<jobId>``) or by
  the id the script writes into the job directory when it starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from bridge import watch
from bridge.backend import Backend, Capacity, JobSubmission, NativeOutcome, NativePhase, SubmitError, SubmitRetryLater
from bridge.local.backend import read_watcher_result
from bridge.remote_jobs import RemoteJobs, map_argument
from bridge.shell import LocalShell, Shell, ShellError, ShellUnavailableError
from bridge.watch import read_file_tail, tail_text
from bridge.watcher_code import write_bytecode

from .commands import SbatchRejectedError, SlurmCommands, SlurmUnavailableError, check_slurm_job_id
from .script import (
    EXIT_CODE_FILE,
    MASKING_SCRIPT_FILE,
    SCRIPT_FILE,
    SLURM_JOB_ID_FILE,
    STDERR_FILE,
    WATCHER_SCRIPT_FILE,
    job_name,
    render_sbatch_script,
    sbatch_argv,
)
from .site import SlurmSiteOptions
from .states import SLURM_STATE_PHASE, base_state, outcome_from_slurm

log = logging.getLogger(__name__)

SUBMIT_MARKER_FILE = "slurm_submit_attempted"
"""written before sbatch runs: a later submit or adopt looks the job up by name before submitting again"""
END_FILES_CHECK_SEC = 0.2
"""how often the end-file watcher looks for the files a job leaves when it ends (local job directories only)"""
_END_FILES = (watch.RESULT_FILE, EXIT_CODE_FILE)
"""the watcher's result and the batch script's exit code: either means the job has ended or is ending"""
_FILE_SETTLED_STATES = ("COMPLETED", "FAILED")
"""final states in which the watcher's own result says more than Slurm's"""


@dataclass(frozen=True)
class SlurmNativeId:
    slurm_job_id: str
    job_dir: Path

    def __str__(self) -> str:
        return f"{self.slurm_job_id}:{self.job_dir}"

    @classmethod
    def parse(cls, text: str) -> "SlurmNativeId":
        slurm_job_id, sep, job_dir = text.partition(":")
        if not sep or not job_dir.startswith("/"):
            raise ValueError(f"{text!r} is not '<slurm job id>:<absolute job dir>'")
        return cls(check_slurm_job_id(slurm_job_id), Path(job_dir))


@dataclass(frozen=True)
class JobFiles:
    """What a job left in its directory."""

    result: Optional[NativeOutcome]
    """the watcher's result.json"""
    script_exit_code: Optional[int]
    """the batch script's exit status, written on every exit"""
    stderr_tail: str = ""
    cancel_requested: bool = False
    """Pairio asked for the job to stop (the watcher's cancel file exists)"""

    @classmethod
    def read(cls, job_dir: Path, script_files_dir: Optional[Path] = None) -> "JobFiles":
        """``script_files_dir``: where the batch script's own files are, when not in ``job_dir`` (fetched from a remote cluster)."""
        script_dir = script_files_dir or job_dir
        code: Optional[int] = None
        try:
            code = int((script_dir / EXIT_CODE_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            pass
        stderr_tail = tail_text(read_file_tail(script_dir / STDERR_FILE), max_lines=10) if code is not None else ""
        return cls(
            result=read_watcher_result(job_dir), script_exit_code=code, stderr_tail=stderr_tail,
            cancel_requested=(job_dir / watch.CANCEL_FILE).exists(),
        )

    @property
    def ended(self) -> bool:
        return self.result is not None or self.script_exit_code is not None


def settle(slurm_job_id: str, queued: Optional[tuple[str, Optional[str]]], files: JobFiles,
           accounting: Optional[tuple[str, str, Optional[str]]] = None) -> NativeOutcome:
    """A job's outcome from what squeue says (None: not listed), its files and sacct's line."""
    if queued is not None:
        state, reason = queued
        slurm = outcome_from_slurm(state, reason=reason)
        if not slurm.phase.is_final:
            return slurm
        name, _ = base_state(state)
        if files.result is not None and (name in _FILE_SETTLED_STATES or files.result.phase is NativePhase.SUCCEEDED):
            return files.result
        if name in _FILE_SETTLED_STATES:
            return _from_script_exit(slurm_job_id, files) or NativeOutcome(
                NativePhase.FAILED,
                error=f"Slurm job {slurm_job_id} ended {name} but its batch script left no exit code; see {STDERR_FILE} in the job directory",
            )
        if name == "CANCELLED" and files.cancel_requested:
            return NativeOutcome(NativePhase.FAILED, error=watch.CANCELED_ERROR)
        return slurm  # TIMEOUT, CANCELLED, NODE_FAIL, ...: Slurm stopped it; say so
    # Slurm no longer lists it. The watcher's own result says most, unless Slurm stopped the job
    # (a signal from outside): then sacct, where the cluster keeps accounting, says why.
    if files.result is not None and not (_stopped_from_outside(files.result) and accounting is not None):
        return files.result
    if accounting is not None:
        state, exit_code, reason = accounting
        outcome = outcome_from_slurm(state, exit_code, reason)
        if base_state(state)[0] == "COMPLETED" and files.result is None:
            # Slurm says it completed, yet the watcher left no result: something removed the files
            return NativeOutcome(NativePhase.FAILED, error=f"Slurm job {slurm_job_id} completed but left no result file in its job directory")
        if outcome.phase.is_final or files.result is None:
            return outcome
    if files.result is not None:
        return files.result
    from_script = _from_script_exit(slurm_job_id, files)
    if from_script is not None:
        return from_script
    return NativeOutcome(
        NativePhase.LOST,
        error=(
            f"Slurm no longer lists job {slurm_job_id} and it left no result or exit code in its job directory "
            "(it may have been cancelled before it started, or its node lost the files)"
        ),
    )


def _stopped_from_outside(result: Optional[NativeOutcome]) -> bool:
    return result is not None and (result.error or "").startswith(watch.STOPPED_BY_SIGNAL_PREFIX)


def _may_need_script_files(queued: Optional[tuple[str, Optional[str]]]) -> bool:
    """Settling needs the script's exit code only once Slurm says the job ended (or no longer lists it)."""
    return queued is None or SLURM_STATE_PHASE.get(base_state(queued[0])[0], NativePhase.QUEUED).is_final


def _from_script_exit(slurm_job_id: str, files: JobFiles) -> Optional[NativeOutcome]:
    if files.script_exit_code is None:
        return None
    error = f"the batch script of Slurm job {slurm_job_id} exited with status {files.script_exit_code} before its watcher wrote a result"
    if files.stderr_tail:
        error += f"; {STDERR_FILE} ends with:\n{files.stderr_tail}"
    return NativeOutcome(NativePhase.FAILED, error=error, exit_code=files.script_exit_code)


class SlurmBackend(Backend):
    name: ClassVar[str] = "slurm"

    def __init__(
        self,
        site: SlurmSiteOptions = SlurmSiteOptions(),
        *,
        shell: Optional[Shell] = None,
        slot_limits: Capacity = Capacity(numCpus=1_000_000, numGpus=1_000_000, memoryGb=1e12),
        command_env: Optional[Mapping[str, str]] = None,
        remote: Optional[RemoteJobs] = None,
        watcher_args: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``slot_limits``: what one job may ask for (the bridge's slots); Slurm decides where it fits.

        ``command_env``: variables Slurm's commands need (SLURM_CONF when it is not in the
        environment they run in), on top of the site's ``commandEnv``.
        ``remote``: job directories live on a cluster reached through ``remote.shell``; they are
        uploaded before sbatch and mirrored back while jobs run.
        """
        self.site = site
        self.remote = remote
        self.shell = remote.shell if remote is not None else (shell or LocalShell())
        self.slot_limits = slot_limits
        self.commands = SlurmCommands(site, self.shell, env={**site.commandEnv, **(command_env or {})})
        self.python = site.python or (remote.python if remote is not None else sys.executable)
        self.watcher_args = watcher_args
        self._clock = clock
        self._lock = threading.Lock()
        self._active: set[str] = set()
        """native ids submitted and not yet seen final: what counts against maxQueuedJobs"""
        self._known_states: dict[str, tuple[str, Optional[str]]] = {}
        self._interval = site.queuePollMinSec
        self._next_query_at = 0.0
        self._end_watcher: Optional[_EndFileWatcher] = None

    def notify_job_end(self, callback: Callable[[], None]) -> None:
        """A thread looks for the end files of the jobs in ``_active`` (every ``END_FILES_CHECK_SEC``) and calls
        ``callback`` when one appears, so the runner polls, and squeue confirms the end, at once (``_query_due``).

        Only for job directories on this machine's file system; over SSH the mirrored files arrive through ``poll``.
        """
        if self.remote is not None or self._end_watcher is not None:
            return
        self._end_watcher = _EndFileWatcher(self._active_job_dirs, callback)
        self._end_watcher.start()

    def close(self) -> None:
        """Stops the end-file watcher; the jobs go on (and the backend stays usable, without end events)."""
        watcher, self._end_watcher = self._end_watcher, None
        if watcher is not None:
            watcher.stop()

    def _active_job_dirs(self) -> dict[str, Path]:
        with self._lock:
            active = list(self._active)
        dirs: dict[str, Path] = {}
        for text in active:
            try:
                dirs[text] = SlurmNativeId.parse(text).job_dir
            except ValueError:
                continue
        return dirs

    # ------------------------------------------------------------ Backend

    def capacity(self) -> Capacity:
        """Room for as many more jobs of the largest size as the queue may still take.

        Slurm decides where jobs fit; the bridge only bounds how many it queues. The room is
        a pool (the runner subtracts jobs it is still preparing), so it is the slot's size
        times the jobs that may still be queued, not one job's worth.
        """
        with self._lock:
            room = max(0, self.site.maxQueuedJobs - len(self._active))
        limits = self.slot_limits
        return Capacity(numCpus=limits.numCpus * room, numGpus=limits.numGpus * room, memoryGb=limits.memoryGb * room)

    def remote_host(self) -> Optional[str]:
        return self.remote.shell.description if self.remote is not None else None

    def describe(self, native_id: str) -> Optional[str]:
        try:
            return f"Slurm job {SlurmNativeId.parse(native_id).slurm_job_id}"
        except ValueError:
            return None

    def submit(self, job: JobSubmission) -> str:
        job_dir = job.job_dir.resolve()
        if not job_dir.is_dir():
            raise SubmitError(f"the job directory {job_dir} does not exist; the runner creates it (with job.json) before submitting")
        name = job_name(self.site, job.job_id)
        marker = job_dir / SUBMIT_MARKER_FILE
        if marker.exists():
            earlier = self._find_started(job_dir, name)
            if earlier is not None:
                log.info("job %s was already submitted as Slurm job %s; following that one", job.job_id, earlier)
                return self._track(SlurmNativeId(earlier, job_dir))
        try:
            if self.remote is not None:
                # job.json with the cluster's paths, the inputs, and the secrets file (0600), for the watcher only
                there = self.remote.upload(job_dir, secrets=job.secrets)
                command = [map_argument(a, job_dir, there) for a in job.command]
                script_dir, watcher_path = Path(there), self.remote.watcher_path
            else:
                for source, copy in ((watch.__file__, job_dir / WATCHER_SCRIPT_FILE), (watch.masking_module().__file__, job_dir / MASKING_SCRIPT_FILE)):
                    shutil.copyfile(source, copy)
                    write_bytecode(copy, Path(source))  # the watcher imports its copy: nothing to compile on the node
                if job.secrets:
                    watch.write_secrets_file(job_dir, job.secrets)  # on the shared file system; never in sbatch's environment
                command, script_dir, watcher_path = job.command, job_dir, ""
            script = render_sbatch_script(
                job.job_id, script_dir, job.resources, self.site, command, self.python,
                watcher_args=(*self.watcher_args, *job.watcher_env_args()), watcher_path=watcher_path,
            )
            (job_dir / SCRIPT_FILE).write_text(script)
            if self.remote is not None:
                self.shell.put_file(job_dir / SCRIPT_FILE, str(script_dir / SCRIPT_FILE))
            argv = sbatch_argv(self.site, job.job_id, script_dir, script_dir / SCRIPT_FILE)
        except (SlurmUnavailableError, ShellUnavailableError) as e:
            raise SubmitRetryLater(f"cannot reach {self.shell.description}: {e}") from None
        except (OSError, ValueError, ShellError) as e:
            raise SubmitError(f"could not write the batch script for {job_dir}: {e}") from e
        marker.touch()
        try:
            slurm_job_id = self.commands.submit(self._without_bridge_settings(argv))
        except SbatchRejectedError as e:
            marker.unlink(missing_ok=True)  # nothing was queued
            if self.remote is not None and job.secrets:
                self.remote.remove_secrets(job_dir)  # no watcher will ever take them (the runner deletes the local copy)
            raise SubmitError(f"sbatch refused the job: {e}") from None
        except (SlurmUnavailableError, ShellUnavailableError) as e:
            raise SubmitRetryLater(str(e)) from None
        except ShellError as e:
            raise SubmitError(f"could not run sbatch: {e}") from None
        return self._track(SlurmNativeId(slurm_job_id, job_dir))

    def poll(self, native_ids: list[str]) -> dict[str, NativeOutcome]:
        outcomes: dict[str, NativeOutcome] = {}
        parsed: dict[str, SlurmNativeId] = {}
        for text in native_ids:
            try:
                parsed[text] = SlurmNativeId.parse(text)
            except ValueError:
                outcomes[text] = NativeOutcome(NativePhase.LOST, error=f"{text!r} is not a job id of the Slurm backend")
        files = {text: JobFiles.read(n.job_dir) for text, n in parsed.items()}
        stale = False
        if parsed and self._query_due(parsed, files):
            self._query_queue(parsed)
            stale = True  # a job squeue now calls ended may have written its files after the first look
        listed = {text: self._known_states.get(n.slurm_job_id) for text, n in parsed.items()}
        finishing: set[str] = set()
        if self.remote is not None and parsed:
            # After squeue, so that a job Slurm saw end has its result.json there for this sync to bring back.
            # One command brings every job's console, resource log and (once ended) outputs and result here.
            progress = self.remote.sync(sorted({n.job_dir for n in parsed.values()}))
            finishing = {text for text, n in parsed.items() if progress.get(n.job_dir) and progress[n.job_dir].finishing}
            stale = True
        if stale:
            files = {text: JobFiles.read(n.job_dir) for text, n in parsed.items()}
        if self.remote is not None:
            for text, n in parsed.items():
                if files[text].result is None and text not in finishing and _may_need_script_files(listed[text]):
                    files[text] = self._remote_script_files(n)
        # jobs that left the queue without files: ask sacct, once for all of them
        unlisted = [
            n.slurm_job_id for text, n in parsed.items()
            if listed[text] is None and (files[text].result is None or _stopped_from_outside(files[text].result))
        ]
        accounting = self.commands.accounting(unlisted) if unlisted else None
        for text, n in parsed.items():
            if text in finishing:
                outcomes[text] = NativeOutcome(NativePhase.RUNNING)  # ended there; its outputs are on their way here
                continue
            outcome = settle(n.slurm_job_id, listed[text], files[text], (accounting or {}).get(n.slurm_job_id))
            outcomes[text] = outcome
            added = False
            with self._lock:
                if outcome.phase.is_final:
                    self._active.discard(text)
                    self._known_states.pop(n.slurm_job_id, None)
                else:
                    added = text not in self._active
                    self._active.add(text)  # also jobs a restarted bridge took over
            if added and self._end_watcher is not None:
                self._end_watcher.wake()
        return outcomes

    def cancel(self, native_ids: list[str]) -> None:
        ids: list[str] = []
        dirs: list[Path] = []
        for text in native_ids:
            try:
                native_id = SlurmNativeId.parse(text)
            except ValueError:
                continue  # not ours: nothing to stop
            if native_id.job_dir.is_dir() and not (native_id.job_dir / watch.RESULT_FILE).exists():
                # says the stop was Pairio's (not an administrator's), and the watcher stops the job even if scancel is slow
                (native_id.job_dir / watch.CANCEL_FILE).touch()
                if self.remote is not None:
                    dirs.append(native_id.job_dir)
            ids.append(native_id.slurm_job_id)
        if dirs and self.remote is not None:
            self.remote.cancel(dirs)  # the cancel file there: the watcher stops even if scancel is slow
        if ids:
            self.commands.cancel(ids)
            self._next_query_at = 0.0  # see the cancellation at the next poll

    def adopt(self, job_dir: Path) -> str:
        job_dir = job_dir.resolve()
        job_id = job_dir.name
        found = self._find_started(job_dir, job_name(self.site, job_id))
        if found is None:
            raise LookupError(f"no Slurm job was submitted for {job_dir} (none named {job_name(self.site, job_id)} and no {SLURM_JOB_ID_FILE})")
        return self._track(SlurmNativeId(found, job_dir))

    # ------------------------------------------------------------ internals

    def _track(self, native_id: SlurmNativeId) -> str:
        text = str(native_id)
        with self._lock:
            self._active.add(text)
        self._next_query_at = 0.0
        if self._end_watcher is not None:
            self._end_watcher.wake()
        return text

    def _find_started(self, job_dir: Path, name: str) -> Optional[str]:
        """The Slurm job of this directory: still queued under its name, or recorded by its script."""
        queued = self.commands.find_by_name(name)
        if queued:
            if len(queued) > 1:
                log.warning("several Slurm jobs are named %s (%s); following the oldest", name, ", ".join(queued))
            return queued[0]
        try:
            if self.remote is not None:
                recorded = self._read_remote(job_dir, SLURM_JOB_ID_FILE)
                if recorded is None:
                    return None
            else:
                recorded = (job_dir / SLURM_JOB_ID_FILE).read_text()
            return check_slurm_job_id(recorded.strip())
        except (FileNotFoundError, ValueError):
            return None

    def _read_remote(self, job_dir: Path, name: str) -> Optional[str]:
        """A small file of the job's remote directory, or None when it is not there."""
        assert self.remote is not None
        scratch = job_dir / f".remote-{name}"
        try:
            self.shell.get_file(f"{self.remote.remote_dir(job_dir)}/{name}", scratch)
            return scratch.read_text(errors="replace")
        except FileNotFoundError:
            return None
        finally:
            scratch.unlink(missing_ok=True)

    def _remote_script_files(self, native_id: SlurmNativeId) -> JobFiles:
        """The job's files, with the batch script's exit code and stderr fetched from the cluster (a rare path:
        Slurm says the job ended and the watcher left no result)."""
        scratch = native_id.job_dir / ".slurm-script-files"
        scratch.mkdir(exist_ok=True)
        for name in (EXIT_CODE_FILE, STDERR_FILE):
            text = self._read_remote(native_id.job_dir, name)
            if text is not None:
                (scratch / name).write_text(text)
        return JobFiles.read(native_id.job_dir, script_files_dir=scratch)

    def _query_due(self, parsed: dict[str, SlurmNativeId], files: dict[str, JobFiles]) -> bool:
        now = self._clock()
        if now >= self._next_query_at:
            return True
        for text, n in parsed.items():
            if n.slurm_job_id not in self._known_states:
                return True  # never looked at: a restarted bridge, or a job submitted since
            state = self._known_states[n.slurm_job_id][0]
            if files[text].ended and not SLURM_STATE_PHASE.get(base_state(state)[0], NativePhase.QUEUED).is_final:
                return True  # its script ended: confirm with Slurm now rather than after the back-off
        return False

    def _query_queue(self, parsed: dict[str, SlurmNativeId]) -> None:
        ids = sorted({n.slurm_job_id for n in parsed.values()}, key=lambda i: [int(p) for p in i.split("_")])
        states = self.commands.queue(ids)  # raises when Slurm does not answer: the runner polls again later
        changed = any(self._known_states.get(i) != states.get(i) for i in ids)
        with self._lock:
            for i in ids:
                if i in states:
                    self._known_states[i] = states[i]
                else:
                    self._known_states.pop(i, None)
        if changed:
            self._interval = self.site.queuePollMinSec
        else:
            self._interval = min(self.site.queuePollMaxSec, self._interval * 1.5)
        self._next_query_at = self._clock() + self._interval

    def _without_bridge_settings(self, argv: list[str]) -> list[str]:
        """sbatch exports its environment to the job: leave out the bridge's own PAIRIO_* settings."""
        if not self.shell.is_local:
            return argv
        names = sorted(n for n in os.environ if n.startswith("PAIRIO_"))
        if not names:
            return argv
        prefix = ["env"]
        for n in names:
            prefix += ["-u", n]
        return prefix + argv


class _EndFileWatcher:
    """A thread that stats the end files (``_END_FILES``) of the active jobs' directories and calls ``on_end``
    when one appears. It sleeps while there are no active jobs, and only looks at files, so the shared file
    system sees one stat per file per check (inotify would not see files written on other nodes)."""

    def __init__(self, job_dirs: Callable[[], dict[str, Path]], on_end: Callable[[], None], interval_sec: float = END_FILES_CHECK_SEC) -> None:
        self._job_dirs = job_dirs
        self._on_end = on_end
        self._interval = interval_sec
        self._stop = threading.Event()
        self._work = threading.Event()
        """set when a job is added (or on stop): the thread looks again at once"""
        self._seen: dict[str, int] = {}
        """per native id, how many of its end files were there at the last look"""
        self._thread = threading.Thread(target=self._run, name="slurm-end-files", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._work.set()

    def stop(self) -> None:
        self._stop.set()
        self._work.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                active = self.check()
            except Exception:  # noqa: BLE001 - only a hint: the runner's regular polls still see every end
                log.exception("looking for Slurm jobs' end files failed")
                active = True
            if active:
                self._stop.wait(self._interval)
            else:
                self._work.wait()  # until a job is submitted or adopted
                self._work.clear()

    def check(self) -> bool:
        """One look; calls ``on_end`` once if a job has an end file it did not have before. False: no active jobs."""
        dirs = self._job_dirs()
        ended = False
        for text, job_dir in dirs.items():
            count = sum(1 for name in _END_FILES if os.path.exists(job_dir / name))
            if count > self._seen.get(text, 0):
                ended = True
            self._seen[text] = count
        for text in [t for t in self._seen if t not in dirs]:
            del self._seen[text]  # settled by a poll: no longer active
        if ended:
            self._on_end()
        return bool(dirs)
