"""A real sshd on 127.0.0.1 for the SSH tests, with its own host key, client key and known_hosts.

``sshd`` is a session-scoped fixture: ``/usr/sbin/sshd -D -e -f CONFIG`` on a free port,
logging in the current user with a key made here (``ssh-keygen``). ``TestSshd.restart()``
stops it and every connection it serves, then starts it again on the same port: a
dropped connection, as a rebooted gateway or a restarted sshd gives. Without sshd the
SSH tests are skipped, except under CI=true, where they fail saying what to install.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import psutil
import pytest

from bridge.ssh.options import SshOptions

from .hubtools import free_port

SSHD = "/usr/sbin/sshd"


def require_ssh_tools() -> None:
    """Skip (outside CI) or fail (under CI=true) when the OpenSSH server or ssh-keygen is missing."""
    missing = [name for name, found in ((SSHD, os.access(SSHD, os.X_OK)), ("ssh-keygen", shutil.which("ssh-keygen"))) if not found]
    if not missing:
        return
    message = (
        f"the SSH tests need {' and '.join(missing)}: install openssh-server and openssh-client "
        "(bash scripts/ensure-test-packages.sh does, as root)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def make_key(path: Path, comment: str = "pairio-test") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, timeout=30)
    return path


class TestSshd:
    """One sshd: its files live in ``dir``; ``options()`` are SshOptions that reach it."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, directory: Path, set_env: Optional[dict[str, str]] = None) -> None:
        """``set_env``: variables every login gets (sshd's SetEnv), e.g. a container engine's private settings."""
        self.dir = directory
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = make_key(directory / "host_ed25519", "test-sshd-host")
        self.client_key = make_key(directory / "client_ed25519", "test-client")
        self.pid_file = directory / "sshd.pid"
        self.config = directory / "sshd_config"
        self.log_file = directory / "sshd.log"
        authorized = directory / f"authorized_keys.{self.user}"
        authorized.write_text((directory / "client_ed25519.pub").read_text())
        authorized.chmod(0o600)
        host_public = (directory / "host_ed25519.pub").read_text().split()
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public[0]} {host_public[1]}\n")
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pid_file}",
                    f"AuthorizedKeysFile {directory}/authorized_keys.%u",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",  # keys under /tmp would fail "bad ownership or modes"
                    "AllowTcpForwarding yes",  # the jump host test tunnels through this same sshd
                    "MaxStartups 100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    *([" ".join(["SetEnv", *(f"{k}={v}" for k, v in set_env.items())])] if set_env else []),
                    "",
                ]
            )
        )
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # "Missing privilege separation directory" otherwise
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._listening():
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log_file.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within 10 s: {self.log_file.read_text()[-2000:]}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop the listener and every connection it serves (their per-connection sshd processes)."""
        if self.process is None:
            return
        try:
            sessions = [p for p in psutil.Process(self.process.pid).children(recursive=True) if p.name().startswith("sshd")]
        except psutil.Error:
            sessions = []
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for p in sessions:
            try:
                p.kill()
            except psutil.Error:
                pass
        self.process = None

    def restart(self, down_sec: float = 0.0) -> None:
        self.stop()
        time.sleep(down_sec)
        self.start()

    def destination(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def options(self, **overrides: Any) -> SshOptions:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identityFile": str(self.client_key),
            "knownHostsFile": str(self.known_hosts),
            "useAgent": False,
            "connectTimeoutSec": 5.0,
        }
        values.update(overrides)
        return SshOptions.model_validate(values)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSshd]:
    require_ssh_tools()
    server = TestSshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
