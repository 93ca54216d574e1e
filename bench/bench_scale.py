"""How the hub's job requests scale: their time with 1,000,000 jobs stored against 10,000.

    python bench/bench_scale.py [--database sqlite|postgresql|both] [--jobs 1000000] [--baseline-jobs 10000]
                                [--rounds 15] [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Builds two hubs side by side (two SQLite files in a temporary directory, or two PostgreSQL
schemas, dropped at the end), seeds them fast (executemany in large chunks on SQLite,
COPY on PostgreSQL; then ANALYZE, as autovacuum or a running hub would), and measures
through the ASGI app, round by round with both sizes interleaved (the order alternating),
so drift of a busy machine cancels:

  createJob + claim     POST /v1/jobs (a new definition), then POST /v1/compute/claim
  createJob + claim app the same for an app with no other pending job, claimed naming that app
                        (the bench app's pending jobs, 6 % of all, are older)
  job-counts            GET /v1/job-counts, and ?serviceName=
  jobs pages            GET /v1/jobs: first page, second page (cursor), ?status=failed,
                        ?serviceName=, ?userId=&status=running
  by tag                GET /v1/jobs?tag= (a rare tag, a common one)

It prints the median per request at each size, the ratio large / small with its range
over rounds (each round's large over its small), and the query plans at the large size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.app import create_app  # noqa: E402
from hub.context import HubContext  # noqa: E402
from hub.core import accounts  # noqa: E402
from hub.core import jobs as core  # noqa: E402
from hub.core.job_counts import fold_job_counts  # noqa: E402
from hub.db.tables import Job, JobTag  # noqa: E402
from hub.security import new_id  # noqa: E402
from hub.settings import HubSettings  # noqa: E402
from pairio.models import PairioApp, PairioComputeClientComputeSlot  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
APP = {"name": "bench", "processors": [{"name": "work", "parameters": [{"name": "i", "type": "str", "default": ""}]}]}
# An app with no seeded jobs: a claim naming it must not walk the bench app's pending jobs
FRESH_APP = {**APP, "name": "fresh"}
STATUSES = ["completed"] * 80 + ["failed"] * 10 + ["pending"] * 6 + ["running"] * 4
USERS = ("alice", "bob", "carol")
SERVICES = ("bench_a", "bench_b", "bench_c", "bench_d")
RESOURCES = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}
JOB_COLUMNS = [
    "job_id", "service_name", "user_id", "batch_id", "app_name", "processor_name", "job_definition",
    "job_definition_hash", "tags", "num_cpus", "num_gpus", "memory_gb", "time_sec", "console_output_url",
    "resource_utilization_log_url", "timestamp_created_sec", "timestamp_starting_sec", "timestamp_started_sec",
    "timestamp_finished_sec", "canceled", "status", "is_runnable", "error", "console_output_size",
    "console_input_size", "has_resource_utilization_log",
]


@contextmanager
def database(kind: str, name: str, tmp: Path, postgres_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'{name}.db'}"
        return
    schema = f"pairio_bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in postgres_url else "?"
        yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def seed_accounts(ctx: HubContext) -> tuple[str, str]:
    """Users, services with the bench app, a compute client of bench_a; returns the API key and the client's key."""
    with ctx.transaction() as s:
        for user in USERS:
            accounts.create_user(s, user)
        _, key = accounts.create_api_key(s, "alice")
        for service in SERVICES:
            accounts.create_service(s, service, "alice")
            accounts.add_app(s, service, PairioApp.model_validate(APP))
            accounts.add_app(s, service, PairioApp.model_validate(FRESH_APP))
        slot = PairioComputeClientComputeSlot(numCpus=8, numGpus=0, memoryGb=64, timeSec=3600, multiplicity=10_000)
        _, cc_key = accounts.register_compute_client(s, "bench_a", "alice", "bench", [slot], "")
    return key, cc_key


def job_rows(start: int, count: int, total: int, t0: float, base: str) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Jobs ``start`` .. of ``total``: 'rare' is on 50 jobs and each 'group-N' on 1/50 at either size,
    so a tag page holds as many jobs in the small database as in the large one."""
    rare_every = max(1, total // 50)
    for i in range(start, start + count):
        job_id = new_id()
        status = STATUSES[i % len(STATUSES)]
        created = t0 + i * 0.01
        tags = [f"group-{i % 50}"] + (["rare"] if i % rare_every == 7 % rare_every else [])
        yield {
            "job_id": job_id, "service_name": SERVICES[i % 7 % 4], "user_id": USERS[i % 3], "batch_id": None,
            "app_name": "bench", "processor_name": "work",
            "job_definition": {"appName": "bench", "processorName": "work", "inputFiles": [], "outputFiles": [],
                               "parameters": [{"name": "i", "value": str(i)}], "cacheBust": None},
            "job_definition_hash": uuid.uuid4().hex, "tags": tags, "num_cpus": 1, "num_gpus": 0, "memory_gb": 1.0,
            "time_sec": 60.0, "console_output_url": f"{base}/v1/jobs/{job_id}/console-output",
            "resource_utilization_log_url": f"{base}/v1/jobs/{job_id}/resource-utilization-log",
            "timestamp_created_sec": created,
            "timestamp_starting_sec": created + 1 if status != "pending" else None,
            "timestamp_started_sec": created + 2 if status != "pending" else None,
            "timestamp_finished_sec": created + 30 if status in ("completed", "failed") else None,
            "canceled": False, "status": status, "is_runnable": status == "pending",
            "error": "exit code 1" if status == "failed" else None, "console_output_size": 0,
            "console_input_size": 0, "has_resource_utilization_log": False,
        }, tags


def seed_jobs(ctx: HubContext, count: int, t0: float) -> float:
    """``count`` jobs (statuses, services, users and tags in fixed proportions); returns the seconds it took."""
    started = time.perf_counter()
    base = ctx.settings.base_url
    chunk = 50_000
    postgres = ctx.engine.dialect.name == "postgresql"
    for lo in range(0, count, chunk):
        rows = list(job_rows(lo, min(chunk, count - lo), count, t0, base))
        if postgres:
            _copy_jobs(ctx, rows)
        else:
            with ctx.transaction() as s:
                s.execute(insert(Job), [r for r, _ in rows])
                s.execute(insert(JobTag), [
                    {"job_id": r["job_id"], "tag": t, "timestamp_created_sec": r["timestamp_created_sec"]} for r, tags in rows for t in tags
                ])
    fold_job_counts(ctx)  # as the hub's housekeeping would
    if postgres:
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with ctx.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def _copy_jobs(ctx: HubContext, rows: list[tuple[dict[str, Any], list[str]]]) -> None:
    import json

    raw = ctx.engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(f"COPY jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for r, _ in rows:
                copy.write_row([json.dumps(r[c]) if c in ("job_definition", "tags") else r[c] for c in JOB_COLUMNS])
        with cur.copy("COPY job_tags (job_id, tag, timestamp_created_sec) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for r, tags in rows:
                for t in tags:
                    copy.write_row([r["job_id"], t, r["timestamp_created_sec"]])
        raw.commit()
    finally:
        raw.close()


class Hub:
    """One hub of the pair: its context, an in-process client and its keys."""

    def __init__(self, stack: ExitStack, url: str, data_dir: Path) -> None:
        self.ctx = HubContext.create(HubSettings(data_dir=data_dir, database_url=url, public_url="http://bench.test"))
        stack.callback(self.ctx.close)
        self.key, self.cc_key = seed_accounts(self.ctx)
        self.client = stack.enter_context(TestClient(create_app(ctx=self.ctx)))
        self.auth = {"Authorization": f"Bearer {self.key}"}
        self.cc_auth = {"Authorization": f"Bearer {self.cc_key}"}
        self.cursor = ""

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params, headers=self.auth)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r.json()

    def create_and_claim(self) -> None:
        body = {"serviceName": "bench_a", "jobDefinition": {"appName": "bench", "processorName": "work",
                "parameters": [{"name": "i", "value": uuid.uuid4().hex}]}, "requiredResources": RESOURCES}
        r = self.client.post("/v1/jobs", json=body, headers=self.auth)
        assert r.status_code == 201, r.text[:300]
        r = self.client.post("/v1/compute/claim", json={"maxJobs": 1}, headers=self.cc_auth)
        assert r.status_code == 200 and len(r.json()["jobs"]) == 1, r.text[:300]

    def create_and_claim_by_app(self) -> None:
        """A job of an app no other pending job has, claimed by a bridge naming that app only."""
        body = {"serviceName": "bench_a", "jobDefinition": {"appName": "fresh", "processorName": "work",
                "parameters": [{"name": "i", "value": uuid.uuid4().hex}]}, "requiredResources": RESOURCES}
        r = self.client.post("/v1/jobs", json=body, headers=self.auth)
        assert r.status_code == 201, r.text[:300]
        r = self.client.post("/v1/compute/claim", json={"maxJobs": 1, "apps": ["fresh"], "containerMode": "none"}, headers=self.cc_auth)
        assert r.status_code == 200 and [j["jobDefinition"]["appName"] for j in r.json()["jobs"]] == ["fresh"], r.text[:300]


OPERATIONS: dict[str, Callable[[Hub], Any]] = {
    "createJob + claim": Hub.create_and_claim,
    "createJob + claim app": Hub.create_and_claim_by_app,
    "job-counts": lambda h: h.get("/v1/job-counts"),
    "job-counts service": lambda h: h.get("/v1/job-counts", serviceName="bench_b"),
    "jobs first page": lambda h: h.get("/v1/jobs"),
    "jobs second page": lambda h: h.get("/v1/jobs", cursor=h.cursor),
    "jobs status=failed": lambda h: h.get("/v1/jobs", status="failed"),
    "jobs service": lambda h: h.get("/v1/jobs", serviceName="bench_c"),
    "jobs user+running": lambda h: h.get("/v1/jobs", userId="carol", status="running"),
    "jobs tag=rare": lambda h: h.get("/v1/jobs", tag="rare"),
    "jobs tag=group-7": lambda h: h.get("/v1/jobs", tag="group-7"),
}


def measure(small: Hub, large: Hub, rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    for hub in (small, large):
        hub.cursor = hub.get("/v1/jobs")["nextCursor"]
        for op in OPERATIONS.values():  # warm-up
            op(hub)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in OPERATIONS}
    for rnd in range(rounds):
        for name, op in OPERATIONS.items():
            order = [(0, small), (1, large)] if rnd % 2 == 0 else [(1, large), (0, small)]
            for index, hub in order:
                t = time.perf_counter()
                op(hub)
                times[name][index].append(time.perf_counter() - t)
    return times


def query_plans(ctx: HubContext) -> list[str]:
    from sqlalchemy.dialects import postgresql, sqlite

    pg = ctx.engine.dialect.name == "postgresql"
    dialect = postgresql.dialect() if pg else sqlite.dialect()
    explain = "EXPLAIN" if pg else "EXPLAIN QUERY PLAN"
    queries = {
        "claim candidates": select(Job).where(
            Job.status == "pending", Job.is_runnable.is_(True), Job.canceled.is_(False), Job.service_name == "bench_a",
            Job.num_cpus.between(0, 8),
        ).order_by(Job.timestamp_created_sec, Job.job_id).limit(1),
        "claim candidates of one app": select(Job).where(
            Job.status == "pending", Job.is_runnable.is_(True), Job.canceled.is_(False), Job.service_name == "bench_a",
            Job.num_cpus.between(0, 8), Job.app_name == "fresh",
        ).order_by(Job.timestamp_created_sec, Job.job_id).limit(1),
        "first page": core.find_jobs_query(core.JobFilter(), 101),
        "status=failed": core.find_jobs_query(core.JobFilter(status=[core.JobStatus.FAILED]), 101),
        "user+running": core.find_jobs_query(core.JobFilter(userId="carol", status=[core.JobStatus.RUNNING]), 101),
        "tag=group-7": core.find_jobs_query(core.JobFilter(tags=["group-7"]), 101),
        "counts": core.job_counts.counts_query(None),
    }
    lines = []
    with ctx.engine.connect() as conn:
        for name, q in queries.items():
            sql = str(q.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            plan = [str(row[-1]).strip() for row in conn.execute(text(f"{explain} {sql}"))]
            lines.append(f"  {name}: " + " / ".join(plan))
    return lines


def run(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        small_url = stack.enter_context(database(kind, "small", tmp, args.postgres_url))
        large_url = stack.enter_context(database(kind, "large", tmp, args.postgres_url))
        small, large = Hub(stack, small_url, tmp / "small"), Hub(stack, large_url, tmp / "large")
        t0 = time.time() - args.jobs * 0.01 - 100
        took = seed_jobs(small.ctx, args.baseline_jobs, t0)
        print(f"{kind}: seeded {args.baseline_jobs} jobs in {took:.1f} s", flush=True)
        took = seed_jobs(large.ctx, args.jobs, t0)
        print(f"{kind}: seeded {args.jobs} jobs in {took:.1f} s ({args.jobs / took:.0f} per s)", flush=True)
        times = measure(small, large, args.rounds)
        print(f"\n{kind}: median ms per request, {args.baseline_jobs} jobs vs {args.jobs} jobs; ratio of medians [range of per-round ratios]")
        for name, (a, b) in times.items():
            ratios = sorted(y / x for x, y in zip(a, b))
            lo, hi = ratios[len(ratios) // 10], ratios[-1 - len(ratios) // 10]
            print(
                f"  {name:20s} {statistics.median(a) * 1000:8.1f} {statistics.median(b) * 1000:8.1f}"
                f"   ratio {statistics.median(b) / statistics.median(a):5.2f} [{lo:.2f}-{hi:.2f}]"
            )
        print(f"\n{kind}: query plans with {args.jobs} jobs")
        print("\n".join(query_plans(large.ctx)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the large database")
    parser.add_argument("--baseline-jobs", type=int, default=10_000, help="jobs in the small database")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    for kind in (["sqlite", "postgresql"] if args.database == "both" else [args.database]):
        run(kind, args)


if __name__ == "__main__":
    main()
