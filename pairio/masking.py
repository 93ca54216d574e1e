"""Hiding job secrets in text that users or logs could see: the one home of that rule.

A secret's value is replaced by ``***`` wherever it appears, and so are its common
encodings (base64, URL encoding) and, for a multi-line value, each of its lines. Values
shorter than ``MIN_MASKED_LENGTH`` are left alone: masking every ``a`` in a console would
destroy it and protect nothing.

``StreamMasker`` masks output that arrives in pieces (a console uploaded chunk by chunk):
it holds back the end of what it has seen while that end could still be the start of a
secret, so a secret split across two pieces is masked too.

Standard library only: the job watcher (bridge/watch.py) uses this module on compute
nodes and SSH hosts where Pairio is not installed; it is copied there beside the watcher
as ``pairio_masking.py``.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, quote_plus

TYPE_CHECKING = False  # annotations only: every job's watcher loads this module, and typing costs its start
if TYPE_CHECKING:
    from typing import Iterable, Optional

MASK = "***"
MIN_MASKED_LENGTH = 4


def secret_variants(values: Iterable[Optional[str]]) -> list[str]:
    """Every string to hide for these secret values, longest first (so the longest match wins)."""
    found: set[str] = set()
    for value in values:
        if not value:
            continue
        pieces = [value]
        if "\n" in value or "\r" in value:
            pieces += [line.strip("\r") for line in value.split("\n")]
        for piece in pieces:
            if len(piece) < MIN_MASKED_LENGTH:
                continue
            raw = piece.encode("utf-8")
            b64 = base64.b64encode(raw).decode("ascii")
            url_b64 = base64.urlsafe_b64encode(raw).decode("ascii")
            found.update({piece, quote(piece, safe=""), quote_plus(piece), b64, b64.rstrip("="), url_b64, url_b64.rstrip("=")})
    return sorted((v for v in found if len(v) >= MIN_MASKED_LENGTH), key=lambda v: (-len(v), v))


def _pattern(variants: list[str], as_bytes: bool) -> Optional[re.Pattern]:
    if not variants:
        return None
    if as_bytes:
        return re.compile(b"|".join(re.escape(v.encode("utf-8")) for v in variants))
    return re.compile("|".join(re.escape(v) for v in variants))


def mask_text(text: str, secret_values: Iterable[Optional[str]]) -> str:
    """``text`` with every secret (and its encodings) replaced by ``***``."""
    pattern = _pattern(secret_variants(secret_values), as_bytes=False)
    return pattern.sub(MASK, text) if pattern and text else text


def mask_bytes(data: bytes, secret_values: Iterable[Optional[str]]) -> bytes:
    pattern = _pattern(secret_variants(secret_values), as_bytes=True)
    return pattern.sub(MASK.encode(), data) if pattern and data else data


class StreamMasker:
    """Masks a byte stream fed in pieces; ``pending`` is what it holds back until more arrives.

    Feed every piece in order and call ``flush`` at the end. The held-back bytes are at
    most one byte shorter than the longest variant, and only while they could still
    become a secret, so output is delayed only by an unfinished secret-like ending.
    ``pending`` may be saved and given back to a new masker (``pending=``) to go on later,
    as the hub does between console uploads.
    """

    def __init__(self, secret_values: Iterable[Optional[str]], pending: bytes = b"") -> None:
        self._variants = [v.encode("utf-8") for v in secret_variants(secret_values)]
        self._pattern = re.compile(b"|".join(re.escape(v) for v in self._variants)) if self._variants else None
        self._first_bytes = {v[:1] for v in self._variants}
        self.pending = pending if self._variants else b""

    @property
    def active(self) -> bool:
        return self._pattern is not None

    def feed(self, data: bytes) -> bytes:
        """The masked bytes that are now safe to pass on."""
        if self._pattern is None:
            return data
        buf = self.pending + data
        out: list[bytes] = []
        pos = 0
        hold_from: Optional[int] = None
        for match in self._pattern.finditer(buf):
            unfinished = self._unfinished_start(buf, pos)
            if unfinished < match.start():
                hold_from = unfinished  # a secret starting earlier may still complete, and it would win
                break
            if self._could_grow(buf[match.start():]):
                hold_from = match.start()  # a longer secret may begin here: decide when more arrives
                break
            out.append(buf[pos:match.start()])
            out.append(MASK.encode())
            pos = match.end()
        if hold_from is None:
            hold_from = self._unfinished_start(buf, pos)
        out.append(buf[pos:hold_from])
        self.pending = buf[hold_from:]
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever is held back, masked: the stream has ended."""
        rest, self.pending = self.pending, b""
        if not rest or self._pattern is None:
            return rest
        return self._pattern.sub(MASK.encode(), rest)

    def _could_grow(self, tail: bytes) -> bool:
        """Whether ``tail`` (all of the buffer from some point on) is a proper start of a variant."""
        return any(len(v) > len(tail) and v.startswith(tail) for v in self._variants)

    def _unfinished_start(self, buf: bytes, pos: int) -> int:
        """The earliest index from ``pos`` on where the rest of ``buf`` could begin a variant."""
        longest = len(self._variants[0])
        for start in range(max(pos, len(buf) - longest + 1), len(buf)):
            if buf[start:start + 1] in self._first_bytes and self._could_grow(buf[start:]):
                return start
        return len(buf)
