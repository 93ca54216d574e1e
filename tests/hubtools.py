"""Test helpers: hubs on SQLite or PostgreSQL, in-process or on real HTTP, and seed data."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from anyio.from_thread import start_blocking_portal
from sqlalchemy import create_engine, text

from hub.app import create_app
from hub.context import HubContext
from hub.core import accounts
from pairio.models import PairioApp

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("PAIRIO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

HELLO_WORLD_SPEC: dict[str, Any] = {
    "name": "hello_world",
    "description": "Hello world examples",
    "processors": [
        {
            "name": "hello_world_1",
            "description": "Prints Hello, world!",
            "image": "",
            "executable": "/app/main.py",
            "parameters": [{"name": "name", "type": "str", "default": "world", "description": "who to greet"}],
        },
        {
            "name": "hello_world_2",
            "description": "Writes Hello, <name>! to a file",
            "executable": "/app/main.py",
            "outputs": [{"name": "output", "description": "the greeting"}],
            "parameters": [{"name": "name", "type": "str", "default": "world"}],
        },
        {
            "name": "count_characters",
            "description": "Counts characters of a text file",
            "executable": "/app/main.py",
            "inputs": [{"name": "input"}],
            "outputs": [{"name": "output"}],
            "parameters": [{"name": "include_whitespace", "type": "bool", "default": True}],
        },
        {
            "name": "typed",
            "description": "A processor with every parameter type, for validation tests",
            "executable": "/app/main.py",
            "parameters": [
                {"name": "n", "type": "int", "required": True},
                {"name": "x", "type": "float", "default": 1.5},
                {"name": "flag", "type": "bool", "default": False},
                {"name": "names", "type": "List[str]", "default": []},
                {"name": "mode", "type": "str", "default": "fast", "options": ["fast", "slow"]},
                {"name": "maybe", "type": "Optional[int]", "default": None},
            ],
        },
    ],
}


def hello2(name: str = "world") -> dict[str, Any]:
    """The seed's second example: hello_world_2 writing output.txt."""
    return {
        "appName": "hello_world", "processorName": "hello_world_2",
        "outputFiles": [{"name": "output", "fileBaseName": "output.txt"}],
        "parameters": [{"name": "name", "value": name}],
    }


def count_chars(url: str) -> dict[str, Any]:
    """The seed's third example: count_characters reading ``url``."""
    return {
        "appName": "hello_world", "processorName": "count_characters",
        "inputFiles": [{"name": "input", "fileBaseName": "input.txt", "url": url}],
        "outputFiles": [{"name": "output", "fileBaseName": "output.json"}],
        "parameters": [{"name": "include_whitespace", "value": True}],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database; yields a URL whose search_path points at it."""
    schema = f"pairio_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as e:  # noqa: BLE001 - turn any connection problem into a clear instruction
        admin.dispose()
        raise RuntimeError(
            f"PostgreSQL at {POSTGRES_URL} is not reachable ({type(e).__name__}: {e}); start it "
            "(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set PAIRIO_TEST_POSTGRES_URL"
        ) from e
    try:
        sep = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Seed:
    """A user with a key, a service they own with the hello_world app, and a second, unprivileged user."""

    user: str
    key: str
    service: str
    other_user: str
    other_key: str


def seed(ctx: HubContext) -> Seed:
    with ctx.transaction() as s:
        accounts.create_user(s, "alice")
        _, key = accounts.create_api_key(s, "alice")
        accounts.create_user(s, "bob")
        _, other_key = accounts.create_api_key(s, "bob")
        accounts.create_service(s, "hello_world_service", "alice")
        accounts.add_app(s, "hello_world_service", PairioApp.model_validate(HELLO_WORLD_SPEC))
    return Seed(user="alice", key=key, service="hello_world_service", other_user="bob", other_key=other_key)


class SyncASGITransport(httpx.BaseTransport):
    """Runs ``httpx.ASGITransport`` on an event loop in a helper thread, for synchronous clients."""

    def __init__(self, app: Any) -> None:
        self._cm = start_blocking_portal()
        self._portal = self._cm.__enter__()
        self._transport = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            req = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            resp = await self._transport.handle_async_request(req)
            content = await resp.aread()
            await resp.aclose()
            return resp.status_code, resp.headers.raw, content

        status, headers, content = self._portal.call(call)
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


class LiveHub:
    """A hub served by uvicorn on 127.0.0.1 in a background thread: real HTTP."""

    def __init__(self, ctx: HubContext) -> None:
        self.ctx = ctx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ctx.settings.public_url = self.url
        self.app = create_app(ctx=ctx)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveHub":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


T = TypeVar("T")


def returns_within(call: Callable[[], T], timeout_sec: float) -> T:
    """``call()``'s result, or its exception raised here; fails the test if it has not returned within ``timeout_sec``.

    ``timeout_sec`` is a bound for a call that never returns, not a measure: choose it far below what the call would
    take without the mechanism under test. The call runs in a daemon thread, so one that hangs is left behind."""
    answers: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def run() -> None:
        try:
            answers.put((True, call()))
        except BaseException as e:  # noqa: BLE001 - raised again in the caller
            answers.put((False, e))

    threading.Thread(target=run, daemon=True).start()
    try:
        returned, value = answers.get(timeout=timeout_sec)
    except queue.Empty:
        raise AssertionError(f"no answer within {timeout_sec} s") from None
    if not returned:
        raise value
    return value  # type: ignore[no-any-return]
