"""The original wire protocol's getJob (what Neurosift and the original client poll), alone and beside submissions.

    python bench/bench_wire_poll.py [--database sqlite|postgresql|both] [--clients 8] [--polls 2000] [--jobs 300]
                                    [--creations 1500] [--rounds 2] [--postgres-url postgresql+psycopg://...]

Starts the hub and the bare FastAPI app of bench_hub_rate.py the same way (uvicorn, one worker each),
creates ``--jobs`` jobs, then per round:

  bare POST          POST /bare/jobs from ``--clients`` connections (the baseline)
  wire getJob        POST /api/getJob of those jobs from ``--clients`` connections
  beside creations   the same polls while ``--clients`` more connections submit ``--creations`` new jobs

It prints rates, p50 / p99 latencies and the server's CPU per request (alone), the ratio wire getJob / bare POST, and
what polls and submissions do to each other (before stop 22 every poll took SQLite's write lock, and
submissions beside polls had a p99 of 0.6-0.9 s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Optional

import httpx
from bench_hub_rate import DEFAULT_POSTGRES_URL, Phase, job_body, measure_phase, postgres_schema, prepare_hub, run_phase, serve

Request = tuple[str, str, Optional[dict[str, Any]], int]


def polls_and_creations(url: str, polls: list[Request], creations: list[Request], clients: int, auth: dict[str, str]) -> tuple[Phase, Phase]:
    """Both phases at once, each from its own ``clients`` connections (each on an event loop of its own thread)."""

    async def both() -> tuple[Phase, Phase]:
        loop = asyncio.get_running_loop()
        got = loop.run_in_executor(None, lambda: asyncio.run(run_phase(url, clients, polls, {})))
        made = loop.run_in_executor(None, lambda: asyncio.run(run_phase(url, clients, creations, auth)))
        return await got, await made

    return asyncio.run(both())


def bench_database(name: str, url: str, data_dir: Path, args: argparse.Namespace) -> None:
    key = prepare_hub(url, data_dir)
    env = {"PAIRIO_HUB_DATA_DIR": str(data_dir), "PAIRIO_HUB_DATABASE_URL": url}
    auth = {"Authorization": f"Bearer {key}"}
    counter = itertools.count()
    rows: dict[str, list[Phase]] = {}
    with serve("hub_app", env, 1) as hub, serve("bare_app", {}, 1) as bare:
        seed = [("POST", "/v1/jobs", job_body(f"polled-{uuid.uuid4().hex}-{i}"), 201) for i in range(args.jobs)]
        measure_phase(hub, args.clients, seed, auth)
        with httpx.Client(base_url=hub.url, headers=auth) as c:
            ids = [j["jobId"] for j in c.get("/v1/jobs", params={"limit": min(args.jobs, 1000), "serviceName": "bench"}).json()["jobs"]]
        polls: list[Request] = [
            ("POST", "/api/getJob", {"type": "getJobRequest", "jobId": ids[i % len(ids)], "includePrivateKey": False}, 200)
            for i in range(args.polls)
        ]
        for rnd in range(args.rounds):
            bare_posts: list[Request] = [("POST", "/bare/jobs", job_body(f"b{i}"), 201) for i in range(args.polls)]
            creations: list[Request] = [
                ("POST", "/v1/jobs", job_body(f"new-{uuid.uuid4().hex}-{next(counter)}"), 201) for _ in range(args.creations)
            ]
            phases = {"bare POST": measure_phase(bare, args.clients, bare_posts, {}), "wire getJob": measure_phase(hub, args.clients, polls, {})}
            phases["getJob beside creations"], phases["creations beside polls"] = polls_and_creations(
                hub.url, polls, creations, args.clients, auth,
            )
            for phase, value in phases.items():
                rows.setdefault(phase, []).append(value)
            print(f"  [{name} round {rnd + 1}] " + ", ".join(f"{p} {v.rate:.0f}/s p99 {v.p99 * 1000:.0f} ms" for p, v in phases.items()), flush=True)
    print(f"\n{name}: {args.clients} clients per phase; rate median of rounds [range], p50 / p99 ms (worst round)")
    for phase, runs in rows.items():
        rates = [r.rate for r in runs]
        cpu = f"   server CPU {statistics.median(r.cpu for r in runs) * 1000:5.2f} ms/request" if any(r.cpu for r in runs) else ""
        print(
            f"  {phase:24s} {statistics.median(rates):7.0f}/s [{min(rates):.0f}-{max(rates):.0f}]"
            f"   p50 {max(r.p50 for r in runs) * 1000:6.1f}  p99 {max(r.p99 for r in runs) * 1000:7.1f}{cpu}"
        )
    ratios = [a.rate / b.rate for a, b in zip(rows["wire getJob"], rows["bare POST"])]
    print(f"  ratio wire getJob / bare POST: {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--clients", type=int, default=8, help="connections polling (and as many submitting, beside)")
    parser.add_argument("--polls", type=int, default=2000, help="wire getJob requests per phase")
    parser.add_argument("--jobs", type=int, default=300, help="jobs created first, polled in turn")
    parser.add_argument("--creations", type=int, default=1500, help="jobs submitted beside the polls, per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    for name in (["sqlite", "postgresql"] if args.database == "both" else [args.database]):
        with tempfile.TemporaryDirectory() as tmp:
            if name == "sqlite":
                bench_database(name, f"sqlite:///{tmp}/hub.db", Path(tmp), args)
            else:
                with postgres_schema(args.postgres_url) as url:
                    bench_database(name, url, Path(tmp), args)


if __name__ == "__main__":
    sys.exit(main())
