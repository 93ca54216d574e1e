"""A job's directory on the bridge, and ``state.json``: the runner's progress, kept on disk.

The layout is shared by the runner, the watcher and every backend (see the module
constants). ``state.json`` is what makes a bridge restart-safe: it records how far the
runner got (claimed -> staged -> submitting -> submitted -> finished -> reported), the
native id, what has been reported and how much console output the hub has, and is
replaced atomically so a crash leaves either the old or the new state, never half.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from enum import Enum
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from pairio.jobfile import JOB_FILE_NAME, PairioJobFile

from .backend import NativeOutcome, NativePhase
from .watch import INPUTS_DIR, OUTPUTS_DIR, WORK_DIR

STATE_FILE_NAME = "state.json"
CONSOLE_FILE_NAME = "console.txt"
RESOURCE_LOG_FILE_NAME = "resource_log.jsonl"
RESULT_FILE_NAME = "result.json"


class RunnerPhase(str, Enum):
    """How far the runner got with a job."""

    CLAIMED = "claimed"
    """The directory and job.json exist; inputs are not staged yet."""
    STAGED = "staged"
    """Inputs are staged; the job was never handed to the backend (safe to submit)."""
    SUBMITTING = "submitting"
    """``backend.submit`` was called but its answer not recorded: never submit again."""
    SUBMITTED = "submitted"
    """The backend runs it under ``nativeId``."""
    FINISHED = "finished"
    """The backend says it ended (``outcome``); outputs and the final status still go to the hub."""
    REPORTED = "reported"
    """The hub has the final status (or refused it for good): nothing left to do."""


class RecordedOutcome(BaseModel):
    model_config = ConfigDict(extra="ignore")
    phase: NativePhase
    error: Optional[str] = None
    exitCode: Optional[int] = None
    imageDigest: Optional[str] = None

    @classmethod
    def of(cls, outcome: NativeOutcome) -> "RecordedOutcome":
        return cls(phase=outcome.phase, error=outcome.error, exitCode=outcome.exit_code, imageDigest=outcome.image_digest)


class JobState(BaseModel):
    """The contents of ``state.json``."""

    model_config = ConfigDict(extra="ignore")

    jobId: str
    phase: RunnerPhase = RunnerPhase.CLAIMED
    nativeId: Optional[str] = None
    submitAttempted: bool = Field(default=False, description="backend.submit was called: never call it again for this job")
    runningReported: bool = False
    outcome: Optional[RecordedOutcome] = None
    outputsUploaded: list[str] = Field(default_factory=list)
    resourceLogUploaded: bool = False
    consoleOffsetSent: int = 0
    finalStatus: Optional[str] = None
    finalError: Optional[str] = None
    cancelRequested: bool = False
    originalSdk: bool = Field(default=False, description="the image was built with the original Pairio SDK: the job reports and uploads itself")
    note: Optional[str] = Field(default=None, description="why the runner gave up on reporting, when it did")
    timestampClaimedSec: float = Field(default_factory=time.time)
    timestampUpdatedSec: float = Field(default_factory=time.time)


class JobDir:
    """Paths of one job's directory, and its state file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def job_id(self) -> str:
        return self.path.name

    @property
    def job_file(self) -> Path:
        return self.path / JOB_FILE_NAME

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE_NAME

    @property
    def inputs_dir(self) -> Path:
        return self.path / INPUTS_DIR

    @property
    def outputs_dir(self) -> Path:
        return self.path / OUTPUTS_DIR

    @property
    def work_dir(self) -> Path:
        return self.path / WORK_DIR

    @property
    def console_file(self) -> Path:
        return self.path / CONSOLE_FILE_NAME

    @property
    def resource_log_file(self) -> Path:
        return self.path / RESOURCE_LOG_FILE_NAME

    def input_path(self, name: str, file_base_name: str) -> Path:
        return self.inputs_dir / name / file_base_name

    def output_path(self, name: str, file_base_name: str) -> Path:
        return self.outputs_dir / name / file_base_name

    def create(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.chmod(0o700)  # whatever the umask: inputs, outputs and the job's files are its user's only
        for d in (self.inputs_dir, self.outputs_dir, self.work_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def read_job_file(self) -> PairioJobFile:
        return PairioJobFile.read(self.job_file)

    def read_state(self) -> Optional[JobState]:
        """The saved state, or None when there is none (a directory created by a bridge that died at once)."""
        try:
            return JobState.model_validate_json(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def write_state(self, state: JobState) -> None:
        state.timestampUpdatedSec = time.time()
        write_atomically(self.state_file, state.model_dump_json(indent=2).encode())

    def read_console_chunk(self, offset: int, max_bytes: int) -> bytes:
        try:
            with open(self.console_file, "rb") as f:
                f.seek(offset)
                return f.read(max_bytes)
        except FileNotFoundError:
            return b""

    def resource_log(self) -> Optional[bytes]:
        """The resource log's complete lines (the watcher may be writing the last one)."""
        try:
            data = self.resource_log_file.read_bytes()
        except FileNotFoundError:
            return None
        end = data.rfind(b"\n")
        return data[: end + 1] if end >= 0 else b""

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file, flush it to disk, and rename it over ``path``."""
    # A name of its own per write: two writers (threads, or a second bridge) never share a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def job_dirs(jobs_root: Path) -> list[JobDir]:
    """Every job directory under the bridge's jobs directory, oldest first."""
    if not jobs_root.is_dir():
        return []
    dirs = [JobDir(p) for p in jobs_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(dirs, key=lambda d: _mtime(d.path))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def remove_old_job_dirs(jobs_root: Path, max_age_sec: float, now: Optional[float] = None) -> list[str]:
    """Delete the directories of reported jobs whose state has not changed for ``max_age_sec``."""
    now = time.time() if now is None else now
    removed = []
    for d in job_dirs(jobs_root):
        try:
            state = d.read_state()
        except (OSError, ValueError, json.JSONDecodeError):
            continue
        if state is not None and state.phase is RunnerPhase.REPORTED and now - state.timestampUpdatedSec > max_age_sec:
            d.remove()
            removed.append(d.job_id)
    return removed
