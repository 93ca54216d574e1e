"""LocalBackend: each job runs on this machine under its own detached watcher (bridge/watch.py).

All state lives in the job directories, so a new ``LocalBackend`` (after the bridge was
killed and restarted) follows jobs an earlier one started:

- the native id is ``<watcher pid>:<watcher create time>:<job dir>``; ``poll`` needs nothing
  else. The create time tells our watcher from an unrelated process that got its pid later.
- ``local_backend.json`` in the job directory records what the job holds (CPUs, memory,
  which GPUs) and its watcher, so capacity and GPU assignment survive a restart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import psutil

import bridge.watch as bridge_watch
from bridge.backend import Backend, Capacity, JobSubmission, NativeOutcome, NativePhase, SubmitError
from bridge.images import ImageCheck
from bridge.local.load import CpuLoadMeter
from bridge.local.resources import (
    DeclaredLimits,
    JobReservation,
    MachineSnapshot,
    busy_reason,
    choose_gpus,
    detect_gpu_ids,
    free_capacity,
    local_directives,
)
from bridge.local.warm_start import python_interpreter
from bridge.local.watcher_launcher import LauncherUnavailable, WatcherLauncher
from bridge.watch import (
    BYTES_PER_GB,
    CANCEL_FILE,
    DEFAULT_KILL_GRACE_SEC,
    DEFAULT_LOG_INTERVAL_SEC,
    DEFAULT_SAMPLE_INTERVAL_SEC,
    ENGINE_ENV,
    RESOURCE_LOG_FILE,
    RESULT_FILE,
    SECRETS_FILE,
    WATCHER_FILE,
    Container,
    allowed_environment,
    read_file_tail,
    tail_text,
    timing_args,
    write_json_atomically,
    write_secrets_file,
)
from pairio.models import PairioJobRequiredResources

RESERVATION_FILE = "local_backend.json"
WATCHER_SCRIPT = Path(bridge_watch.__file__).resolve()
WATCHER_LOG_FILE = "watcher.log"

# psutil derives create times from the boot time, which shifts by up to a second when the
# clock is adjusted; a pid recycled within a second of our watcher's start is not a risk.
CREATE_TIME_TOLERANCE_SEC = 1.0

RESULT_PHASES: dict[str, NativePhase] = {
    "succeeded": NativePhase.SUCCEEDED,
    "failed": NativePhase.FAILED,
}


@dataclass(frozen=True)
class NativeId:
    watcher_pid: int
    watcher_create_time: float
    job_dir: Path

    def __str__(self) -> str:
        return f"{self.watcher_pid}:{self.watcher_create_time!r}:{self.job_dir}"

    @classmethod
    def parse(cls, text: str) -> "NativeId":
        """Raises ValueError for anything that is not a local backend id."""
        pid, create_time, job_dir = text.split(":", 2)
        if not job_dir.startswith("/"):
            raise ValueError(f"{text!r} does not end with an absolute job directory")
        return cls(int(pid), float(create_time), Path(job_dir))


@dataclass(frozen=True)
class Reservation:
    """The contents of ``local_backend.json``."""

    numCpus: int
    memoryGb: float
    gpus: list[str]
    watcherPid: Optional[int] = None
    watcherCreateTime: Optional[float] = None

    def native_id(self, job_dir: Path) -> Optional[NativeId]:
        if self.watcherPid is None or self.watcherCreateTime is None:
            return None
        return NativeId(self.watcherPid, self.watcherCreateTime, job_dir)

    @classmethod
    def read(cls, job_dir: Path) -> Optional["Reservation"]:
        try:
            return cls(**json.loads((job_dir / RESERVATION_FILE).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None


def read_watcher_result(job_dir: Path) -> Optional[NativeOutcome]:
    """The outcome the watcher wrote in ``result.json``, or None while it has not ended."""
    try:
        data = json.loads((job_dir / RESULT_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        return NativeOutcome(NativePhase.LOST, error=f"the job's result file could not be read: {e}")
    phase = RESULT_PHASES.get(data.get("phase"))
    if phase is None:
        return NativeOutcome(NativePhase.LOST, error=f"the job's result file has an unknown phase {data.get('phase')!r}")
    return NativeOutcome(phase, error=data.get("error"), exit_code=data.get("exitCode"), image_digest=data.get("imageDigest"))


def watcher_is_alive(native_id: NativeId) -> bool:
    try:
        p = psutil.Process(native_id.watcher_pid)
        same_process = abs(p.create_time() - native_id.watcher_create_time) < CREATE_TIME_TOLERANCE_SEC
        return same_process and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class LocalBackend(Backend):
    name: ClassVar[str] = "local"

    def __init__(
        self,
        jobs_root: Optional[Path] = None,
        *,
        declared: DeclaredLimits = DeclaredLimits(),
        gpu_ids: Optional[list[str]] = None,
        respect_machine_load: bool = False,
        sample_interval_sec: float = DEFAULT_SAMPLE_INTERVAL_SEC,
        log_interval_sec: float = DEFAULT_LOG_INTERVAL_SEC,
        kill_grace_sec: float = DEFAULT_KILL_GRACE_SEC,
        use_launcher: bool = True,
        python_warm_start: bool = False,
    ) -> None:
        """``jobs_root``: where earlier instances' job directories are, to re-learn what still runs.

        ``gpu_ids``: the GPUs to hand out; detected from CUDA_VISIBLE_DEVICES or nvidia-smi when None.
        ``respect_machine_load``: a job waits while other programs keep the CPUs busy
        (``busy_reason``); otherwise jobs run up to the slots whatever else runs here.
        ``python_warm_start``: processors whose command is ``PYTHON SCRIPT ...`` are forked from a launcher
        that is that interpreter, already started (bridge/local/warm_start.py).
        """
        self.declared = declared
        self.gpu_ids = list(gpu_ids) if gpu_ids is not None else detect_gpu_ids(os.environ)
        self.respect_machine_load = respect_machine_load
        self.watcher_timing_args = timing_args(sample_interval_sec, log_interval_sec, kill_grace_sec)
        self._lock = threading.Lock()
        self._running: dict[Path, Reservation] = {}
        self._watchers: list[subprocess.Popen[bytes]] = []
        self._on_job_end: Optional[Callable[[], None]] = None
        self._load_meter = CpuLoadMeter()
        # One pre-loaded interpreter forks every watcher (bridge/local/watcher_launcher.py), where watchers
        # run as a script (Linux); ``use_launcher=False`` starts each as its own interpreter.
        interpreter = watcher_interpreter_args()
        self._launcher: Optional[WatcherLauncher] = (
            WatcherLauncher(interpreter[:-1], WATCHER_SCRIPT, self._launched_watcher_ended)
            if use_launcher and interpreter[-1] == str(WATCHER_SCRIPT)
            else None
        )
        self._python_warm_start = python_warm_start and self._launcher is not None
        self._warm_launchers: dict[str, Optional[WatcherLauncher]] = {}
        """by interpreter; None for one whose launcher failed (its jobs start cold until the bridge restarts)"""
        if jobs_root is not None and jobs_root.is_dir():
            for job_dir in sorted(p for p in jobs_root.iterdir() if p.is_dir()):
                self._learn(job_dir.resolve())

    # ------------------------------------------------------------ Backend

    def check_images(self, engine: str, images: Sequence[str]) -> Optional[ImageCheck]:
        """Asked of the engine here, with the bridge's own engine settings (as its watchers get them)."""
        from bridge.remote_agent import check_images  # the agent's check: one home for the engines' commands

        return ImageCheck.from_agent(f"this host ({socket.gethostname()})", check_images(engine, list(images)))

    def capacity(self) -> Capacity:
        with self._lock:
            self._forget_ended()
            running = [self._job_reservation(job_dir, r) for job_dir, r in self._running.items()]
        return free_capacity(self._machine_snapshot(busy_cpus=0.0), running, self.declared)

    def notify_job_end(self, callback: Callable[[], None]) -> None:
        """``callback`` runs when a watcher this backend started exits (it writes its result first);
        re-adopted watchers are not our children and are noticed at the runner's regular polls."""
        self._on_job_end = callback

    def busy_reason(self, resources: PairioJobRequiredResources) -> Optional[str]:
        if not self.respect_machine_load:
            return None
        with self._lock:
            self._forget_ended()
            running = [self._job_reservation(job_dir, r) for job_dir, r in self._running.items()]
            watchers = [r.watcherPid for r in self._running.values() if r.watcherPid is not None]
        # counters over the latest window (a second), not a second's sampling per job; our own jobs' share apart
        load = self._load_meter.load(_usable_cpu_count(), extra_pids=watchers)
        machine = self._machine_snapshot(load.busy_cpus, own_busy_cpus=load.own_cpus)
        return busy_reason(machine, running, resources.numCpus, os.getloadavg()[0])

    def submit(self, job: JobSubmission) -> str:
        job_dir = job.job_dir.resolve()
        if not job_dir.is_dir():
            raise SubmitError(
                f"the job directory {job_dir} does not exist; the runner must create it (with job.json) before submitting"
            )
        with self._lock:
            earlier = self._started_earlier(job_dir)
            if earlier is not None:
                return str(earlier)  # a retried submit must not run the job twice
            for stale in (CANCEL_FILE, WATCHER_FILE):  # left by a watcher that was lost
                (job_dir / stale).unlink(missing_ok=True)
            self._forget_ended()
            gpus = self._assign_gpus(job)
            directive_args, _ = local_directives(job.resources, gpus)
            reservation = Reservation(numCpus=job.resources.numCpus, memoryGb=job.resources.memoryGb, gpus=gpus)
            # Written before the launch, so GPUs are never handed out twice even if we die right after it.
            write_json_atomically(job_dir / RESERVATION_FILE, asdict(reservation))
            self._running[job_dir] = reservation
            try:
                watcher_pid, create_time = self._launch_watcher(job, job_dir, directive_args)
            except (OSError, psutil.Error) as e:
                del self._running[job_dir]
                (job_dir / RESERVATION_FILE).unlink(missing_ok=True)
                (job_dir / SECRETS_FILE).unlink(missing_ok=True)
                raise SubmitError(f"could not start the job's watcher ({' '.join(watcher_interpreter_args())}): {e}") from e
            reservation = Reservation(**{**asdict(reservation), "watcherPid": watcher_pid, "watcherCreateTime": create_time})
            write_json_atomically(job_dir / RESERVATION_FILE, asdict(reservation))
            self._running[job_dir] = reservation
        return str(NativeId(watcher_pid, create_time, job_dir))

    def poll(self, native_ids: list[str]) -> dict[str, NativeOutcome]:
        self._reap_watchers()
        return {native_id: self._poll_one(native_id) for native_id in native_ids}

    def cancel(self, native_ids: list[str]) -> None:
        for text in native_ids:
            try:
                native_id = NativeId.parse(text)
            except ValueError:
                continue  # not ours: nothing to stop
            if (native_id.job_dir / RESULT_FILE).exists() or not native_id.job_dir.is_dir():
                continue
            # The file is the durable request (a watcher between checks still sees it); the signal is the fast one.
            (native_id.job_dir / CANCEL_FILE).touch()
            # Until it writes watcher.json, the watcher may not handle SIGTERM yet and would die without a result.
            if (native_id.job_dir / WATCHER_FILE).exists() and watcher_is_alive(native_id):
                try:
                    os.kill(native_id.watcher_pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    # ------------------------------------------------------------ restart

    def adopt(self, job_dir: Path) -> str:
        """The native id of the job in ``job_dir``, started by this or an earlier LocalBackend.

        For a runner that lost the id (killed between submit and saving it). Raises LookupError
        when no watcher was ever started there, so the job may be submitted.
        """
        job_dir = job_dir.resolve()
        native_id = self._learn(job_dir)
        if native_id is None:
            raise LookupError(
                f"no local job was started in {job_dir} (no watcher recorded in {RESERVATION_FILE} or {WATCHER_FILE})"
            )
        return str(native_id)

    def _learn(self, job_dir: Path) -> Optional[NativeId]:
        reservation = Reservation.read(job_dir)
        if reservation is None:
            return None
        native_id = reservation.native_id(job_dir) or self._native_id_from_watcher_file(job_dir)
        if native_id is None:
            return None
        if not (job_dir / RESULT_FILE).exists() and watcher_is_alive(native_id):
            with self._lock:
                self._running[job_dir] = reservation
        return native_id

    @staticmethod
    def _started_earlier(job_dir: Path) -> Optional[NativeId]:
        """The job's watcher if one already runs or ran to a result in ``job_dir``."""
        reservation = Reservation.read(job_dir)
        native_id = reservation.native_id(job_dir) if reservation else None
        if native_id is not None and ((job_dir / RESULT_FILE).exists() or watcher_is_alive(native_id)):
            return native_id
        return None

    @staticmethod
    def _native_id_from_watcher_file(job_dir: Path) -> Optional[NativeId]:
        """The watcher records itself too: covers a bridge killed between launch and saving the pid."""
        try:
            data = json.loads((job_dir / WATCHER_FILE).read_text())
            return NativeId(int(data["pid"]), float(data["createTime"]), job_dir)
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    # ------------------------------------------------------------ internals

    def _launch_watcher(self, job: JobSubmission, job_dir: Path, directive_args: list[str]) -> tuple[int, float]:
        """The new watcher's pid and create time: forked by the launcher where there is one, else its own
        interpreter. The create time is read before anyone reaps the watcher (a short job may end at once)."""
        watcher_args = [
            "--job-dir", str(job_dir),
            *directive_args,
            *self.watcher_timing_args,
            *job.watcher_env_args(),
            "--", *job.command,
        ]  # fmt: skip
        if job.secrets:
            write_secrets_file(job_dir, job.secrets)  # the watcher reads and deletes it; never in an environment
        # not the operator's whole environment; the engine's settings for container mode (the watcher keeps them from the job)
        env = allowed_environment(dict(os.environ), (*job.pass_env, *ENGINE_ENV))
        log_path = job_dir / WATCHER_LOG_FILE
        interpreter = python_interpreter(job.command, env.get("PATH")) if self._python_warm_start else None
        warm_launcher = self._warm_launcher(interpreter, env) if interpreter is not None else None
        if interpreter is not None and warm_launcher is not None:
            try:
                return warm_launcher.launch(watcher_args, job_dir, env, log_path)
            except (LauncherUnavailable, OSError) as e:
                self._warm_launchers[interpreter] = None  # under the backend's lock: submit holds it
                warm_launcher.close()
                print(f"pairio-bridge: no warm start for {job.command[0]} ({e}); its processors start as their own "
                      "interpreters until the bridge restarts", file=sys.stderr)  # fmt: skip
        if self._launcher is not None:
            try:
                return self._launcher.launch(watcher_args, job_dir, env, log_path)
            except LauncherUnavailable as e:
                print(f"pairio-bridge: {e}; starting watchers as their own interpreters until it is back", file=sys.stderr)
        with log_path.open("ab") as log:
            watcher = subprocess.Popen(
                [*watcher_interpreter_args(), *watcher_args],
                cwd=job_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the bridge being killed, and its terminal's signals
            )
        self._watchers.append(watcher)
        create_time = psutil.Process(watcher.pid).create_time()  # our unreaped child: readable even if it ended
        if self._on_job_end is not None:
            threading.Thread(target=self._wait_for_watcher, args=(watcher, self._on_job_end), name=f"watcher-{watcher.pid}", daemon=True).start()
        return watcher.pid, create_time

    def _warm_launcher(self, interpreter: str, env: dict[str, str]) -> Optional[WatcherLauncher]:
        """The launcher that is ``interpreter``, started in the watchers' environment ``env``; None after it failed."""
        if interpreter not in self._warm_launchers:  # under the backend's lock: submit holds it
            self._warm_launchers[interpreter] = WatcherLauncher(
                [interpreter], WATCHER_SCRIPT, self._launched_watcher_ended, warm_start_env=dict(env)
            )
        return self._warm_launchers[interpreter]

    def _assign_gpus(self, job: JobSubmission) -> list[str]:
        wanted = job.resources.numGpus
        if wanted == 0:
            return []
        taken = {g for r in self._running.values() for g in r.gpus}
        gpus = choose_gpus(self.gpu_ids, taken, wanted)
        if gpus is None:
            free = [g for g in self.gpu_ids if g not in taken]
            raise SubmitError(
                f"the job needs {wanted} GPUs but this machine has {len(free)} free of {len(self.gpu_ids)} "
                f"({','.join(self.gpu_ids) or 'none found'}); lower numGpus, or set CUDA_VISIBLE_DEVICES "
                "for the bridge if nvidia-smi does not list the GPUs"
            )
        return gpus

    def _poll_one(self, text: str) -> NativeOutcome:
        try:
            native_id = NativeId.parse(text)
        except ValueError:
            return NativeOutcome(NativePhase.LOST, error=f"{text!r} is not a job id of the local backend")
        result = read_watcher_result(native_id.job_dir)
        if result is not None:
            return result
        if watcher_is_alive(native_id):
            return NativeOutcome(NativePhase.RUNNING)
        # It may have written its result and exited just after we looked.
        result = read_watcher_result(native_id.job_dir)
        if result is not None:
            return result
        kill_orphaned_job(native_id)
        return NativeOutcome(NativePhase.LOST, error=lost_error(native_id.job_dir))

    def _forget_ended(self) -> None:
        for job_dir, reservation in list(self._running.items()):
            native_id = reservation.native_id(job_dir)
            if native_id is None:
                continue  # being launched right now
            if (job_dir / RESULT_FILE).exists() or not watcher_is_alive(native_id):
                del self._running[job_dir]

    def _launched_watcher_ended(self, pid: int, status: int) -> None:
        if self._on_job_end is not None:
            self._on_job_end()

    def close(self) -> None:
        """Ends the watcher launcher (running watchers go on); the backend stays usable."""
        for launcher in (self._launcher, *self._warm_launchers.values()):
            if launcher is not None:
                launcher.close()

    @staticmethod
    def _wait_for_watcher(watcher: subprocess.Popen[bytes], on_end: Callable[[], None]) -> None:
        watcher.wait()  # Popen's own lock keeps this and _reap_watchers' poll from reaping it twice
        on_end()

    def _reap_watchers(self) -> None:
        """Our own watchers become zombies when they end until we wait for them."""
        self._watchers = [w for w in self._watchers if w.poll() is None]

    def _job_reservation(self, job_dir: Path, reservation: Reservation) -> JobReservation:
        return JobReservation(
            num_cpus=reservation.numCpus,
            memory_gb=reservation.memoryGb,
            gpu_ids=tuple(reservation.gpus),
            used_memory_gb=last_sampled_rss(job_dir) / BYTES_PER_GB,
        )

    def _machine_snapshot(self, busy_cpus: float, own_busy_cpus: Optional[float] = None) -> MachineSnapshot:
        return MachineSnapshot(
            cpu_count=_usable_cpu_count(),
            busy_cpus=busy_cpus,
            own_busy_cpus=own_busy_cpus,
            available_memory_gb=psutil.virtual_memory().available / BYTES_PER_GB,
            gpu_ids=tuple(self.gpu_ids),
        )


def watcher_interpreter_args() -> list[str]:
    """How a watcher starts: ``-I``, so PYTHON* variables, the user site and the job directory never change
    what it runs. Where /proc serves instead of psutil (Linux), bridge/watch.py runs as a script
    without the site module too (``-S``; it needs only the standard library): a job starts tens of
    milliseconds sooner than with ``-m bridge.watch`` and the installed packages' start-up hooks."""
    if os.path.exists("/proc/self/stat"):
        return [sys.executable, "-I", "-S", str(WATCHER_SCRIPT)]
    return [sys.executable, "-I", "-m", "bridge.watch"]


def _usable_cpu_count() -> int:
    """CPUs this process may run on (a container's or taskset's cpuset), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return psutil.cpu_count() or 1


def last_sampled_rss(job_dir: Path) -> int:
    """The job's RSS in its latest resource-log sample, 0 when there is none yet."""
    lines = read_file_tail(job_dir / RESOURCE_LOG_FILE, max_bytes=4096).splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["rssBytes"])
        except (ValueError, KeyError, TypeError):
            continue  # the first line of the tail may be cut; a line may be half written
    return 0


def lost_error(job_dir: Path) -> str:
    message = "the watcher process disappeared without a result"
    log_tail = tail_text(read_file_tail(job_dir / WATCHER_LOG_FILE), max_lines=10)
    if log_tail:
        message += f"; its log ends with:\n{log_tail}"
    return message


def kill_orphaned_job(native_id: NativeId) -> None:
    """A watcher that died (SIGKILL, OOM killer) leaves its job running unsupervised: end it, container included."""
    try:
        data: dict[str, Any] = json.loads((native_id.job_dir / WATCHER_FILE).read_text())
        process_group = int(data["processGroup"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return
    engine, name = data.get("containerEngine"), data.get("containerName")
    if engine in ("podman", "docker") and isinstance(name, str) and name:
        # the container's processes are the engine's children, not the watcher's group's
        Container(engine, name, dict(os.environ), native_id.job_dir).close()
    # Only processes of that group started after our watcher: a group id is a pid, and pids are reused.
    for p in psutil.process_iter():
        try:
            if (
                os.getpgid(p.pid) == process_group
                and p.create_time() >= native_id.watcher_create_time - CREATE_TIME_TOLERANCE_SEC
            ):
                p.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
