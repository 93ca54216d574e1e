"""The schema comes from Alembic migrations, matches the models, and survives restarts and races."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from hub.context import HubContext
from hub.db.engine import make_engine
from hub.db.migrate import upgrade_database
from hub.db.tables import Base
from hub.settings import HubSettings

from .hubtools import seed


def test_migrations_produce_exactly_the_models_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_database(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == [], f"tables.py and the migrations differ; run scripts/regen_initial_migration.py: {diff}"


def test_hot_query_indexes_exist(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_database(engine)
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("jobs")}
    engine.dispose()
    assert {"ix_jobs_service_hash_created", "ix_jobs_claimable", "ix_jobs_compute_client_status", "ix_jobs_user_created"} <= indexes
    assert "ix_jobs_user_id" not in indexes  # redundant with ix_jobs_user_created (0007)


def test_restarted_hub_keeps_its_jobs(hub_settings: HubSettings) -> None:
    from hub.core.jobs import JobCreate, create_job
    from pairio.models import PairioJobDefinition, PairioJobRequiredResources

    ctx = HubContext.create(hub_settings)
    seed(ctx)
    with ctx.transaction() as s:
        job, _ = create_job(ctx, s, "alice", JobCreate(
            serviceName="hello_world_service",
            jobDefinition=PairioJobDefinition(appName="hello_world", processorName="hello_world_1"),
            requiredResources=PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=1, timeSec=10),
        ))
        job_id = job.job_id
    ctx.close()
    again = HubContext.create(hub_settings)  # runs the migrations again: a no-op
    with again.transaction() as s:
        from hub.core.jobs import get_job_row

        assert get_job_row(s, job_id).status == "pending"
    again.close()


def test_several_hub_processes_may_migrate_at_once(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def migrate(e: object) -> None:
        try:
            upgrade_database(e)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert errors == []
