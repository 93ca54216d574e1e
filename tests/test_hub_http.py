"""The bridge's connections to the hub (bridge/hub_http.py), against a real HTTP/1.1 server on 127.0.0.1.

The server counts the connections it accepts and records each request, so the tests see what
goes over the wire: one kept-alive connection for calls in a row, a new one when the server
closed the old, JSON and chunked bodies, query parameters, a path prefix, and the errors
that say whether a request may have reached the hub.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bridge.hub_api import HubApi, HubRejectedError, HubUnreachableError, RetryPolicy
from bridge.hub_http import HttpxConnections, HubConnectionError, KeepAliveConnections, connections_to
from pairio.status import JobStatus


@dataclass
class Seen:
    connections: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    close_after_answer: bool = False
    answer_status: int = 200
    silent: bool = False
    """the server reads requests and answers none until ``release`` is set"""
    release: threading.Event = field(default_factory=threading.Event)


def make_handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            seen.connections += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding") == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def _answer(self) -> None:
            body = self._body()
            seen.requests.append({
                "method": self.command, "path": self.path, "body": body, "headers": dict(self.headers),
                "connection": id(self.connection),
            })
            if seen.silent:
                seen.release.wait(30)  # no answer within the client's timeout
                self.close_connection = True
                return
            answer = json.dumps({"status": "running", "canceled": False, "detail": "refused (a test)"}).encode()
            self.send_response(seen.answer_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            if seen.close_after_answer:
                self.close_connection = True  # closes without saying so: the client finds out on its next call

        do_GET = do_POST = do_PUT = _answer

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(seen))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        seen.release.set()
        httpd.shutdown()
        httpd.server_close()


def test_plain_http_to_a_direct_hub_goes_over_kept_alive_connections() -> None:
    assert isinstance(connections_to("http://127.0.0.1:9", 5.0), KeepAliveConnections)
    assert isinstance(connections_to("https://hub.example.org", 5.0), HttpxConnections)
    ipv6 = connections_to("http://[::1]:8080/pairio", 5.0)
    assert isinstance(ipv6, KeepAliveConnections) and ipv6._host_header() == "[::1]:8080" and ipv6.base_path == "/pairio"


def test_a_hub_behind_a_proxy_goes_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert isinstance(connections_to("http://hub.internal:8080", 5.0), HttpxConnections)
    monkeypatch.setenv("NO_PROXY", "hub.internal")
    assert isinstance(connections_to("http://hub.internal:8080", 5.0), KeepAliveConnections)


def test_calls_in_a_row_share_one_connection(server: tuple[str, Seen]) -> None:
    url, seen = server
    conns = connections_to(url, 5.0)
    try:
        for i in range(20):
            answer = conns.request("POST", "/v1/compute/jobs/j/status", headers={"Authorization": "Bearer k"}, json={"i": i})
            assert answer.status_code == 200 and answer.json()["status"] == "running"
    finally:
        conns.close()
    assert seen.connections == 1
    first = seen.requests[0]
    assert first["headers"]["Content-Type"] == "application/json" and first["headers"]["Authorization"] == "Bearer k"
    assert [json.loads(r["body"])["i"] for r in seen.requests] == list(range(20))


def test_a_connection_the_server_closed_is_not_reused(server: tuple[str, Seen]) -> None:
    url, seen = server
    seen.close_after_answer = True
    conns = connections_to(url, 5.0)
    assert isinstance(conns, KeepAliveConnections)
    try:
        for _ in range(5):
            conns.request("GET", "/v1/compute/jobs", headers={})
            # the server's close reaches this side: wait until the idle socket shows it, as it would between calls
            idle = conns._idle[0][0].sock if conns._idle else None
            if idle is not None:
                assert select_readable(idle)
    finally:
        conns.close()
    assert seen.connections == 5 and len(seen.requests) == 5


def select_readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 30)[0])


def test_query_parameters_a_path_prefix_and_a_chunked_body(server: tuple[str, Seen]) -> None:
    url, seen = server
    conns = connections_to(url + "/pairio/", 5.0)
    try:
        conns.request("POST", "/v1/compute/jobs/a%2Fb/console-output", headers={}, params={"offset": 12}, content=b"abc")
        conns.request("PUT", "/v1/compute/jobs/j/outputs/o", headers={}, content=iter([b"part one, ", b"part two"]))
        conns.request("POST", "/v1/compute/heartbeat", headers={})
    finally:
        conns.close()
    assert seen.requests[0]["path"] == "/pairio/v1/compute/jobs/a%2Fb/console-output?offset=12"
    assert seen.requests[0]["body"] == b"abc"
    assert seen.requests[1]["body"] == b"part one, part two"
    assert seen.requests[1]["headers"]["Transfer-Encoding"] == "chunked"
    assert seen.requests[2]["headers"]["Content-Length"] == "0"


def test_a_refused_connection_surely_did_not_send() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    conns = connections_to(f"http://127.0.0.1:{port}", 5.0)
    with pytest.raises(HubConnectionError) as e:
        conns.request("POST", "/v1/compute/claim", headers={}, json={})
    assert e.value.surely_not_sent and e.value.kind == "ConnectError"


def test_no_answer_within_the_timeout_may_have_reached_the_hub(server: tuple[str, Seen]) -> None:
    url, seen = server
    seen.silent = True
    conns = connections_to(url, 5.0)
    with pytest.raises(HubConnectionError) as e:
        conns.request("POST", "/v1/compute/claim", headers={}, json={}, timeout=0.3)
    assert not e.value.surely_not_sent and e.value.kind == "ReadTimeout"
    seen.silent = False
    # the next call does not read the late answer of the one before: it has a connection of its own
    assert conns.request("GET", "/v1/compute/jobs", headers={}).status_code == 200
    conns.close()


def test_the_bridge_client_maps_answers_and_failures(server: tuple[str, Seen]) -> None:
    url, seen = server
    hub = HubApi(url, "secret-key-123", retry_policy=RetryPolicy(max_attempts=2, initial_delay_sec=0.01))
    try:
        assert hub.set_status("j1", JobStatus.RUNNING).status is JobStatus.RUNNING
        seen.answer_status = 409
        with pytest.raises(HubRejectedError) as rejected:
            hub.set_status("j1", JobStatus.RUNNING)
        assert rejected.value.status_code == 409 and rejected.value.message == "refused (a test)"
        seen.answer_status = 503
        with pytest.raises(HubUnreachableError) as unreachable:
            hub.set_status("j1", JobStatus.RUNNING)
        assert "secret-key-123" not in str(unreachable.value)
        assert len(seen.requests) == 4  # the 503 was retried once (an idempotent report)
    finally:
        hub.close()
