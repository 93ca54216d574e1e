"""Background loop that hands back or fails the jobs of compute clients that went silent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from .context import HubContext
from .core.compute import expire_lost_compute_clients
from .core.job_counts import fold_job_counts
from .core.job_secrets import forget_erased_secrets

log = logging.getLogger("pairio.hub.expiry")
T = TypeVar("T")


async def finished_in_thread(work: Callable[[HubContext], T], ctx: HubContext) -> T:
    """``work(ctx)`` in a worker thread; when the calling task is cancelled (the hub stops), the work still ends
    before the cancel goes on: a thread cannot be stopped, and the hub must not close its database under a
    transaction still running (anyio's ``to_thread.run_sync`` returns at once on a plain asyncio cancel)."""
    running = asyncio.get_running_loop().run_in_executor(None, work, ctx)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


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
            await finished_in_thread(forget_erased_secrets, ctx)
        except Exception:  # noqa: BLE001 - as below
            log.exception("forgetting erased job secrets failed; trying again in %.0f s", ctx.settings.expiry_check_interval_sec)
        try:
            await finished_in_thread(fold_job_counts, ctx)
        except Exception:  # noqa: BLE001 - as below; reads add the unfolded changes meanwhile
            log.exception("folding job counts failed; trying again in %.0f s", ctx.settings.expiry_check_interval_sec)
        if time.time() - started < ctx.settings.heartbeat_timeout_sec:
            continue
        try:
            result = await finished_in_thread(expire_lost_compute_clients, ctx)
        except Exception:  # noqa: BLE001 - a database hiccup must not stop the loop for good
            log.exception("expiring lost compute clients failed; trying again in %.0f s", ctx.settings.expiry_check_interval_sec)
            continue
        if result.failed_job_ids or result.requeued_job_ids:
            log.warning(
                "lost compute clients: failed %d running job(s), returned %d starting job(s) to pending",
                len(result.failed_job_ids),
                len(result.requeued_job_ids),
            )
