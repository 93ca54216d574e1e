"""HTTP/1.1 to the hub for the bridge's calls: keep-alive connections of the standard library, or httpx where it must.

A bridge makes two or three calls per job (claim, 'running', finish), each a small JSON body
and answer. httpx spends about 0.8 ms of CPU per such call on this kind of machine (its
request and response models, cookie jar, connection pool with its own locking), the
standard library's ``http.client`` on a kept-alive connection about 0.2 ms; with short jobs
the difference is a visible part of what the bridge costs per job (bench/README.md, P1).

``connections_to(hub_url)`` chooses:

- ``KeepAliveConnections`` for a plain ``http://`` hub reached directly (the usual set-up:
  the hub on the same machine or network, or a TLS proxy in front of it on the hub's side);
- ``HttpxConnections`` for an ``https://`` hub, or when the environment sends the hub's
  traffic through a proxy (``HTTP_PROXY`` and friends, ``NO_PROXY``), or when a test hands
  in an httpx transport: httpx's certificate handling (certifi, ``SSL_CERT_FILE``) and proxy
  support stay what they were.

Both give a ``HubResponse`` (the whole body read) and raise ``HubConnectionError`` when no
answer came; its ``surely_not_sent`` says the request never left (so even a claim may be
repeated). ``bridge/hub_api.py`` owns the retries, the errors users see and the key's
masking; nothing here logs or keeps the headers it sends.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union
from urllib.parse import urlencode, urlsplit

import httpx

IDLE_REUSE_SEC = 3.0
"""a kept-alive connection idle longer than this is closed, not reused: servers close idle ones (uvicorn after 5 s)
and a request written into a connection the server is closing may be lost without an answer"""
MAX_IDLE_CONNECTIONS = 8
"""idle connections kept for the bridge's threads (main loop, reporting workers, heartbeat); more are closed"""
Body = Union[bytes, Iterable[bytes], None]


class HubConnectionError(Exception):
    """No answer from the hub: refused, timed out, dropped. ``surely_not_sent``: the request never reached it."""

    def __init__(self, kind: str, detail: str, *, surely_not_sent: bool) -> None:
        super().__init__(detail)
        self.kind = kind
        self.surely_not_sent = surely_not_sent


@dataclass(frozen=True)
class HubResponse:
    """A whole answer: status, reason, body; ``method`` and ``path`` of the request it answers."""

    status_code: int
    reason_phrase: str
    content: bytes
    method: str
    path: str

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsonlib.loads(self.content)


class HubConnections(Protocol):
    def request(
        self, method: str, path: str, *, headers: dict[str, str], json: Any = None, params: Optional[dict[str, Any]] = None,
        content: Body = None, timeout: Optional[float] = None,
    ) -> HubResponse: ...

    def close(self) -> None: ...


def connections_to(hub_url: str, timeout: float, transport: Optional[httpx.BaseTransport] = None) -> HubConnections:
    """The connections for ``hub_url`` (see the module doc); ``timeout`` bounds each connect, read and write."""
    parts = urlsplit(hub_url)
    if transport is None and parts.scheme == "http" and parts.hostname and not _proxied(parts.hostname):
        return KeepAliveConnections(parts.hostname, parts.port or 80, parts.path.rstrip("/"), timeout)
    return HttpxConnections(hub_url, timeout, transport)


def _proxied(host: str) -> bool:
    """Whether the environment sends plain HTTP to ``host`` through a proxy (as httpx and urllib read it)."""
    proxies = urllib.request.getproxies()
    if not (proxies.get("http") or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(host)


def _json_body(json: Any) -> bytes:
    return jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class KeepAliveConnections:
    """``http.client`` connections to one hub, kept alive and shared by the bridge's threads (one call at a time each)."""

    def __init__(self, host: str, port: int, base_path: str, timeout: float) -> None:
        self.host, self.port, self.base_path = host, port, base_path
        self.timeout = timeout
        self.connect_timeout = min(timeout, 10.0)
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(
        self, method: str, path: str, *, headers: dict[str, str], json: Any = None, params: Optional[dict[str, Any]] = None,
        content: Body = None, timeout: Optional[float] = None,
    ) -> HubResponse:
        target = self.base_path + path + (f"?{urlencode(params)}" if params else "")
        sent_headers = {"Host": self._host_header(), "Accept": "application/json", **headers}
        body: Body = content
        if json is not None:
            body = _json_body(json)
            sent_headers["Content-Type"] = "application/json"
        elif body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        conn = self._take()
        read_timeout = self.timeout if timeout is None else timeout
        try:
            if conn.sock is None:
                conn.timeout = self.connect_timeout
                conn.connect()
            conn.sock.settimeout(read_timeout)
        except OSError as e:
            conn.close()
            kind = "ConnectTimeout" if isinstance(e, socket.timeout) else "ConnectError"
            raise HubConnectionError(kind, f"{e}", surely_not_sent=True) from None
        try:
            conn.request(method, target, body=body, headers=sent_headers)  # an iterable body goes chunked
            answer = conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if isinstance(e, socket.timeout):
                raise HubConnectionError("ReadTimeout", f"no answer within {read_timeout:g} s", surely_not_sent=False) from None
            raise HubConnectionError(type(e).__name__, str(e) or type(e).__name__, surely_not_sent=False) from None
        if answer.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return HubResponse(answer.status, answer.reason, data, method, path)

    def _host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address, as the URL wrote it
        return host if self.port == 80 else f"{host}:{self.port}"

    def _take(self) -> http.client.HTTPConnection:
        """An idle connection that still looks open (none idle too long, none the server closed), else a new one."""
        now = time.monotonic()
        with self._lock:
            while self._idle:
                conn, since = self._idle.pop()
                if now - since <= IDLE_REUSE_SEC and conn.sock is not None and not _readable(conn.sock):
                    return conn
                conn.close()
        return http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


def _readable(sock: socket.socket) -> bool:
    """An idle kept-alive socket with something to read has been closed by the server (or is out of step): not reusable."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class HttpxConnections:
    """httpx for what the kept-alive connections do not cover: TLS, proxies, a test's transport."""

    def __init__(self, hub_url: str, timeout: float, transport: Optional[httpx.BaseTransport] = None) -> None:
        self._base_path = urlsplit(hub_url).path.rstrip("/")
        self._http = httpx.Client(base_url=hub_url, transport=transport, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    def request(
        self, method: str, path: str, *, headers: dict[str, str], json: Any = None, params: Optional[dict[str, Any]] = None,
        content: Body = None, timeout: Optional[float] = None,
    ) -> HubResponse:
        try:
            response = self._http.request(
                method, path, json=json, params=params, content=content, headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as e:
            raise HubConnectionError(type(e).__name__, str(e), surely_not_sent=isinstance(e, _NOT_SENT)) from None
        return HubResponse(response.status_code, response.reason_phrase, response.content, method, path)

    def close(self) -> None:
        self._http.close()
