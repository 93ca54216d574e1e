"""Rendering pages: Jinja2 templates with autoescaping, formatting filters and security headers."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from pairio.status import JobStatus

from .auth import Viewer

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# No inline scripts or styles, nothing from other origins: injected markup cannot run or phone home.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def fmt_time(ts: Optional[float]) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(ts: Optional[float]) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def fmt_ago(ts: Optional[float], now: Optional[float] = None) -> str:
    if ts is None:
        return "never"
    return fmt_duration(max(0.0, (now or time.time()) - ts)) + " ago"


def fmt_duration(sec: Optional[float]) -> str:
    if sec is None:
        return ""
    sec = float(sec)
    if sec < 60:
        return f"{sec:.1f} s" if sec < 10 else f"{sec:.0f} s"
    minutes, s = divmod(int(round(sec)), 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {m} min"
    return f"{hours // 24} d {hours % 24} h"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def fmt_gb(x: Optional[float]) -> str:
    if x is None:
        return ""
    return f"{x:g} GB"


def json_value(value: Any) -> str:
    """A parameter value as JSON text (to be escaped by the template like any other text)."""
    return json.dumps(value, ensure_ascii=False)


def query(base: str, **params: Any) -> str:
    """``base?k=v&...`` keeping only the parameters that have values; lists become repeated keys."""
    pairs: list[tuple[str, str]] = []
    for k, v in params.items():
        if v is None or v == "" or v == []:
            continue
        for item in v if isinstance(v, (list, tuple)) else [v]:
            pairs.append((k, str(item)))
    return f"{base}?{urlencode(pairs)}" if pairs else base


def _asset_version() -> str:
    """Changes whenever a static file does, so browsers never keep an old script with new pages."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates change with the hub's version, i.e. on restart
    )
    env.filters.update(
        time=fmt_time, iso=iso_time, ago=fmt_ago, duration=fmt_duration, bytes=fmt_bytes, gb=fmt_gb, json=json_value,
    )
    env.globals.update(asset_version=_asset_version(), query=query, statuses=[s.value for s in JobStatus], terminal={s.value for s in JobStatus if s.is_terminal})
    return env


ENV = _env()


def render(
    request: Request, template: str, *, viewer: Optional[Viewer], status_code: int = 200,
    headers: Optional[dict[str, str]] = None, **context: Any,
) -> HTMLResponse:
    html = ENV.get_template(template).render(request_path=request.url.path, viewer=viewer, **context)
    return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})


def render_error(request: Request, status_code: int, message: str, viewer: Optional[Viewer] = None) -> HTMLResponse:
    titles = {400: "Bad request", 401: "Log in first", 403: "Not allowed", 404: "Not found", 409: "Not possible now", 413: "Too large"}
    return render(
        request, "error.html", viewer=viewer, status_code=status_code,
        title=titles.get(status_code, "Error"), message=message, status_code_value=status_code,
    )
