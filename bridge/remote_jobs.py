"""Job directories mirrored on another machine, through the shell seam: for the SSH bridge and Slurm over SSH.

The runner prepares every job in a LOCAL directory (job.json with local paths, staged
inputs) and follows it there (console.txt, resource_log.jsonl, outputs). A backend whose
jobs run elsewhere keeps that local directory as a mirror of a remote one:

- ``upload(job_dir)`` copies the prepared directory to ``<root>/jobs/<job id>`` on the
  remote host: job.json rewritten so its paths point into the remote directory, and the
  inputs (by SFTP; or fetched from their URLs there when ``download_inputs`` is set).
- ``watcher_command(...)`` is the argv that runs the job under bridge/watch.py there (the
  watcher file is uploaded once, named by its hash); ``launch(...)`` starts it detached
  (the SSH backend); a Slurm batch script runs the same argv instead.
- ``sync(job_dirs)`` learns the state of all given jobs with ONE remote command, appends
  their new console bytes and resource-log lines to the local files, and, for each job
  that ended, completes those files, fetches its outputs to the local paths and writes the
  local ``result.json`` last (in the background when much is left to copy). A job is
  reported ended only once its mirror is complete.
- ``cancel(job_dirs)`` asks the watchers to stop (one command); ``remove(job_dir)`` deletes
  the remote directory; ``clean_up(keep)`` deletes those of ended jobs no longer kept here.

The remote side is bridge/remote_agent.py (uploaded next to the watcher), run with the
remote host's Python 3; the watcher falls back to /proc where that Python lacks psutil.
With ``use_agent_session`` (the SSH backend, once a runner listens for ends) the quick
agent commands go through one long-lived agent (bridge/agent_session.py), which also says
the moment a job ends there; without it, or while it cannot run, each is a command of its own.
Nothing here knows about SSH: any ``Shell`` works, ``LocalShell`` included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import posixpath
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pairio import masking
from pairio.jobfile import JOB_FILE_NAME, PairioJobFile
from pairio.models import PairioJobRequiredResources

from .agent_session import AgentSession, AgentSessionError
from .backend import NativeOutcome, NativePhase
from .jobdir import CONSOLE_FILE_NAME, RESOURCE_LOG_FILE_NAME, RESULT_FILE_NAME, write_atomically
from .local.resources import local_directives
from .shell import CommandNotFoundError, Shell, ShellError
from .watch import MASKING_SCRIPT_FILE, SECRETS_FILE, write_secrets_file
from .watcher_code import bootstrap_argv

log = logging.getLogger("bridge.remote")

REMOTE_RECORD_FILE = "remote.json"
"""in the local job directory: where its remote copy is"""
TOOLS_DIR = ".pairio"
JOBS_DIR = "jobs"
WATCHER_SOURCE = Path(__file__).with_name("watch.py")
MASKING_SOURCE = Path(masking.__file__)
"""shipped beside the watcher as ``pairio_masking.py``: the watcher masks secrets in the console with it"""
AGENT_SOURCE = Path(__file__).with_name("remote_agent.py")
MAX_BYTES_PER_FILE_PER_SYNC = 1024 * 1024
MAX_BYTES_PER_SYNC = 8 * 1024 * 1024
INLINE_COPY_MAX_BYTES = 8 * 1024 * 1024
"""an ended job with more than this left to copy is completed in the background"""
COMPLETION_WORKERS = 4
SESSION_COMMANDS = ("probe", "launch", "sync", "cancel")
"""agent commands that go through the long-lived agent when there is one (quick ones: a download would hold it up)"""
SESSION_RETRY_SEC = 30.0
"""after a long-lived agent could not be started or broke, commands run one-shot this long before it is tried again"""
_RESULT_PHASES = {"succeeded": NativePhase.SUCCEEDED, "failed": NativePhase.FAILED}


class RemoteJobError(ShellError):
    """The remote side refused or failed an operation; the message says what and how to fix it."""


@dataclass(frozen=True)
class HostInfo:
    """What the remote host offers, as its agent last saw it."""

    hostname: str
    cpus: list[int]
    """CPU ids this user may run on there"""
    mem_available_bytes: Optional[int]
    load1: Optional[float]
    disk_free_bytes: Optional[int] = None
    gpus: Optional[list[str]] = None
    """only from ``probe``: GPU ids found there (CUDA_VISIBLE_DEVICES or nvidia-smi -L)"""
    python: Optional[str] = None
    psutil: Optional[bool] = None
    procfs: Optional[bool] = None
    container_engine: Optional[Mapping[str, Any]] = None
    """only from ``probe`` asked about an engine: its ``name`` and ``version``, or an ``error`` saying how to fix it"""
    received_at: float = field(default_factory=time.monotonic)

    @classmethod
    def from_agent(cls, data: Mapping[str, Any]) -> "HostInfo":
        return cls(
            hostname=str(data.get("hostname", "")),
            cpus=[int(c) for c in data.get("cpus") or []],
            mem_available_bytes=data.get("memAvailableBytes"),
            load1=data.get("load1"),
            disk_free_bytes=data.get("diskFreeBytes"),
            gpus=data.get("gpus"),
            python=data.get("python"),
            psutil=data.get("psutil"),
            procfs=data.get("procfs"),
            container_engine=data.get("containerEngine"),
        )


def container_engine_problem(host: HostInfo, engine: str, where: str) -> Optional[str]:
    """Why jobs in ``engine``'s containers cannot run on the host (from a probe that asked), or None when they can."""
    found = host.container_engine or {}
    if found.get("version") is not None and not found.get("error"):
        return None
    why = found.get("error") or f"the agent there did not check {engine}"
    return (
        f"container mode {engine!r} needs {engine} on {where}: {why}; "
        f"or register the bridge with another --container mode (none runs each app's command on the host)"
    )


@dataclass(frozen=True)
class RemoteProgress:
    """One job's state on the remote host after a ``sync``."""

    exists: bool
    """the remote job directory exists"""
    launched: bool
    """a watcher was started there (or is being started)"""
    alive: Optional[bool]
    """its watcher runs; None when that cannot be told from there (it runs on another node, or is starting)"""
    outcome: Optional[NativeOutcome] = None
    """set once the job ended and its local mirror (console, resource log, outputs, result.json) is complete"""
    watcher_log: str = ""
    """the end of the watcher's own log, when it died without a result"""
    finishing: bool = False
    """it ended there; its outputs are being copied here (``outcome`` comes with a later sync)"""


def remote_job_dir(root: str, job_dir: Path) -> str:
    return posixpath.join(root, JOBS_DIR, job_dir.name)


def map_path(path: str, local_dir: Path, remote_dir: str) -> str:
    """``path`` under ``local_dir`` as the same path under ``remote_dir``; ValueError when it is not under it."""
    relative = Path(path).relative_to(local_dir)
    return posixpath.join(remote_dir, relative.as_posix()) if str(relative) != "." else remote_dir


def map_argument(argument: str, local_dir: Path, remote_dir: str) -> str:
    """Every occurrence of the local job directory in one argv element (e.g. docker's ``-v D:D``) made remote."""
    return re.sub(re.escape(str(local_dir)) + r"(?=$|[/:=,\s])", lambda _: remote_dir, argument)


def remote_job_file(job_file: PairioJobFile, local_dir: Path, remote_dir: str) -> PairioJobFile:
    """The job file as the processor must see it there: every path moved into the remote job directory."""
    try:
        return job_file.model_copy(
            update={
                "inputs": [i.model_copy(update={"path": map_path(i.path, local_dir, remote_dir)}) for i in job_file.inputs],
                "outputs": [o.model_copy(update={"path": map_path(o.path, local_dir, remote_dir)}) for o in job_file.outputs],
                "workingDir": map_path(job_file.workingDir, local_dir, remote_dir),
            }
        )
    except ValueError as e:
        raise RemoteJobError(f"the job file of {local_dir} has a path outside its directory ({e}); it cannot be moved to a remote host") from None


def outcome_of(result: Mapping[str, Any]) -> NativeOutcome:
    """The outcome recorded in a watcher's result.json."""
    if "unreadable" in result:
        return NativeOutcome(NativePhase.LOST, error=f"the job's result file could not be read: {result['unreadable']}")
    phase = _RESULT_PHASES.get(str(result.get("phase")))
    if phase is None:
        return NativeOutcome(NativePhase.LOST, error=f"the job's result file has an unknown phase {result.get('phase')!r}")
    return NativeOutcome(phase, error=result.get("error"), exit_code=result.get("exitCode"), image_digest=result.get("imageDigest"))


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def read_remote_record(job_dir: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads((job_dir / REMOTE_RECORD_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class RemoteJobs:
    """Job directories under ``root`` on the machine behind ``shell``, mirrored to local job directories."""

    def __init__(
        self,
        shell: Shell,
        root: str,
        *,
        python: str = "python3",
        agent_python: Optional[str] = None,
        command_timeout_sec: float = 120.0,
        transfer_timeout_sec: float = 3600.0,
    ) -> None:
        """``root``: an absolute path there (e.g. ``/home/alice/pairio-bridge``).

        ``python``: the Python 3 that runs the watcher (where the job runs: a Slurm node's may differ);
        ``agent_python``: the one that runs the agent on the host behind ``shell`` [default: ``python``].
        """
        if not posixpath.isabs(root):
            raise ValueError(f"the remote directory must be an absolute path, got {root!r}")
        self.shell = shell
        self.root = posixpath.normpath(root)
        self.python = python
        self.agent_python = agent_python or python
        self.command_timeout_sec = command_timeout_sec
        self.transfer_timeout_sec = transfer_timeout_sec
        self.host: Optional[HostInfo] = None
        """what the remote host offered at the last sync or probe"""
        tools = posixpath.join(self.root, TOOLS_DIR)
        # the watcher and the masking module it loads from beside itself, in a directory named by both
        self.watcher_path = posixpath.join(tools, f"watch-{file_digest(WATCHER_SOURCE, MASKING_SOURCE)}", "watch.py")
        self.agent_path = posixpath.join(tools, f"agent-{file_digest(AGENT_SOURCE)}.py")
        self._procfs: Optional[bool] = None
        """the host has /proc (from the latest probe): the watcher then needs no site packages (no psutil)"""
        self._tools_ready = False
        self._tools_lock = threading.Lock()
        self._outputs: dict[Path, list[str]] = {}
        self._completions: dict[Path, Future[NativeOutcome]] = {}
        self._completions_lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._session: Optional[AgentSession] = None
        self._session_lock = threading.Lock()
        self._session_retry_at = 0.0
        self._on_job_end: Optional[Callable[[], None]] = None
        self.sessions_started = 0
        """how many long-lived agents were started (for logs and tests)"""

    def use_agent_session(self, on_job_end: Callable[[], None]) -> None:
        """Send the quick agent commands through one long-lived agent (bridge/agent_session.py), and call
        ``on_job_end`` (from another thread) the moment a job launched or synced through it ends there."""
        self._on_job_end = on_job_end

    # ------------------------------------------------------------ paths and tools

    def remote_dir(self, job_dir: Path) -> str:
        """Where the job's directory is on the remote host: ``<root>/jobs/<job id>``."""
        return remote_job_dir(self.root, job_dir)

    def ensure_tools(self) -> None:
        """Create the remote directories and upload the watcher and the agent, unless this version is there already."""
        with self._tools_lock:
            if self._tools_ready:
                return
            self.shell.makedirs(posixpath.join(self.root, JOBS_DIR), posixpath.dirname(self.watcher_path))
            masking_path = posixpath.join(posixpath.dirname(self.watcher_path), MASKING_SCRIPT_FILE)
            # the watcher last: its presence means its directory is complete
            for source, target in ((MASKING_SOURCE, masking_path), (WATCHER_SOURCE, self.watcher_path), (AGENT_SOURCE, self.agent_path)):
                if source is MASKING_SOURCE and self.shell.stat(self.watcher_path) is not None:
                    continue
                if self.shell.stat(target) is None:
                    self.shell.put_file(source, target, mode=0o644)
            self._tools_ready = True

    def probe(self, container_engine: str = "", images: Sequence[str] = ()) -> HostInfo:
        """Ask the host what it offers (CPUs, memory, GPUs, disk, Python); also checks that Python runs there,
        that ``container_engine`` does (``HostInfo.container_engine``), and whether it has ``images``
        (its ``imageCheck``: see bridge/images.py)."""
        request: dict[str, Any] = {"root": self.root}
        if container_engine:
            request["containerEngine"] = container_engine
            if images:
                request["images"] = list(images)
        self.host = HostInfo.from_agent(self._agent(["probe"], request))
        if self.host.procfs is not None:
            self._procfs = self.host.procfs
        return self.host

    # ------------------------------------------------------------ submit

    def upload(self, job_dir: Path, *, download_inputs: bool = False, secrets: Optional[Mapping[str, str]] = None) -> str:
        """Copy a prepared job directory (job.json, inputs) to the remote host; returns the remote directory.

        ``secrets`` go there in the secrets file (mode 0600 before its first byte), which the watcher
        reads and deletes; the local copy made to send it is deleted at once.
        Safe to repeat: inputs already there with the right size are not sent again.
        """
        job_dir = job_dir.resolve()
        self.ensure_tools()
        remote = self.remote_dir(job_dir)
        job_file = PairioJobFile.read(job_dir / JOB_FILE_NAME)
        moved = remote_job_file(job_file, job_dir, remote)
        directories = {posixpath.join(remote, "work"), moved.workingDir}
        directories |= {posixpath.dirname(o.path) for o in moved.outputs} | {posixpath.dirname(i.path) for i in moved.inputs}
        self.shell.makedirs(*sorted(directories))
        staged = job_dir / f".{JOB_FILE_NAME}.remote"
        staged.write_text(moved.to_json())
        try:
            self.shell.put_file(staged, posixpath.join(remote, JOB_FILE_NAME), mode=0o600)
        finally:
            staged.unlink(missing_ok=True)
        inputs = [(Path(local.path), local.url, there.path) for local, there in zip(job_file.inputs, moved.inputs)]
        if job_file.inputStaging == "lazy":
            inputs = []  # the processor fetches them there (bridge/staging.py)
        if download_inputs and inputs:
            inputs = self._download_there(inputs)
        for local_path, _, remote_path in inputs:
            there = self.shell.stat(remote_path)
            if there is None or there.size != local_path.stat().st_size:
                self.shell.put_file(local_path, remote_path, mode=0o600)
        if secrets:
            local_secrets = write_secrets_file(job_dir, dict(secrets))
            try:
                self.shell.put_file(local_secrets, posixpath.join(remote, SECRETS_FILE), mode=0o600)
            finally:
                local_secrets.unlink(missing_ok=True)
        write_atomically(job_dir / REMOTE_RECORD_FILE, json.dumps({"remoteDir": remote, "host": self.shell.description}).encode())
        return remote

    def _download_there(self, inputs: list[tuple[Path, str, str]]) -> list[tuple[Path, str, str]]:
        """Let the remote host fetch inputs from their URLs; the ones it could not fetch are returned, to be uploaded."""
        files = [{"url": url, "path": path, "size": local.stat().st_size} for local, url, path in inputs if url.startswith(("http://", "https://"))]
        if not files:
            return inputs
        answer = self._agent(["download"], {"files": files}, timeout=self.transfer_timeout_sec)
        fetched = {path for path, status in answer.get("files", {}).items() if status == "ok"}
        for path, status in answer.get("files", {}).items():
            if status != "ok":
                log.info("the remote host could not download %s (%s); uploading it", path, status)
        return [item for item in inputs if item[2] not in fetched]

    def watcher_command(
        self,
        job_dir: Path,
        command: Sequence[str],
        resources: PairioJobRequiredResources,
        *,
        gpu_ids: Sequence[str] = (),
        watcher_args: Sequence[str] = (),
    ) -> list[str]:
        """The argv that runs the job's processor under the watcher in its remote directory.

        ``command`` is the runner's processor argv; local job-directory paths in it are made remote.
        ``watcher_args``: extra watcher options (e.g. ``--sample-interval-sec``).
        """
        job_dir = job_dir.resolve()
        remote = self.remote_dir(job_dir)
        directives, _ = local_directives(resources, list(gpu_ids))
        processor = [map_argument(a, job_dir, remote) for a in command]
        # -I: PYTHON* variables and the user site there never change what the watcher runs; -S where /proc
        # serves instead of psutil: the watcher needs only the standard library, and starts sooner without site
        flags = ["-I", "-S"] if self._procfs else ["-I"]
        # imported by a bootstrap, not run as a script: its bytecode is compiled once per host, not once per job
        return [self.python, *flags, *bootstrap_argv(self.watcher_path), "--job-dir", remote, *directives, *watcher_args, "--", *processor]

    def launch(
        self, job_dir: Path, watcher_argv: Sequence[str], *, pass_env: Sequence[str] = (), cpus: Sequence[int] = ()
    ) -> dict[str, Any]:
        """Start the watcher detached in the job's remote directory (its own session: it outlives the connection).

        Never starts a second watcher for one directory. The watcher gets an allow-list of the
        agent's environment and the ``pass_env`` variables, never secrets (they are in the job's
        secrets file); ``cpus``: CPU ids to bind the job to.
        """
        remote = self.remote_dir(job_dir.resolve())
        args = ["launch", "--job-dir", remote]
        if cpus:
            args += ["--cpus", ",".join(str(c) for c in cpus)]
        answer = self._agent([*args, "--", *watcher_argv], {"passEnv": list(pass_env)})
        return answer

    # ------------------------------------------------------------ follow

    def sync(self, job_dirs: Sequence[Path]) -> dict[Path, RemoteProgress]:
        """The state of every given job, with one remote command; brings their progress into the local directories.

        Jobs whose local mirror is complete (a local result.json) cost nothing. A job that ended
        is completed here when little remains to copy, else in the background (``finishing``
        meanwhile), so a large output never holds up the caller's loop.
        Raises ShellError (ShellUnavailableError when the host cannot be reached): then nothing is known.
        """
        progress: dict[Path, RemoteProgress] = {}
        asked: dict[str, Path] = {}
        for d in job_dirs:
            done = self.local_outcome(d)
            if done is not None:
                progress[d] = RemoteProgress(exists=True, launched=True, alive=False, outcome=done)
            elif self._finishing(d):
                progress[d] = RemoteProgress(exists=True, launched=True, alive=False, finishing=True)
            else:
                asked[self.remote_dir(d)] = d
        if not asked:
            return progress
        offsets = {
            remote: {"console": _size(d / CONSOLE_FILE_NAME), "resourceLog": _size(d / RESOURCE_LOG_FILE_NAME)} for remote, d in asked.items()
        }
        request = {
            "root": self.root,
            "maxBytesPerFile": MAX_BYTES_PER_FILE_PER_SYNC,
            "maxBytesTotal": MAX_BYTES_PER_SYNC,
            "jobs": [{"dir": remote, **offsets[remote], "outputs": self._remote_outputs(d, remote)} for remote, d in asked.items()],
        }
        answer = self._agent(["sync"], request)
        if isinstance(answer.get("host"), dict):
            self.host = HostInfo.from_agent(answer["host"])
        jobs = answer.get("jobs", {})
        for remote, d in asked.items():
            item = jobs.get(remote) or {"exists": False}
            if not item.get("exists"):
                progress[d] = RemoteProgress(exists=False, launched=False, alive=False)
                continue
            self._append(d / CONSOLE_FILE_NAME, item.get("console"), request_offset=offsets[remote]["console"])
            self._append(d / RESOURCE_LOG_FILE_NAME, item.get("resourceLog"), request_offset=offsets[remote]["resourceLog"])
            result = item.get("result")
            if result is None:
                progress[d] = RemoteProgress(
                    exists=True, launched=bool(item.get("launched")), alive=item.get("alive"), watcher_log=item.get("watcherLog") or ""
                )
            elif self._bytes_to_copy(d, item, result) <= INLINE_COPY_MAX_BYTES:
                progress[d] = RemoteProgress(exists=True, launched=True, alive=False, outcome=self._complete(d, remote, item, result))
            else:
                with self._completions_lock:
                    self._completions[d] = self._completion_pool().submit(self._complete, d, remote, item, result)
                progress[d] = RemoteProgress(exists=True, launched=True, alive=False, finishing=True)
        return progress

    def local_outcome(self, job_dir: Path) -> Optional[NativeOutcome]:
        """The outcome of a job whose mirror is complete, from its local result.json; None before that."""
        try:
            result = json.loads((job_dir / RESULT_FILE_NAME).read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            return NativeOutcome(NativePhase.LOST, error=f"the job's result file could not be read: {e}")
        return outcome_of(result)

    def _remote_outputs(self, job_dir: Path, remote: str) -> list[str]:
        outputs = self._outputs.get(job_dir)
        if outputs is None:
            try:
                job_file = PairioJobFile.read(job_dir / JOB_FILE_NAME)
                outputs = [map_path(o.path, job_dir.resolve(), remote) for o in job_file.outputs]
            except (OSError, ValueError):
                outputs = []
            self._outputs[job_dir] = outputs
        return outputs

    def _finishing(self, job_dir: Path) -> bool:
        """A background completion of this job is under way (or just failed: then it is forgotten and retried)."""
        with self._completions_lock:
            future = self._completions.get(job_dir)
            if future is None:
                return False
            if not future.done():
                return True
            del self._completions[job_dir]
        error = future.exception()
        if error is not None:
            log.warning("could not bring job %s back from %s (%s); trying again", job_dir.name, self.shell.description, error)
        return False

    def _completion_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=COMPLETION_WORKERS, thread_name_prefix="remote-copy")
        return self._pool

    def _bytes_to_copy(self, job_dir: Path, item: Mapping[str, Any], result: Mapping[str, Any]) -> int:
        total = 0
        for name, key in ((CONSOLE_FILE_NAME, "console"), (RESOURCE_LOG_FILE_NAME, "resourceLog")):
            total += max(0, int((item.get(key) or {}).get("size", 0)) - _size(job_dir / name))
        if result.get("phase") == "succeeded":
            total += sum(size or 0 for size in (item.get("outputSizes") or {}).values())
        return total

    def _append(self, local: Path, chunk: Optional[Mapping[str, Any]], *, request_offset: int) -> None:
        if not chunk or not chunk.get("data"):
            return
        if _size(local) != request_offset:
            return  # changed meanwhile (another sync completed it): the next sync continues from its end
        with open(local, "ab") as f:
            f.write(base64.b64decode(chunk["data"]))

    def _complete(self, job_dir: Path, remote: str, item: Mapping[str, Any], result: Mapping[str, Any]) -> NativeOutcome:
        """The job ended there: finish the local console and resource log, fetch outputs, then write result.json."""
        for name, key in ((CONSOLE_FILE_NAME, "console"), (RESOURCE_LOG_FILE_NAME, "resourceLog")):
            remote_size = int((item.get(key) or {}).get("size", 0))
            if _size(job_dir / name) != remote_size and remote_size > 0:
                self.shell.get_file(posixpath.join(remote, name), job_dir / name)
        outcome = outcome_of(result)
        if outcome.phase is NativePhase.SUCCEEDED:
            self._fetch_outputs(job_dir, remote, item.get("outputSizes") or {})
        write_atomically(job_dir / RESULT_FILE_NAME, json.dumps(dict(result)).encode())
        self._outputs.pop(job_dir, None)
        return outcome

    def _fetch_outputs(self, job_dir: Path, remote: str, sizes: Mapping[str, Optional[int]]) -> None:
        job_file = PairioJobFile.read(job_dir / JOB_FILE_NAME)
        for output in job_file.outputs:
            remote_path = map_path(output.path, job_dir.resolve(), remote)
            if sizes.get(remote_path, 0) is None:
                continue  # not produced: the runner reports the missing output
            local_path = Path(output.path)
            local_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.shell.get_file(remote_path, local_path)
            except FileNotFoundError:
                continue

    # ------------------------------------------------------------ stop and clean up

    def cancel(self, job_dirs: Sequence[Path]) -> None:
        """Ask the jobs' watchers to stop (a cancel file, and SIGTERM where the watcher runs on that host): one command."""
        if job_dirs:
            self._agent(["cancel"], {"dirs": [self.remote_dir(d) for d in job_dirs]})

    def remove_secrets(self, job_dir: Path) -> None:
        """Delete the job's secrets file there, for a job that will never start; best effort (the directory is 0700)."""
        try:
            self.shell.remove(posixpath.join(self.remote_dir(job_dir), SECRETS_FILE))
        except ShellError as e:
            log.warning("could not delete the secrets file of job %s on %s (%s)", job_dir.name, self.shell.description, e)

    def remove(self, job_dir: Path) -> None:
        """Delete the job's remote directory."""
        self.shell.remove(self.remote_dir(job_dir), recursive=True)

    def clean_up(self, keep: Sequence[str], *, min_age_sec: float = 3600.0) -> list[str]:
        """Delete remote job directories whose names are not in ``keep`` (the local job directories left),
        once their job ended and they are ``min_age_sec`` old; one command. Returns the names removed."""
        answer = self._agent(
            ["cleanup"], {"jobsDir": posixpath.join(self.root, JOBS_DIR), "keep": list(keep), "minAgeSec": min_age_sec}
        )
        return [str(name) for name in answer.get("removed", [])]

    def close(self) -> None:
        """Wait for background copies and end the long-lived agent; the shell is the caller's to close."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._session_lock:
            session, self._session = self._session, None
            self._on_job_end = None
        if session is not None:
            session.close()

    # ------------------------------------------------------------ the agent

    def _agent_session(self) -> Optional[AgentSession]:
        """The long-lived agent, started on first use; None when not wanted, or not to be tried again yet."""
        if self._on_job_end is None:
            return None
        with self._session_lock:
            if self._session is not None and self._session.alive:
                return self._session
            self._session = None
            if time.monotonic() < self._session_retry_at or self._on_job_end is None:
                return None
            try:
                self._session = AgentSession(self.shell, [self.agent_python, self.agent_path, "serve"], self._ended_there)
            except NotImplementedError as e:
                log.info("no long-lived agent on %s (%s): one command per request", self.shell.description, e)
                self._session_retry_at = float("inf")
                return None
            except ShellError as e:
                log.warning("could not start the long-lived agent on %s (%s); one command per request for now", self.shell.description, e)
                self._session_retry_at = time.monotonic() + SESSION_RETRY_SEC
                return None
            self.sessions_started += 1
            return self._session

    def _ended_there(self, remote_dirs: list[str]) -> None:
        callback = self._on_job_end
        if callback is not None:
            callback()

    def _agent_through_session(self, args: Sequence[str], request: Mapping[str, Any], timeout: float) -> Optional[dict[str, Any]]:
        """The answer from the long-lived agent, or None: then the caller runs the command one-shot."""
        if args[0] not in SESSION_COMMANDS or (args[0] == "probe" and request.get("containerEngine")):
            return None
        session = self._agent_session()
        if session is None:
            return None
        try:
            return session.call(args, {**request, "watch": True} if args[0] == "sync" else request, timeout=timeout)
        except AgentSessionError as e:
            raise RemoteJobError(f"{e} ({args[0]})") from None
        except ShellError as e:
            # a launch whose answer was lost is found by the one-shot retry: launch.json makes it happen once
            log.warning("the long-lived agent on %s stopped (%s); one command per request for %.0f s", self.shell.description, e, SESSION_RETRY_SEC)
            with self._session_lock:
                self._session_retry_at = time.monotonic() + SESSION_RETRY_SEC
            return None

    def _agent(self, args: Sequence[str], request: Mapping[str, Any], *, timeout: Optional[float] = None) -> dict[str, Any]:
        self.ensure_tools()
        answered = self._agent_through_session(args, request, timeout or self.command_timeout_sec)
        if answered is not None:
            return answered
        argv = [self.agent_python, self.agent_path, *args]
        data = json.dumps(request).encode()
        try:
            result = self.shell.run(argv, stdin=data, timeout=timeout or self.command_timeout_sec)
            if result.exit_code == 2 and "can't open file" in result.stderr:
                with self._tools_lock:
                    self._tools_ready = False  # the remote directory was cleaned up under us
                self.ensure_tools()
                result = self.shell.run(argv, stdin=data, timeout=timeout or self.command_timeout_sec)
        except CommandNotFoundError:
            raise CommandNotFoundError(
                f"the remote Python {self.agent_python!r} was not found on {self.shell.description}; install Python 3 there, "
                "or set the bridge's remote Python (ssh.remotePython / --remote-python) to its full path"
            ) from None
        if not result.ok:
            raise RemoteJobError(f"the bridge's agent on {self.shell.description} failed ({args[0]}): {result.output_summary()}")
        try:
            answer = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise RemoteJobError(
                f"the bridge's agent on {self.shell.description} answered something else than JSON ({args[0]}): "
                f"{result.stdout[:300]!r}; does the remote shell print text at login (check ~/.bashrc)?"
            ) from None
        if not isinstance(answer, dict):
            raise RemoteJobError(f"the bridge's agent on {self.shell.description} gave an unexpected answer: {answer!r}")
        return answer


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

