"""The hub's FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, OperationalError
from starlette.concurrency import run_in_threadpool

from pairio.models import CROSS_FIELD_RULE

from . import collector, expiry
from .context import HubContext
from .errors import DATABASE_UNAVAILABLE, HubError, database_unavailable_log
from .limits import BodySizeLimit
from .openapi import install_docs
from .routes import health, v1_batches, v1_compute, v1_files, v1_jobs, v1_services, wire
from .settings import HubSettings
from .ui import mount_ui, ui_error_page

log = logging.getLogger("pairio.hub")
DATABASE_RETRY_AFTER_SEC = 2


def format_validation_error(exc: RequestValidationError) -> str:
    """One readable line per problem: where it is and what is wrong (input values are not echoed)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
        msg = str(err.get("msg", "invalid"))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid request: " + "; ".join(parts)


def create_app(settings: Optional[HubSettings] = None, ctx: Optional[HubContext] = None) -> FastAPI:
    """Build the hub app. Pass ``ctx`` to share a database and notifier with the caller (tests)."""
    if ctx is None:
        ctx = HubContext.create(settings or HubSettings())
    settings = ctx.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(t(ctx)) for t in app.state.background_tasks]
        collector.freeze_startup_objects()
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await ctx.close_loop()

    app = FastAPI(
        title="Pairio hub",
        description="Jobs, apps, services and compute clients. The original wire protocol is served under /api.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by hub.openapi with local assets
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.background_tasks = [expiry.expire_lost_compute_clients_periodically]

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        if getattr(request.state, "ui", False):
            return await run_in_threadpool(ui_error_page, request, exc)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # e.g. PostgreSQL refuses NUL characters in text; the request is at fault, not the hub
        return JSONResponse(
            {"detail": "invalid request: a value contains characters the database cannot store (such as NUL)"},
            status_code=400,
        )

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # the database restarting, refusing connections, or a connection lost at a commit: nothing the request
        # did wrong; 503 tells clients to try again (pairio's client does for requests that are safe to repeat)
        log.warning("%s %s: %s", request.method, request.url.path, database_unavailable_log(exc))
        return JSONResponse({"detail": DATABASE_UNAVAILABLE}, status_code=503, headers={"Retry-After": str(DATABASE_RETRY_AFTER_SEC)})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # 422: the request does not match the OpenAPI schema; 400: it does, but breaks a rule across fields
        beyond_schema = all(e.get("type") == CROSS_FIELD_RULE for e in exc.errors())
        return JSONResponse({"detail": format_validation_error(exc)}, status_code=400 if beyond_schema else 422)

    app.include_router(v1_jobs.router)
    app.include_router(v1_batches.router)
    app.include_router(v1_services.router)
    app.include_router(v1_files.router)
    app.include_router(v1_compute.router)
    app.include_router(wire.router)
    app.include_router(health.router)
    mount_ui(app)
    install_docs(app, {name: call.request for name, call in wire.CALLS.items()})

    upload_limits: list[tuple[str, str, int]] = []
    app.state.upload_limits = upload_limits
    upload_limits.append(("PUT", v1_compute.UPLOAD_PATH_PREFIX, settings.max_upload_bytes))
    upload_limits.append(("PUT", wire.ORIGINAL_SDK_UPLOAD_PATH, settings.max_upload_bytes))  # each URL is for a declared size

    def limit_for(method: str, path: str) -> Optional[int]:
        for m, prefix, limit in upload_limits:
            if method == m and path.startswith(prefix):
                return limit
        return None

    app.add_middleware(BodySizeLimit, default_limit=settings.max_json_body_bytes, limit_for=limit_for)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Range"],
        expose_headers=["Content-Length", "Content-Range", "Accept-Ranges"],
        max_age=600,
    )
    return app
