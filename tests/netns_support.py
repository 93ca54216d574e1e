"""A network namespace of the test's own, with only loopback up, for programs that would reach past this machine.

The original compute client subscribes to PubNub's cloud as it starts; run in such a namespace,
its requests fail at once (no route, no name server) and nothing leaves the machine. What it must
reach comes in by loopback only: ``LoopbackRelay`` listens on 127.0.0.1:PORT inside the namespace
and forwards each connection to 127.0.0.1:PORT of the test's own network (the hub).

Programs enter it with ``nsenter --net=/run/netns/NAME`` (the network only: they keep the
machine's mounts, so a podman service there shares the session's container store). Creating a
namespace needs root (``ip netns add``); without it the tests are skipped, and fail under CI=true.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
COPY_CHUNK = 64 * 1024


@dataclass(frozen=True)
class NetworkNamespace:
    name: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in this namespace (its network only)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def pids(self) -> list[int]:
        """The processes in this namespace now."""
        inode = self.path.stat().st_ino
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if (entry / "ns" / "net").stat().st_ino == inode:
                        found.append(int(entry.name))
                except OSError:  # gone meanwhile, or not ours to look at
                    continue
        return found

    def command_lines(self) -> dict[int, str]:
        lines = {}
        for pid in self.pids():
            try:
                lines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
        return lines


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def network_namespace(prefix: str) -> Iterator[NetworkNamespace]:
    """A new namespace with loopback up; on the way out, what still runs in it is ended and it is deleted."""
    if os.geteuid() != 0:
        _fail_or_skip("these tests make a network namespace of their own ('ip netns add'), which needs root")
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        _fail_or_skip(f"these tests need {' and '.join(missing)} (packages iproute2, util-linux)")
    namespace = NetworkNamespace(f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}")
    made = subprocess.run(["ip", "netns", "add", namespace.name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        _fail_or_skip(f"could not make a network namespace ('ip netns add'): {made.stderr.strip()}")
    try:
        subprocess.run(namespace.command(["ip", "link", "set", "lo", "up"]), check=True, capture_output=True, timeout=30)
        yield namespace
    finally:
        end_processes(namespace)
        subprocess.run(["ip", "netns", "delete", namespace.name], capture_output=True, check=False)


def end_processes(namespace: NetworkNamespace, grace_sec: float = 10) -> None:
    """Everything still running in the namespace was started by the test: SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in namespace.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_sec
        while namespace.pids() and time.monotonic() < deadline:
            time.sleep(0.1)


# ---------------------------------------------------------------- a way in for the hub


def _listen_inside(namespace: NetworkNamespace, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:port of the namespace, made by a thread that moved there (setns
    moves only the calling thread); the socket stays in that namespace after the thread ends."""
    made: dict[str, object] = {}

    def enter_and_listen() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(namespace.path, "rb") as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {namespace.path}: {os.strerror(err)}")
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(64)
            made["socket"] = listener
        except OSError as e:
            made["error"] = e

    thread = threading.Thread(target=enter_and_listen, name=f"enter-{namespace.name}")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]  # type: ignore[misc]
    listener = made["socket"]
    assert isinstance(listener, socket.socket)
    return listener


class LoopbackRelay:
    """127.0.0.1:port inside the namespace, forwarded to 127.0.0.1:port of the test's own network."""

    def __init__(self, namespace: NetworkNamespace, port: int) -> None:
        self.port = port
        self._listener = _listen_inside(namespace, port)
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"relay-{port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                inside, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._forward, args=(inside,), daemon=True).start()

    def _forward(self, inside: socket.socket) -> None:
        inside.settimeout(None)
        try:
            outside = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        except OSError:
            inside.close()
            return
        outside.settimeout(None)
        back = threading.Thread(target=_copy, args=(outside, inside), daemon=True)
        back.start()
        _copy(inside, outside)
        back.join()
        inside.close()
        outside.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(COPY_CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
