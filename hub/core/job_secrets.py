"""A job's secrets in the hub: who sees them, masking what the bridge uploads, and erasing them.

Secrets (``secrets``, given to the job as environment variables) and the values of
parameters its processor declares ``secret: true`` are plain in the database only
while the job is not terminal, and only the compute client holding the job is given
them. Every user-facing answer shows a secret parameter's value as ``"***"`` (the
same mark as masked console text, whatever the parameter's type).

Console output and resource logs are masked as they arrive, before they are stored
(``pairio.masking``: each value and its base64 and URL encodings). Console output
comes in pieces, so the masker's held-back bytes (an unfinished possible secret) are
kept in ``Job.console_pending`` between uploads; ``Job.console_input_size`` counts the
raw bytes the bridge sent (its offsets), ``Job.console_output_size`` the stored,
masked ones (what console pages page through).

When the job reaches a terminal state, ``erase_job_secrets`` (called at that one
transition) flushes the held-back bytes and erases the plain values. A bridge may
still send its last console bytes and resource log during ``FINAL_FLUSH_GRACE_SEC``
(after heartbeat expiry, for example); those must be masked too, without the values.
So the transition keeps, in a ``ConsoleMask`` row, a random per-job key and the keyed
BLAKE2b digest of every variant, grouped by length: late bytes are masked by hashing
each window of those lengths (longest first) and replacing windows whose digest is
listed. A keyed hash cannot be reversed and, its key being random per job, cannot be
looked up in precomputed tables; the row is deleted when the grace period is over
(``forget_expired_console_masks``), leaving nothing derived from the values. A secret
split between the last bytes before the transition and the late ones is found because
the raw end (shorter than the longest variant, shown masked as if the output ended
there) is kept in ``console_pending`` and scanned again with the next late piece, which
rewrites the file's tail. Kept raw, that end could hold the start of a secret (as the
live masker's held-back bytes do) until the digests are forgotten.
"""

from __future__ import annotations

import hashlib
import os
import secrets as random_bytes
from pathlib import Path
from typing import Any, Iterable, Optional

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from pairio.masking import MASK, StreamMasker, mask_bytes, mask_text, secret_variants
from pairio.models import PairioAppProcessor
from pairio.status import TERMINAL_STATUSES, JobStatus

from ..context import JOB_FILES_INFO, SECRETS_ERASED, HubContext, now_sec
from ..db.engine import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, checkpoint_sqlite
from ..db.tables import ConsoleMask, Job
from ..errors import Conflict

MASK_KEY_BYTES = 32
DIGEST_BYTES = 16
# How long after the end of a job its late uploads are masked (the hub refuses them after
# FINAL_FLUSH_GRACE_SEC); a margin so a write accepted at the last moment still finds the row.
MASK_KEEP_MARGIN_SEC = 60.0


# ---------------------------------------------------------------- which values are secret


def secret_parameter_names(processor: Optional[PairioAppProcessor]) -> Optional[list[str]]:
    """The processor's parameters declared ``secret: true`` (None when there are none)."""
    names = [p.name for p in processor.parameters if p.secret] if processor else []
    return names or None


def is_terminal(job: Job) -> bool:
    return JobStatus(job.status) in TERMINAL_STATUSES


def _parameter_strings(value: Any) -> list[str]:
    """The text forms of a parameter value that could appear in output (booleans and null never count)."""
    if isinstance(value, list):
        return [x for v in value for x in _parameter_strings(v)]
    if isinstance(value, bool) or value is None:
        return []
    return [str(value)]


def secret_values(job: Job) -> list[str]:
    """The plain secret values of a job: its secrets and its secret parameters (empty once erased)."""
    values = [x["value"] for x in (job.secrets or []) if x.get("value")]
    names = set(job.secret_parameter_names or [])
    for p in job.job_definition.get("parameters", []):
        if p.get("name") in names:
            values += _parameter_strings(p.get("value"))
    return values


def masked_definition(job: Job) -> dict[str, Any]:
    """The job definition as users see it: secret parameters' values are ``"***"``."""
    names = set(job.secret_parameter_names or [])
    if not names:
        return job.job_definition
    params = [{**p, "value": MASK} if p.get("name") in names else p for p in job.job_definition.get("parameters", [])]
    return {**job.job_definition, "parameters": params}


def erased_secret_names(job: Job) -> list[str]:
    """Names of the secrets and secret parameters a finished job had (their values are gone)."""
    if not is_terminal(job):
        return []
    return [x["name"] for x in (job.secrets or [])] + list(job.secret_parameter_names or [])


def mask_error_text(job: Job, text: str) -> str:
    return mask_text(text, secret_values(job))


# ---------------------------------------------------------------- the terminal transition


def erase_job_secrets(s: Session, job: Job, now: float) -> None:
    """At the job's terminal transition: flush the masked console tail and erase the plain values.

    Secrets keep their names only; secret parameters become null in the stored
    definition (the hash computed at creation is kept, so a later submission with the
    same values is still a cache hit). Keyed digests stay for late uploads (module doc).
    """
    if not had_secrets(job):
        return
    s.info[SECRETS_ERASED] = True
    if job.compute_client_id is not None:  # only a claimed job has a bridge that may still upload
        key = new_mask_key()
        variants = [v.encode("utf-8") for v in secret_variants(secret_values(job))]
        row = ConsoleMask(
            job_id=job.job_id, key=key.hex(), digests=keyed_digests(key, variants),
            expires_sec=now + _grace_sec() + MASK_KEEP_MARGIN_SEC,
        )
        s.add(row)
        _write_late_console(s, job, LateMasker(row), b"", pending_written=False)
    if job.secrets:
        job.secrets = [{"name": x["name"]} for x in job.secrets]
    names = set(job.secret_parameter_names or [])
    if names:
        params = [{**p, "value": None} if p.get("name") in names else p for p in job.job_definition.get("parameters", [])]
        job.job_definition = {**job.job_definition, "parameters": params}


def _grace_sec() -> float:
    from .compute import FINAL_FLUSH_GRACE_SEC  # compute imports this module

    return FINAL_FLUSH_GRACE_SEC


def had_secrets(job: Job) -> bool:
    return bool(job.secrets or job.secret_parameter_names)


def forget_expired_console_masks(s: Session, now: float) -> int:
    """Delete the digests (and raw console ends) of jobs whose late uploads are no longer accepted; returns how many."""
    expired = select(ConsoleMask.job_id).where(ConsoleMask.expires_sec < now)
    s.execute(update(Job).where(Job.job_id.in_(expired)).values(console_pending=None).execution_options(synchronize_session=False))
    result = s.execute(delete(ConsoleMask).where(ConsoleMask.expires_sec < now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def forget_erased_secrets(ctx: HubContext) -> None:
    """Housekeeping (hub.expiry): drop digests past the grace period, then empty SQLite's WAL.

    Run off the request path: the checkpoint waits for readers.
    """
    with ctx.transaction() as s:
        if forget_expired_console_masks(s, now_sec()):
            s.info[SECRETS_ERASED] = True
    if ctx.secrets_erased:
        ctx.secrets_erased = False
        checkpoint_sqlite(ctx.engine)


class LateMasker:
    """Masks bytes with a job's keyed digests (its plain values are gone)."""

    def __init__(self, row: ConsoleMask) -> None:
        self._base = hashlib.blake2b(key=bytes.fromhex(row.key), digest_size=DIGEST_BYTES)
        self._digests = {int(n): set(d) for n, d in row.digests.items() if d}
        self._lengths = sorted(self._digests, reverse=True)  # the longest match wins, as in pairio.masking
        self.longest = self._lengths[0] if self._lengths else 0

    def _listed(self, window: bytes) -> bool:
        h = self._base.copy()
        h.update(window)
        return h.hexdigest() in self._digests[len(window)]

    def apply(self, buf: bytes) -> tuple[bytes, bytes]:
        """``buf`` masked as if it ended here, and its raw end that a later piece could still change.

        Positions whose every window fits in ``buf`` are decided as masking the whole
        stream would decide them; the raw end (shorter than the longest variant) is
        shown masked as it stands and scanned again with the next piece, so a secret
        split between the two is found.
        """
        if not self._lengths:
            return buf, b""
        decided, end = self._scan(buf, max(0, len(buf) - self.longest + 1))
        tail = buf[end:]
        return decided + self.shown(tail), tail

    def shown(self, tail: bytes) -> bytes:
        """How ``apply`` showed a raw end: what to cut from the stored output before going on."""
        return self._scan(tail, len(tail))[0]

    def _scan(self, buf: bytes, stop: int) -> tuple[bytes, int]:
        """Mask from the start up to ``stop`` (longest match first); returns the masked bytes and where it stopped."""
        out = bytearray()
        i, n = 0, len(buf)
        while i < stop:
            for length in self._lengths:
                if i + length <= n and self._listed(buf[i:i + length]):
                    out += MASK.encode()
                    i += length
                    break
            else:
                out.append(buf[i])
                i += 1
        return bytes(out), i


# ---------------------------------------------------------------- masking uploads


def store_console_bytes(s: Session, path: Path, job: Job, data: bytes) -> None:
    """Mask ``data`` (raw console bytes that follow what the hub has) and append them to the stored output."""
    if not is_terminal(job):
        masker = StreamMasker(secret_values(job), pending=job.console_pending or b"")
        masked = masker.feed(data)
        start = job.console_output_size or 0
        if masked:
            write_at(path, start, masked, start + len(masked))
        job.console_output_size = start + len(masked)
        job.console_pending = masker.pending or None
        return
    late = _late_masker(s, job, "console output")
    if late is None:
        start = job.console_output_size or 0
        write_at(path, start, data, start + len(data))
        job.console_output_size = start + len(data)
        return
    _write_late_console(s, job, late, data, pending_written=True, path=path)


def mask_resource_log(s: Session, job: Job, data: bytes) -> bytes:
    if not is_terminal(job):
        return mask_bytes(data, secret_values(job))
    late = _late_masker(s, job, "resource utilization log")
    return late.apply(data)[0] if late is not None else data


def _late_masker(s: Session, job: Job, what: str) -> Optional[LateMasker]:
    """The digests of a finished job's secrets (None: it had none); refuses once they were forgotten."""
    if not had_secrets(job):
        return None
    row = s.get(ConsoleMask, job.job_id)
    if row is None:
        raise Conflict(f"job {job.job_id} finished too long ago; its {what} can no longer change")
    return LateMasker(row)


def _write_late_console(
    s: Session, job: Job, late: LateMasker, data: bytes, *, pending_written: bool, path: Optional[Path] = None
) -> None:
    """Mask with the digests; ``pending_written``: the raw end kept last time is already shown at the end of the file."""
    pending = job.console_pending or b""
    if not pending and not data:
        return
    if path is None:
        files = s.info.get(JOB_FILES_INFO)
        if files is None:
            raise RuntimeError("finishing a job needs a session from HubContext.transaction (to flush its console output)")
        path = files.console_output_path(job.job_id)
    start = (job.console_output_size or 0) - (len(late.shown(pending)) if pending_written else 0)
    masked, tail = late.apply(pending + data)
    write_at(path, start, masked, start + len(masked))
    job.console_output_size = start + len(masked)
    job.console_pending = tail or None


# ---------------------------------------------------------------- private files


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) so that only the hub's user can enter it."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)


def write_at(path: Path, offset: int, data: bytes, new_size: int) -> None:
    """Write ``data`` at ``offset`` of a private (0600) file and cut it at ``new_size``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    except FileNotFoundError:  # its directory is made on the first write only (a mkdir per write cost ~0.1 ms)
        private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "r+b") as f:
        f.seek(offset)
        f.write(data)
        # Drops bytes left by an earlier write whose transaction did not commit.
        f.truncate(new_size)


def keyed_digests(key: bytes, variants: Iterable[bytes]) -> dict[str, list[str]]:
    """BLAKE2b digests of the variants under ``key``, grouped by length (JSON keys are strings)."""
    base = hashlib.blake2b(key=key, digest_size=DIGEST_BYTES)
    by_length: dict[str, list[str]] = {}
    for v in variants:
        h = base.copy()
        h.update(v)
        by_length.setdefault(str(len(v)), []).append(h.hexdigest())
    return by_length


def new_mask_key() -> bytes:
    return random_bytes.token_bytes(MASK_KEY_BYTES)
