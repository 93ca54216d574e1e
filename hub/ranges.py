"""The Range header of file reads, decided as RFC 9110 (section 14) says.

- No header, another unit, or a header that is not a valid ``bytes=`` range set
  (bad syntax, or a range whose last byte is before its first, such as ``5-2``)
  is ignored: the whole file, 200.
- One range that is satisfiable (its first byte is inside the file, or it is a
  suffix ``-N`` with N > 0 on a non-empty file): 206 with that range.
- One range that is not satisfiable: 416 with ``Content-Range: bytes */<size>``.
- Several ranges: ignored, the whole file with 200. RFC 9110 lets a server ignore
  Range; one answer shape keeps clients simple and avoids multipart bodies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

# Offsets longer than this are larger than any file; they are read as this bound,
# so a hostile header never makes us parse thousands of digits.
_MAX_DIGITS = 18
_RANGE_SET_RE = re.compile(r"^\s*bytes\s*=\s*(.*)$", re.IGNORECASE | re.DOTALL)
_SPEC_RE = re.compile(r"^(\d*)-(\d*)$")


@dataclass(frozen=True)
class WholeFile:
    """Serve everything with 200 (the header was absent or ignored)."""


@dataclass(frozen=True)
class ByteRange:
    start: int  # first byte served
    end: int  # one past the last byte served


@dataclass(frozen=True)
class Unsatisfiable:
    size: int


RangeDecision = Union[WholeFile, ByteRange, Unsatisfiable]


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def decide_range(header: Optional[str], size: int) -> RangeDecision:
    """What to answer to ``Range: header`` for a file of ``size`` bytes."""
    if header is None:
        return WholeFile()
    m = _RANGE_SET_RE.match(header)
    if not m:
        return WholeFile()
    specs = [p.strip() for p in m.group(1).split(",")]
    specs = [p for p in specs if p]  # RFC 9110 allows empty list elements
    if len(specs) != 1:
        return WholeFile()
    spec = _SPEC_RE.match(specs[0])
    if not spec or spec.group(1) == spec.group(2) == "":
        return WholeFile()
    first, last = spec.group(1), spec.group(2)
    if first == "":  # suffix range: the last N bytes
        length = _number(last)
        if length == 0 or size == 0:
            return Unsatisfiable(size)
        return ByteRange(max(0, size - length), size)
    start = _number(first)
    if last != "" and _number(last) < start:
        return WholeFile()  # an invalid range-spec: the header is ignored
    if start >= size:
        return Unsatisfiable(size)
    end = size if last == "" else min(size, _number(last) + 1)
    return ByteRange(start, end)
