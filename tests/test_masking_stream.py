"""Masking a stream piece by piece gives what masking it whole gives (pairio.masking, hub late masking)."""

from __future__ import annotations

import random

import pytest

from hub.core.job_secrets import LateMasker, keyed_digests, new_mask_key
from hub.db.tables import ConsoleMask
from pairio.masking import StreamMasker, mask_bytes, secret_variants

# Secrets that overlap each other: a shorter one inside a longer one, shared prefixes, repeats.
SECRET_SETS = [["abcabd", "bcab", "xyzzy-1", "aaaa"], ["abab", "babab-c", "cabababa"], ["tok-9f3a", "9f3a1c"]]


def sample(rng: random.Random, secrets: list[str]) -> bytes:
    alphabet = "".join(sorted(set("".join(secrets)))) + " \n"
    data = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))).encode()
    for _ in range(rng.randint(0, 3)):
        i = rng.randint(0, len(data))
        data = data[:i] + rng.choice(secrets).encode() + data[i:]
    return data


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 6)))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


@pytest.mark.parametrize("secrets", SECRET_SETS)
def test_a_stream_masked_in_pieces_equals_the_whole_masked(secrets: list[str]) -> None:
    rng = random.Random(7)
    for _ in range(3000):
        data = sample(rng, secrets)
        masker = StreamMasker(secrets)
        out = b""
        for piece in pieces(rng, data):
            masker = StreamMasker(secrets, pending=masker.pending)  # as the hub does between uploads
            out += masker.feed(piece)
        out += masker.flush()
        assert out == mask_bytes(data, secrets), data


def secrets_in(shown: bytes, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s.encode() in shown]


@pytest.mark.parametrize("secrets", SECRET_SETS)
def test_late_masking_with_digests_and_a_rewritten_tail_equals_the_whole_masked(secrets: list[str]) -> None:
    rng = random.Random(11)
    key = new_mask_key()
    row = ConsoleMask(job_id="j", key=key.hex(), digests=keyed_digests(key, [v.encode() for v in secret_variants(secrets)]), expires_sec=0)
    for _ in range(2000):
        data = sample(rng, secrets)
        stored, tail = b"", b""
        for piece in pieces(rng, data):
            late = LateMasker(row)
            masked, new_tail = late.apply(tail + piece)
            stored = stored[: len(stored) - len(late.shown(tail))] + masked  # the raw end is shown masked: rewrite it
            tail = new_tail
            assert secrets_in(stored, secrets) == [], "every piece is shown masked as if the stream ended"
        assert stored == mask_bytes(data, secrets), data


@pytest.mark.parametrize("secrets", SECRET_SETS)
def test_masking_live_then_after_the_end_with_digests_equals_the_whole_masked(secrets: list[str]) -> None:
    """What the hub does: StreamMasker while the job runs, then digests for the bridge's final flush."""
    rng = random.Random(13)
    key = new_mask_key()
    row = ConsoleMask(job_id="j", key=key.hex(), digests=keyed_digests(key, [v.encode() for v in secret_variants(secrets)]), expires_sec=0)
    for _ in range(2000):
        data = sample(rng, secrets)
        parts = pieces(rng, data)
        ended_at = rng.randint(0, len(parts))
        live = StreamMasker(secrets)
        stored = b""
        for piece in parts[:ended_at]:
            live = StreamMasker(secrets, pending=live.pending)
            stored += live.feed(piece)
        late = LateMasker(row)
        shown, tail = late.apply(live.pending)  # the terminal transition: the held-back bytes are not in the file yet
        stored += shown
        for piece in parts[ended_at:]:
            masked, new_tail = late.apply(tail + piece)
            stored = stored[: len(stored) - len(late.shown(tail))] + masked
            tail = new_tail
        assert stored == mask_bytes(data, secrets), (data, ended_at)
