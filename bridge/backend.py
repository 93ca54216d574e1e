"""The interface every bridge backend implements (local processes, Slurm, SSH).

The shared runner (bridge/runner.py) owns claim -> stage -> submit -> poll -> collect ->
report. A backend only turns a prepared job directory into a native job and follows it:
``submit`` one, ``poll`` many in one call, ``cancel`` many. Native states are translated
to a ``NativeOutcome`` by the backend; the runner decides what to report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, ClassVar, Optional

from pairio.models import PairioJobRequiredResources

from .images import ImageCheck


class NativePhase(str, Enum):
    """Where a native job is, in the terms the runner needs."""

    QUEUED = "queued"
    """Submitted, not yet running (e.g. Slurm PENDING); ``reason`` may say why."""
    RUNNING = "running"
    """The processor is running."""
    SUCCEEDED = "succeeded"
    """Ended with exit code 0."""
    FAILED = "failed"
    """Ended unsuccessfully; ``error`` says why (exit code, timeout, memory, cancelled...)."""
    LOST = "lost"
    """The backend no longer knows the job and it left no result: it must be failed."""

    @property
    def is_final(self) -> bool:
        return self in (NativePhase.SUCCEEDED, NativePhase.FAILED, NativePhase.LOST)


@dataclass(frozen=True)
class Capacity:
    """Free resources right now (what the next claim may ask for)."""

    numCpus: int
    numGpus: int
    memoryGb: float


@dataclass
class JobSubmission:
    """A job whose directory is ready: job file written, inputs staged."""

    job_id: str
    job_dir: Path
    command: list[str]
    """argv of the processor, run in ``job_dir / "work"`` with PAIRIO_JOB_FILE set"""
    resources: PairioJobRequiredResources
    secrets: dict[str, str] = field(default_factory=dict)
    """the job's secrets: for the processor's environment only, handed over in the job directory's
    secrets file (``watch.write_secrets_file``), never in the environment or argv of another process"""
    pass_env: tuple[str, ...] = ()
    """variables of the environment the watcher runs in that the processor also gets (the bridge's ``passEnv``)"""
    container_args: tuple[str, ...] = ()
    """container mode: the watcher options naming the engine and the container (``bridge.containers``)"""

    def watcher_env_args(self) -> list[str]:
        """The watcher options of this job: its id (so the watcher need not read job.json for it), which variables
        pass through, that secrets are waiting, and which container runs."""
        args = ["--job-id", self.job_id, *(f"--pass-env={pattern}" for pattern in self.pass_env)]
        return args + (["--secrets"] if self.secrets else []) + list(self.container_args)


@dataclass(frozen=True)
class NativeOutcome:
    phase: NativePhase
    error: Optional[str] = None
    reason: Optional[str] = None
    """why a queued job waits, when the backend knows"""
    exit_code: Optional[int] = None
    image_digest: Optional[str] = None
    """the container image's digest, when the job ran in a podman/docker container"""


class Backend(ABC):
    """A place jobs run. Subclasses set ``name`` and implement the four methods."""

    name: ClassVar[str]

    @abstractmethod
    def capacity(self) -> Capacity:
        """Resources free for new jobs right now."""

    @abstractmethod
    def submit(self, job: JobSubmission) -> str:
        """Start the job; return its native id (persisted by the runner). Raise SubmitError if refused."""

    @abstractmethod
    def poll(self, native_ids: list[str]) -> dict[str, NativeOutcome]:
        """The state of every given job, in one batched look-up."""

    @abstractmethod
    def cancel(self, native_ids: list[str]) -> None:
        """Stop the given jobs (their process trees); idempotent."""

    def close(self) -> None:
        """Releases what the backend holds in this process (helpers, connections); its jobs go on."""

    def notify_job_end(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` called (from any thread) when a job of this backend may have ended, so the
        runner polls at once instead of at its next interval. Backends that cannot tell leave this as is:
        the runner then notices ends at its regular polls."""

    def busy_reason(self, resources: PairioJobRequiredResources) -> Optional[str]:
        """Why a job that fits the slots should wait anyway (other programs keep the host busy), or None to run it.

        Called before each submit; only backends that respect the machine's load say anything.
        """
        return None

    def check_images(self, engine: str, images: Sequence[str]) -> Optional[ImageCheck]:
        """Whether podman/docker has ``images`` on the host the jobs run on, for the bridge log at start;
        None: this backend cannot tell (e.g. Slurm's compute nodes have their own)."""
        return None

    def describe(self, native_id: str) -> Optional[str]:
        """How users know the native job (e.g. "Slurm job 4242"), for the job's timeline; None: not worth telling."""
        return None

    def remote_host(self) -> Optional[str]:
        """Where its jobs go when not to this machine (SSH, Slurm over SSH), for the compute client's page; None: here."""
        return None

    def adopt(self, job_dir: Path) -> str:
        """The native id of the job started from ``job_dir``, for a bridge that died inside ``submit``.

        Raise LookupError when nothing was started there (the runner then submits it).
        Backends that cannot tell leave this as is; the runner then fails the job rather
        than risk running it twice.
        """
        raise NotImplementedError(f"the {self.name} backend cannot look jobs up by directory")


class SubmitError(Exception):
    """The backend refused the job; the message is shown to the user as the job's error."""


class SubmitRetryLater(Exception):
    """The backend could not take the job right now (its scheduler is unreachable); nothing was started.

    The runner submits again later; a backend whose submission may have gone through
    anyway must find that job in its next ``submit`` (by name) instead of starting another.
    """
