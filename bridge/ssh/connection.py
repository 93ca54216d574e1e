"""SshShell: the shell seam (bridge/shell.py) over one SSH connection. The only module that imports paramiko.

One connection (and one SFTP session on it) serves every command and file of the
bridge. When it drops, the next call reconnects, with a growing pause between failed
attempts (``ShellUnavailableError`` meanwhile), so callers simply retry later; jobs on
the remote host run detached and are not affected.

Host keys are checked against a known_hosts file: an unknown host is refused with the
command that trusts it, unless ``acceptNewHostKey`` records it on first use; a changed
key is always refused. Keys come from a key file and/or ssh-agent; a jump host
(ssh's ProxyJump) is reached the same way and tunnels the connection.

Errors (all ``ShellError``): ``ShellUnavailableError`` (unreachable, dropped: retry),
``HostKeyError`` and ``AuthenticationFailedError`` (``ShellAccessError``: a person must act),
``CommandNotFoundError`` (exit status 127), ``CommandTimeoutError``, ``DiskFullError``.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import select
import shlex
import shutil
import socket
import stat as stat_module
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import paramiko

from bridge.shell import (
    DEFAULT_COMMAND_TIMEOUT_SEC,
    CommandNotFoundError,
    CommandResult,
    CommandTimeoutError,
    DiskFullError,
    FileStat,
    Shell,
    ShellAccessError,
    ShellError,
    ShellStream,
    ShellUnavailableError,
)

from .options import Destination, SshOptions

log = logging.getLogger("bridge.ssh")

RECONNECT_BACKOFF_MIN_SEC = 0.5
RECONNECT_BACKOFF_MAX_SEC = 30.0
READ_CHUNK_BYTES = 65536


class HostKeyError(ShellAccessError):
    """The host's key is not in the known_hosts file, or differs from the one recorded there."""


class AuthenticationFailedError(ShellAccessError):
    """The host refused every key we offered (or an encrypted key's passphrase is needed)."""


class KeyPassphraseNeededError(AuthenticationFailedError):
    """The identity file is encrypted and no passphrase was given."""


def remote_command_line(argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> str:
    """The line the remote shell runs: argv quoted with shlex.join, ``env`` set inline (the remote
    command gets a non-login environment, so variables are passed explicitly)."""
    if not argv:
        raise ValueError("empty command")
    prefix = ["env", *(f"{name}={value}" for name, value in env.items())] if env else []
    return shlex.join([*prefix, *argv])


def host_key_name(destination: Destination) -> str:
    """How known_hosts names a host: ``host`` on port 22, ``[host]:port`` otherwise."""
    return destination.host if destination.port == 22 else f"[{destination.host}]:{destination.port}"


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuses a host missing from known_hosts with the way to trust it; or, when asked to, records it."""

    def __init__(self, known_hosts: Path, accept_new: bool, destination: Destination) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.destination = destination

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            port = f" -p {self.destination.port}" if self.destination.port != 22 else ""
            raise HostKeyError(
                f"the host {hostname} is not in {self.known_hosts} (its key: {fingerprint(key)}). "
                f"Check that fingerprint with the host's administrator, then trust it with "
                f"'ssh-keyscan{port} {self.destination.host} >> {self.known_hosts}' (or by connecting once with ssh), "
                "or run the bridge once with --accept-new-host-key to record it on first use"
            )
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.known_hosts, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("recorded the new host key of %s (%s) in %s", hostname, fingerprint(key), self.known_hosts)


class ChannelStream(ShellStream):
    """A command on an SSH channel of its own: its stdin and its stdout's lines."""

    def __init__(self, channel: paramiko.Channel, program: str, where: str, release: Callable[[], None]) -> None:
        self._channel = channel
        self._stdout = channel.makefile("rb")
        self._program = program
        self._where = where
        self._release: Optional[Callable[[], None]] = release
        self._close_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        try:
            self._channel.sendall(data)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ShellUnavailableError(f"{self._program} on {self._where} ended ({e or type(e).__name__})") from None

    def read_line(self) -> bytes:
        try:
            line: bytes = self._stdout.readline()
        except (paramiko.SSHException, OSError, EOFError):
            return b""
        return line

    def close(self) -> None:
        with self._close_lock:
            release, self._release = self._release, None
        if release is None:
            return
        try:
            self._channel.shutdown_write()  # its stdin ends: the program exits
            self._channel.close()
        except (paramiko.SSHException, OSError, EOFError):
            pass
        finally:
            release()


class SshShell(Shell):
    """Commands and files on one remote host, over one reused SSH connection."""

    def __init__(self, options: SshOptions, *, passphrase: Optional[str] = None) -> None:
        self.options = options
        self.destination = options.destination
        self.description = str(self.destination)
        self.passphrase = passphrase
        """an encrypted identity file's passphrase, held in memory only"""
        self._lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        self._sessions = threading.BoundedSemaphore(max(1, options.maxSessions - 1))  # one is the SFTP session's
        self._client: Optional[paramiko.SSHClient] = None
        self._jump_client: Optional[paramiko.SSHClient] = None
        self._sftp: Optional[paramiko.SFTPClient] = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: Optional[ShellError] = None
        self._closed = False
        self.connections_made = 0
        """how many times a connection was opened (1 + reconnects), for logs and tests"""

    # ------------------------------------------------------------ connection

    def connect(self) -> None:
        """Connect now (or check the connection is up), ignoring any backoff; raises the precise ShellError."""
        with self._lock:
            self._retry_at = 0.0
            self._transport()

    @property
    def connected(self) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._closed:
                raise ShellError(f"the SSH connection to {self.description} was closed")
            client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if client is not None:
                log.warning("the SSH connection to %s dropped; reconnecting", self.description)
                self._disconnect()
            now = time.monotonic()
            if now < self._retry_at and self._last_error is not None:
                raise type(self._last_error)(f"{self._last_error} (next attempt in {self._retry_at - now:.0f} s)")
            try:
                self._client, self._jump_client = self._open()
            except ShellError as e:
                self._failures += 1
                self._last_error = e
                self._retry_at = now + min(RECONNECT_BACKOFF_MAX_SEC, RECONNECT_BACKOFF_MIN_SEC * 2 ** min(self._failures, 8))
                raise
            if self._failures:
                log.info("reconnected to %s", self.description)
            self._failures, self._last_error = 0, None
            self.connections_made += 1
            transport = self._client.get_transport()
            assert transport is not None
            return transport

    def _open(self) -> tuple[paramiko.SSHClient, Optional[paramiko.SSHClient]]:
        jump = self.options.jump_destination
        jump_client: Optional[paramiko.SSHClient] = None
        sock: Any = None
        if jump is not None:
            jump_client = self._open_client(jump, None, via="")
            jump_transport = jump_client.get_transport()
            assert jump_transport is not None
            try:
                sock = jump_transport.open_channel(
                    "direct-tcpip", (self.destination.host, self.destination.port), ("127.0.0.1", 0),
                    timeout=self.options.connectTimeoutSec,
                )
            except (paramiko.SSHException, OSError, EOFError) as e:
                jump_client.close()
                raise ShellUnavailableError(
                    f"the jump host {jump} could not open a connection to {self.destination.host}:{self.destination.port} ({e}); "
                    "check the host and port, and that the jump host allows TCP forwarding"
                ) from None
        try:
            client = self._open_client(self.destination, sock, via=f" through {jump}" if jump else "")
        except BaseException:
            if jump_client is not None:
                jump_client.close()
            raise
        if self.options.keepaliveSec > 0:
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(int(max(1, self.options.keepaliveSec)))
        return client, jump_client

    def _open_client(self, destination: Destination, sock: Any, *, via: str) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        known_hosts = self.options.known_hosts_path
        if known_hosts.exists():
            try:
                client.get_host_keys().load(str(known_hosts))
            except (OSError, paramiko.SSHException) as e:
                raise HostKeyError(f"cannot read the known_hosts file {known_hosts}: {e}") from None
        client.set_missing_host_key_policy(_HostKeyPolicy(known_hosts, self.options.acceptNewHostKey, destination))
        identity = self.options.identity_path
        if identity is not None and not identity.is_file():
            raise AuthenticationFailedError(f"the identity file {identity} does not exist; fix 'identityFile' (--identity)")
        where = f"{destination}{via}"
        try:
            client.connect(
                destination.host,
                port=destination.port,
                username=destination.user,
                key_filename=str(identity) if identity else None,
                passphrase=self.passphrase,
                allow_agent=self.options.useAgent,
                look_for_keys=identity is None,
                timeout=self.options.connectTimeoutSec,
                banner_timeout=self.options.connectTimeoutSec,
                auth_timeout=self.options.connectTimeoutSec,
                sock=sock,
            )
        except ShellError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            name = host_key_name(destination)
            raise HostKeyError(
                f"HOST KEY MISMATCH for {name}: it presented {fingerprint(e.key)}, but {known_hosts} records "
                f"{fingerprint(e.expected_key)}. Someone may be intercepting the connection; if the host was "
                f"reinstalled, confirm its new key with its administrator, remove the old one with "
                f"'ssh-keygen -R \"{name}\" -f {known_hosts}' and trust the new one"
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise KeyPassphraseNeededError(
                f"the identity file {identity} is encrypted: load it into ssh-agent (ssh-add {identity}), "
                "or start the bridge in a terminal to be asked for its passphrase"
            ) from None
        except paramiko.AuthenticationException as e:
            client.close()
            offered = f"the key {identity}" if identity else "the keys in ~/.ssh"
            if self.options.useAgent:
                offered += " and ssh-agent's keys" if os.environ.get("SSH_AUTH_SOCK") else " (no ssh-agent: SSH_AUTH_SOCK is unset)"
            raise AuthenticationFailedError(
                f"authentication to {where} failed ({e}): it accepted none of {offered}. Add the public key to "
                f"~{destination.user}/.ssh/authorized_keys there, or point --identity at the right key"
            ) from None
        except (socket.timeout, TimeoutError) as e:
            client.close()
            raise ShellUnavailableError(f"cannot reach {where}: timed out after {self.options.connectTimeoutSec:g} s ({e})") from None
        except socket.gaierror as e:
            client.close()
            raise ShellUnavailableError(f"cannot reach {where}: the host name does not resolve ({e})") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            client.close()
            raise ShellUnavailableError(
                f"cannot reach {where}: {e or type(e).__name__}; check the host name and port, that sshd runs there, "
                "and that this machine may connect to it"
            ) from None
        return client

    def _disconnect(self) -> None:
        for closer in (self._sftp, self._client, self._jump_client):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001 - closing a dead connection may fail in many ways
                    pass
        self._sftp = self._client = self._jump_client = None

    def _dropped(self, error: BaseException, what: str) -> ShellUnavailableError:
        """A call failed on the connection: forget a dead connection (the next call reconnects); a live one
        that only refused a channel (sshd's MaxSessions) is kept for the other calls using it."""
        reason = f"{error or type(error).__name__}"
        with self._lock:
            if self.connected:
                return ShellUnavailableError(
                    f"{self.description} refused or closed a channel during {what} ({reason}); if this repeats, lower "
                    "ssh.maxSessions below sshd's MaxSessions"
                )
            self._disconnect()
        return ShellUnavailableError(f"the SSH connection to {self.description} dropped during {what} ({reason})")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._disconnect()

    # ------------------------------------------------------------ commands

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: float = DEFAULT_COMMAND_TIMEOUT_SEC,
    ) -> CommandResult:
        argv = tuple(argv)
        command = remote_command_line(argv, env)
        with self._sessions:
            return self._run(argv, command, stdin, timeout)

    def _run(self, argv: tuple[str, ...], command: str, stdin: Optional[bytes], timeout: float) -> CommandResult:
        transport = self._transport()
        deadline = time.monotonic() + timeout
        try:
            channel = transport.open_session(timeout=self.options.connectTimeoutSec)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._dropped(e, f"starting {argv[0]}") from None
        try:
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            stdout, stderr = self._collect(channel, deadline, argv, timeout)
            exit_code = channel.recv_exit_status()
        except ShellError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._dropped(e, f"{argv[0]}") from None
        finally:
            channel.close()
        if exit_code == -1:  # the channel closed without an exit status: the connection went away
            raise self._dropped(EOFError("no exit status"), argv[0])
        result = CommandResult(
            argv=argv, exit_code=exit_code, stdout=stdout.decode("utf-8", "replace"), stderr=stderr.decode("utf-8", "replace")
        )
        if exit_code == 127:
            raise CommandNotFoundError(
                f"{argv[0]!r} was not found on {self.description} ({result.output_summary(300) or 'exit status 127'}); "
                "install it there or configure its full path"
            )
        return result

    def _collect(self, channel: paramiko.Channel, deadline: float, argv: tuple[str, ...], timeout: float) -> tuple[bytes, bytes]:
        stdout, stderr = bytearray(), bytearray()
        while True:
            while channel.recv_ready():
                stdout += channel.recv(READ_CHUNK_BYTES)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(READ_CHUNK_BYTES)
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                if channel.eof_received or channel.closed:
                    return bytes(stdout), bytes(stderr)
            if channel.eof_received and channel.closed:
                return bytes(stdout), bytes(stderr)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeoutError(f"{argv[0]} did not finish within {timeout:g} s on {self.description}")
            transport = channel.get_transport()
            if transport is None or not transport.is_active():
                raise self._dropped(EOFError("connection lost"), argv[0])
            select.select([channel], [], [], min(remaining, 1.0))

    def open_stream(self, argv: Sequence[str]) -> ShellStream:
        """``argv`` left running on its own channel, which keeps one of the ``maxSessions`` slots until closed.

        With fewer than three slots (one is SFTP's) it is refused: commands must always find a free channel.
        """
        argv = tuple(argv)
        if self.options.maxSessions < 3:
            raise NotImplementedError(f"ssh.maxSessions is {self.options.maxSessions}: no channel to spare for a long-lived agent")
        if not self._sessions.acquire(timeout=self.options.connectTimeoutSec):
            raise ShellUnavailableError(f"every channel to {self.description} is busy; no long-lived agent for now")
        try:
            transport = self._transport()
            try:
                channel = transport.open_session(timeout=self.options.connectTimeoutSec)
                channel.exec_command(remote_command_line(argv, None))
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise self._dropped(e, f"starting {argv[0]}") from None
        except BaseException:
            self._sessions.release()
            raise
        return ChannelStream(channel, argv[0], self.description, self._sessions.release)

    # ------------------------------------------------------------ files

    def _with_sftp(self, what: str, action: Callable[[paramiko.SFTPClient], Any]) -> Any:
        self._transport()
        with self._sftp_lock:
            try:
                if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
                    client = self._client
                    if client is None:
                        raise self._dropped(EOFError("not connected"), what)
                    self._sftp = client.open_sftp()
                return action(self._sftp)
            except (paramiko.SSHException, EOFError, OSError) as e:
                if isinstance(e, OSError) and (e.errno is not None or self.connected):
                    raise  # a file error from the server (or paramiko's size check), not a dropped connection
                raise self._dropped(e, what) from None

    def home_dir(self) -> str:
        """The remote user's home directory (where relative paths start)."""
        result: str = self._with_sftp("finding the home directory", lambda sftp: sftp.normalize("."))
        return result

    def absolute_path(self, path: str) -> str:
        """``path`` as an absolute path there: ``~/x`` and relative paths start at the remote home."""
        if path.startswith("~/") or path == "~":
            path = path[2:]
        return posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(self.home_dir(), path))

    def put_file(self, local_path: Path, path: str, *, mode: Optional[int] = None) -> None:
        directory, name = posixpath.split(path)
        tmp = posixpath.join(directory, f".{name}.{os.getpid()}.{os.urandom(6).hex()}.part")  # unique: writers never share it

        def put(sftp: paramiko.SFTPClient) -> None:
            if mode is None:
                sftp.put(str(local_path), tmp)
            else:
                with sftp.open(tmp, "wb") as remote_file, open(local_path, "rb") as source:
                    remote_file.chmod(mode)  # before the first byte: a secret is never readable by others
                    remote_file.set_pipelined(True)
                    shutil.copyfileobj(source, remote_file, 32768)
            sftp.posix_rename(tmp, path)

        try:
            self._with_sftp(f"copying {local_path.name} there", put)
        except OSError as e:
            if e.errno == errno.ENOENT and not local_path.exists():
                raise
            self._raise_write_error(e, local_path, path, tmp)

    def _raise_write_error(self, error: OSError, local_path: Path, path: str, tmp: str) -> None:
        try:
            self._with_sftp("cleaning up", lambda sftp: sftp.remove(tmp))
        except (OSError, ShellError):
            pass
        directory = posixpath.dirname(path) or "."
        if error.errno == errno.ENOENT:
            raise ShellError(f"cannot write {path} on {self.description}: its directory {directory} does not exist") from None
        if error.errno == errno.EACCES:
            raise ShellError(f"cannot write {path} on {self.description}: permission denied") from None
        free = self.free_bytes(directory)
        size = local_path.stat().st_size if local_path.exists() else 0
        if free is not None and free < size + 1024 * 1024:
            raise DiskFullError(
                f"the remote disk is full: {path} ({size} bytes) does not fit on {self.description}, "
                f"where {free} bytes are free in {directory}; free some space there"
            ) from None
        raise ShellError(f"cannot write {path} on {self.description}: {error}") from None

    def free_bytes(self, path: str) -> Optional[int]:
        """Bytes free for us on the file system holding ``path`` (df), or None when unknown."""
        try:
            result = self.run(["df", "-Pk", path], timeout=self.options.commandTimeoutSec)
        except ShellError:
            return None
        lines = result.stdout.strip().splitlines()
        try:
            return int(lines[-1].split()[3]) * 1024 if result.ok and len(lines) >= 2 else None
        except (IndexError, ValueError):
            return None

    def get_file(self, path: str, local_path: Path) -> None:
        tmp = local_path.with_name(f".{local_path.name}.{os.getpid()}.{os.urandom(6).hex()}.part")
        try:
            self._with_sftp(f"copying {posixpath.basename(path)} here", lambda sftp: sftp.get(path, str(tmp)))
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno == errno.ENOENT:
                raise FileNotFoundError(errno.ENOENT, f"no file {path} on {self.description}") from None
            raise ShellError(f"cannot copy {path} from {self.description}: {e}") from None
        os.replace(tmp, local_path)

    def stat(self, path: str) -> Optional[FileStat]:
        def look(sftp: paramiko.SFTPClient) -> Optional[FileStat]:
            try:
                st = sftp.stat(path)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return None
                raise ShellError(f"cannot stat {path} on {self.description}: {e}") from None
            return FileStat(size=st.st_size or 0, mtime=float(st.st_mtime or 0), is_dir=stat_module.S_ISDIR(st.st_mode or 0))

        result: Optional[FileStat] = self._with_sftp(f"looking at {path}", look)
        return result

    def makedirs(self, *paths: str) -> None:
        """``mkdir -p`` by SFTP: no remote process is started."""

        def make(sftp: paramiko.SFTPClient) -> None:
            existing: set[str] = set()
            for path in paths:
                missing: list[str] = []
                current = posixpath.normpath(path)
                while current not in ("/", ".", "") and current not in existing:
                    try:
                        st = sftp.stat(current)
                    except OSError as e:
                        if e.errno != errno.ENOENT:
                            raise
                        missing.append(current)
                        current = posixpath.dirname(current)
                        continue
                    if not stat_module.S_ISDIR(st.st_mode or 0):
                        raise ShellError(f"cannot create {path} on {self.description}: {current} is not a directory")
                    break
                for directory in reversed(missing):
                    try:
                        sftp.mkdir(directory, mode=0o700)  # job directories are the bridge user's only
                    except OSError:
                        try:
                            made = sftp.stat(directory)  # created by someone else meanwhile?
                        except OSError:
                            made = None
                        if made is None or not stat_module.S_ISDIR(made.st_mode or 0):
                            raise
                    existing.add(directory)

        try:
            self._with_sftp("creating directories", make)
        except OSError as e:
            if e.errno == errno.EACCES:
                raise ShellError(f"cannot create {', '.join(paths)} on {self.description}: permission denied") from None
            free = self.free_bytes(posixpath.dirname(posixpath.normpath(paths[0])) or ".")
            if free == 0:
                raise DiskFullError(f"the remote disk is full: cannot create {paths[0]} on {self.description}; free some space there") from None
            raise ShellError(f"cannot create {', '.join(paths)} on {self.description}: {e}") from None

    def remove(self, path: str, *, recursive: bool = False) -> None:
        if recursive:
            self.run(["rm", "-rf", "--", path], timeout=self.options.commandTimeoutSec).check()
            return

        def remove(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise ShellError(f"cannot remove {path} on {self.description}: {e}") from None

        self._with_sftp(f"removing {path}", remove)
