"""Fixtures: every hub-level test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from hub.app import create_app
from hub.context import HubContext
from hub.settings import HubSettings

from .hubtools import LiveHub, Seed, SyncASGITransport, postgres_schema, seed

PUBLIC_URL = "http://hub.test"

# session fixtures shared by several modules: one test Slurm cluster per session
pytest_plugins = ["tests.slurm_support"]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def hub_settings(database_url: str, tmp_path: Path) -> HubSettings:
    return HubSettings(
        data_dir=tmp_path / "hub",
        database_url=database_url,
        public_url=PUBLIC_URL,
        max_json_body_bytes=1024 * 1024,
        max_upload_bytes=8 * 1024 * 1024,
        heartbeat_timeout_sec=120,
        expiry_check_interval_sec=0.2,
        claim_recheck_interval_sec=0.5,
    )


@pytest.fixture
def ctx(hub_settings: HubSettings) -> Iterator[HubContext]:
    c = HubContext.create(hub_settings)
    yield c
    c.close()


@pytest.fixture
def seeded(ctx: HubContext) -> Seed:
    return seed(ctx)


@pytest.fixture
def app(ctx: HubContext) -> FastAPI:
    return create_app(ctx=ctx)


@pytest.fixture
def api(app: FastAPI) -> Iterator[httpx.Client]:
    """An httpx client calling the hub in-process through httpx.ASGITransport (no port)."""
    transport = SyncASGITransport(app)
    with httpx.Client(transport=transport, base_url=PUBLIC_URL) as client:
        yield client
    transport.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def live_hub(ctx: HubContext) -> Iterator[LiveHub]:
    """The hub on a real port of 127.0.0.1 (uvicorn in a thread)."""
    with LiveHub(ctx) as hub:
        yield hub
