"""The input cache: download each input URL once into a cache directory, then link it where a job wants it.

The bridge stages inputs through it (bridge/staging.py), and so does a processor's
``InputFile.download()`` when the bridge stages lazily: this module is part of the SDK
because app images carry only the ``pairio`` package.

The cache is keyed by a hash of the URL; a file there is complete (downloads go to
``<key>.part`` and are renamed when their size checks out), and read-only, because jobs
get hard links to it. A lock file per URL makes concurrent jobs wanting the same URL
wait for one download instead of each making their own. Downloads stream to disk, resume
with ``Range`` after a dropped connection, and check the size against ``Content-Length`` /
``Content-Range``.

Inputs are public http(s) URLs (hub output URLs are public too), so no key is sent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import httpx

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
RETRY_STATUS_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class StagingError(Exception):
    """An input could not be downloaded; the message names the URL and why."""


def fetch_input(url: str, dest: Path, cache_dir: Optional[Path]) -> Path:
    """A lazily staged input, fetched now into ``dest`` (by a processor's ``InputFile.download()``).

    Through the bridge's cache when the processor can see it (a later job reading the same
    URL gets it from there); otherwise through a cache of the job's own next to ``dest``.
    """
    cache = InputCache(cache_dir if cache_dir is not None else dest.parent / ".download")
    try:
        return cache.stage(url, dest)
    finally:
        cache.close()


class InputCache:
    """The per-bridge download cache."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        transport: Optional[httpx.BaseTransport] = None,
        max_attempts: int = 6,
        initial_delay_sec: float = 0.5,
        timeout: float = 60.0,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_attempts = max_attempts
        self.initial_delay_sec = initial_delay_sec
        self._http = httpx.Client(transport=transport, timeout=httpx.Timeout(timeout, connect=15.0), follow_redirects=True)

    def close(self) -> None:
        self._http.close()

    def key(self, url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()

    def cached_path(self, url: str) -> Path:
        return self.cache_dir / self.key(url)

    def fetch(self, url: str) -> Path:
        """The cached copy of ``url``, downloading it first unless it is there already."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        final = self.cached_path(url)
        with self._url_lock(url):
            if final.exists():
                log.debug("cache hit for %s", url)
                return final
            part = final.with_suffix(".part")
            size = self._download(url, part)
            part.chmod(0o444)
            os.replace(part, final)
            (final.with_suffix(".json")).write_text(json.dumps({"url": url, "size": size, "timestampSec": time.time()}))
        return final

    def stage(self, url: str, dest: Path) -> Path:
        """Put the content of ``url`` at ``dest``: a hard link to the cached copy, or a copy across file systems."""
        cached = self.fetch(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)  # a restarted bridge staging again
        try:
            os.link(cached, dest)
        except OSError:
            shutil.copyfile(cached, dest)
        return dest

    @contextmanager
    def _url_lock(self, url: str) -> Iterator[None]:
        # flock works between threads too: each open() is its own lock owner.
        with open(self.cache_dir / f"{self.key(url)}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- downloading

    def _download(self, url: str, part: Path) -> int:
        """Download into ``part``, resuming what is there; returns the size. Raises StagingError."""
        attempt = 0
        while True:
            try:
                return self._download_once(url, part)
            except _Retryable as e:
                attempt += 1
                if attempt >= self.max_attempts:
                    raise StagingError(f"could not download {url} after {attempt} attempts: {e}") from None
                delay = min(10.0, self.initial_delay_sec * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning("download of %s interrupted (%s); retrying in %.1f s", url, e, delay)
                time.sleep(delay)

    def _download_once(self, url: str, part: Path) -> int:
        have = part.stat().st_size if part.exists() else 0
        # identity: sizes and ranges then count the file's own bytes
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and have:
                    part.unlink()  # the partial file is not a prefix of this resource any more
                    raise _Retryable("the server refused to resume; starting over")
                if response.status_code in RETRY_STATUS_CODES:
                    raise _Retryable(f"HTTP {response.status_code}")
                if response.status_code not in (200, 206):
                    raise StagingError(f"GET {url} answered HTTP {response.status_code}; check that the input URL is right and public")
                start, total = _range_of(response, have)
                mode = "ab" if start else "wb"
                with open(part, mode) as f:
                    if start:
                        f.truncate(start)
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        f.write(chunk)
        except httpx.TransportError as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        size = part.stat().st_size
        if total is not None and size != total:
            if size > total:
                part.unlink()
            raise _Retryable(f"got {size} of {total} bytes")
        return size


class _Retryable(Exception):
    pass


def _range_of(response: httpx.Response, have: int) -> tuple[int, Optional[int]]:
    """Where the body starts in the file, and the file's full size when the server says."""
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match is None or int(match.group(1)) != have:
            raise _Retryable("the server resumed at an unexpected place")
        total = match.group(3)
        return have, (int(total) if total != "*" else None)
    length = response.headers.get("content-length")
    # A 200 is the whole file: start over. A compressed body's length is not the file's.
    if length is not None and not response.headers.get("content-encoding"):
        return 0, int(length)
    return 0, None
