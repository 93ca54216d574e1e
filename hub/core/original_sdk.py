"""Jobs of images built with the original Pairio SDK (pairio 0.5.x): the hub side of their contract.

**Which jobs.** A processor whose spec says ``"originalSdk": true`` runs an image built with
the original SDK. The original spec.json has no such flag and cannot have one (the original
SDK writes the spec from the code), and the spec form alone does not tell (our SDK reads and
writes the same fields), so the service admin marks the app when registering it: add
``"originalSdk": true`` to its processors. Only that registration decides; nothing a job
submitter sends does. The bridge then gives such a job the original environment contract
(shared docs/app-protocol.md section 1) and a network to the hub (bridge/original_sdk.py).

**What the job process calls here** (with its job private key, which the bridge hands to it
in the container's env file only): ``setJobStatus`` (legal transitions only, a repeat is a
no-op, a terminal status never changes), ``getJob`` and ``getSignedUploadUrl``. The signed
URL is ``<hub>/original-sdk/uploads/<token>``: the token names the job, what is uploaded and
its exact size, expires after ``UPLOAD_URL_TTL_SEC``, and is an HMAC keyed with the hash of
the job's private key, so it stops working as soon as the job is handed to another compute
client (its key changes). A PUT of exactly that many bytes answers 200.

**After the terminal status** the original's monitors still upload the console output and
the resource log: those, and additional ("other") outputs, are accepted for
``compute.FINAL_FLUSH_GRACE_SEC``. Output files are fixed when the job completes (a late
one is refused), and a late setJobStatus gets the usual refusal of a change to a final
status (400, which the original SDK survives). After the grace the job's key no longer
works at all (401), nor does a signed URL made with it.

**Where uploads go.** An output lands at the output URL fixed when the job was created;
the console output replaces the job's console output (masked like any console output); the
SDK's resource log (system-wide samples, another format) is kept beside the bridge's own
samples of the container, which are what the job page plots; an "other" file is served at
``<hub>/original-sdk/jobs/<jobId>/other/<name>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional
from urllib.parse import quote

from sqlalchemy.orm import Session

from pairio.masking import mask_bytes
from pairio.models import PairioApp
from pairio.status import ACTIVE_STATUSES, JobStatus

from ..context import HubContext, now_sec
from ..db.tables import Job, JobOutput
from ..errors import BadRequest, Conflict, NotFound, Unauthorized
from ..security import hash_secret
from . import job_secrets
from .compute import FINAL_FLUSH_GRACE_SEC, touch_client_of
from .jobs import add_event, get_job_row

UploadType = Literal["output", "consoleOutput", "resourceUtilizationLog", "other"]
UPLOAD_URL_TTL_SEC = 3600.0
MAX_OTHER_BYTES = 1024**3 + 10
MAX_LOG_BYTES = 64 * 1024 * 1024
UPLOAD_PATH = "/original-sdk/uploads"
OTHER_PATH = "/original-sdk/jobs"
ORIGINAL_RESOURCE_LOG_FILE = "original_sdk_resource_log.jsonl"
OTHER_DIR = "other"
_OTHER_PART_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def marked_original_sdk(app: PairioApp) -> PairioApp:
    """The app with every processor marked as an original-SDK image (``pairio admin add-app --original-sdk``)."""
    return app.model_copy(update={"processors": [p.model_copy(update={"originalSdk": True}) for p in app.processors]})


# ---------------------------------------------------------------- the job's key


def is_own_key(job: Job, key: str) -> bool:
    return job.job_private_key_hash is not None and bool(job.compute_client_id) and hmac.compare_digest(job.job_private_key_hash, hash_secret(key))


def job_by_own_key(s: Session, job_id: str, key: Optional[str], *, for_upload: bool, lock: bool = False) -> Job:
    """The job, if ``key`` is its private key and the key still works (see the module's docstring)."""
    job = get_job_row(s, job_id, for_update=lock)
    if not key:
        raise Unauthorized("no key: send 'Authorization: Bearer <the job's private key>' (JOB_PRIVATE_KEY)")
    if not is_own_key(job, key):
        raise Unauthorized(
            f"the key is not the private key of job {job.job_id} (a job key is replaced when the job is handed to another compute client)"
        )
    require_key_in_force(job, for_upload=for_upload)
    return job


def require_key_in_force(job: Job, *, for_upload: bool) -> None:
    status = JobStatus(job.status)
    if status in ACTIVE_STATUSES:
        return
    finished = job.timestamp_finished_sec or 0.0
    if for_upload and now_sec() - finished <= FINAL_FLUSH_GRACE_SEC:
        return
    raise Unauthorized(
        f"job {job.job_id} is {status.value}; its private key no longer works"
        + ("" if for_upload else " except for the last log uploads")
        + f" (those are accepted for {FINAL_FLUSH_GRACE_SEC:.0f} s after the job finished)"
    )


# ---------------------------------------------------------------- signed upload URLs


@dataclass(frozen=True)
class Grant:
    """What one signed URL allows: a PUT of exactly ``size`` bytes of ``kind`` (``name``) to ``job_id``."""

    job_id: str
    kind: UploadType
    name: str
    size: int
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(job: Job, payload: str) -> str:
    assert job.job_private_key_hash is not None
    key = hashlib.sha256(b"pairio-original-sdk-upload:" + job.job_private_key_hash.encode()).digest()
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(job: Job, grant: Grant) -> str:
    payload = _b64(json.dumps([grant.job_id, grant.kind, grant.name, grant.size, grant.expires]).encode())
    return f"{payload}.{_mac(job, payload)}"


def verify(s: Session, token: str, *, lock: bool = False) -> tuple[Job, Grant]:
    """The job and grant of a signed URL's token, or Unauthorized saying what to do."""
    invalid = Unauthorized("this upload URL is not valid (altered, or its job was handed to another compute client); ask getSignedUploadUrl for a new one")
    payload, _, mac = token.partition(".")
    try:
        job_id, kind, name, size, expires = json.loads(_unb64(payload))
        grant = Grant(job_id=str(job_id), kind=kind, name=str(name), size=int(size), expires=float(expires))
    except (ValueError, TypeError):
        raise invalid from None
    try:
        job = get_job_row(s, grant.job_id, for_update=lock)
    except NotFound:
        raise invalid from None
    if job.job_private_key_hash is None or not hmac.compare_digest(_mac(job, payload), mac):
        raise invalid
    if time.time() > grant.expires:
        raise Unauthorized("this upload URL expired; ask getSignedUploadUrl for a new one")
    return job, grant


def check_other_name(name: str) -> str:
    parts = name.split("/")
    if not 1 <= len(parts) <= 6 or not all(1 <= len(p) <= 64 and _OTHER_PART_RE.match(p) for p in parts):
        raise BadRequest(
            f"otherName {name[:100]!r} is not valid: use 1 to 6 '/'-separated parts, each 1-64 characters of "
            "letters, digits, '_' and '-' (single dots may join such groups)"
        )
    return name


def other_url(ctx: HubContext, job_id: str, name: str) -> str:
    return f"{ctx.settings.base_url}{OTHER_PATH}/{quote(job_id, safe='')}/{OTHER_DIR}/{quote(name, safe='/')}"


def other_path(ctx: HubContext, job_id: str, name: str) -> Path:
    check_other_name(name)
    return ctx.files.job_dir(job_id) / OTHER_DIR / name


@dataclass(frozen=True)
class SignedUpload:
    signed_url: str
    download_url: str


def signed_upload_url(
    ctx: HubContext, s: Session, job_id: str, key: Optional[str], upload_type: UploadType, *,
    output_name: Optional[str], other_name: Optional[str], size: int, upload_base: str,
) -> SignedUpload:
    """getSignedUploadUrl: where to PUT ``size`` bytes, and where they will be served.

    ``upload_base`` is the URL the job reached the hub at: the signed URL must work from where the job runs.
    """
    job = job_by_own_key(s, job_id, key, for_upload=True)
    touch_client_of(s, job)  # the job's process uploads now and then: its compute client lives
    if size < 0:
        raise BadRequest("size must be the number of bytes about to be uploaded (0 or more)")
    name = ""
    if upload_type == "output":
        if not output_name:
            raise BadRequest("uploadType 'output' needs outputName: one of the job's outputFiles")
        row = s.get(JobOutput, (job.job_id, output_name))
        if row is None:
            raise BadRequest(f"job {job.job_id} has no output {output_name[:100]!r}; send one of the names in its jobDefinition.outputFiles")
        if JobStatus(job.status).is_terminal:
            raise Unauthorized(f"job {job.job_id} is {job.status}: its output files can no longer change")
        if size > ctx.settings.max_upload_bytes:
            raise BadRequest(f"size {size} is over the hub's limit of {ctx.settings.max_upload_bytes} bytes for an output file")
        name, download = row.name, row.url
    elif upload_type == "consoleOutput":
        if size > ctx.settings.max_console_output_bytes:
            raise BadRequest(f"size {size} is over the hub's console output limit of {ctx.settings.max_console_output_bytes} bytes")
        download = job.console_output_url
    elif upload_type == "resourceUtilizationLog":
        if size > MAX_LOG_BYTES:
            raise BadRequest(f"size {size} is over the limit of {MAX_LOG_BYTES} bytes for a resource utilization log")
        download = job.resource_utilization_log_url
    else:
        if not other_name:
            raise BadRequest("uploadType 'other' needs otherName, e.g. 'figures/plot.png'")
        name = check_other_name(other_name)
        if size > MAX_OTHER_BYTES:
            raise BadRequest(f"size {size} is over the limit of {MAX_OTHER_BYTES} bytes for an additional output")
        if other_path(ctx, job.job_id, name).exists():
            raise BadRequest(f"job {job.job_id} already has an additional output {name!r}; use another name")
        download = other_url(ctx, job.job_id, name)
    grant = Grant(job_id=job.job_id, kind=upload_type, name=name, size=size, expires=time.time() + UPLOAD_URL_TTL_SEC)
    return SignedUpload(signed_url=f"{upload_base.rstrip('/')}{UPLOAD_PATH}/{sign(job, grant)}", download_url=download)


# ---------------------------------------------------------------- the PUT


def check_upload(ctx: HubContext, token: str) -> tuple[Grant, Path]:
    """Before reading the body: the grant, and a private temp file to stream it into."""
    with ctx.read_transaction() as s:
        job, grant = verify(s, token)
        require_key_in_force(job, for_upload=True)
        folder = ctx.files.job_dir(job.job_id)
    job_secrets.private_dir(folder)
    temp = folder / f".upload-original-{uuid.uuid4().hex}"
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return grant, temp


def finish_upload(ctx: HubContext, token: str, temp: Path, size: int) -> None:
    """Put the received bytes where the grant says, if the job still takes them."""
    with ctx.transaction() as s:
        job, grant = verify(s, token, lock=True)
        require_key_in_force(job, for_upload=True)
        if size != grant.size:
            raise BadRequest(f"the upload has {size} bytes, but getSignedUploadUrl was asked for {grant.size}; ask again with the exact size")
        if grant.kind == "output":
            _store_output(ctx, s, job, grant.name, temp, size)
        elif grant.kind == "consoleOutput":
            replace_console_output(s, ctx.files.console_output_path(job.job_id), job, temp.read_bytes())
        elif grant.kind == "resourceUtilizationLog":
            os.replace(temp, ctx.files.job_dir(job.job_id) / ORIGINAL_RESOURCE_LOG_FILE)
        else:
            path = other_path(ctx, job.job_id, grant.name)
            if path.exists():
                raise BadRequest(f"job {job.job_id} already has an additional output {grant.name!r}; use another name")
            job_secrets.private_dir(path.parent)
            os.replace(temp, path)
            add_event(s, job.job_id, None, f"additional output {grant.name!r} uploaded ({size} bytes)")


def _store_output(ctx: HubContext, s: Session, job: Job, name: str, temp: Path, size: int) -> None:
    if JobStatus(job.status).is_terminal:
        raise Conflict(f"job {job.job_id} is {job.status}: its output files can no longer change")
    row = s.get(JobOutput, (job.job_id, name))
    if row is None:
        raise NotFound(f"job {job.job_id} has no output {name!r}")
    final = ctx.files.output_path(job.job_id, name)
    job_secrets.private_dir(final.parent)
    os.replace(temp, final)
    row.size = size
    add_event(s, job.job_id, None, f"output file {name!r} uploaded by the job ({size} bytes)")


def replace_console_output(s: Session, path: Path, job: Job, data: bytes) -> None:
    """The job's whole console output (the original SDK uploads all of it each time), masked like appended output."""
    if not job_secrets.is_terminal(job):
        masked = mask_bytes(data, job_secrets.secret_values(job))
    else:
        late = job_secrets._late_masker(s, job, "console output")  # noqa: SLF001 - the one home of late masking
        masked = late.apply(data)[0] if late is not None else data
    job_secrets.write_at(path, 0, masked, len(masked))
    job.console_output_size = len(masked)
    job.console_input_size = len(data)
    job.console_pending = None


def other_file(ctx: HubContext, job_id: str, name: str) -> Path:
    """An additional output to serve (NotFound when there is none)."""
    with ctx.read_transaction() as s:
        job = get_job_row(s, job_id)
    path = other_path(ctx, job.job_id, name)
    if not path.is_file():
        raise NotFound(f"job {job.job_id} has no additional output {name!r}")
    return path
