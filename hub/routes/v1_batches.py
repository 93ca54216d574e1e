"""REST: a batch of jobs (one ``batchId``) at a glance; its jobs are ``GET /v1/jobs?batchId=``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ..core import batches
from ..deps import DbSession
from ..schemas import BatchPublic

router = APIRouter(prefix="/v1", tags=["jobs"])

BatchIdPath = Annotated[str, Path(max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$", description="the batchId the jobs were submitted with")]


@router.get("/batches/{batch_id}", response_model=BatchPublic)
def get_batch(batch_id: BatchIdPath, s: DbSession) -> BatchPublic:
    """How many of the batch's jobs are in each status, how many finished or failed, and a guess of the time left
    (what the batch page polls). 404 when no job has this batch id."""
    return batch_public(batches.batch_summary(s, batch_id))


def batch_public(b: batches.BatchSummary) -> BatchPublic:
    return BatchPublic(
        batchId=b.batch_id, counts=b.counts, total=b.total, finished=b.finished, failed=b.failed,
        isFinished=b.is_finished, firstCreatedSec=b.first_created_sec, etaSec=b.eta_sec,
    )
