"""What the UI shows of a job's files: console output in pieces, and the resource log as numbers and a plot."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CONSOLE_TAIL_BYTES = 64 * 1024  # what the job page shows at first
CONSOLE_CHUNK_BYTES = 256 * 1024  # the most one request returns
MAX_RESOURCE_LOG_BYTES = 32 * 1024 * 1024
MAX_PLOT_POINTS = 600


@dataclass
class ConsoleChunk:
    text: str
    start: int  # byte offset of the first byte shown
    end: int  # byte offset after the last byte shown
    size: int  # the file's size when read


def _char_start(data: bytes, i: int) -> int:
    """Move ``i`` forward past UTF-8 continuation bytes (at most 3), to the start of a character."""
    n = 0
    while i < len(data) and n < 3 and (data[i] & 0xC0) == 0x80:
        i += 1
        n += 1
    return i


def _complete_end(data: bytes) -> int:
    """Length of ``data`` without a trailing, incomplete UTF-8 sequence (it is sent with the next piece)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if (b & 0xC0) == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        if b < 0x80:
            return len(data)
        need = 2 if (b & 0xE0) == 0xC0 else 3 if (b & 0xF0) == 0xE0 else 4 if (b & 0xF8) == 0xF0 else 1
        return len(data) if back >= need else len(data) - back
    return len(data)


def read_console(path: Path, start: int, max_bytes: int = CONSOLE_CHUNK_BYTES) -> ConsoleChunk:
    """Up to ``max_bytes`` of console output from byte ``start``, cut at character boundaries.

    ``start`` is clamped into the file and ``max_bytes`` to 0..CONSOLE_CHUNK_BYTES, so no
    caller can ask for the whole file at once (a negative count would read it all).
    """
    max_bytes = max(0, min(max_bytes, CONSOLE_CHUNK_BYTES))
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return ConsoleChunk("", 0, 0, 0)
    with f:
        size = os.fstat(f.fileno()).st_size
        start = max(0, min(start, size))
        f.seek(start)
        data = f.read(min(max_bytes, size - start) + 3)  # a few more: the first character may start late
    skip = _char_start(data, 0) if start > 0 else 0
    data = data[skip:]
    data = data[: max_bytes]
    data = data[: _complete_end(data)]
    return ConsoleChunk(data.decode("utf-8", errors="replace"), start + skip, start + skip + len(data), size)


def console_tail(path: Path, tail_bytes: int = CONSOLE_TAIL_BYTES) -> ConsoleChunk:
    """The last ``tail_bytes`` of the console output, starting at a line when one starts near the cut."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ConsoleChunk("", 0, 0, 0)
    start = max(0, size - tail_bytes)
    if start > 0:
        with path.open("rb") as f:
            f.seek(start)
            head = f.read(4096)
        newline = head.find(b"\n")
        if newline != -1:
            start += newline + 1
    return read_console(path, start, size - start)


# ---------------------------------------------------------------- resource utilization


@dataclass
class ResourceSample:
    t: float  # seconds since the first sample
    cpu_percent: float
    rss_bytes: float


@dataclass
class ResourceUsage:
    samples: list[ResourceSample]
    peak_cpu_percent: float
    mean_cpu_percent: float
    peak_rss_bytes: float
    span_sec: float
    num_samples: int
    truncated: bool


def read_resource_log(path: Path) -> Optional[ResourceUsage]:
    """Parse the JSON lines the bridge recorded (``timestampSec``, ``cpuPercent``, ``rssBytes``); bad lines are skipped."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RESOURCE_LOG_BYTES + 1)
    except FileNotFoundError:
        return None
    truncated = len(data) > MAX_RESOURCE_LOG_BYTES
    raw: list[tuple[float, float, float]] = []
    for line in data[:MAX_RESOURCE_LOG_BYTES].splitlines():
        try:
            item: Any = json.loads(line)
            raw.append((float(item["timestampSec"]), float(item.get("cpuPercent") or 0.0), float(item.get("rssBytes") or 0.0)))
        except (ValueError, KeyError, TypeError):
            continue
    if not raw:
        return None
    raw.sort()
    t0 = raw[0][0]
    samples = [ResourceSample(t - t0, max(0.0, c), max(0.0, r)) for t, c, r in raw]
    return ResourceUsage(
        samples=_downsample(samples, MAX_PLOT_POINTS),
        peak_cpu_percent=max(s.cpu_percent for s in samples),
        mean_cpu_percent=sum(s.cpu_percent for s in samples) / len(samples),
        peak_rss_bytes=max(s.rss_bytes for s in samples),
        span_sec=samples[-1].t,
        num_samples=len(samples),
        truncated=truncated,
    )


def _downsample(samples: list[ResourceSample], most: int) -> list[ResourceSample]:
    """At most ``most`` points, keeping each bucket's peaks so short spikes stay visible."""
    if len(samples) <= most:
        return samples
    size = len(samples) / most
    out = []
    for i in range(most):
        bucket = samples[int(i * size): max(int((i + 1) * size), int(i * size) + 1)]
        out.append(ResourceSample(bucket[0].t, max(s.cpu_percent for s in bucket), max(s.rss_bytes for s in bucket)))
    return out


# ---------------------------------------------------------------- the plot (server-rendered SVG)

_W, _PANEL_H, _LEFT, _RIGHT, _TOP, _GAP = 720, 150, 70, 16, 14, 44


def _nice_max(x: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, ... times a power of ten) at or above ``x``."""
    if x <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(x))
    return next(m * magnitude for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * magnitude >= x * (1 - 1e-9))


def _fmt_mem(b: float) -> str:
    gb = b / 1024**3
    return f"{gb:.2f} GB" if gb >= 1 else f"{b / 1024**2:.0f} MB"


def resource_plot_svg(usage: ResourceUsage, num_cpus: int, memory_gb: float) -> str:
    """Two panels, CPU (% of one core) and memory (RSS), over time, with the job's limits dashed where they fit.

    Only numbers and fixed words go into the SVG, so it needs no escaping.
    """
    span = usage.span_sec or 1.0
    cpu_limit = 100.0 * num_cpus
    cpu_top = _nice_max(max(100.0, usage.peak_cpu_percent * 1.1))
    if cpu_limit <= cpu_top * 1.5:
        cpu_top = _nice_max(max(cpu_top, cpu_limit * 1.05))
    mem_limit = memory_gb * 1024**3
    mem_top = _nice_max(max(usage.peak_rss_bytes * 1.1, 1024**2) / 1024**2) * 1024**2
    if mem_limit <= mem_top * 1.5:
        mem_top = _nice_max(max(mem_top, mem_limit * 1.05) / 1024**2) * 1024**2
    plot_w = _W - _LEFT - _RIGHT
    height = _TOP + 2 * _PANEL_H + _GAP + 30
    parts = [
        f'<svg id="resource-plot" class="plot" viewBox="0 0 {_W} {height}" width="100%" role="img" '
        f'aria-labelledby="resource-plot-title resource-plot-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="resource-plot-title">CPU and memory use over time</title>',
        f'<desc id="resource-plot-desc">{usage.num_samples} samples over {span:.0f} s; peak CPU {usage.peak_cpu_percent:.0f}% '
        f'of one core, peak memory {_fmt_mem(usage.peak_rss_bytes)}</desc>',
    ]
    panels = [
        ("CPU (% of a core)", [s.cpu_percent for s in usage.samples], cpu_top, cpu_limit, lambda v: f"{v:.0f}%", "cpu"),
        ("Memory (RSS)", [s.rss_bytes for s in usage.samples], mem_top, mem_limit, _fmt_mem, "mem"),
    ]
    for i, (label, values, top, limit, fmt, cls) in enumerate(panels):
        y0 = _TOP + i * (_PANEL_H + _GAP)

        def y(v: float, y0: int = y0, top: float = top) -> float:
            return y0 + _PANEL_H - min(v, top) / top * _PANEL_H

        parts.append(f'<text class="plot-label" x="{_LEFT}" y="{y0 - 3}">{label}</text>')
        for frac in (0.0, 0.5, 1.0):
            gy = y0 + _PANEL_H - frac * _PANEL_H
            parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}"/>')
            parts.append(f'<text class="axis" x="{_LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">{fmt(top * frac)}</text>')
        if limit <= top:
            ly = y(limit)
            parts.append(f'<line class="limit" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{ly:.1f}" y2="{ly:.1f}"><title>limit {fmt(limit)}</title></line>')
        points = [(_LEFT + s.t / span * plot_w, y(v)) for s, v in zip(usage.samples, values)]
        if len(points) == 1:
            parts.append(f'<circle class="series {cls}" cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="4"/>')
        else:
            coords = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in points)
            parts.append(f'<polyline class="series {cls}" points="{coords}"/>')
    xt = _TOP + 2 * _PANEL_H + _GAP + 16
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = _LEFT + frac * plot_w
        anchor = "start" if frac == 0 else "end" if frac == 1 else "middle"
        parts.append(f'<text class="axis" x="{x:.1f}" y="{xt}" text-anchor="{anchor}">{span * frac:.0f} s</text>')
    parts.append("</svg>")
    return "".join(parts)
