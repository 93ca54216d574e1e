"""The watcher: runs one processor and supervises it until it ends.

    python -m bridge.watch --job-dir DIR --time-sec T --memory-gb M --num-cpus N [--gpus 0,1] -- COMMAND...

It runs detached from the bridge (its own session), so a bridge killed with SIGKILL
leaves its jobs running, and a restarted bridge reads what the watcher left in the job
directory (``watcher.json``, ``console.txt``, ``resource_log.jsonl``, ``result.json``).
The same watcher runs on Slurm compute nodes and SSH hosts, so it needs only the
standard library (psutil where there is no ``/proc``): it must never import pairio. On
Linux the few process calls it makes are read from ``/proc`` (``ProcfsPsutil``), which
starts faster than importing psutil and needs nothing installed on a remote host.

Enforces the job's limits: over ``timeSec`` the tree gets SIGTERM, then SIGKILL after a
grace period; over ``memoryGb`` (RSS of the whole tree) it is killed at once; a ``cancel``
file in the job directory, or SIGTERM/SIGINT/SIGHUP to the watcher, cancels the job, with
a shorter grace (a user who cancels waits for the job to be gone).
``result.json`` is written last and atomically: its presence means the job is over.

Secrets: the bridge hands them over in ``secrets.json`` (mode 0600) in the job directory;
the watcher reads and deletes it at start, keeps the values in memory and puts them only
into the processor's environment, which it builds here from an allow-list (``ALLOWED_ENV``),
the bridge's ``--pass-env`` patterns and Pairio's own variables, never from the whole
environment. A job with secrets has its output reach ``console.txt`` through a pipe that
masks the secret values (and their encodings) with ``***``; a job without writes it there itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time

# What the watcher imports, every job's start pays for (on a Slurm node, an SSH host, or a local bridge
# without its warm launcher). A job without secrets or containers needs only os, signal, sys, time, ctypes
# and select: about 8 ms of imports on a small VM, against 30 ms for argparse, json, pathlib, subprocess
# and threading, which bring re, enum's helpers, locale and urllib with them. So it writes its JSON itself
# (``json_text``), starts the processor with ``os.posix_spawn`` (``spawn_processor``), parses its command
# line by hand (``parse_args``) and uses plain path strings; the rest is imported where it is needed
# (secrets, containers, GPUs). tests/test_watcher_code.py checks the list. Annotations are never evaluated, so
# typing is not imported either.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from pathlib import Path
    from typing import Any, Callable, NoReturn, Optional, Sequence, Union

    StrPath = Union[str, "os.PathLike[str]"]

# Linux's /proc answers the few process calls the watcher makes (ProcfsPsutil, below) without importing
# psutil, which costs each job's start tens of milliseconds; psutil serves where there is no /proc.
if os.path.exists("/proc/self/stat"):
    psutil = None
else:
    try:
        import psutil
    except ImportError:
        psutil = None  # type: ignore[assignment]


_masking: list[Any] = []


def masking_module() -> Any:
    """pairio/masking.py (standard library only), loaded from its file the first time a job needs it (secrets to
    mask, a container's output): shipped beside a copied watcher as ``pairio_masking.py`` (``python -I`` does not
    put the script's directory on sys.path), or Pairio's own beside this package when run as ``-m bridge.watch``;
    never through ``import pairio``."""
    if not _masking:
        import importlib.util

        here = os.path.realpath(__file__)
        for path in (
            os.path.join(os.path.dirname(here), MASKING_SCRIPT_FILE),
            os.path.join(os.path.dirname(os.path.dirname(here)), "pairio", "masking.py"),
        ):
            if os.path.isfile(path):
                spec = importlib.util.spec_from_file_location("pairio_masking", path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                _masking.append(module)
                break
        else:
            raise ImportError(f"{MASKING_SCRIPT_FILE} is missing beside {here}; the bridge copies it there with the watcher")
    return _masking[0]


BYTES_PER_GB = 1024**3
"""memoryGb is binary (GiB), as Slurm's --mem counts it, so limits mean the same everywhere."""

CONSOLE_FILE = "console.txt"
RESOURCE_LOG_FILE = "resource_log.jsonl"
RESULT_FILE = "result.json"
CANCEL_FILE = "cancel"
EARLY_LOG_PERIOD_SEC = 30.0
EARLY_LOG_INTERVAL_SEC = 1.0
WATCHER_FILE = "watcher.json"
JOB_FILE = "job.json"
SECRETS_FILE = "secrets.json"
MASKING_SCRIPT_FILE = "pairio_masking.py"
"""pairio/masking.py, copied beside a watcher that runs where Pairio is not installed"""
WORK_DIR = "work"
INPUTS_DIR = "inputs"
"""staged inputs (hard links to the bridge's read-only cache)"""
OUTPUTS_DIR = "outputs"
JOB_TMP_DIR = "tmp"
"""the job's own /tmp inside a container"""
ENGINE_DIR = "engine"
"""the container engine's working directory (out of the container's reach: only parts of the job directory are mounted)"""
CONTAINER_ENV_FILE = "container.env"
"""the job's variables and secrets for the container engine (mode 0600); deleted once the engine has read it"""
CONTAINER_ENGINES = ("podman", "docker", "apptainer")
OWNER_PLACEHOLDER = "--pairio-owner"
"""in a podman/docker ``create`` argv (bridge/containers.py): the watcher puts the owner options of the host
it runs on in its place (``with_owner``), as the job's user there may not be the bridge's user"""
# The engine's own settings: the watcher's engine commands need them, the job never sees them.
ENGINE_ENV = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "DOCKER_HOST", "DOCKER_CONFIG", "XDG_RUNTIME_DIR")
# Variables of the host that would break an image: it has its own PATH and HOME; /tmp is the job's.
HOST_ONLY_ENV = ("PATH", "HOME", "TMPDIR", "USER", "LOGNAME")
ENGINE_OOM_EXIT_CODE = 137
ENGINE_COMMAND_TIMEOUT_SEC = 60.0
# What podman and docker say when an image is neither on the host nor pullable.
IMAGE_MISSING_MARKERS = (
    "image not known", "no such image", "manifest unknown", "unable to find image", "pull access denied",
    "pinging container registry", "initializing source", "repository does not exist",
)

THREAD_COUNT_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
)

ALLOWED_ENV = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME")
"""what a processor (and a watcher) gets of the environment it was started in, besides ``--pass-env``"""
CONSOLE_READ_BYTES = 65536

DEFAULT_SAMPLE_INTERVAL_SEC = 0.5
DEFAULT_LOG_INTERVAL_SEC = 5.0
DEFAULT_KILL_GRACE_SEC = 3.0
# A cancel's tree must be gone within 3 s of the user's click: hub -> bridge -> watcher takes
# up to a sample interval, so the SIGTERM -> SIGKILL grace of a cancel is short.
DEFAULT_CANCEL_GRACE_SEC = 1.0
CONSOLE_TAIL_LINES = 20
CONSOLE_TAIL_MAX_CHARS = 2000


# ---------------------------------------------------------------- pure parts


def resource_environment(num_cpus: int, gpu_ids: Sequence[str]) -> dict[str, str]:
    """Variables a job sees from its resources: thread pools sized to its CPUs, only its GPUs."""
    env = {name: str(num_cpus) for name in THREAD_COUNT_VARIABLES}
    # An empty CUDA_VISIBLE_DEVICES hides every GPU; unset would expose them all.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


def env_name_matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` is one of ``patterns``: exact names, or ``PREFIX*`` for every name starting with PREFIX."""
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def allowed_environment(env: dict[str, str], pass_env: Sequence[str] = ()) -> dict[str, str]:
    """The part of ``env`` a job may see: ``ALLOWED_ENV`` plus the bridge's ``passEnv``; never its other settings."""
    patterns = (*ALLOWED_ENV, *pass_env)
    # PAIRIO_*: the bridge's own settings (its API key, a hub's database URL) never pass, whatever passEnv says
    return {name: value for name, value in env.items() if env_name_matches(name, patterns) and not name.startswith("PAIRIO_")}


def job_environment(
    base_env: dict[str, str], job_dir: StrPath, num_cpus: int, gpu_ids: Sequence[str], *,
    pass_env: Sequence[str] = (), secrets: Optional[dict[str, str]] = None, job_id: str = "",
) -> dict[str, str]:
    """The processor's whole environment: the one place it is built, for every backend."""
    env = allowed_environment(base_env, pass_env)
    env.update(secrets or {})
    env.update(resource_environment(num_cpus, gpu_ids))  # Pairio's own settings win over anything else
    env["PAIRIO_JOB_FILE"] = os.path.join(job_dir, JOB_FILE)
    env["PAIRIO_JOB_ID"] = job_id or os.path.basename(os.fspath(job_dir))
    return env


def write_secrets_file(job_dir: StrPath, secrets: dict[str, str]) -> Path:
    """Hand the job's secrets to its watcher: a file only its user can read, from the first byte on (the bridge's
    side: the watcher only takes them)."""
    from pathlib import Path

    path = Path(job_dir, SECRETS_FILE)
    _unlink_if_present(path)  # left by an earlier attempt: O_EXCL refuses to reuse a file someone could have opened
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json_text(secrets))
    return path


def take_secrets(job_dir: StrPath) -> Optional[dict[str, str]]:
    """Read and delete the job's secrets file (None when there is none): the values then live in memory only."""
    path = os.path.join(job_dir, SECRETS_FILE)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    finally:
        _unlink_if_present(path)
    import json  # only a job with secrets reads JSON

    data = json.loads(text)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path} does not map secret names to values")
    return data


def container_environment(job_env: dict[str, str], engine: str = "podman", gpu_ids: Sequence[str] = ()) -> dict[str, str]:
    """What a container gets of the job's environment: all but the host's paths, /tmp as TMPDIR, its GPUs as it sees them."""
    env = {name: value for name, value in job_env.items() if name not in HOST_ONLY_ENV}
    env["TMPDIR"] = "/tmp"
    env.update(container_gpu_environment(engine, gpu_ids))
    return env


def gpu_options(engine: str, gpu_ids: Sequence[str]) -> list[str]:
    """The engine's flags that hand exactly these host GPUs to a podman/docker container (no ids: no GPU at all).

    podman takes CDI device names (``nvidia.com/gpu=N``, from ``nvidia-ctk cdi generate``); docker takes
    ``--gpus`` (NVIDIA container toolkit), its device list quoted because docker reads the value as a CSV field.
    Inside, the GPUs are numbered from 0 (``container_gpu_environment``).
    """
    if not gpu_ids:
        return []
    if engine == "podman":
        return [option for gpu in gpu_ids for option in ("--device", f"nvidia.com/gpu={gpu}")]
    if engine == "docker":
        return ["--gpus", f'"device={",".join(gpu_ids)}"']
    raise ValueError(f"no GPU flags for engine {engine!r}")


def container_gpu_environment(engine: str, gpu_ids: Sequence[str]) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES as the job sees it in its container.

    podman/docker containers hold only the job's GPUs, numbered from 0; apptainer's ``--nv`` shows every
    GPU of the host, so there the host's ids pick the job's (an empty value hides them all).
    """
    if engine in ("podman", "docker"):
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpu_ids)))}
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)}


def with_gpu_options(create_command: Sequence[str], gpu_ids: Sequence[str]) -> list[str]:
    """A ``create`` argv (bridge/containers.py) with the flags for the GPUs this job was given.

    Added here, on the job's host, where the GPUs are known: the local bridge's assignment or
    Slurm's allocation. They go right after ``create``.
    """
    engine, verb, *rest = create_command
    if verb != "create":
        raise ValueError(f"not a container engine's create command: {' '.join(create_command[:2])}")
    return [engine, verb, *gpu_options(os.path.basename(engine), gpu_ids), *rest]


def write_env_file(path: StrPath, env: dict[str, str]) -> StrPath:
    """NAME=VALUE lines for ``--env-file``, readable by the job's user only from the first byte on."""
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(
                f"the variable {name} holds a line break, which an engine's env file cannot carry; "
                "store the value without line breaks (e.g. base64-encoded)"
            )
    _unlink_if_present(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{name}={value}\n" for name, value in env.items()))
    return path


def owner_options(engine: str, uid: int, gid: int) -> list[str]:
    """Run the container as the job's user on its host, so outputs are that user's files there.

    Rootless podman maps the user's own id into the container with ``keep-id`` (a plain ``--user``
    would be a sub-id there); docker and rootful podman take the uid and gid as they are.
    """
    if engine == "podman" and uid != 0:
        return ["--userns", "keep-id"]
    return ["--user", f"{uid}:{gid}"]


def with_owner(argv: Sequence[str], engine: str, uid: Optional[int] = None, gid: Optional[int] = None) -> list[str]:
    """``argv`` with its first OWNER_PLACEHOLDER replaced by the owner options of this host's user (only the
    first: it comes before the image, and what follows the image is the processor's own argv)."""
    argv = list(argv)
    if OWNER_PLACEHOLDER not in argv:
        return argv
    at = argv.index(OWNER_PLACEHOLDER)
    options = owner_options(engine, os.getuid() if uid is None else uid, os.getgid() if gid is None else gid)
    return [*argv[:at], *options, *argv[at + 1 :]]


def image_missing_error(image: str, engine: str, detail: str, host: Optional[str] = None) -> str:
    """``host``: where the job ran (the watcher's host: over SSH or Slurm not the bridge's)."""
    host = host or os.uname().nodename
    return (
        f"image {image} not found by {engine} on {host}: pull it there ('{engine} pull {image}') or allow pulls (pull policy: "
        f"'pairio-bridge register ... --pull-policy missing'); {engine} said: {detail}"
    )


def engine_failed_error(engine: str, action: str, returncode: int, detail: str) -> str:
    return f"{engine} could not {action} the job's container (exit {returncode}): {detail}"


def format_number(value: float) -> str:
    """2.0 -> '2', 1.5 -> '1.5': limits read as the user wrote them."""
    return f"{value:g}"


def time_limit_error(time_sec: float) -> str:
    return f"processor exceeded its time limit of {format_number(time_sec)} s and was killed"


def memory_limit_error(used_bytes: int, memory_gb: float) -> str:
    return (
        f"processor used {used_bytes / BYTES_PER_GB:.2f} GB, over its memory limit of "
        f"{format_number(memory_gb)} GB, and was killed"
    )


CANCELED_ERROR = "canceled"
STOPPED_BY_SIGNAL_PREFIX = "stopped by"


def stopped_by_signal_error(signal_name: str) -> str:
    return (
        f"{STOPPED_BY_SIGNAL_PREFIX} {signal_name} from outside Pairio (a batch system's time limit or cancel, "
        "or an administrator)"
    )


def exit_error(returncode: int, console_tail: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        message = f"processor was killed by {name} ({-returncode})"
    else:
        message = f"processor exited with code {returncode}"
    if console_tail:
        message += f"; the last lines of its output:\n{console_tail}"
    return message


def tail_text(data: bytes, max_lines: int = CONSOLE_TAIL_LINES, max_chars: int = CONSOLE_TAIL_MAX_CHARS) -> str:
    text = data.decode("utf-8", errors="replace").rstrip()
    lines = text.splitlines()[-max_lines:]
    tail = "\n".join(lines)
    return tail[-max_chars:]


def read_file_tail(path: StrPath, max_bytes: int = 16 * 1024) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read()
    except FileNotFoundError:
        return b""


def parse_gpu_query(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        index, utilization, memory_mib = parts
        try:
            gpus.append(
                {
                    "index": index,
                    "utilizationPercent": float(utilization),
                    "memoryUsedBytes": int(float(memory_mib) * 1024 * 1024),
                }
            )
        except ValueError:
            continue  # "[N/A]" on some GPUs: leave that GPU out rather than guess
    return gpus


def timing_args(sample_interval_sec: float, log_interval_sec: float, kill_grace_sec: float) -> list[str]:
    """The watcher's command-line options for its sampling, logging and kill-grace intervals."""
    return [
        "--sample-interval-sec", f"{sample_interval_sec:g}",
        "--log-interval-sec", f"{log_interval_sec:g}",
        "--kill-grace-sec", f"{kill_grace_sec:g}",
    ]  # fmt: skip


def write_json_atomically(path: StrPath, data: dict[str, Any]) -> None:
    """Readers see the old file or the whole new one, never a partial write."""
    directory, name = os.path.split(os.fspath(path))
    # unique per write, not per process: the bridge writes these from several threads
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    try:
        with open(tmp, "x") as f:
            f.write(json_text(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: StrPath) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _unlink_if_present(path: StrPath) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20)}
_JSON_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                      ord("\b"): "\\b", ord("\f"): "\\f"})
_JSON_ESCAPES[0x7F] = "\\u007f"  # json.dumps escapes DEL too


def _json_string(text: str) -> str:
    escaped = text.translate(_JSON_ESCAPES)
    if not escaped.isascii():  # as json.dumps writes it (ensure_ascii): \uXXXX, astral characters as surrogate pairs
        parts = []
        for char in escaped:
            code = ord(char)
            if code < 0x80:
                parts.append(char)
            elif code < 0x10000:
                parts.append(f"\\u{code:04x}")
            else:
                code -= 0x10000
                parts.append(f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}")
        escaped = "".join(parts)
    return f'"{escaped}"'


def json_text(value: Any) -> str:
    """``value`` (dicts with string keys, lists, strings, numbers, booleans, None) as ``json.dumps`` writes it.

    The watcher writes JSON (result.json, watcher.json, each resource sample) but reads none for a job without
    secrets, and the json module costs every job's start a few milliseconds (it imports re); this is the
    writing half, checked against json.dumps in tests/test_watch.py.
    """
    if isinstance(value, str):
        return _json_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            items.append(f"{_json_string(key)}: {json_text(item)}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json_text(item) for item in value) + "]"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# ---------------------------------------------------------------- psutil's stand-in on Linux


class ProcfsError(Exception):
    """psutil.Error's stand-in."""


class ProcfsNoSuchProcess(ProcfsError):
    """The process ended (or its pid now belongs to another process)."""


class ProcfsMemoryInfo:
    __slots__ = ("rss",)

    def __init__(self, rss: int) -> None:
        self.rss = rss


_PROC_STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped", "t": "tracing-stop",
                "Z": "zombie", "X": "dead", "x": "dead", "I": "idle", "W": "waking", "P": "parked"}


def _proc_stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcfsNoSuchProcess(f"no process {pid}") from None
    except OSError as e:
        raise ProcfsError(f"cannot read /proc/{pid}/stat: {e}") from None
    return text[text.rindex(")") + 2 :].split()


_boot_time_cache: list[float] = []


def _boot_time() -> float:
    if not _boot_time_cache:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        for line in lines:
            if line.startswith("btime "):
                _boot_time_cache.append(float(line.split()[1]))
                break
        else:
            _boot_time_cache.append(0.0)
    return _boot_time_cache[0]


class ProcfsProcess:
    """The part of psutil.Process the watcher uses. Like psutil, it remembers the process's
    start time, so a pid reused by another process is never mistaken for it."""

    _clock_ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    _page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, pid: Optional[int] = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self._start_ticks = int(_proc_stat_fields(self.pid)[19])
        self._last_cpu: Optional[tuple[float, float]] = None

    def _fields(self) -> list[str]:
        fields = _proc_stat_fields(self.pid)
        if int(fields[19]) != self._start_ticks:
            raise ProcfsNoSuchProcess(f"process {self.pid} ended and its pid was reused")
        return fields

    def create_time(self) -> float:
        return _boot_time() + self._start_ticks / self._clock_ticks

    def is_running(self) -> bool:
        try:
            self._fields()
        except ProcfsError:
            return False
        return True

    def status(self) -> str:
        state = self._fields()[0]
        return _PROC_STATES.get(state, state)

    def memory_info(self) -> ProcfsMemoryInfo:
        self._fields()
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            raise ProcfsNoSuchProcess(f"no process {self.pid}") from None
        return ProcfsMemoryInfo(rss=pages * self._page_size)

    def cpu_percent(self, interval: Optional[float] = None) -> float:
        """CPU use since the previous call (0.0 the first time), as psutil's non-blocking form."""
        fields = self._fields()
        cpu_sec = (int(fields[11]) + int(fields[12])) / self._clock_ticks
        now = time.monotonic()
        last, self._last_cpu = self._last_cpu, (now, cpu_sec)
        if last is None or now <= last[0]:
            return 0.0
        return max(0.0, (cpu_sec - last[1]) / (now - last[0]) * 100)

    def send_signal(self, sig: int) -> None:
        self._fields()
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            raise ProcfsNoSuchProcess(f"no process {self.pid}") from None
        except PermissionError as e:
            raise ProcfsError(str(e)) from None

    def children(self, recursive: bool = False) -> list["ProcfsProcess"]:
        if _has_children_files():
            # the kernel's list of each thread's children: a few small reads, not one per process of the host
            return self._descendants(_child_pids, recursive)
        parents: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                ppid = int(_proc_stat_fields(int(entry))[1])
            except (ProcfsError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
        return self._descendants(lambda pid: list(parents.get(pid, [])), recursive)

    def _descendants(self, child_pids: Callable[[int], list[int]], recursive: bool) -> list["ProcfsProcess"]:
        """This process's children (and theirs, when ``recursive``), breadth first; ones gone meanwhile are left out."""
        found: list[ProcfsProcess] = []
        pending = child_pids(self.pid)
        while pending:
            pid = pending.pop(0)
            try:
                found.append(ProcfsProcess(pid))
            except ProcfsError:
                continue
            if recursive:
                pending.extend(child_pids(pid))
        return found


_children_files: list[bool] = []


def _has_children_files() -> bool:
    """Whether this kernel lists children in /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN, most distributions)."""
    if not _children_files:
        _children_files.append(os.path.exists(f"/proc/self/task/{os.getpid()}/children"))
    return _children_files[0]


def _child_pids(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids  # it ended
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue  # the thread ended
    return pids


class ProcfsPsutil:
    """Stands in for the psutil module (the names the watcher uses) where it is not installed."""

    Process = ProcfsProcess
    Error = ProcfsError
    NoSuchProcess = ProcfsNoSuchProcess
    STATUS_ZOMBIE = "zombie"


def process_support_problem() -> Optional[str]:
    """Why this host cannot supervise a job (no psutil and no /proc), or None when it can."""
    if psutil is ProcfsPsutil and not os.path.exists("/proc/self/stat"):
        return (
            "the watcher needs psutil on this host (python3 -m pip install --user psutil), "
            "or Linux's /proc; neither is available"
        )
    return None


if psutil is None:
    psutil = ProcfsPsutil  # type: ignore[assignment]


# ---------------------------------------------------------------- process tree


def become_child_subreaper() -> None:
    """Orphaned descendants (double forks, setsid daemons) become our children, so we still see and kill them."""
    if not sys.platform.startswith("linux"):
        return
    PR_SET_CHILD_SUBREAPER = 36
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # still kill the process group and the descendants we saw


class ProcessTree:
    """The job's processes: our descendants plus its process group, remembered across samples."""

    def __init__(self, process_group: int) -> None:
        self.process_group = process_group
        self._known: dict[int, psutil.Process] = {}

    def current(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        try:
            for p in psutil.Process().children(recursive=True):
                found[p.pid] = p
        except psutil.Error:
            pass
        for pid, p in list(self._known.items()):
            if pid not in found and is_alive(p):
                found[pid] = p  # escaped our tree (not under a subreaper), still ours
        for pid, p in found.items():
            # Keep the Process objects: psutil measures cpu_percent since the previous call on the same object.
            if pid not in self._known or not self._known[pid].is_running():  # is_running: False for a reused pid
                self._known[pid] = p
        self._known = {pid: self._known[pid] for pid in found}
        return [self._known[pid] for pid in found]

    def signal_all(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.process_group, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for p in self.current():
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass

    def is_empty(self) -> bool:
        return not any(is_alive(p) for p in self.current())


def is_alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ExitWaiter:
    """Waits up to a timeout for a child to exit, and returns the moment it does.

    A pidfd (Linux 5.3+) becomes readable when the process exits. Elsewhere, or where the kernel has
    none, it asks the child every 20 ms (as ``Popen.wait(timeout)`` would, with sleeps of up to 50 ms).
    """

    def __init__(self, child: Any) -> None:
        self.child = child
        self._pidfd: Optional[int] = None
        try:
            self._pidfd = os.pidfd_open(child.pid)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            self._pidfd = None

    def wait(self, timeout_sec: float) -> None:
        if self._pidfd is None:
            deadline = time.monotonic() + timeout_sec
            while self.child.poll() is None and time.monotonic() < deadline:
                time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            return
        import select

        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        poller.poll(max(0, int(timeout_sec * 1000)))

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def reap_zombie_children(keep_pid: int) -> None:
    """Reparented orphans end as our zombies; reap them (the main child is reaped by Popen)."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for p in children:
        if p.pid == keep_pid:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(p.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


# ---------------------------------------------------------------- the watcher


class WatchConfig:
    """What the watcher was asked to do (its command line, ``parse_args``).

    ``pass_env``: names (``PREFIX*`` patterns too) of the watcher's environment the processor also gets.
    ``expect_secrets``: the bridge wrote secrets.json: fail rather than run the job without its secrets.
    ``container_engine``: podman or docker: ``command`` creates the container, the watcher starts and follows it;
    apptainer: ``command`` runs as a processor; both get the job's variables in CONTAINER_ENV_FILE.
    ``job_env``: variables the bridge sets for this job that are not secret (an original-SDK image's contract,
    bridge/original_sdk.py).
    ``job_id``: the job's id (PAIRIO_JOB_ID); empty: read from the job directory's job.json.
    """

    def __init__(
        self,
        job_dir: StrPath,
        command: list[str],
        time_sec: float,
        memory_gb: float,
        num_cpus: int,
        gpu_ids: list[str],
        sample_interval_sec: float = DEFAULT_SAMPLE_INTERVAL_SEC,
        log_interval_sec: float = DEFAULT_LOG_INTERVAL_SEC,
        kill_grace_sec: float = DEFAULT_KILL_GRACE_SEC,
        pass_env: Optional[list[str]] = None,
        expect_secrets: bool = False,
        cancel_grace_sec: float = DEFAULT_CANCEL_GRACE_SEC,
        container_engine: str = "",
        container_name: str = "",
        container_image: str = "",
        job_env: Optional[dict[str, str]] = None,
        job_id: str = "",
    ) -> None:
        self.job_dir = os.fspath(job_dir)
        self.command = command
        self.time_sec = time_sec
        self.memory_gb = memory_gb
        self.num_cpus = num_cpus
        self.gpu_ids = gpu_ids
        self.sample_interval_sec = sample_interval_sec
        self.log_interval_sec = log_interval_sec
        self.kill_grace_sec = kill_grace_sec
        self.pass_env = pass_env if pass_env is not None else []
        self.expect_secrets = expect_secrets
        self.cancel_grace_sec = cancel_grace_sec
        self.container_engine = container_engine
        self.container_name = container_name
        self.container_image = container_image
        self.job_env = job_env if job_env is not None else {}
        self.job_id = job_id


WARM_START: Any = None
"""set by a warm launcher (bridge/local/warm_start.py): a ``WarmInterpreter`` that forks the processors it accepts"""


def start_processor(command: list[str], work_dir: str, env: dict[str, str], console: Any, piped: bool) -> Any:
    """The processor in a session (and group) of its own, reading nothing, its output in ``console`` or (``piped``)
    a pipe: a ``ChildProcess`` (forked by a warm launcher's interpreter, or spawned), or a ``subprocess.Popen`` where
    ``os.posix_spawn`` cannot start a session."""
    if WARM_START is not None and WARM_START.accepts(command, env):
        return ChildProcess(*WARM_START.start(command, work_dir, env, console, piped))
    try:
        return spawn_processor(command, work_dir, env, console, piped)
    except NotImplementedError:  # no POSIX_SPAWN_SETSID (glibc before 2.26, some BSDs)
        import subprocess

        return subprocess.Popen(
            command, cwd=work_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if piped else console,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


class ChildProcess:
    """A process this one started: the part of ``subprocess.Popen``'s interface the watcher uses (``pid``,
    ``returncode``, ``stdout``: the pipe of a masked console, else None, ``poll``)."""

    def __init__(self, pid: int, stdout: Any = None) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        """The exit code once it ended (minus the signal's number when a signal ended it), else None; reaps it."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode  # reaped elsewhere: treat as still unknown
            if pid == self.pid:
                # os.waitstatus_to_exitcode, which a remote host's Python before 3.9 lacks
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode


def spawn_processor(command: list[str], work_dir: str, env: dict[str, str], console: Any, piped: bool) -> ChildProcess:
    """``subprocess.Popen(command, cwd=work_dir, env=env, stdin=DEVNULL, stdout=console or a pipe, stderr=STDOUT,
    start_new_session=True)``, done with ``os.posix_spawn``: importing subprocess would cost every job's start
    more than the rest of the watcher's imports together.

    As Popen: the executable is looked up in ``env``'s PATH from the working directory, signals Python ignores
    (SIGPIPE, SIGXFSZ) are the default again, and no descriptor of the watcher's but the output reaches the
    processor. posix_spawn has no working directory of its own, so the watcher moves into ``work_dir`` for the
    call (it has no other threads yet) and back. Raises OSError when the processor cannot be started, and
    NotImplementedError where posix_spawn cannot start a session.
    """
    if not hasattr(os, "posix_spawn"):
        raise NotImplementedError("os.posix_spawn")
    read_end, out = os.pipe() if piped else (-1, console.fileno())
    to_close = [out] if piped else []
    while out <= 2:  # the watcher was started without some of 0-2: keep the output clear of the slots it goes to
        out = os.dup(out)
        to_close.append(out)
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out, 1),
        (os.POSIX_SPAWN_DUP2, out, 2),
        *((os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_descriptors() if fd > 2 and fd != out),
    ]
    defaults = [getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name)]
    try:
        back: Optional[int] = os.open(".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
    except OSError:
        back = None  # the watcher's own directory is gone or closed to it: it uses absolute paths only
    try:
        os.chdir(work_dir)
        try:
            pid = os.posix_spawn(_executable(command[0], env), command, env, file_actions=actions, setsid=True, setsigdef=defaults)
        except OSError as e:
            raise type(e)(e.errno, e.strerror, command[0]) from None
    except BaseException:
        if read_end >= 0:
            os.close(read_end)
        raise
    finally:
        if back is not None:
            os.fchdir(back)
            os.close(back)
        for fd in to_close:
            os.close(fd)
    return ChildProcess(pid, os.fdopen(read_end, "rb", buffering=0) if piped else None)


def _executable(program: str, env: dict[str, str]) -> str:
    """Where ``program`` is, as Popen finds it: a name with a slash as it is, else the first executable file of that
    name on the child's PATH."""
    if os.path.dirname(program):
        return program
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, os.strerror(2), program)


def _inherited_descriptors() -> list[int]:
    """The watcher's descriptors an exec would pass on (its own files are opened close-on-exec: it got these)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = []
    found = []
    for name in names:
        try:
            fd = int(name)
            if os.get_inheritable(fd):
                found.append(fd)
        except (ValueError, OSError):
            continue  # the listing's own descriptor, closed by now
    return found


class ConsolePump:
    """Copies the processor's output from a pipe into console.txt, masking secrets on the way (a job without
    secrets writes console.txt itself).

    A thread of its own, so that a processor printing much never blocks on a full pipe and the
    watcher's loop still notices its exit at once; ``finish`` waits for the end of the output.
    """

    def __init__(self, pipe: Any, console: Any, secret_values: Sequence[str]) -> None:
        self.pipe = pipe
        self.console = console
        import threading  # only a job whose output the watcher copies (secrets, containers) has a second thread

        self.masker = masking_module().StreamMasker(secret_values)
        self.thread = threading.Thread(target=self._copy, name="console", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        fd = self.pipe.fileno()
        while True:
            try:
                data = os.read(fd, CONSOLE_READ_BYTES)
            except OSError:
                break
            if not data:
                break
            self.console.write(self.masker.feed(data))
            self.console.flush()

    def finish(self, timeout_sec: float = 10.0) -> None:
        """The output up to now is in console.txt, and the held-back end too; idempotent.

        A background process that escaped the kill may hold the pipe open: then stop waiting after ``timeout_sec``.
        """
        if self.console.closed:
            return
        self.thread.join(timeout_sec)
        if self.thread.is_alive():
            return  # still copying; the console file stays open for it
        self.console.write(self.masker.flush())
        self.console.close()
        self.pipe.close()


class Result:
    """How the job ended; ``image_digest``: podman/docker: the digest of the image the container ran (recorded on
    the job by the bridge)."""

    __slots__ = ("phase", "exit_code", "error", "image_digest")

    def __init__(self, phase: str, exit_code: Optional[int], error: Optional[str], image_digest: Optional[str] = None) -> None:
        self.phase = phase
        self.exit_code = exit_code
        self.error = error
        self.image_digest = image_digest

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"exitCode": self.exit_code, "phase": self.phase, "error": self.error, "timestampFinishedSec": time.time()}
        if self.image_digest:
            data["imageDigest"] = self.image_digest
        return data


class Watcher:
    def __init__(self, config: WatchConfig, secrets: Optional[dict[str, str]] = None) -> None:
        self.config = config
        self.secrets = dict(secrets or {})
        self.console_pump: Optional[ConsolePump] = None
        self.job_dir = os.fspath(config.job_dir)
        self.stop_requested = False
        self.stop_signal: Optional[str] = None
        self.gpu_sampling = bool(config.gpu_ids) and _which("nvidia-smi") is not None

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stop_requested = True
        self.stop_signal = signal.Signals(signum).name

    def stop_error(self) -> str:
        """"canceled" when the bridge asked (its cancel file); otherwise say that a signal came from outside."""
        if os.path.exists(self.file(CANCEL_FILE)) or self.stop_signal is None:
            return CANCELED_ERROR
        return stopped_by_signal_error(self.stop_signal)

    def cancel_requested(self) -> bool:
        return self.stop_requested or os.path.exists(self.file(CANCEL_FILE))

    def file(self, name: str) -> str:
        """The path of ``name`` in the job directory."""
        return os.path.join(self.job_dir, name)

    def run(self) -> Result:
        if self.cancel_requested():
            return Result("failed", None, self.stop_error())
        if self.config.expect_secrets and not self.secrets:
            return Result(
                "failed", None,
                f"the job's secrets were not in {SECRETS_FILE} (a watcher that ran before took them, e.g. a batch system "
                "requeued the job); submit the job again",
            )
        work_dir = self.file(WORK_DIR)
        os.makedirs(work_dir, exist_ok=True)
        env = job_environment(
            dict(os.environ), self.job_dir, self.config.num_cpus, self.config.gpu_ids,
            pass_env=self.config.pass_env, secrets=self.secrets, job_id=self.config.job_id or _job_id(self.job_dir),
        )
        env.update(self.config.job_env)
        if self.config.container_engine:
            for mounted in (JOB_TMP_DIR, INPUTS_DIR, OUTPUTS_DIR):  # the engine refuses to mount what is not there
                _make_directory(self.file(mounted))
            try:
                write_env_file(
                    self.file(CONTAINER_ENV_FILE),
                    container_environment(env, self.config.container_engine, self.config.gpu_ids),
                )
            except (OSError, ValueError) as e:
                return Result("failed", None, self.masked(f"could not write the container's env file: {e}"))
            # the engine reads the job's variables from the env file; its own process gets only its settings
            env = allowed_environment(dict(os.environ), ENGINE_ENV)
        if self.config.container_engine in ("podman", "docker"):
            try:
                return self.run_container(env)
            finally:
                _unlink_if_present(self.file(CONTAINER_ENV_FILE))
        console = open(self.file(CONSOLE_FILE), "ab")
        try:
            # with secrets its output goes through the watcher, which masks them; else straight to the file
            child = start_processor(self.config.command, work_dir, env, console, piped=bool(self.secrets))
        except OSError as e:
            console.close()
            return Result("failed", None, self.masked(f"could not start the processor {self.config.command[0]!r}: {e}"))
        if self.secrets:
            self.console_pump = ConsolePump(child.stdout, console, list(self.secrets.values()))
        else:
            console.close()  # the processor has it
        try:
            self.write_watcher_file(child)
            result = self.supervise(child)
        except BaseException:
            ProcessTree(process_group=child.pid).signal_all(signal.SIGKILL)  # never leave a job unsupervised
            raise
        finally:
            if self.console_pump is not None:
                self.console_pump.finish()  # result.json comes after the whole console
            _unlink_if_present(self.file(CONTAINER_ENV_FILE))  # apptainer's
        return Result(result.phase, result.exit_code, self.masked(result.error))

    # ------------------------------------------------------------ podman and docker

    def run_container(self, engine_env: dict[str, str]) -> Result:
        """Create, start and follow the job's container through its engine; it is removed whatever happens."""
        import subprocess  # containers only: their engine's commands cost far more than the import

        container = Container(self.config.container_engine, self.config.container_name, engine_env, self.job_dir)
        container.remove()  # left by an earlier attempt of this job (a watcher that was lost)
        try:
            created = container.engine(
                with_owner(with_gpu_options(self.config.command, self.config.gpu_ids), self.config.container_engine)[1:]
            )
            _unlink_if_present(self.file(CONTAINER_ENV_FILE))  # the container holds the values now
            if created.returncode != 0:
                return Result("failed", created.returncode, self.masked(self.create_error(created)))
            if self.cancel_requested():
                # canceled while the engine created it (seconds on a busy host): never started, only removed
                return Result("failed", None, self.stop_error())
            digest = container.image_digest()
            console = open(self.file(CONSOLE_FILE), "ab")
            try:
                attach = subprocess.Popen(
                    container.command("start", "--attach", container.name),
                    env=engine_env, cwd=container.work_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                console.close()
                return Result("failed", None, f"could not run {container.program}: {e}")
            self.console_pump = ConsolePump(attach.stdout, console, list(self.secrets.values()))
            try:
                self.write_watcher_file(attach)
                result = self.supervise_container(container, attach)
            finally:
                self.console_pump.finish()
            return Result(result.phase, result.exit_code, self.masked(result.error), image_digest=digest)
        finally:
            container.close()

    def create_error(self, created: subprocess.CompletedProcess[str]) -> str:
        detail = tail_text(created.stderr.encode(), max_lines=5)
        engine = self.config.container_engine
        # podman exits 125 for engine errors, the docker CLI 1: the message tells a missing image apart
        if any(marker in detail.lower() for marker in IMAGE_MISSING_MARKERS):
            return image_missing_error(self.config.container_image, engine, detail)
        return engine_failed_error(engine, "create", created.returncode, detail)

    def supervise_container(self, container: "Container", attach: subprocess.Popen[bytes]) -> Result:
        import subprocess

        started = time.monotonic()
        next_log = started
        peak_rss = 0
        with open(self.file(RESOURCE_LOG_FILE), "a") as resource_log:
            while True:
                if attach.poll() is not None:
                    return self.container_exit_result(container, peak_rss)
                processes = container.processes()
                rss = _total_rss(processes)
                peak_rss = max(peak_rss, rss)
                now = time.monotonic()
                if now >= next_log and processes:
                    self.log_sample(resource_log, processes, rss)
                    interval = self.config.log_interval_sec if now - started > EARLY_LOG_PERIOD_SEC else min(self.config.log_interval_sec, EARLY_LOG_INTERVAL_SEC)
                    next_log = now + interval
                if self.cancel_requested():
                    container.stop(self.grace_sec())
                    return Result("failed", container.exit_code(), self.stop_error())
                if now - started > self.config.time_sec:
                    container.stop(self.grace_sec())
                    return Result("failed", container.exit_code(), time_limit_error(self.config.time_sec))
                try:
                    attach.wait(timeout=self.config.sample_interval_sec)
                except subprocess.TimeoutExpired:
                    pass

    def container_exit_result(self, container: "Container", peak_rss: int) -> Result:
        returncode = container.exit_code()
        if returncode is None:
            return Result("failed", None, f"{container.program} lost the job's container {container.name} (no exit code)")
        if self.stop_requested and returncode != 0:
            return Result("failed", returncode, self.stop_error())
        if returncode == ENGINE_OOM_EXIT_CODE and container.killed_for_memory():
            limit = int(self.config.memory_gb * BYTES_PER_GB)
            return Result("failed", returncode, memory_limit_error(max(peak_rss, limit + 1), self.config.memory_gb))
        return self.exit_result(returncode)

    def masked(self, text: Optional[str]) -> Optional[str]:
        return masking_module().mask_text(text, self.secrets.values()) if text and self.secrets else text

    def write_watcher_file(self, child: subprocess.Popen[bytes]) -> None:
        me = psutil.Process()
        write_json_atomically(
            self.file(WATCHER_FILE),
            {
                "pid": me.pid,
                "createTime": me.create_time(),
                "processGroup": child.pid,
                "processGroupCreateTime": _create_time_or_none(child.pid),
                "gpus": self.config.gpu_ids,
                "hostname": os.uname().nodename,  # socket.gethostname() without importing socket
                # a bridge that finds this watcher gone removes the container (see bridge/local/backend.py)
                "containerEngine": self.config.container_engine if self.config.container_name else "",
                "containerName": self.config.container_name,
            },
        )

    def supervise(self, child: subprocess.Popen[bytes]) -> Result:
        exit_waiter = ExitWaiter(child)
        try:
            return self._supervise(child, exit_waiter)
        finally:
            exit_waiter.close()

    def _supervise(self, child: subprocess.Popen[bytes], exit_waiter: ExitWaiter) -> Result:
        tree = ProcessTree(process_group=child.pid)
        started = time.monotonic()
        next_log = started
        with open(self.file(RESOURCE_LOG_FILE), "a") as resource_log:
            while True:
                reap_zombie_children(keep_pid=child.pid)
                returncode = child.poll()
                if returncode is not None:
                    self.terminate(tree, child)  # background processes it left behind
                    if returncode < 0 and not self.stop_requested:
                        time.sleep(0.2)  # a batch system signals the whole job: let our own signal arrive too
                    if returncode != 0 and self.stop_requested:
                        return Result("failed", returncode, self.stop_error())  # stopped from outside, not a crash
                    return self.exit_result(returncode)
                processes = tree.current()
                rss = _total_rss(processes)
                now = time.monotonic()
                if now >= next_log:
                    self.log_sample(resource_log, processes, rss)
                    # denser at first, so that a short job's plot has a shape
                    interval = self.config.log_interval_sec if now - started > EARLY_LOG_PERIOD_SEC else min(self.config.log_interval_sec, EARLY_LOG_INTERVAL_SEC)
                    next_log = now + interval
                if rss > self.config.memory_gb * BYTES_PER_GB:
                    self.kill(tree, child)
                    return Result("failed", child.returncode, memory_limit_error(rss, self.config.memory_gb))
                if self.cancel_requested():
                    self.terminate(tree, child)
                    return Result("failed", child.returncode, self.stop_error())
                if now - started > self.config.time_sec:
                    self.terminate(tree, child)
                    return Result("failed", child.returncode, time_limit_error(self.config.time_sec))
                exit_waiter.wait(self.config.sample_interval_sec)  # returns as the processor exits

    def exit_result(self, returncode: int) -> Result:
        if returncode == 0:
            return Result("succeeded", 0, None)
        if self.console_pump is not None:
            self.console_pump.finish()  # the tail must include the processor's last words
        tail = tail_text(read_file_tail(self.file(CONSOLE_FILE)))
        return Result("failed", returncode, exit_error(returncode, tail))

    def terminate(self, tree: ProcessTree, child: subprocess.Popen[bytes]) -> None:
        """SIGTERM lets the processor clean up; SIGKILL after the grace period ends it regardless."""
        tree.signal_all(signal.SIGTERM)
        if not self.wait_tree_gone(tree, child, self.grace_sec()):
            self.kill(tree, child)

    def grace_sec(self) -> float:
        """A cancel (or a stop signal) gets the short grace; a time limit, or a processor's leftovers, the usual one."""
        if self.cancel_requested():
            return min(self.config.cancel_grace_sec, self.config.kill_grace_sec)
        return self.config.kill_grace_sec

    def kill(self, tree: ProcessTree, child: subprocess.Popen[bytes]) -> None:
        tree.signal_all(signal.SIGKILL)
        if not self.wait_tree_gone(tree, child, 10.0):
            print(f"watcher: some processes of the job survived SIGKILL: {[p.pid for p in tree.current()]}", file=sys.stderr)

    def wait_tree_gone(self, tree: ProcessTree, child: subprocess.Popen[bytes], timeout_sec: float) -> bool:
        deadline = time.monotonic() + timeout_sec
        while True:
            child.poll()
            reap_zombie_children(keep_pid=child.pid)
            if child.returncode is not None and tree.is_empty():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def log_sample(self, resource_log: Any, processes: list[psutil.Process], rss: int) -> None:
        sample: dict[str, Any] = {
            "timestampSec": time.time(),
            "cpuPercent": round(_total_cpu_percent(processes), 1),
            "rssBytes": rss,
            "numProcesses": len(processes),
        }
        if self.gpu_sampling:
            sample["gpus"] = self.sample_gpus()
        resource_log.write(json_text(sample) + "\n")
        resource_log.flush()

    def sample_gpus(self) -> list[dict[str, Any]]:
        import subprocess  # GPU jobs only

        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=index,utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-i",
                    ",".join(self.config.gpu_ids),
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        return parse_gpu_query(out.stdout) if out.returncode == 0 else []


class Container:
    """One job's podman/docker container, driven through the engine's command line."""

    def __init__(self, program: str, name: str, env: dict[str, str], job_dir: StrPath) -> None:
        self.program = program
        self.name = name
        self.env = env
        self._pid: Optional[int] = None
        # The engine's commands run here: podman's conmon leaves its OOM record (a file named "oom")
        # in its working directory on cgroup v1 hosts, where the engine's OOMKilled stays false.
        self.work_dir = os.path.join(job_dir, ENGINE_DIR)
        _make_directory(self.work_dir, 0o700)

    def command(self, *args: str) -> list[str]:
        return [self.program, *args]

    def engine(self, args: Sequence[str], timeout_sec: float = ENGINE_COMMAND_TIMEOUT_SEC) -> subprocess.CompletedProcess[str]:
        import subprocess

        try:
            return subprocess.run(
                self.command(*args), env=self.env, cwd=self.work_dir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=timeout_sec,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"{self.program} {' '.join(args[:1])} did not answer in {timeout_sec:g} s")
        except OSError as e:
            return subprocess.CompletedProcess(args, 127, "", f"cannot run {self.program}: {e}; install it or fix PATH")

    def processes(self) -> list[psutil.Process]:
        """The container's processes as the host sees them (rootful engines share the host's pid view)."""
        if self._pid is None:
            out = self.engine(["inspect", "--format", "{{.State.Pid}}", self.name], timeout_sec=10)
            try:
                pid = int(out.stdout.strip() or 0)
            except ValueError:
                pid = 0
            if pid <= 0:
                return []
            self._pid = pid
        try:
            root = psutil.Process(self._pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def exit_code(self) -> Optional[int]:
        out = self.engine(["wait", self.name])
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    def stop(self, grace_sec: float) -> None:
        """SIGTERM to the container, SIGKILL after the grace period (the engine does both)."""
        stopped = self.engine(["stop", "--time", str(max(0, int(round(grace_sec)))), self.name], timeout_sec=grace_sec + 30)
        if stopped.returncode != 0:
            self.engine(["kill", self.name], timeout_sec=30)

    def killed_for_memory(self) -> bool:
        """Whether the engine's memory limit ended the container (after an exit 137, which any SIGKILL gives).

        The engine's own record where it keeps one (docker; podman on cgroup v2), or podman's conmon's OOM
        file on cgroup v1. The docker CLI through podman's socket keeps neither: there exit 137 is taken as
        the memory limit, the usual cause of a SIGKILL nobody sent.
        """
        state = self.engine(["inspect", "--format", "{{.State.OOMKilled}}", self.name], timeout_sec=30).stdout.strip()
        if state == "true" or os.path.exists(os.path.join(self.work_dir, "oom")):
            return True
        return self.program != "podman"

    def remove(self) -> None:
        self.engine(["rm", "--force", self.name], timeout_sec=60)

    def close(self) -> None:
        """Remove the container and the engine's working directory."""
        self.remove()
        import shutil  # here only: importing it slows every watcher's start

        shutil.rmtree(self.work_dir, ignore_errors=True)

    def image_digest(self) -> Optional[str]:
        """The resolved digest of the image the (created) container runs, or None when the engine does not say.

        podman records the manifest digest on the container; docker has only the image's id there, so its
        first repository digest is taken when the image came from a registry, else the id (itself a sha256 digest).
        """
        if self.program == "podman":
            return digest_or_none(self.engine(["inspect", "--format", "{{.ImageDigest}}", self.name], timeout_sec=30).stdout)
        image_id = digest_or_none(self.engine(["inspect", "--format", "{{.Image}}", self.name], timeout_sec=30).stdout)
        if image_id is None:
            return None
        repo_digests = self.engine(["image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", image_id], timeout_sec=30).stdout
        for line in repo_digests.splitlines():
            digest = digest_or_none(line.rpartition("@")[2])
            if digest is not None:
                return digest
        return image_id


def digest_or_none(text: str) -> Optional[str]:
    """``algorithm:hex`` as an engine prints it, or None for anything else (an error, "<no value>")."""
    text = text.strip()
    algorithm, _, hex_part = text.partition(":")
    if algorithm.isalnum() and len(hex_part) >= 32 and all(c in "0123456789abcdef" for c in hex_part):
        return text
    return None


def _job_id(job_dir: str) -> str:
    """The job's id from its job.json (the directory's name when that cannot be read), for a bridge that does not
    pass ``--job-id``."""
    import json

    try:
        with open(os.path.join(job_dir, JOB_FILE)) as f:
            return str(json.load(f)["jobId"])
    except (OSError, ValueError, KeyError, TypeError):
        return os.path.basename(job_dir)


def _make_directory(path: str, mode: int = 0o777) -> None:
    """``path`` as a directory (its parent must exist); one that is there already is fine."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def _which(program: str) -> Optional[str]:
    import shutil  # here only: importing it slows every watcher's start

    return shutil.which(program)


def _create_time_or_none(pid: int) -> Optional[float]:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _total_rss(processes: list[psutil.Process]) -> int:
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass  # it ended between listing and measuring
    return total


def _total_cpu_percent(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            total += p.cpu_percent(interval=None)
        except psutil.Error:
            pass
    return total


# ---------------------------------------------------------------- command line


PROG = "python -m bridge.watch"
_REQUIRED = object()
# The watcher's options: flag -> (WatchConfig's keyword, kind, default, help). Kinds: "path", "float", "int", "str",
# "list" (repeatable), "flag" (no value), or a tuple of the values allowed. Parsed by hand, not by argparse: it
# and what it imports would be a sixth of every watcher's start. The bridge writes these command lines, so
# options are never abbreviated; a person reading ``--help`` sees the same table.
OPTIONS: dict[str, tuple[str, Any, Any, str]] = {
    "--job-dir": ("job_dir", "path", _REQUIRED, "the job's directory (job.json, work/, console.txt, result.json, ...)"),
    "--job-id": ("job_id", "str", "", "the job's id, PAIRIO_JOB_ID (default: from the directory's job.json)"),
    "--time-sec": ("time_sec", "float", _REQUIRED, "the time limit: SIGTERM, then SIGKILL after --kill-grace-sec"),
    "--memory-gb": ("memory_gb", "float", _REQUIRED, "the memory limit (RSS of the whole tree, GiB): killed at once"),
    "--num-cpus": ("num_cpus", "int", _REQUIRED, "CPUs given to the job (sizes its thread pools)"),
    "--gpus": ("gpu_ids", "str", "", "comma-separated GPU ids assigned to this job"),
    "--sample-interval-sec": ("sample_interval_sec", "float", DEFAULT_SAMPLE_INTERVAL_SEC, "how often the tree is measured"),
    "--log-interval-sec": ("log_interval_sec", "float", DEFAULT_LOG_INTERVAL_SEC, "how often a sample goes to resource_log.jsonl"),
    "--kill-grace-sec": ("kill_grace_sec", "float", DEFAULT_KILL_GRACE_SEC, "SIGTERM -> SIGKILL for a time limit"),
    "--pass-env": ("pass_env", "list", None, "also give the processor this variable (NAME or PREFIX*); repeatable"),
    "--secrets": ("expect_secrets", "flag", False, f"the job has secrets in {SECRETS_FILE}; fail when it is missing"),
    "--cancel-grace-sec": ("cancel_grace_sec", "float", DEFAULT_CANCEL_GRACE_SEC, "SIGTERM -> SIGKILL for a cancel"),
    "--container-engine": ("container_engine", CONTAINER_ENGINES, "", "the command creates (podman, docker) or is (apptainer) the job's container"),
    "--container-name": ("container_name", "str", "", "podman/docker: the container's name (pairio-<jobId>)"),
    "--container-image": ("container_image", "str", "", "the job's image, for error messages"),
    "--job-env": ("job_env", "list", None, "NAME=VALUE: set this variable for the processor (never a secret: those come in the secrets file); repeatable"),
}
USAGE = f"usage: {PROG} --job-dir DIR --time-sec T --memory-gb M --num-cpus N [options] -- COMMAND..."


def help_text() -> str:
    lines = [USAGE, "", (__doc__ or "").split("\n\n")[0], "", "options:"]
    for flag, (_, kind, default, text) in OPTIONS.items():
        if isinstance(kind, tuple):
            value = " {" + ",".join(kind) + "}"
        else:
            value = "" if kind == "flag" else f" {kind.upper()}"
        if default is _REQUIRED:
            note = " (required)"
        else:
            note = f" (default {default})" if kind in ("float", "int") else ""
        lines.append(f"  {flag}{value}\n      {text}{note}")
    lines.append("  -- COMMAND...\n      the processor's argv")
    return "\n".join(lines)


def usage_error(message: str) -> NoReturn:
    """Exit as argparse does: the usage and the problem on stderr, status 2."""
    print(f"{USAGE}\n{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _option_value(flag: str, kind: Any, text: str) -> Any:
    try:
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
    except ValueError:
        usage_error(f"{flag}: not a number: {text!r}")
    if isinstance(kind, tuple) and text not in kind:
        usage_error(f"{flag}: {text!r} is not one of {', '.join(kind)}")
    return text


def parse_args(argv: Sequence[str]) -> WatchConfig:
    """The watcher's command line: options, then ``--`` and the processor's argv (the first word that is not an
    option starts it too). Exits with status 2 and the usage on stderr for a bad one, 0 after ``--help``."""
    values: dict[str, Any] = {attribute: ([] if kind == "list" else default) for attribute, kind, default, _ in OPTIONS.values()}
    command: list[str] = []
    at = 0
    while at < len(argv):
        word = argv[at]
        if word == "--":
            command = list(argv[at + 1 :])
            break
        if word in ("-h", "--help"):
            print(help_text())
            raise SystemExit(0)
        if not word.startswith("-"):
            command = list(argv[at:])
            break
        flag, has_value, inline = word.partition("=")
        if flag not in OPTIONS:
            usage_error(f"unrecognized argument: {word}")
        attribute, kind, _, _ = OPTIONS[flag]
        at += 1
        if kind == "flag":
            if has_value:
                usage_error(f"{flag} takes no value")
            values[attribute] = True
            continue
        if not has_value:
            if at >= len(argv):
                usage_error(f"{flag} needs a value")
            inline, at = argv[at], at + 1
        value = _option_value(flag, kind, inline)
        if kind == "list":
            values[attribute].append(value)
        else:
            values[attribute] = value
    missing = [flag for flag, (attribute, _, default, _) in OPTIONS.items() if default is _REQUIRED and values[attribute] is _REQUIRED]
    if missing:
        usage_error(f"the following arguments are required: {', '.join(missing)}")
    if not command:
        usage_error("no command given: put the processor's argv after --")
    job_env: dict[str, str] = {}
    for item in values["job_env"]:
        name, sep, value = item.partition("=")
        if not sep or not name:
            usage_error(f"--job-env takes NAME=VALUE, not {item!r}")
        job_env[name] = value
    values["job_env"] = job_env
    if values["container_engine"] in ("podman", "docker") and not values["container_name"]:
        usage_error("--container-name is required with --container-engine podman or docker")
    values["job_dir"] = os.path.realpath(values["job_dir"])
    values["gpu_ids"] = [g for g in values["gpu_ids"].split(",") if g]
    return WatchConfig(command=command, **values)


def prepare_to_fork() -> None:
    """Done once by the local bridge's launcher before it forks watchers: import what a watcher imports only when
    a job needs it (masking, a second thread, subprocess for containers and GPUs), so no forked watcher pays for it."""
    import subprocess  # noqa: F401
    import threading  # noqa: F401

    masking_module()


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.umask(0o077)  # everything the watcher and the processor write in the job directory is the job user's only
    config = parse_args(sys.argv[1:] if argv is None else argv)
    result_file = os.path.join(config.job_dir, RESULT_FILE)
    try:
        secrets = take_secrets(config.job_dir)  # first: the file is gone before anything else runs
    except (OSError, ValueError) as e:
        write_json_atomically(result_file, Result("failed", None, f"the job's secrets could not be read: {e}").as_json())
        return 0
    problem = process_support_problem()
    if problem is not None:
        print(f"watcher: {problem}", file=sys.stderr)
        write_json_atomically(result_file, Result("failed", None, problem).as_json())
        return 0
    become_child_subreaper()
    watcher = Watcher(config, secrets)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, watcher.request_stop)
    try:
        result = watcher.run()
    except Exception as e:  # a result must always be written, or the job would look running until declared lost
        write_json_atomically(result_file, Result("failed", None, f"the job's watcher failed: {type(e).__name__}: {e}").as_json())
        raise
    write_json_atomically(result_file, result.as_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
