"""The bridge's helper on a remote host: one invocation per batch of work, JSON in and out.

    python3 agent.py probe                      -> the host: CPUs, memory, load, GPUs, disk, Python
                                                   (stdin: {"containerEngine", "images"}: also the engine and those images)
    python3 agent.py launch --job-dir D [--cpus 0,1] -- WATCHER ARGV...   (stdin: {"passEnv": [...]})
    python3 agent.py sync                       (stdin: {"jobs": [{"dir", "console", "resourceLog"}], ...})
    python3 agent.py cancel                     (stdin: {"dirs": [...]})
    python3 agent.py download                   (stdin: {"files": [{"url", "path", "size"}]})
    python3 agent.py cleanup                    (stdin: {"jobsDir", "keep": [...], "minAgeSec"})
    python3 agent.py serve                      -> JSON lines: probe, launch, sync, cancel requests answered in turn,
                                                   and {"ended": [dirs]} the moment a watched job ends (see ``serve``)

bridge/remote_jobs.py uploads this file (with bridge/watch.py) to the remote host and
runs it there over the shell seam, so that a poll of all running jobs is one remote
command. Like the watcher it needs only the standard library (Python 3.8+) and must
never import pairio or bridge. Secrets never pass through it: the bridge uploads them in
the job's secrets file (mode 0600), which the watcher reads and deletes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

RESULT_FILE = "result.json"
WATCHER_FILE = "watcher.json"
LAUNCH_FILE = "launch.json"
CANCEL_FILE = "cancel"
CONSOLE_FILE = "console.txt"
RESOURCE_LOG_FILE = "resource_log.jsonl"
WATCHER_LOG_FILE = "watcher.log"
SECRETS_FILE = "secrets.json"
ALLOWED_ENV = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME")
"""what a watcher gets of the agent's environment besides ``passEnv`` (as bridge/watch.py gives its processor)"""
ENGINE_ENV = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "DOCKER_HOST", "DOCKER_CONFIG", "XDG_RUNTIME_DIR")
"""the container engine's settings: a watcher in container mode hands them to the engine only (as bridge/watch.py's ENGINE_ENV)"""
ENGINE_INSTALL_HINTS = {
    "podman": "install it (Debian/Ubuntu: apt-get install podman runc)",
    "docker": "install the docker CLI (Debian/Ubuntu: apt-get install docker.io) and make its daemon reachable (DOCKER_HOST)",
    "apptainer": "install apptainer (https://apptainer.org/docs/admin/main/installation.html)",
}
CREATE_TIME_TOLERANCE_SEC = 1.0
LAUNCH_STALLED_SEC = 60.0
DEFAULT_MAX_BYTES_PER_FILE = 1024 * 1024
DEFAULT_MAX_BYTES_TOTAL = 8 * 1024 * 1024


# ---------------------------------------------------------------- processes, from /proc where there is one


def _boot_time() -> Optional[float]:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_create_time(pid: int) -> Optional[float]:
    """When ``pid`` started (as psutil computes it), or None when it does not run (or is a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _create_time_without_proc(pid)
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X", "x"):
        return None
    boot = _boot_time()
    if boot is None:
        return _create_time_without_proc(pid)
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _create_time_without_proc(pid: int) -> Optional[float]:
    """No /proc (macOS, BSD): alive or not, start time unknown (-1)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return -1.0
    return -1.0


def is_same_process_alive(pid: int, create_time: Optional[float]) -> bool:
    started = process_create_time(pid)
    if started is None:
        return False
    if started < 0 or create_time is None:
        return True
    return abs(started - create_time) < CREATE_TIME_TOLERANCE_SEC


def processes_of_group(group: int, started_after: float) -> List[int]:
    pids = []
    if not os.path.isdir("/proc"):
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getpgid(pid) != group:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        started = process_create_time(pid)
        if started is not None and started >= started_after - CREATE_TIME_TOLERANCE_SEC:
            pids.append(pid)
    return pids


# ---------------------------------------------------------------- files


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"unreadable": f"{type(e).__name__}: {e}"}
    return data if isinstance(data, dict) else {"unreadable": "not a JSON object"}


def write_json_atomically(path: Path, data: Dict[str, Any]) -> None:
    # unique per write: two agents (two bridges, or a retried command) never share a temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    try:
        with tmp.open("x") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def read_chunk(path: Path, offset: int, max_bytes: int) -> Dict[str, Any]:
    """The file's size and, base64, up to ``max_bytes`` from ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if max_bytes <= 0 or offset >= size:
                return {"size": size, "data": ""}
            f.seek(offset)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return {"size": 0, "data": ""}
    return {"size": size, "data": base64.b64encode(data).decode("ascii")}


def tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- the host


def usable_cpus() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def available_memory_bytes() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_info(root: Optional[str]) -> Dict[str, Any]:
    try:
        load1: Optional[float] = os.getloadavg()[0]
    except (OSError, AttributeError):
        load1 = None
    info: Dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpus": usable_cpus(),
        "memAvailableBytes": available_memory_bytes(),
        "load1": load1,
        "time": time.time(),
    }
    if root:
        try:
            info["diskFreeBytes"] = shutil.disk_usage(root).free
        except OSError:
            info["diskFreeBytes"] = None
    return info


def detect_gpus() -> List[str]:
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        ids = [p.strip() for p in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if p.strip()]
        return [] if ids[:1] in (["-1"], ["NoDevFiles"]) else ids
    if shutil.which("nvidia-smi") is None:
        return []
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    ids = []
    for line in out.stdout.decode("utf-8", "replace").splitlines():
        head, sep, _ = line.partition(":")
        if sep and head.startswith("GPU ") and head[4:].strip().isdigit():
            ids.append(head[4:].strip())
    return ids


def command_probe(request: Dict[str, Any]) -> Dict[str, Any]:
    info = host_info(request.get("root"))
    info["gpus"] = detect_gpus()
    info["python"] = sys.version.split()[0]
    try:
        import psutil  # noqa: F401

        info["psutil"] = True
    except ImportError:
        info["psutil"] = False
    info["procfs"] = os.path.exists("/proc/self/stat")
    engine = request.get("containerEngine")
    if engine:
        info["containerEngine"] = check_engine(str(engine))
        images = [str(i) for i in request.get("images") or []]
        if images and "version" in info["containerEngine"]:
            info["containerEngine"]["imageCheck"] = check_images(str(engine), images)
    return info


def check_engine(engine: str) -> Dict[str, Any]:
    """Whether the container engine runs here: its version, or why not and how to fix it."""
    import subprocess  # here: the commands run at every poll start faster without it

    hint = ENGINE_INSTALL_HINTS.get(engine, "install it")
    if shutil.which(engine) is None:
        return {"name": engine, "error": f"{engine} is not on the PATH of this login ({os.environ.get('PATH', '')}): {hint}"}
    try:
        out = subprocess.run([engine, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"name": engine, "error": f"{engine} --version failed: {e}; {hint}"}
    if out.returncode != 0:
        detail = " ".join((out.stderr or out.stdout).split())[-500:]
        return {"name": engine, "error": f"{engine} --version exited with {out.returncode}: {detail}"}
    return {"name": engine, "version": out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""}


def check_images(engine: str, images: List[str]) -> Dict[str, Any]:
    """Which of ``images`` podman or docker has here: ``{"images": {IMAGE: true, false, or why it could not
    be told}}``, or ``{"error": ...}`` when the engine cannot be asked at all (e.g. docker's daemon is
    unreachable). The local bridge calls it too."""
    import subprocess

    if engine not in ("podman", "docker"):
        return {"error": f"images are not checked for {engine}"}
    found: Dict[str, Any] = {}
    for image in images:
        argv = ["podman", "image", "exists", image] if engine == "podman" else ["docker", "image", "inspect", "--format", "{{.Id}}", image]
        try:
            out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"error": f"{' '.join(argv[:3])} failed: {e}"}
        detail = " ".join((out.stderr or "").split())[-500:]
        if out.returncode == 0:
            found[image] = True
        elif (engine == "podman" and out.returncode == 1) or "no such image" in detail.lower():
            found[image] = False
        elif "cannot connect" in detail.lower():
            return {"error": f"{engine} cannot reach its daemon: {detail}"}
        else:
            found[image] = f"{' '.join(argv[:3])} exited with {out.returncode}: {detail}"
    return {"images": found}


# ---------------------------------------------------------------- jobs


def watcher_state(job_dir: Path, my_hostname: str) -> Dict[str, Any]:
    """Whether a watcher was started for the job and whether it still runs (None: it runs on another host)."""
    watcher = read_json(job_dir / WATCHER_FILE)
    launch = read_json(job_dir / LAUNCH_FILE)
    record = watcher if watcher and "pid" in watcher else launch if launch and "pid" in launch else None
    if record is None:
        if launch is None:
            return {"launched": watcher is not None, "alive": False}
        # "launching": the agent that wrote it starts the watcher within a second, or died trying
        stalled = time.time() - float(launch.get("time") or 0) > LAUNCH_STALLED_SEC
        return {"launched": True, "alive": False if stalled else None}
    if record.get("hostname") not in (None, my_hostname):
        return {"launched": True, "alive": None, "hostname": record.get("hostname")}
    try:
        pid = int(record["pid"])
        create_time = float(record["createTime"]) if record.get("createTime") is not None else None
    except (TypeError, ValueError):
        return {"launched": True, "alive": False}
    return {"launched": True, "alive": is_same_process_alive(pid, create_time)}


def kill_orphans(job_dir: Path) -> None:
    """A watcher that died (SIGKILL, OOM killer) leaves its job unsupervised: end the job's process group, and its container."""
    watcher = read_json(job_dir / WATCHER_FILE)
    if not watcher or "processGroup" not in watcher:
        return
    engine, name = watcher.get("containerEngine"), watcher.get("containerName")
    if engine and name:
        remove_container(str(engine), str(name))
    try:
        group, started = int(watcher["processGroup"]), float(watcher.get("createTime") or 0)
    except (TypeError, ValueError):
        return
    for pid in processes_of_group(group, started):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def remove_container(engine: str, name: str) -> None:
    """The container's processes are the engine's children, not the watcher's group's: the engine removes them."""
    import subprocess

    try:
        subprocess.run([engine, "rm", "--force", name], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass  # the engine is gone or hangs: nothing more to do from here


def command_sync(request: Dict[str, Any]) -> Dict[str, Any]:
    my_hostname = socket.gethostname()
    per_file = int(request.get("maxBytesPerFile", DEFAULT_MAX_BYTES_PER_FILE))
    budget = int(request.get("maxBytesTotal", DEFAULT_MAX_BYTES_TOTAL))
    jobs: Dict[str, Any] = {}
    for item in request.get("jobs", []):
        job_dir = Path(item["dir"])
        if not job_dir.is_dir():
            jobs[item["dir"]] = {"exists": False}
            continue
        # The watcher writes result.json last: read it before the files, so a result seen here means they are complete.
        result = read_json(job_dir / RESULT_FILE)
        state = {} if result is not None else watcher_state(job_dir, my_hostname)
        if result is None and state.get("alive") is False and state.get("launched"):
            result = read_json(job_dir / RESULT_FILE)  # it may have ended between the two looks
            if result is None and request.get("killOrphans", True):
                kill_orphans(job_dir)
                state["watcherLog"] = tail(job_dir / WATCHER_LOG_FILE)
        answer: Dict[str, Any] = {"exists": True, "result": result, **state}
        if result is not None:
            _remove(job_dir / SECRETS_FILE)  # a watcher that never ran leaves it (e.g. a batch job canceled in the queue)
            answer["outputSizes"] = {path: _size_or_none(Path(path)) for path in item.get("outputs", [])}
        for key, name in (("console", CONSOLE_FILE), ("resourceLog", RESOURCE_LOG_FILE)):
            chunk = read_chunk(job_dir / name, int(item.get(key, 0)), min(per_file, budget))
            budget -= len(chunk["data"]) * 3 // 4
            answer[key] = chunk
        jobs[item["dir"]] = answer
    return {"host": host_info(request.get("root")), "jobs": jobs}


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _size_or_none(path: Path) -> Optional[int]:
    try:
        return path.stat().st_size
    except OSError:
        return None


def command_cleanup(request: Dict[str, Any]) -> Dict[str, Any]:
    """Delete job directories of ``jobsDir`` the bridge no longer keeps (not in ``keep``), once ended and old enough.

    A job still running there, or one whose directory changed recently, is never touched.
    """
    jobs_dir = Path(request["jobsDir"])
    keep = set(request.get("keep", []))
    min_age = float(request.get("minAgeSec", 3600))
    removed = []
    if not jobs_dir.is_dir():
        return {"removed": removed}
    now = time.time()
    for entry in sorted(jobs_dir.iterdir()):
        if entry.name in keep or entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            age = now - max(entry.stat().st_mtime, (entry / RESULT_FILE).stat().st_mtime if (entry / RESULT_FILE).exists() else 0)
        except OSError:
            continue
        ended = (entry / RESULT_FILE).exists()
        never_started = not (entry / LAUNCH_FILE).exists() and not (entry / WATCHER_FILE).exists()
        if age >= min_age and (ended or never_started):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return {"removed": removed}


def command_launch(job_dir: Path, argv: List[str], cpus: List[int], request: Dict[str, Any]) -> Dict[str, Any]:
    """Start the watcher detached (its own session, so it survives the connection); never twice for one directory."""
    if (job_dir / RESULT_FILE).exists():
        return {"state": "ended"}
    try:
        fd = os.open(str(job_dir / LAUNCH_FILE), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return {"state": "launched-before", "launch": read_json(job_dir / LAUNCH_FILE)}
    with os.fdopen(fd, "w") as f:
        json.dump({"launching": True, "hostname": socket.gethostname(), "time": time.time()}, f)
    for stale in (CANCEL_FILE, WATCHER_FILE):
        try:
            (job_dir / stale).unlink()
        except FileNotFoundError:
            pass
    import subprocess  # here: the commands run at every poll start faster without it

    patterns = [*ALLOWED_ENV, *ENGINE_ENV, *(str(p) for p in request.get("passEnv") or [])]
    env = {
        name: value for name, value in os.environ.items()
        if not name.startswith("PAIRIO_") and any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)
    }

    def pin() -> None:
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)  # the watcher and the processor inherit it

    try:
        with (job_dir / WATCHER_LOG_FILE).open("ab") as log:
            child = subprocess.Popen(
                argv, cwd=str(job_dir), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=pin if cpus else None,
            )
    except OSError as e:
        error = f"could not start the job's watcher ({argv[0]}): {e}"
        write_json_atomically(job_dir / RESULT_FILE, {"phase": "failed", "exitCode": None, "error": error, "timestampFinishedSec": time.time()})
        return {"state": "failed", "error": error}
    LAUNCHED_CHILDREN.append(child)
    record = {"pid": child.pid, "createTime": process_create_time(child.pid), "hostname": socket.gethostname(), "time": time.time()}
    write_json_atomically(job_dir / LAUNCH_FILE, record)
    return {"state": "launched", "launch": record}


def command_cancel(request: Dict[str, Any]) -> Dict[str, Any]:
    my_hostname = socket.gethostname()
    done = {}
    for d in request.get("dirs", []):
        job_dir = Path(d)
        if not job_dir.is_dir() or (job_dir / RESULT_FILE).exists():
            done[d] = "not running"
            continue
        # The file is the durable request (the watcher checks it between samples); the signal is the fast one.
        (job_dir / CANCEL_FILE).touch()
        done[d] = "requested"
        _remove(job_dir / SECRETS_FILE)  # a canceled job needs no secrets any more
        watcher = read_json(job_dir / WATCHER_FILE)
        if not watcher or "pid" not in watcher or watcher.get("hostname") not in (None, my_hostname):
            continue
        try:
            pid, create_time = int(watcher["pid"]), watcher.get("createTime")
            if is_same_process_alive(pid, float(create_time) if create_time is not None else None):
                os.kill(pid, signal.SIGTERM)
                done[d] = "signaled"
        except (TypeError, ValueError, ProcessLookupError, PermissionError):
            pass
    return {"dirs": done}


def command_download(request: Dict[str, Any]) -> Dict[str, Any]:
    """Fetch inputs from their URLs here; each answer is "ok" or why not (the bridge then uploads it)."""
    import urllib.request

    answers = {}
    for item in request.get("files", []):
        path = Path(item["path"])
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.download")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(item["url"], timeout=float(request.get("timeoutSec", 60))) as response, tmp.open("wb") as out:
                shutil.copyfileobj(response, out, 1024 * 1024)
            size = tmp.stat().st_size
            if item.get("size") is not None and size != int(item["size"]):
                raise OSError(f"got {size} bytes, expected {item['size']}")
            os.replace(tmp, path)
            answers[item["path"]] = "ok"
        except Exception as e:  # noqa: BLE001 - any failure means: upload it instead
            try:
                tmp.unlink()
            except OSError:
                pass
            answers[item["path"]] = f"{type(e).__name__}: {e}"
    return {"files": answers}


LAUNCHED_CHILDREN: List[Any] = []
"""``serve``: the watchers this agent started (its children until they end: reaped by ``reap_children``)"""
WATCH_INTERVAL_SEC = 0.05
"""``serve``: how often it looks for result.json in the job directories it watches"""
LIVENESS_INTERVAL_SEC = 1.0
"""``serve``: how often it checks that the watched jobs' watchers still run"""
SESSION_COMMANDS = ("probe", "launch", "sync", "cancel")
"""what ``serve`` answers: the quick commands (a download or a clean-up would hold up the others)"""


def run_command(args_in: List[str], request: Dict[str, Any]) -> Dict[str, Any]:
    """One command, its options in ``args_in`` as on the command line, its JSON input in ``request``."""
    # everything after the first "--" is the watcher's argv (argparse would take options from it)
    command = args_in[args_in.index("--") + 1 :] if "--" in args_in else []
    options = args_in[: args_in.index("--")] if "--" in args_in else args_in
    parser = argparse.ArgumentParser(prog="agent.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["probe", "launch", "sync", "cancel", "download", "cleanup", "serve"])
    parser.add_argument("--job-dir", type=Path)
    parser.add_argument("--cpus", default="", help="launch: CPU ids the job is bound to")
    args = parser.parse_args(options)
    if args.command == "probe":
        return command_probe(request)
    if args.command == "sync":
        return command_sync(request)
    if args.command == "cancel":
        return command_cancel(request)
    if args.command == "download":
        return command_download(request)
    if args.command == "cleanup":
        return command_cleanup(request)
    if args.command == "serve":
        parser.error("serve is a mode of its own, not a command inside it")
    if args.job_dir is None or not command:
        parser.error("launch needs --job-dir and the watcher's argv after --")
    cpus = [int(c) for c in args.cpus.split(",") if c.strip()]
    return command_launch(args.job_dir, command, cpus, request)


# ---------------------------------------------------------------- serve: one long-lived agent per bridge connection


class Watched:
    """The job directories whose end ``serve`` reports the moment it happens."""

    def __init__(self) -> None:
        self.dirs: Dict[str, float] = {}
        self.next_liveness = 0.0

    def add(self, directory: str) -> None:
        self.dirs.setdefault(directory, time.monotonic())

    def ended(self) -> List[str]:
        """The watched jobs that ended since the last look (result.json there, or a watcher that died without one)."""
        now = time.monotonic()
        check_liveness = now >= self.next_liveness
        if check_liveness:
            self.next_liveness = now + LIVENESS_INTERVAL_SEC
        my_hostname = socket.gethostname() if check_liveness else ""
        ended = []
        for directory, since in list(self.dirs.items()):
            job_dir = Path(directory)
            if os.path.exists(os.path.join(directory, RESULT_FILE)) or not job_dir.is_dir():
                ended.append(directory)
            elif check_liveness and now - since > LIVENESS_INTERVAL_SEC:
                state = watcher_state(job_dir, my_hostname)
                if state.get("launched") and state.get("alive") is False:
                    ended.append(directory)
        for directory in ended:
            del self.dirs[directory]
        return ended


def reap_children() -> None:
    for child in list(LAUNCHED_CHILDREN):
        if child.poll() is not None:
            LAUNCHED_CHILDREN.remove(child)


def serve_one(line: bytes, watched: Watched) -> Dict[str, Any]:
    """Answer one request line: ``{"id", "args": [command, options..., "--", argv...], "request": {...}}``."""
    try:
        message = json.loads(line)
        ident = message.get("id")
        args = [str(a) for a in message.get("args") or []]
        request = message.get("request") or {}
    except (ValueError, AttributeError) as e:
        return {"id": None, "error": f"not a request: {e}"}
    if not args or args[0] not in SESSION_COMMANDS:
        return {"id": ident, "error": f"serve answers only {', '.join(SESSION_COMMANDS)}, not {args[:1]}"}
    try:
        answer = run_command(args, request)
    except SystemExit:  # argparse refused the options
        return {"id": ident, "error": f"bad options: {args}"}
    except Exception as e:  # noqa: BLE001 - one failed request must not end the session
        return {"id": ident, "error": f"{type(e).__name__}: {e}"}
    if args[0] == "launch" and answer.get("state") in ("launched", "launched-before"):
        watched.add(args[args.index("--job-dir") + 1])
    if args[0] == "sync" and request.get("watch"):
        for directory, item in (answer.get("jobs") or {}).items():
            if item.get("exists") and item.get("result") is None:
                watched.add(directory)
    return {"id": ident, "answer": answer}


def serve() -> int:
    """Answer JSON-line requests on stdin until it closes; report the end of watched jobs as ``{"ended": [dirs]}`` lines.

    One Python process per connection instead of one per command, and a job's end is told at
    once instead of at the bridge's next poll. Watchers started here run in sessions of their
    own (they outlive this agent and the connection); this agent reaps those that end first.
    """
    import select

    watched = Watched()
    pending = b""
    out = sys.stdout.buffer

    def write(message: Dict[str, Any]) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    write({"ready": True, "pid": os.getpid()})
    while True:
        # nothing to watch or reap: sleep until the bridge asks something
        idle = not watched.dirs and not LAUNCHED_CHILDREN
        readable, _, _ = select.select([0], [], [], None if idle else WATCH_INTERVAL_SEC)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:
                return 0  # the bridge closed the session (or its connection went away)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    write(serve_one(line, watched))
        reap_children()
        ended = watched.ended()
        if ended:
            write({"ended": ended})


def main(argv: Optional[List[str]] = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    os.umask(0o077)  # what it writes in job directories (launch.json, watcher.log) is the bridge user's only
    if args_in[:1] == ["serve"]:
        try:
            return serve()
        except BrokenPipeError:
            return 0  # the bridge went away
    raw = sys.stdin.read() if not sys.stdin.isatty() else ""
    request = json.loads(raw) if raw.strip() else {}
    sys.stdout.write(json.dumps(run_command(args_in, request)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
