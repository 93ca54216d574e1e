"""Fixtures: every hub-level test runs against SQLite and against PostgreSQL. Test tiers: see TIERS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

# Every test module's tiers, so one tier runs alone: ``bash scripts/test.sh -m slurm``.
# unit: no process, server or database beyond the test itself; hub: the hub on SQLite/PostgreSQL;
# bridge: real hub and bridge processes, local backend; slurm, ssh, container, browser: the real
# Slurm cluster, sshd, container engine, Chromium; compat: the original pairio==0.5.9 as the peer.
TIERS: dict[str, tuple[str, ...]] = {
    "test_app_sdk": ("unit",),
    "test_watcher_launcher": ("bridge",),
    "test_watcher_code": ("bridge",),
    "test_watcher_spawn": ("bridge",),
    "test_note_outbox": ("bridge",),
    "test_warm_start": ("bridge",),
    "test_batch_page": ("hub",),
    "test_batches": ("hub",),
    "test_bench_smoke": ("bridge",),
    "test_bench_container_smoke": ("bridge", "container"),
    "test_bench_slurm_smoke": ("slurm",),
    "test_bench_ssh_smoke": ("ssh",),
    "test_bridge_claim_scope": ("bridge",),
    "test_claim_ahead": ("bridge",),
    "test_bridge_containers_e2e": ("bridge", "container"),
    "test_bridge_e2e": ("bridge",),
    "test_bridge_examples": ("bridge",),
    "test_bridge_hygiene": ("bridge",),
    "test_bridge_runner": ("unit",),
    "test_bridge_secrets_e2e": ("bridge",),
    "test_busy_machine": ("bridge",),
    "test_cancel_e2e": ("bridge",),
    "test_claim_concurrency": ("hub",),
    "test_claim_scope": ("hub",),
    "test_cli": ("hub",),
    "test_collector": ("hub",),
    "test_client": ("hub",),
    "test_compute_api": ("hub",),
    "test_job_release": ("hub",),
    "test_deploy_examples": ("unit",),
    "test_finish_claims": ("bridge",),
    "test_files": ("hub",),
    "test_heartbeat_expiry": ("hub",),
    "test_hub_http": ("bridge",),
    "test_hub_image": ("hub", "container"),
    "test_install_extras": ("hub", "bridge"),
    "test_bench_hub_smoke": ("hub",),
    "test_job_answers": ("hub",),
    "test_raw_statements": ("hub",),
    "test_loop_connection": ("hub",),
    "test_loop_postgres": ("hub",),
    "test_pg_batch": ("hub",),
    "test_job_counts": ("hub",),
    "test_job_page": ("hub",),
    "test_job_secrets": ("hub",),
    "test_job_secrets_e2e": ("bridge",),
    "test_local_backend": ("bridge",),
    "test_local_containers": ("bridge", "container"),
    "test_masking_stream": ("unit",),
    "test_migrations": ("hub",),
    "test_models": ("unit",),
    "test_openapi": ("hub",),
    "test_original_images": ("compat", "container"),
    "test_original_compute_client": ("compat", "container"),
    "test_original_pairio": ("compat",),
    "test_remote_inputs": ("bridge",),
    "test_rest_jobs": ("hub",),
    "test_runner_recovery": ("bridge",),
    "test_slurm_accounting": ("slurm",),
    "test_slurm_backend": ("slurm",),
    "test_slurm_containers": ("slurm", "container"),
    "test_slurm_e2e": ("slurm",),
    "test_slurm_script": ("unit",),
    "test_slurm_ssh": ("slurm", "ssh"),
    "test_ssh_backend": ("ssh",),
    "test_ssh_containers": ("ssh", "container"),
    "test_ssh_e2e": ("ssh",),
    "test_ssh_shell": ("ssh",),
    "test_ui_browser": ("browser",),
    "test_ui_browser_lists": ("browser",),
    "test_ui_pages": ("hub",),
    "test_ui_register_compute_client": ("hub",),
    "test_user_stats": ("hub",),
    "test_waiting_bridge": ("bridge",),
    "test_waiting_reason": ("hub",),
    "test_waiting_slurm": ("slurm",),
    "test_watch": ("unit",),
    "test_wire_protocol": ("hub",),
    "test_wire_ui_calls": ("compat",),
    "test_wire_ui_more": ("compat",),
}


def pytest_configure(config: pytest.Config) -> None:
    for tier in sorted({t for tiers in TIERS.values() for t in tiers}):
        config.addinivalue_line("markers", f"{tier}: test tier (tests/conftest.py TIERS)")


# ---------------------------------------------------------------- parallel runs (scripts/test.sh: pytest-xdist)
#
# Each worker process takes whole units (UnitScheduling below): all Slurm modules together (one worker
# starts the session's test cluster), every other module whole (its module fixtures are made once,
# and its tests may build on each other). Units go out longest first: the workers order the tests
# (Slurm, then modules holding a test with a longer safety-net timeout than the default, then the
# rest by size) and ``--no-loadscope-reorder`` keeps that order. (xdist's own ``loadgroup`` marks do
# not reach its scheduler under pytest 9.2.)


def _unit_of(module: str, tiers: tuple[str, ...]) -> str:
    return "slurm" if "slurm" in tiers else module


def _unit_of_node(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return _unit_of(module, TIERS.get(module, ()))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        """xdist's scope scheduling, with this suite's units as the scopes."""

        def _split_scope(self, nodeid: str) -> str:
            return _unit_of_node(nodeid)

    return UnitScheduling(config, log)


def _is_long(item: pytest.Item, config: pytest.Config) -> bool:
    mark = item.get_closest_marker("timeout")
    default = float(config.getini("timeout") or 0)
    return bool(mark and mark.args and float(mark.args[0]) > default)


def _order_for_workers(config: pytest.Config, items: list[pytest.Item], units: dict[str, str]) -> None:
    sizes: dict[str, int] = {}
    long_units: set[str] = set()
    for item in items:
        unit = units[item.nodeid]
        sizes[unit] = sizes.get(unit, 0) + 1
        if _is_long(item, config):
            long_units.add(unit)
    first = {"slurm": 0}

    def rank(indexed: tuple[int, pytest.Item]) -> tuple[int, int, int]:
        index, item = indexed
        unit = units[item.nodeid]
        return (first.get(unit, 1 if unit in long_units else 2), -sizes[unit], index)

    items[:] = [item for _, item in sorted(enumerate(items), key=rank)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    units: dict[str, str] = {}
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        tiers = TIERS.get(module)
        if tiers is None:
            raise pytest.UsageError(f"tests/{module}.py has no tier: add it to TIERS in tests/conftest.py")
        for tier in tiers:
            item.add_marker(getattr(pytest.mark, tier))
        units[item.nodeid] = _unit_of(module, tiers)
    if hasattr(config, "workerinput"):  # a worker of a parallel run
        _order_for_workers(config, items, units)


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
