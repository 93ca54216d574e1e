"""Prebuilt statements run on the driver's cursor (hub/db/raw.py) give what SQLAlchemy gives: the same rows
and values (JSON, booleans, floats), the same stored values for inserts, the same errors (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DataError, IntegrityError

from hub.context import HubContext
from hub.core import accounts, job_answers, waiting
from hub.core.jobs import JobCreate, create_job
from hub.db.raw import on_connection, prebuilt
from hub.db.tables import Job, JobTag
from pairio.models import PairioApp, PairioJobDefinition, PairioJobRequiredResources

APP = {"name": "app1", "processors": [{"name": "p", "parameters": [{"name": "x", "type": "int", "default": 1}], "outputs": [{"name": "out"}]}]}
_ALL_JOBS = select(Job.__table__).order_by(Job.__table__.c.job_id)
prebuilt(_ALL_JOBS)
_TAG_INSERT = prebuilt(insert(JobTag.__table__), ["job_id", "tag", "timestamp_created_sec"])
_ONE = prebuilt(text("SELECT 1 AS one"))


def _jobs(ctx: HubContext, n: int) -> list[str]:
    with ctx.transaction() as s:
        accounts.create_user(s, "alice")
        accounts.create_service(s, "svc", "alice")
        accounts.add_app(s, "svc", PairioApp.model_validate(APP))
    ids = []
    for i in range(n):
        req = JobCreate(
            serviceName="svc",
            jobDefinition=PairioJobDefinition.model_validate(
                {"appName": "app1", "processorName": "p", "inputFiles": [], "outputFiles": [{"name": "out", "fileBaseName": "o.txt"}],
                 "parameters": [{"name": "x", "value": i}]}
            ),
            requiredResources=PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=1, timeSec=60),
            tags=[f"t{i}"],
        )
        with ctx.transaction() as s:
            job, _ = create_job(ctx, s, "alice", req)
            ids.append(job.job_id)
    return ids


def test_prebuilt_reads_give_the_rows_sqlalchemy_gives(ctx: HubContext) -> None:
    ids = _jobs(ctx, 3)
    with ctx.engine.connect() as conn:
        expected = [tuple(r) for r in conn.execute(_ALL_JOBS)]
        expected_job = conn.execute(waiting.JOB_WITH_ITEMS_AND_AHEAD, {"job_id": ids[2]}).all()
    with ctx.raw_reads() as reads:
        got = [tuple(r) for r in reads.execute(_ALL_JOBS)]
        got_job = reads.execute(waiting.JOB_WITH_ITEMS_AND_AHEAD, {"job_id": ids[2]}).all()
    assert got == expected
    assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]
    assert [tuple(r) for r in got_job] == [tuple(r) for r in expected_job]
    assert job_answers.StoredJob.from_rows(got_job) == job_answers.StoredJob.from_rows(expected_job)
    assert job_answers.StoredJob.from_rows(got_job).jobs_ahead == 2  # type: ignore[union-attr]


def test_statements_not_prebuilt_go_through_sqlalchemy(ctx: HubContext) -> None:
    ids = _jobs(ctx, 2)
    composed = select(Job.job_id).where(Job.job_id.in_(ids)).order_by(Job.job_id)  # expanding: never on the cursor
    with ctx.raw_reads() as reads:
        assert list(reads.scalars(composed)) == sorted(ids)
        assert reads.scalar(select(Job.status).where(Job.job_id == ids[0])) == "pending"


def test_prebuilt_inserts_store_what_sqlalchemy_stores(ctx: HubContext) -> None:
    ids = _jobs(ctx, 1)
    rows = [{"job_id": ids[0], "tag": t, "timestamp_created_sec": 5.0} for t in ("a", "b")]
    with ctx.transaction() as s:
        on_connection(s.connection()).execute(_TAG_INSERT, rows)
    with ctx.read_transaction() as s:
        tags = s.execute(select(JobTag.tag, JobTag.timestamp_created_sec).where(JobTag.job_id == ids[0]).order_by(JobTag.tag)).all()
    assert [tuple(t) for t in tags] == [("a", 5.0), ("b", 5.0), ("t0", tags[2][1])]


def test_errors_are_raised_as_sqlalchemy_raises_them(ctx: HubContext) -> None:
    ids = _jobs(ctx, 1)
    with pytest.raises(IntegrityError):  # the tag exists
        with ctx.transaction() as s:
            on_connection(s.connection()).execute(_TAG_INSERT, {"job_id": ids[0], "tag": "t0", "timestamp_created_sec": 1.0})
    if ctx.engine.dialect.name == "postgresql":
        with pytest.raises(DataError), ctx.raw_reads() as reads:  # PostgreSQL refuses NUL in text
            job_answers.stored_job(reads, "a\x00b")
    with ctx.raw_reads() as reads:  # the connection went back to the pool usable
        assert reads.execute(_ONE).scalar() == 1
        assert job_answers.stored_job(reads, ids[0]).row.job_id == ids[0]
