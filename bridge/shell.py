"""The one shell seam of the bridges: run a command, put a file, get a file, stat, remove.

Backends that drive another program (Slurm's commands) or another machine (SSH) do it
only through a ``Shell``. ``LocalShell`` works on this machine with subprocess; the SSH
bridge's ``SshShell`` (bridge/ssh/connection.py, the only module that imports paramiko)
does the same over one SSH connection, so the Slurm backend drives a cluster on this
login node or on a remote one without knowing which.

Commands are argv lists, never shell strings: a remote shell gets them quoted with
``shlex.join``, so file names and user values cannot inject anything.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

DEFAULT_COMMAND_TIMEOUT_SEC = 60.0


class ShellError(Exception):
    """A command could not be run at all, or a file operation failed; the message says how to fix it."""


class ShellUnavailableError(ShellError):
    """The machine cannot be reached right now (connection refused or dropped); worth retrying later."""


class CommandNotFoundError(ShellError):
    """The program does not exist there (exit status 127 from a remote shell)."""


class CommandTimeoutError(ShellError):
    """The command did not finish within its timeout and was abandoned."""


class ShellAccessError(ShellError):
    """The machine answered but refused us (authentication failed, host key unknown or changed).

    Retrying does not help: a person must fix the credentials or the known_hosts file.
    """


class DiskFullError(ShellError):
    """No space left on the device a file was being written to; the message says where and how much is free."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def output_summary(self, limit: int = 2000) -> str:
        """stderr (else stdout), trimmed: what a person needs to see when the command failed."""
        text = (self.stderr.strip() or self.stdout.strip())
        return text if len(text) <= limit else "..." + text[-limit:]

    def check(self) -> "CommandResult":
        if self.exit_code != 0:
            raise CommandFailedError(self)
        return self


class CommandFailedError(ShellError):
    """A command ran and exited with a non-zero status; ``result`` holds its output."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        summary = result.output_summary() or "(no output)"
        super().__init__(f"{result.argv[0]} exited with status {result.exit_code}: {summary}")


class ShellStream(ABC):
    """A command left running there: bytes written to its stdin, lines read from its stdout (stderr is dropped)."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Write to its stdin; ShellUnavailableError when it (or the connection) ended."""

    @abstractmethod
    def read_line(self) -> bytes:
        """The next line of its stdout (blocks); b"" once it ended or the connection dropped."""

    @abstractmethod
    def close(self) -> None:
        """Close its stdin and let go of it (it should then exit); safe to call twice."""


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime: float
    is_dir: bool


class Shell(ABC):
    """Where commands run and files live: this machine or another one."""

    description: str
    """Says where, for messages: "this machine", "alice@login1:22"."""

    is_local: bool = False
    """True when paths name this machine's files (no copying needed)."""

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: float = DEFAULT_COMMAND_TIMEOUT_SEC,
    ) -> CommandResult:
        """Run ``argv`` and wait for it. ``env`` is added to the environment there.

        A non-zero exit status is returned, not raised (``.check()`` raises); a missing
        program raises CommandNotFoundError, an unreachable machine ShellUnavailableError.
        """

    @abstractmethod
    def put_file(self, local_path: Path, path: str, *, mode: Optional[int] = None) -> None:
        """Copy a local file to ``path`` there (parent directories must exist), replacing it atomically."""

    @abstractmethod
    def get_file(self, path: str, local_path: Path) -> None:
        """Copy the file at ``path`` there to ``local_path`` here."""

    @abstractmethod
    def stat(self, path: str) -> Optional[FileStat]:
        """The file's size and modification time, or None when it does not exist."""

    @abstractmethod
    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Delete a file (or a directory tree with ``recursive``); missing is fine."""

    def makedirs(self, *paths: str) -> None:
        """Create directories and their parents (``mkdir -p``); existing ones are fine."""
        if paths:
            self.run(["mkdir", "-p", "--", *paths]).check()

    def open_stream(self, argv: Sequence[str]) -> ShellStream:
        """Start ``argv`` and keep it running, talking to it through its stdin and stdout (one long-lived agent).

        Shells that cannot raise NotImplementedError; callers then run one command per request.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot keep a command running")

    def close(self) -> None:  # noqa: B027 - optional: only shells that hold connections override it
        """Release connections; the shell may not be used afterwards."""


class ProcessStream(ShellStream):
    """A local process as a ShellStream."""

    def __init__(self, argv: Sequence[str]) -> None:
        try:
            self._process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            raise CommandNotFoundError(f"{argv[0]!r} was not found on this machine's PATH; install it or configure its full path") from None
        except PermissionError as e:
            raise ShellError(f"cannot run {argv[0]!r}: {e}") from None

    def send(self, data: bytes) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(data)
            self._process.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as e:
            raise ShellUnavailableError(f"{self._process.args[0]} ended ({e})") from None

    def read_line(self) -> bytes:
        assert self._process.stdout is not None
        try:
            return self._process.stdout.readline()
        except (ValueError, OSError):
            return b""

    def close(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except OSError:
                pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class LocalShell(Shell):
    """This machine: subprocess and the file system."""

    description = "this machine"
    is_local = True

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: float = DEFAULT_COMMAND_TIMEOUT_SEC,
    ) -> CommandResult:
        argv = tuple(argv)
        if not argv:
            raise ValueError("empty command")
        try:
            completed = subprocess.run(
                argv,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
                env={**os.environ, **env} if env else None,
            )
        except FileNotFoundError:
            raise CommandNotFoundError(
                f"{argv[0]!r} was not found on this machine's PATH; install it or configure its full path"
            ) from None
        except PermissionError as e:
            raise ShellError(f"cannot run {argv[0]!r}: {e}") from None
        except subprocess.TimeoutExpired:
            raise CommandTimeoutError(f"{argv[0]} did not finish within {timeout:g} s") from None
        return CommandResult(
            argv=argv,
            exit_code=completed.returncode,
            stdout=completed.stdout.decode("utf-8", "replace"),
            stderr=completed.stderr.decode("utf-8", "replace"),
        )

    def put_file(self, local_path: Path, path: str, *, mode: Optional[int] = None) -> None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(6).hex()}.part")  # unique: writers never share it
        try:
            if mode is not None:
                # created with its mode: a secret is never readable by others, not even for a moment
                with open(local_path, "rb") as source, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
                    shutil.copyfileobj(source, out)
            else:
                shutil.copyfile(local_path, tmp)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                raise DiskFullError(f"no space left on this machine's device for {target}") from None
            raise

    def get_file(self, path: str, local_path: Path) -> None:
        shutil.copyfile(path, local_path)

    def open_stream(self, argv: Sequence[str]) -> ShellStream:
        return ProcessStream(argv)

    def stat(self, path: str) -> Optional[FileStat]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return FileStat(size=st.st_size, mtime=st.st_mtime, is_dir=os.path.isdir(path))

    def makedirs(self, *paths: str) -> None:
        for path in paths:
            os.makedirs(path, mode=0o700, exist_ok=True)  # job directories are the bridge user's only

    def remove(self, path: str, *, recursive: bool = False) -> None:
        p = Path(path)
        if recursive and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
