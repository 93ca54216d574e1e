"""Keys and ids: random, URL-safe, and stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

_ID_ALPHABET = string.ascii_letters + string.digits


# 248 = 4 * 62: a byte below it picks each of the 62 letters and digits with the same chance
_UNBIASED_BYTE_LIMIT = len(_ID_ALPHABET) * (256 // len(_ID_ALPHABET))


def new_id(length: int = 20) -> str:
    """A random id like the original Pairio's (20 letters and digits, ~119 bits).

    From one read of the system's random bytes (a read per letter cost more than the rest of
    creating a job's row); bytes of 248 and above are skipped, so every letter stays equally likely.
    """
    letters: list[str] = []
    while len(letters) < length:
        letters += [_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in secrets.token_bytes(length + 4) if b < _UNBIASED_BYTE_LIMIT]
    return "".join(letters[:length])


def new_secret(prefix: str) -> str:
    """A high-entropy secret such as an API key: ``<prefix>_<43 url-safe characters>``."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """SHA-256 of a secret. Keys are 256-bit random, so a fast hash is enough (no dictionary to attack)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def url_hash(url: str) -> str:
    """SHA-256 of a URL: what URL lookups index, since URLs can exceed an index row's size."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
