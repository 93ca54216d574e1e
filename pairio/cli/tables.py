"""Plain-text tables and times for terminal output."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Optional


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def format_time(timestamp_sec: Optional[float]) -> str:
    """Local time to the second, or '-' when there is none."""
    if timestamp_sec is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp_sec).strftime("%Y-%m-%d %H:%M:%S")
