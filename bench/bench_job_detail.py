"""What the waiting reason and queue position add to reading one job (``GET /v1/jobs/{id}``).

    python bench/bench_job_detail.py [--jobs 3000] [--reads 200] [--rounds 5] [--database sqlite|postgresql|both]

Creates ``--jobs`` pending jobs in one service (one compute client whose single slot is
busy, so the newest job's reason is ``all_slots_busy`` with every older job ahead: the
costliest reason), then, round by round in alternating order, reads the newest job
``--reads`` times without the waiting reason ("before": ``job_answers.public_job_answer``
on a ``ctx.raw_reads()`` connection, serialized as the route serializes it) and the way
``GET /v1/jobs/{id}`` reads it now ("now": ``hub.routes.v1_jobs._get_job``: the answer, the
jobs ahead counted in the same statement, ``waiting_reason`` and ``queue_position`` on the
same connection, the JSON response). Prints per-read milliseconds and the ratio now /
before (median over rounds, with the range).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from hub.context import HubContext  # noqa: E402
from hub.core import accounts, compute  # noqa: E402
from hub.core import job_answers  # noqa: E402
from hub.core import jobs as core  # noqa: E402
from hub.routes.v1_jobs import _get_job  # noqa: E402
from hub.settings import HubSettings  # noqa: E402
from pairio.models import PairioApp, PairioComputeClientComputeSlot, PairioJobDefinition, PairioJobRequiredResources  # noqa: E402
from pairio.waiting import WaitingCode  # noqa: E402
from tests.hubtools import HELLO_WORLD_SPEC, postgres_schema  # noqa: E402

RES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=1, timeSec=60)
SLOT = PairioComputeClientComputeSlot(numCpus=1, numGpus=0, memoryGb=4, timeSec=3600, multiplicity=1)


def prepare(ctx: HubContext, n: int) -> str:
    with ctx.transaction() as s:
        accounts.create_user(s, "alice")
        accounts.create_service(s, "bench", "alice")
        accounts.add_app(s, "bench", PairioApp.model_validate(HELLO_WORLD_SPEC))
        _, cc_key = accounts.register_compute_client(s, "bench", "alice", "busy", [SLOT])
    job_id = ""
    for start in range(0, n, 1000):
        with ctx.transaction() as s:
            for i in range(start, min(n, start + 1000)):
                definition = PairioJobDefinition(appName="hello_world", processorName="hello_world_1", parameters=[{"name": "name", "value": f"j{i}"}])
                job, _ = core.create_job(ctx, s, "alice", core.JobCreate(serviceName="bench", jobDefinition=definition, requiredResources=RES))
                job_id = job.job_id
    compute.claim_jobs(ctx, cc_key, 1)  # the oldest job takes the only slot
    return job_id


def per_read_ms(reads: int, read: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(reads):
        read()
    return (time.perf_counter() - started) / reads * 1000


def answer_now(ctx: HubContext, job_id: str) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` answers it today."""
    with ctx.raw_reads() as conn:
        return json.loads(bytes(_get_job(ctx, conn, job_id).body))


def run(database_url: str, data_dir: Path, args: argparse.Namespace) -> None:
    ctx = HubContext.create(HubSettings(data_dir=data_dir, database_url=database_url, public_url="http://127.0.0.1:8000"))
    try:
        job_id = prepare(ctx, args.jobs)
        reason = answer_now(ctx, job_id)["waitingReason"]
        assert reason is not None and reason["code"] == WaitingCode.ALL_SLOTS_BUSY.value, reason

        def before() -> object:
            with ctx.raw_reads() as conn:
                return job_answers.answer_json(job_answers.public_job_answer(conn, job_id))

        def now() -> object:
            with ctx.raw_reads() as conn:
                return _get_job(ctx, conn, job_id)

        ratios, befores, nows = [], [], []
        for round_ in range(args.rounds):
            order = [("before", before), ("now", now)] if round_ % 2 == 0 else [("now", now), ("before", before)]
            times = {name: per_read_ms(args.reads, fn) for name, fn in order}
            befores.append(times["before"])
            nows.append(times["now"])
            ratios.append(times["now"] / times["before"])
        name = database_url.split(":")[0].split("+")[0]
        print(
            f"{name}: {args.jobs} pending jobs, {reason['jobsAhead']} ahead counted; per read: before "
            f"{statistics.median(befores):.2f} ms, now {statistics.median(nows):.2f} ms; "
            f"ratio now/before {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        )
    finally:
        ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{tmp}/hub.db", Path(tmp) / "hub", args)
    if args.database in ("postgresql", "both"):
        with tempfile.TemporaryDirectory() as tmp, postgres_schema() as url:
            run(url, Path(tmp) / "hub", args)


if __name__ == "__main__":
    main()
