"""ASGI middleware that refuses request bodies over a size limit with 413, before reading them whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


class BodySizeLimit:
    """Limit bodies to ``default_limit`` bytes, or the limit ``limit_for(path)`` returns for that path."""

    def __init__(self, app: Any, default_limit: int, limit_for: Callable[[str, str], int | None]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"]) or self.default_limit
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > limit:
            await _too_large(scope, send, limit)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(413, _message(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _too_large(scope, send, limit)


class _BodyTooLarge(HTTPException):
    """An HTTPException, so frameworks that wrap body-reading errors pass it on as a 413."""


def _message(limit: int) -> str:
    return f"request body larger than the hub's limit of {limit} bytes"


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    message = _message(limit)
    key = "error" if scope["path"].startswith("/api/") else "detail"
    body = json.dumps({key: message}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
