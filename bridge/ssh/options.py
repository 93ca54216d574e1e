"""Where and how the SSH bridge connects: the ``ssh`` section of ``bridge.json``.

    {"ssh": {"host": "lab1.example.org", "user": "alice", "port": 22,
             "identityFile": "~/.ssh/id_ed25519", "knownHostsFile": "~/.ssh/known_hosts",
             "jumpHost": "alice@gateway.example.org", "remoteDir": "pairio-bridge"}}

Only key files and an SSH agent authenticate: no password is ever stored. An encrypted
key's passphrase is asked for at start (kept in memory only), or the key is loaded into
``ssh-agent``. The same options serve the Slurm bridge's ``--ssh``.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_PORT = 22

_DESTINATION = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:@\s\[\]]+))(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Destination:
    """One SSH endpoint: ``user@host:port``."""

    host: str
    port: int
    user: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def parse_destination(text: str, *, default_user: Optional[str] = None, default_port: int = DEFAULT_PORT) -> Destination:
    """``[USER@]HOST[:PORT]`` (an IPv6 address in brackets); raises ValueError saying what is expected."""
    match = _DESTINATION.match(text.strip())
    if match is None:
        raise ValueError(f"expected [USER@]HOST[:PORT], e.g. alice@lab1.example.org:22; got {text!r}")
    port = int(match["port"]) if match["port"] else default_port
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range in {text!r}")
    return Destination(host=match["ipv6"] or match["host"], port=port, user=match["user"] or default_user or getpass.getuser())


class SshOptions(BaseModel):
    """How to reach the remote host and where jobs go there."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="the remote host's name or address")
    user: Optional[str] = Field(default=None, description="the remote user [default: this machine's user name]")
    port: int = Field(default=DEFAULT_PORT, gt=0, lt=65536)
    identityFile: Optional[str] = Field(default=None, description="private key file [default: ~/.ssh/id_* and the agent]")
    knownHostsFile: str = Field(default="~/.ssh/known_hosts", description="host keys the remote host's key is checked against")
    acceptNewHostKey: bool = Field(
        default=False, description="trust a host missing from knownHostsFile on first use and record its key there (never a changed key)"
    )
    useAgent: bool = Field(default=True, description="try the keys of ssh-agent ($SSH_AUTH_SOCK)")
    jumpHost: Optional[str] = Field(default=None, description="[USER@]HOST[:PORT] to connect through (like ssh's ProxyJump)")
    remoteDir: Optional[str] = Field(
        default=None,
        description="the bridge's directory on the remote host, relative to the remote home [default: pairio-bridge/<compute client id>]; "
        "one per bridge: ended jobs' directories there that this bridge no longer keeps are removed",
    )
    remotePython: str = Field(default="python3", description="Python 3 on the remote host (psutil optional on Linux)")
    remoteDownloads: bool = Field(
        default=False, description="the remote host downloads inputs from their URLs itself (it has network); uploaded by SFTP when that fails"
    )
    pinCpus: bool = Field(default=True, description="bind each job to numCpus CPUs of its own (CPU affinity) on Linux hosts")
    gpus: Optional[list[str]] = Field(default=None, description="GPU ids the bridge may hand out there [default: detected with nvidia-smi -L]")
    connectTimeoutSec: float = Field(default=15.0, gt=0, le=600)
    keepaliveSec: float = Field(default=15.0, ge=0, le=3600, description="keepalive interval, so a dead connection is noticed (0: off)")
    commandTimeoutSec: float = Field(default=120.0, gt=0, le=3600, description="longest wait for one remote command")
    maxSessions: int = Field(default=8, ge=1, le=64, description="channels open at once on the connection (sshd's MaxSessions is 10 by default)")

    @field_validator("host")
    @classmethod
    def _host_is_a_name(cls, v: str) -> str:
        v = v.strip()
        if not v or any(c.isspace() or c in "@/" for c in v):
            raise ValueError(f"expected a host name or address, got {v!r} (put the user in 'user' and the port in 'port')")
        return v

    @field_validator("jumpHost")
    @classmethod
    def _jump_host_parses(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            parse_destination(v)
        return v

    @field_validator("remotePython")
    @classmethod
    def _python_is_set(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("remotePython must name a Python 3 executable on the remote host, e.g. python3")
        return v.strip()

    @classmethod
    def from_destination(cls, text: str, **others: object) -> "SshOptions":
        """Options from ``USER@HOST[:PORT]`` plus any other fields."""
        destination = parse_destination(text)
        return cls.model_validate({**others, "host": destination.host, "port": destination.port, "user": destination.user})

    @property
    def destination(self) -> Destination:
        return Destination(host=self.host, port=self.port, user=self.user or getpass.getuser())

    @property
    def jump_destination(self) -> Optional[Destination]:
        return parse_destination(self.jumpHost, default_user=self.destination.user) if self.jumpHost else None

    @property
    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.knownHostsFile))

    @property
    def identity_path(self) -> Optional[Path]:
        return Path(os.path.expanduser(self.identityFile)) if self.identityFile else None
