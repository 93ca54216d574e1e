"""SshBackend: each job runs on a remote host under its own detached watcher, reached through the shell seam.

The runner prepares a job in its local directory; ``submit`` uploads it (bridge/remote_jobs.py),
reserves CPUs, memory and GPUs of the remote host for it, and launches the watcher there in a
session of its own, so the job outlives the connection and the bridge. ``poll`` syncs all
running jobs with one remote command; a job is reported ended once its console output,
resource log and outputs are back in the local directory. With a runner listening
(``notify_job_end``), the quick remote commands go through one long-lived agent on a
channel of its own (bridge/agent_session.py), which also tells the moment a job ends there.

The native id is the job's remote directory. ``ssh_backend.json`` in the local directory
records it with the job's reservation, so a restarted bridge re-adopts its jobs. When the
host cannot be reached, jobs are reported as still running (they are, over there) and the
connection is retried with backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Optional

from bridge.backend import Backend, Capacity, JobSubmission, NativeOutcome, NativePhase, SubmitError
from bridge.images import ImageCheck
from bridge.jobdir import write_atomically
from bridge.local.backend import last_sampled_rss
from bridge.local.resources import DeclaredLimits, JobReservation, MachineSnapshot, busy_reason, choose_gpus, free_capacity
from bridge.remote_jobs import HostInfo, RemoteJobs, RemoteProgress
from bridge.shell import ShellAccessError, ShellError, ShellUnavailableError
from bridge.watch import (
    BYTES_PER_GB,
    DEFAULT_KILL_GRACE_SEC,
    DEFAULT_LOG_INTERVAL_SEC,
    DEFAULT_SAMPLE_INTERVAL_SEC,
    tail_text,
    timing_args,
)
from pairio.models import PairioJobRequiredResources

log = logging.getLogger("bridge.ssh")

RESERVATION_FILE = "ssh_backend.json"
HOST_INFO_MAX_AGE_SEC = 10.0
SUBMIT_RETRY_SEC = 120.0
"""how long a submission waits for an unreachable host before the job fails"""
CLEANUP_INTERVAL_SEC = 3600.0
REMOTE_DIR_MIN_AGE_SEC = 3600.0
"""remote job directories of ended jobs whose local directory is gone are removed after this"""
UNKNOWN_MEMORY_GB = 1024.0**2
"""a host that does not say how much memory is free (no /proc/meminfo): the slot alone limits it"""


@dataclass(frozen=True)
class Reservation:
    """The contents of ``ssh_backend.json``: where the job runs and what it holds there."""

    remoteDir: str
    numCpus: int
    memoryGb: float
    cpus: list[int] = field(default_factory=list)
    """CPU ids the job is bound to (empty: not bound)"""
    gpus: list[str] = field(default_factory=list)
    launched: bool = False

    @classmethod
    def read(cls, job_dir: Path) -> Optional["Reservation"]:
        try:
            return cls(**json.loads((job_dir / RESERVATION_FILE).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def write(self, job_dir: Path) -> None:
        write_atomically(job_dir / RESERVATION_FILE, json.dumps(asdict(self)).encode())


class SshBackend(Backend):
    name: ClassVar[str] = "ssh"

    def __init__(
        self,
        remote: RemoteJobs,
        jobs_root: Path,
        *,
        declared: DeclaredLimits = DeclaredLimits(),
        gpu_ids: Optional[list[str]] = None,
        pin_cpus: bool = True,
        respect_machine_load: bool = False,
        download_inputs: bool = False,
        submit_retry_sec: float = SUBMIT_RETRY_SEC,
        sample_interval_sec: float = DEFAULT_SAMPLE_INTERVAL_SEC,
        log_interval_sec: float = DEFAULT_LOG_INTERVAL_SEC,
        kill_grace_sec: float = DEFAULT_KILL_GRACE_SEC,
    ) -> None:
        """``jobs_root``: the local job directories (this and earlier instances'), to re-learn what runs.

        ``gpu_ids``: the remote GPUs to hand out; detected there (nvidia-smi -L) when None.
        ``respect_machine_load``: a job waits while the host's load average leaves it no CPUs
        (``busy_reason``); otherwise jobs run up to the slots whatever else runs there.
        """
        self.remote = remote
        self.jobs_root = jobs_root
        self.declared = declared
        self.gpu_ids = list(gpu_ids) if gpu_ids is not None else None
        self.pin_cpus = pin_cpus
        self.respect_machine_load = respect_machine_load
        self.download_inputs = download_inputs
        self.submit_retry_sec = submit_retry_sec
        self.watcher_args = timing_args(sample_interval_sec, log_interval_sec, kill_grace_sec)
        self._lock = threading.Lock()
        self._by_remote_dir: dict[str, Path] = {}
        self._running: dict[Path, Reservation] = {}
        self._unreachable_since: Optional[float] = None
        self._next_cleanup = 0.0
        self._learn_all()

    @property
    def host_description(self) -> str:
        return self.remote.shell.description

    def remote_host(self) -> Optional[str]:
        return self.remote.shell.description

    # ------------------------------------------------------------ Backend

    def check_images(self, engine: str, images: Sequence[str]) -> Optional[ImageCheck]:
        """Asked of the remote host's engine, in the agent's probe (one command for all images)."""
        where = self.host_description
        try:
            found = self.remote.probe(container_engine=engine, images=images).container_engine or {}
        except ShellError as e:
            return ImageCheck(where, {}, f"the host did not answer: {' '.join(str(e).split())}")
        answer = found.get("imageCheck")
        if not isinstance(answer, dict):
            return ImageCheck(where, {}, str(found.get("error") or f"the agent there did not check the images with {engine}"))
        return ImageCheck.from_agent(where, answer)

    def capacity(self) -> Capacity:
        try:
            host = self._fresh_host_info()
            gpu_ids = self._gpu_ids()
            self._clean_up_remote()
        except ShellError as e:
            self._note_unreachable(e)
            return Capacity(numCpus=0, numGpus=0, memoryGb=0.0)
        with self._lock:
            running = [self._job_reservation(d, r) for d, r in self._running.items()]
        return free_capacity(self._machine_snapshot(host, gpu_ids, busy_cpus=0.0), running, self.declared)

    def busy_reason(self, resources: PairioJobRequiredResources) -> Optional[str]:
        if not self.respect_machine_load:
            return None
        try:
            host = self._fresh_host_info()
        except ShellError:
            return None  # submit finds out, and retries
        with self._lock:
            running = [self._job_reservation(d, r) for d, r in self._running.items()]
        load = host.load1 or 0.0
        machine = self._machine_snapshot(host, [], busy_cpus=min(float(len(host.cpus) or 1), load))
        return busy_reason(machine, running, resources.numCpus, load)

    @staticmethod
    def _machine_snapshot(host: HostInfo, gpu_ids: list[str], *, busy_cpus: float) -> MachineSnapshot:
        memory_gb = host.mem_available_bytes / BYTES_PER_GB if host.mem_available_bytes is not None else UNKNOWN_MEMORY_GB
        return MachineSnapshot(cpu_count=len(host.cpus) or 1, busy_cpus=busy_cpus, available_memory_gb=memory_gb, gpu_ids=tuple(gpu_ids))

    def submit(self, job: JobSubmission) -> str:
        """Upload and launch the job; while the host is unreachable, keep trying for ``submit_retry_sec``.

        Every step is safe to repeat (a watcher is never launched twice for one directory), so a
        retry after a dropped connection finds a launch whose answer was lost instead of starting
        a second one.
        """
        job_dir = job.job_dir.resolve()
        if not job_dir.is_dir():
            raise SubmitError(f"the job directory {job_dir} does not exist; the runner must create it (with job.json) before submitting")
        deadline = time.monotonic() + self.submit_retry_sec
        delay = 1.0
        while True:
            try:
                return self._submit_once(job, job_dir)
            except ShellUnavailableError as e:
                if time.monotonic() + delay > deadline:
                    self._forget(job_dir)
                    raise SubmitError(f"{self.host_description} could not be reached for {self.submit_retry_sec:g} s: {e}") from None
                log.warning("job %s: %s; trying again in %.0f s", job.job_id, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 15.0)
            except ShellError as e:
                self._forget(job_dir)
                raise SubmitError(" ".join(str(e).split())) from None

    def _submit_once(self, job: JobSubmission, job_dir: Path) -> str:
        remote_dir = self.remote.remote_dir(job_dir)
        earlier = Reservation.read(job_dir)
        if earlier is not None and earlier.launched:
            return earlier.remoteDir  # a retried submit must not run the job twice
        reservation = earlier or self._reserve(job, remote_dir)
        with self._lock:
            reservation.write(job_dir)  # before the launch: CPUs and GPUs are never handed out twice
            self._running[job_dir] = reservation
            self._by_remote_dir[remote_dir] = job_dir
        self.remote.upload(job_dir, download_inputs=self.download_inputs, secrets=job.secrets)
        argv = self.remote.watcher_command(
            job_dir, job.command, job.resources, gpu_ids=reservation.gpus, watcher_args=[*self.watcher_args, *job.watcher_env_args()]
        )
        answer = self.remote.launch(job_dir, argv, pass_env=job.pass_env, cpus=reservation.cpus)
        if answer.get("state") == "failed":
            log.warning("job %s: %s", job.job_id, answer.get("error"))
        with self._lock:
            reservation = replace(reservation, launched=True)
            reservation.write(job_dir)
            if job_dir in self._running:
                self._running[job_dir] = reservation
        return remote_dir

    def poll(self, native_ids: list[str]) -> dict[str, NativeOutcome]:
        outcomes: dict[str, NativeOutcome] = {}
        known: dict[str, Path] = {}
        for native_id in native_ids:
            job_dir = self._local_dir(native_id)
            if job_dir is None:
                outcomes[native_id] = NativeOutcome(NativePhase.LOST, error=f"{native_id!r} is not a job of this SSH bridge")
            else:
                known[native_id] = job_dir
        if not known:
            return outcomes
        try:
            progress = self.remote.sync(sorted(set(known.values())))
        except ShellError as e:
            self._note_unreachable(e)
            # Nothing is known: the jobs run on over there; report those already mirrored, the rest as running.
            for native_id, job_dir in known.items():
                outcomes[native_id] = self.remote.local_outcome(job_dir) or NativeOutcome(NativePhase.RUNNING)
            return outcomes
        self._note_reachable()
        for native_id, job_dir in known.items():
            outcomes[native_id] = self._outcome(native_id, progress[job_dir])
            if outcomes[native_id].phase.is_final:
                self._release(job_dir)
        return outcomes

    def notify_job_end(self, callback: Callable[[], None]) -> None:
        """The remote agent, kept running on its own channel, says when a job's result.json appears there."""
        self.remote.use_agent_session(callback)

    def cancel(self, native_ids: list[str]) -> None:
        job_dirs = []
        for native_id in native_ids:
            job_dir = self._local_dir(native_id)
            if job_dir is not None and self.remote.local_outcome(job_dir) is None:
                job_dirs.append(job_dir)
        self.remote.cancel(job_dirs)

    def adopt(self, job_dir: Path) -> str:
        """The remote directory of the job started from ``job_dir`` (by this or an earlier backend).

        Raises LookupError when nothing was started there, so the runner may submit it.
        """
        job_dir = job_dir.resolve()
        reservation = Reservation.read(job_dir)
        if reservation is None:
            raise LookupError(f"no SSH job was started from {job_dir} (no {RESERVATION_FILE})")
        try:
            progress = self.remote.sync([job_dir])[job_dir]
        except ShellError as e:
            # Cannot look: follow it as started; if it never was, polling says so, and it is never run twice.
            log.warning("cannot check job %s on %s (%s); following it as started", job_dir.name, self.host_description, e)
            return reservation.remoteDir
        if not progress.launched and progress.outcome is None:
            self._forget(job_dir)
            raise LookupError(f"the job in {job_dir} was never started on {self.host_description}")
        return reservation.remoteDir

    def close(self) -> None:
        """Wait for outputs being copied back (the shell is closed by its owner)."""
        self.remote.close()

    # ------------------------------------------------------------ internals

    def _clean_up_remote(self) -> None:
        """Now and then, delete remote directories of ended jobs whose local directory the runner removed."""
        now = time.monotonic()
        if now < self._next_cleanup:
            return
        self._next_cleanup = now + CLEANUP_INTERVAL_SEC
        keep = [p.name for p in self.jobs_root.iterdir() if p.is_dir()] if self.jobs_root.is_dir() else []
        removed = self.remote.clean_up(keep, min_age_sec=REMOTE_DIR_MIN_AGE_SEC)
        if removed:
            log.info("removed %d old job directories on %s", len(removed), self.host_description)

    def _outcome(self, native_id: str, progress: RemoteProgress) -> NativeOutcome:
        if progress.outcome is not None:
            return progress.outcome
        if progress.finishing:
            return NativeOutcome(NativePhase.RUNNING)  # ended there; its outputs are on their way here
        if not progress.exists:
            return NativeOutcome(NativePhase.LOST, error=f"the job's directory {native_id} on {self.host_description} is gone")
        if progress.alive is False:
            error = (
                f"the job's watcher on {self.host_description} disappeared without a result"
                if progress.launched
                else f"the job was never started on {self.host_description}"
            )
            log_tail = tail_text(progress.watcher_log.encode(), max_lines=10)
            return NativeOutcome(NativePhase.LOST, error=f"{error}; its log ends with:\n{log_tail}" if log_tail else error)
        return NativeOutcome(NativePhase.RUNNING)

    def _reserve(self, job: JobSubmission, remote_dir: str) -> Reservation:
        host = self._fresh_host_info()
        gpu_ids = self._gpu_ids()
        with self._lock:
            gpus: list[str] = []
            if job.resources.numGpus > 0:
                taken = {g for r in self._running.values() for g in r.gpus}
                chosen = choose_gpus(gpu_ids, taken, job.resources.numGpus)
                if chosen is None:
                    free = [g for g in gpu_ids if g not in taken]
                    raise SubmitError(
                        f"the job needs {job.resources.numGpus} GPUs but {self.host_description} has {len(free)} free of "
                        f"{len(gpu_ids)} ({','.join(gpu_ids) or 'none found'}); lower numGpus, or list the host's GPUs in ssh.gpus"
                    )
                gpus = chosen
            cpus: list[int] = []
            if self.pin_cpus and host.cpus:
                taken_cpus = {c for r in self._running.values() for c in r.cpus}
                free_cpus = [c for c in host.cpus if c not in taken_cpus]
                if len(free_cpus) >= job.resources.numCpus:
                    cpus = free_cpus[: job.resources.numCpus]
        return Reservation(remoteDir=remote_dir, numCpus=job.resources.numCpus, memoryGb=job.resources.memoryGb, cpus=cpus, gpus=gpus)

    def _fresh_host_info(self) -> HostInfo:
        host = self.remote.host
        if host is None or time.monotonic() - host.received_at > HOST_INFO_MAX_AGE_SEC or host.gpus is None and self.gpu_ids is None:
            host = self.remote.probe()
            if self.gpu_ids is None and host.gpus is not None:
                self.gpu_ids = list(host.gpus)
        return host

    def _gpu_ids(self) -> list[str]:
        if self.gpu_ids is None:
            self._fresh_host_info()
        return list(self.gpu_ids or [])

    def _learn_all(self) -> None:
        if not self.jobs_root.is_dir():
            return
        for job_dir in sorted(p for p in self.jobs_root.iterdir() if p.is_dir()):
            self._learn(job_dir.resolve())

    def _learn(self, job_dir: Path) -> Optional[Reservation]:
        reservation = Reservation.read(job_dir)
        if reservation is None:
            return None
        with self._lock:
            self._by_remote_dir[reservation.remoteDir] = job_dir
            if self.remote.local_outcome(job_dir) is None:
                self._running[job_dir] = reservation
        return reservation

    def _local_dir(self, native_id: str) -> Optional[Path]:
        with self._lock:
            job_dir = self._by_remote_dir.get(native_id)
        if job_dir is not None:
            return job_dir
        # A job submitted by another instance since this one started: look in the directory named like it.
        name = native_id.rstrip("/").rsplit("/", 1)[-1]
        if not name or name in (".", ".."):
            return None
        candidate = (self.jobs_root / name).resolve()
        reservation = self._learn(candidate) if candidate.is_dir() else None
        return candidate if reservation is not None and reservation.remoteDir == native_id else None

    def _forget(self, job_dir: Path) -> None:
        """A submission that failed: its resources are free again and nothing of it is followed."""
        self._release(job_dir)
        (job_dir / RESERVATION_FILE).unlink(missing_ok=True)

    def _release(self, job_dir: Path) -> None:
        with self._lock:
            self._running.pop(job_dir, None)

    def _job_reservation(self, job_dir: Path, reservation: Reservation) -> JobReservation:
        return JobReservation(
            num_cpus=reservation.numCpus,
            memory_gb=reservation.memoryGb,
            gpu_ids=tuple(reservation.gpus),
            used_memory_gb=last_sampled_rss(job_dir) / BYTES_PER_GB,
        )

    def _note_unreachable(self, error: ShellError) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            level = logging.ERROR if isinstance(error, ShellAccessError) else logging.WARNING
            log.log(level, "%s cannot be reached (%s); jobs there keep running, retrying with backoff", self.host_description, error)

    def _note_reachable(self) -> None:
        if self._unreachable_since is not None:
            log.info("%s answers again after %.0f s", self.host_description, time.monotonic() - self._unreachable_since)
            self._unreachable_since = None
