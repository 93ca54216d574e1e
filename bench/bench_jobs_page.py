"""How the web UI's jobs page scales: its time with 100,000 jobs in the database against its time with 1,000.

    python bench/bench_jobs_page.py [--jobs 100000] [--rounds 15] [--database-url postgresql+psycopg://...]

Seeds jobs by bulk insert (a hub in-process, SQLite in a temporary directory unless a
database URL is given; a PostgreSQL URL gets a schema of its own, dropped at the end),
then times GET /jobs through the ASGI app: the first page, a status filter, a service
filter, a tag filter, the sort orders (created, status, duration; both ways), the second
page, the job page of one job, and the page and JSON of a batch of 500 jobs. A ratio near 1
means the pages stay as quick with 100,000 jobs as with 1,000 (paged, indexed queries,
counts from one GROUP BY over an index). It prints the query plans too.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.app import create_app  # noqa: E402
from hub.context import HubContext  # noqa: E402
from hub.core import accounts  # noqa: E402
from hub.core import jobs as core  # noqa: E402
from hub.db.tables import Job, JobEvent, JobTag  # noqa: E402
from hub.security import new_id  # noqa: E402
from hub.settings import HubSettings  # noqa: E402
from pairio.models import PairioApp  # noqa: E402

APP = {"name": "bench", "processors": [{"name": "work", "parameters": [{"name": "i", "type": "int", "default": 0}]}]}
STATUSES = ["completed"] * 80 + ["failed"] * 10 + ["pending"] * 6 + ["running"] * 4
PAGES = {
    "first page": "/jobs",
    "status=failed": "/jobs?status=failed",
    "service=bench_b": "/jobs?service=bench_b",
    "tag=rare": "/jobs?tag=rare",
    "user=carol&status=running": "/jobs?user=carol&status=running",
    # the sort orders of the jobs list (hub/core/job_sort.py) and a batch's page (500 jobs at both sizes)
    "sort=created&order=asc": "/jobs?sort=created&order=asc",
    "sort=status (failed first)": "/jobs?sort=status&order=desc",
    "sort=status&order=asc": "/jobs?sort=status&order=asc",
    "sort=duration (longest)": "/jobs?sort=duration&order=desc",
    "sort=duration&order=asc": "/jobs?sort=duration&order=asc",
    "service=bench_b&sort=status": "/jobs?service=bench_b&sort=status",
    "batch page (500 jobs)": "/batch/bench-batch",
    "batch JSON (500 jobs)": "/v1/batches/bench-batch",
}
BATCH_SIZE = 500


def seed_accounts(ctx: HubContext) -> None:
    with ctx.transaction() as s:
        for user in ("alice", "bob", "carol"):
            accounts.create_user(s, user)
        for service in ("bench_a", "bench_b"):
            accounts.create_service(s, service, "alice")
            accounts.add_app(s, service, PairioApp.model_validate(APP))


def seed_jobs(ctx: HubContext, start: int, count: int, t0: float) -> None:
    """Jobs ``start`` .. ``start+count-1``, one second apart, by executemany in chunks."""
    base = ctx.settings.base_url
    chunk = 5000
    for lo in range(start, start + count, chunk):
        jobs, tags, events = [], [], []
        for i in range(lo, min(lo + chunk, start + count)):
            job_id = new_id()
            status = STATUSES[i % len(STATUSES)]
            created = t0 + i
            tag_list = [f"group-{i % 200}"] + (["rare"] if i % 1000 == 7 else [])
            jobs.append({
                "job_id": job_id, "service_name": "bench_b" if i % 10 == 0 else "bench_a",
                "user_id": ("alice", "bob", "carol")[i % 3], "batch_id": "bench-batch" if i < BATCH_SIZE else None, "app_name": "bench", "processor_name": "work",
                "job_definition": {"appName": "bench", "processorName": "work", "inputFiles": [], "outputFiles": [],
                                   "parameters": [{"name": "i", "value": i}], "cacheBust": None},
                "job_definition_hash": uuid.uuid4().hex, "tags": tag_list, "num_cpus": 1, "num_gpus": 0, "memory_gb": 1.0,
                "time_sec": 60.0, "target_compute_client_ids": None, "secrets": None,
                "console_output_url": f"{base}/v1/jobs/{job_id}/console-output",
                "resource_utilization_log_url": f"{base}/v1/jobs/{job_id}/resource-utilization-log",
                "timestamp_created_sec": created,
                "timestamp_starting_sec": created + 1 if status != "pending" else None,
                "timestamp_started_sec": created + 2 if status != "pending" else None,
                "timestamp_finished_sec": created + 30 if status in ("completed", "failed") else None,
                "canceled": False, "canceled_by_user_id": None, "status": status, "is_runnable": status == "pending",
                "error": "exit code 1" if status == "failed" else None, "compute_client_id": None, "compute_client_name": None,
                "compute_client_user_id": None, "image_uri": None, "job_private_key_hash": None, "console_output_size": 0,
                "has_resource_utilization_log": False,
            })
            tags += [{"job_id": job_id, "tag": t, "timestamp_created_sec": created} for t in tag_list]
            events.append({"job_id": job_id, "timestamp_sec": created, "status": "pending", "message": "created by bench"})
        with ctx.transaction() as s:
            s.execute(insert(Job), jobs)
            s.execute(insert(JobTag), tags)
            s.execute(insert(JobEvent), events)
    # fresh statistics and (PostgreSQL) a visibility map, as autovacuum keeps them on a running hub;
    # without it PostgreSQL cannot count from an index alone right after a bulk load
    if ctx.engine.dialect.name == "postgresql":
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with ctx.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def time_pages(client: TestClient, rounds: int) -> dict[str, float]:
    """Median seconds per page (after one warm-up request each)."""
    pages = dict(PAGES)
    first = client.get("/jobs")
    assert first.status_code == 200, first.text[:300]
    cursor = re.search(r'rel="next" href="([^"]+)"', first.text)
    if cursor:
        pages["second page"] = cursor.group(1).replace("&amp;", "&")
    job_id = re.search(r'href="/job/([A-Za-z0-9]+)"', first.text)
    assert job_id
    pages["job page"] = f"/job/{job_id.group(1)}"
    result = {}
    for name, path in pages.items():
        assert client.get(path).status_code == 200, path
        samples = []
        for _ in range(rounds):
            t = time.perf_counter()
            response = client.get(path)
            samples.append(time.perf_counter() - t)
            assert response.status_code == 200
        result[name] = statistics.median(samples)
    return result


def query_plans(ctx: HubContext) -> list[str]:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql.dialect() if ctx.engine.dialect.name == "postgresql" else sqlite.dialect()
    explain = "EXPLAIN" if ctx.engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
    lines = []
    filters = {
        "first page": core.JobFilter(), "status=failed": core.JobFilter(status=[core.JobStatus.FAILED]),
        "service=bench_b": core.JobFilter(serviceName="bench_b"), "tag=rare": core.JobFilter(tags=["rare"]),
    }
    with ctx.engine.connect() as conn:
        for name, f in filters.items():
            q = core._filtered(select(Job), f).order_by(Job.timestamp_created_sec.desc(), Job.job_id.desc()).limit(51)
            sql = str(q.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            plan = [str(row[-1]) for row in conn.execute(text(f"{explain} {sql}"))]
            lines.append(f"  {name}: " + " / ".join(p.strip() for p in plan))
        from hub.core import job_sort

        ran = core.filter_jobs(select(Job), core.JobFilter()).where(job_sort.HAS_RUN_TIME).order_by(job_sort.RUN_TIME.asc(), Job.job_id.asc()).limit(51)
        batch_failed = core.find_jobs_query(core.JobFilter(batchId="bench-batch", status=[core.JobStatus.FAILED]), 51, oldest_first=True)
        for name, q in (("sort=duration&order=asc", ran), ("batch page, failed first", batch_failed)):
            sql = str(q.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            lines.append(f"  {name}: " + " / ".join(str(r[-1]).strip() for r in conn.execute(text(f"{explain} {sql}"))))
        counts = select(Job.status, core.func.count()).group_by(Job.status)
        sql = str(counts.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        lines.append("  counts per status: " + " / ".join(str(r[-1]).strip() for r in conn.execute(text(f"{explain} {sql}"))))
    return lines


@contextmanager
def database(url: str | None, tmp: Path) -> Iterator[str]:
    if not url:
        yield f"sqlite:///{tmp / 'hub.db'}"
        return
    if not url.startswith("postgresql"):
        yield url
        return
    schema = f"pairio_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the large database")
    parser.add_argument("--baseline-jobs", type=int, default=1_000, help="jobs in the small database")
    parser.add_argument("--rounds", type=int, default=15, help="requests per page and size")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as d, database(args.database_url, Path(d)) as url:
        settings = HubSettings(data_dir=Path(d) / "hub", database_url=url, public_url="http://bench.test")
        ctx = HubContext.create(settings)
        seed_accounts(ctx)
        t0 = time.time() - args.jobs - 10
        with TestClient(create_app(ctx=ctx)) as client:
            seed_jobs(ctx, 0, args.baseline_jobs, t0)
            small = time_pages(client, args.rounds)
            started = time.perf_counter()
            seed_jobs(ctx, args.baseline_jobs, args.jobs - args.baseline_jobs, t0)
            print(f"seeded {args.jobs} jobs in {time.perf_counter() - started:.1f} s ({ctx.engine.dialect.name})")
            large = time_pages(client, args.rounds)
        print(f"\nmedian time per page, {args.baseline_jobs} jobs vs {args.jobs} jobs:")
        for name in small:
            print(f"  {name:28s} {small[name] * 1000:7.1f} ms  {large[name] * 1000:7.1f} ms   ratio {large[name] / small[name]:5.2f}")
        total_small, total_large = sum(small.values()), sum(large.values())
        print(f"  {'all pages':28s} {total_small * 1000:7.1f} ms  {total_large * 1000:7.1f} ms   ratio {total_large / total_small:5.2f}")
        print("\nquery plans at the large size:")
        print("\n".join(query_plans(ctx)))
        ctx.close()


if __name__ == "__main__":
    main()
