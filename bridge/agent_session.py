"""One long-lived remote agent (``agent.py serve``) per connection: requests answered without a process each, job ends told at once.

``RemoteJobs`` sends its quick agent commands (probe, launch, sync, cancel) through an
``AgentSession`` when the shell can keep a command running (``Shell.open_stream``): one
Python process over there instead of one per command, and the moment a watched job's
result.json appears the agent says so (``{"ended": [dirs]}``), so the runner polls at once
instead of at its next interval. Nothing depends on the session: when it cannot be opened or
breaks, the caller runs the command the one-shot way, and polls still find every end.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Optional

from .shell import CommandTimeoutError, Shell, ShellError, ShellStream, ShellUnavailableError

log = logging.getLogger("bridge.remote")

READY_TIMEOUT_SEC = 30.0


class AgentSessionError(ShellError):
    """The agent answered the request with an error (it runs on; only this request failed)."""


class AgentSession:
    """``agent.py serve`` on the host behind ``shell``; ``call`` is thread-safe, answers may come in any order."""

    def __init__(self, shell: Shell, argv: Sequence[str], on_ended: Callable[[list[str]], None]) -> None:
        """Starts the agent and waits for its ready line; raises ShellError (NotImplementedError: the shell cannot)."""
        self.description = shell.description
        self._on_ended = on_ended
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._broken: Optional[str] = None
        self._ready: Future[dict[str, Any]] = Future()
        self._stream: ShellStream = shell.open_stream(argv)
        self._reader = threading.Thread(target=self._read, name="remote-agent-session", daemon=True)
        self._reader.start()
        try:
            self.agent_pid: Optional[int] = self._ready.result(timeout=READY_TIMEOUT_SEC).get("pid")
            """the agent's process id there (for tests and logs)"""
        except FutureTimeout:
            self.close()
            raise ShellUnavailableError(f"the bridge's agent on {self.description} did not start within {READY_TIMEOUT_SEC:g} s") from None
        except ShellError:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self._broken is None

    def call(self, args: Sequence[str], request: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        """The agent's answer to one command (``args`` as on its command line); ShellUnavailableError when the session broke."""
        ident = next(self._ids)
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._broken is not None:
                raise ShellUnavailableError(self._broken)
            self._pending[ident] = future
        line = json.dumps({"id": ident, "args": list(args), "request": dict(request)}).encode() + b"\n"
        try:
            with self._send_lock:
                self._stream.send(line)
            return future.result(timeout=timeout)
        except FutureTimeout:
            # it may still answer later; the session is no longer trusted to be quick
            self._break(f"the bridge's agent on {self.description} did not answer {args[0]} within {timeout:g} s")
            raise CommandTimeoutError(f"the bridge's agent on {self.description} did not answer {args[0]} within {timeout:g} s") from None
        except ShellUnavailableError as e:
            self._break(str(e))
            raise
        finally:
            with self._lock:
                self._pending.pop(ident, None)

    def close(self) -> None:
        self._break(f"the session with the bridge's agent on {self.description} was closed")

    def _break(self, why: str) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = why
            pending, self._pending = list(self._pending.values()), {}
        for future in [*pending, self._ready]:
            if not future.done():
                future.set_exception(ShellUnavailableError(why))
        self._stream.close()

    def _read(self) -> None:
        while True:
            line = self._stream.read_line()
            if not line:
                self._break(f"the bridge's agent on {self.description} ended (or its connection dropped)")
                return
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("the bridge's agent on %s wrote something else than JSON: %r", self.description, line[:300])
                continue
            if not isinstance(message, dict):
                continue
            if message.get("ready"):
                if not self._ready.done():
                    self._ready.set_result(message)
            elif "ended" in message:
                try:
                    self._on_ended([str(d) for d in message["ended"]])
                except Exception:  # noqa: BLE001 - a failing listener must not end the session
                    log.exception("handling the end of %s failed", message["ended"])
            else:
                with self._lock:
                    future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                if future is None or future.done():
                    continue
                if "error" in message:
                    future.set_exception(AgentSessionError(f"the bridge's agent on {self.description}: {message['error']}"))
                else:
                    future.set_result(message.get("answer") or {})
