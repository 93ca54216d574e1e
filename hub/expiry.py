"""Background loop that hands back or fails the jobs of compute clients that went silent."""

from __future__ import annotations

import asyncio
import logging
import time

import anyio.to_thread

from .context import HubContext
from .core.compute import expire_lost_compute_clients
from .core.job_counts import fold_job_counts
from .core.job_secrets import forget_erased_secrets

log = logging.getLogger("pairio.hub.expiry")


async def expire_lost_compute_clients_periodically(ctx: HubContext) -> None:
    """Every ``expiry_check_interval_sec``, expire the jobs of clients silent past ``heartbeat_timeout_sec``.

    Nothing is expired during the first ``heartbeat_timeout_sec`` after the hub starts:
    while the hub was down no bridge could heartbeat, and they deserve a chance to
    before their jobs are declared lost.
    """
    started = time.time()
    while True:
        await asyncio.sleep(ctx.settings.expiry_check_interval_sec)
        try:
            await anyio.to_thread.run_sync(forget_erased_secrets, ctx)
        except Exception:  # noqa: BLE001 - as below
            log.exception("forgetting erased job secrets failed; trying again in %.0f s", ctx.settings.expiry_check_interval_sec)
        try:
            await anyio.to_thread.run_sync(fold_job_counts, ctx)
        except Exception:  # noqa: BLE001 - as below; reads add the unfolded changes meanwhile
            log.exception("folding job counts failed; trying again in %.0f s", ctx.settings.expiry_check_interval_sec)
        if time.time() - started < ctx.settings.heartbeat_timeout_sec:
            continue
        try:
            result = await anyio.to_thread.run_sync(expire_lost_compute_clients, ctx)
        except Exception:  # noqa: BLE001 - a database hiccup must not stop the loop for good
            log.exception("expiring lost compute clients failed; trying again in %.0f s", ctx.settings.expiry_check_interval_sec)
            continue
        if result.failed_job_ids or result.requeued_job_ids:
            log.warning(
                "lost compute clients: failed %d running job(s), returned %d starting job(s) to pending",
                len(result.failed_job_ids),
                len(result.requeued_job_ids),
            )
