"""One bridge per directory: an exclusive ``flock`` on ``DIR/.bridge.lock``, held while the bridge runs.

Two bridges on one directory would adopt each other's jobs and race on their files.
The kernel drops the lock when its process ends, however it ends, so a bridge killed
with SIGKILL never leaves a stale lock behind; the pid in the file only names the holder
in the error message. The descriptor is close-on-exec, so the watchers a bridge starts
(which outlive it) never hold the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

from .config import BridgeConfigError

LOCK_FILE_NAME = ".bridge.lock"

# The open descriptor is the lock: keep it for the life of the process.
_held: dict[Path, int] = {}


class BridgeDirLockedError(BridgeConfigError):
    """Another bridge process runs on this directory."""


def lock_bridge_dir(bridge_dir: Path) -> None:
    """Take the directory's lock for this process, or raise naming the pid that holds it."""
    bridge_dir = bridge_dir.resolve()
    if bridge_dir in _held:
        return
    path = bridge_dir / LOCK_FILE_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f"pid {holder}" if holder else "another process"
        raise BridgeDirLockedError(
            f"another bridge ({who}) is running on {bridge_dir}; stop it first"
            f"{f' (kill -TERM {holder})' if holder else ''}, or give this bridge a directory of its own "
            "(pairio-bridge register --dir NEW_DIR)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[bridge_dir] = fd


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
