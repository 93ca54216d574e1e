"""Hub request rate over real HTTP against a bare FastAPI endpoint served the same way.

    python bench/bench_hub_rate.py [--database sqlite|postgresql|both] [--clients 8,16] [--requests 1000] [--warmup 8] [--rounds 3]
                                   [--workers 1] [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Starts two uvicorn processes the same way (``python -m uvicorn --factory``, same worker
count): the hub (bench/hub_rate_apps.py:hub_app, its database prepared first: SQLite in a
temporary directory, or a PostgreSQL schema of its own, dropped at the end) and a bare
FastAPI app with one sync POST and one sync GET endpoint. Then, round by round and
for each number of concurrent clients (asyncio tasks, one keep-alive
connection each, a minimal HTTP/1.1 client so the load generator stays cheap):

  bare POST       POST /bare/jobs (a JSON body like createJob's)
  createJob       POST /v1/jobs, every definition distinct (201)
  cache hit       POST /v1/jobs again with definitions already created (200)
  getJob          GET /v1/jobs/{id}
  bare GET        GET /bare/jobs/{id}

Each phase first sends ``--warmup`` requests per client of its own kind over the same
connections, untimed (creations of other definitions, for the cache hits those again): what
is measured is the servers' steady state, not a hub opening its database connections.
It prints requests per second, p50 and p99 latency and the server's CPU time per request
(/proc) per phase, and the ratios createJob / bare POST, cache hit / bare POST, getJob /
bare GET (median over rounds, with the range), by rate and by CPU time per request: on a
machine shared with other work the CPU ratio is the steadier of the two. ``PAIRIO_BENCH_PROFILE=/tmp/prof`` makes the servers sample their
threads and write /tmp/prof.<pid> at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import httpx
from sqlalchemy import create_engine, text

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from hub.context import HubContext  # noqa: E402
from hub.core import accounts  # noqa: E402
from hub.settings import HubSettings  # noqa: E402
from pairio.models import PairioApp  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SERVICE = "bench"
APP = {
    "name": "bench",
    "processors": [
        {
            "name": "work",
            "parameters": [{"name": "i", "type": "str", "default": ""}, {"name": "n", "type": "int", "default": 1}],
            "outputs": [{"name": "out"}],
        }
    ],
}
RESOURCES = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}


def job_body(i: str) -> dict[str, Any]:
    return {
        "serviceName": SERVICE,
        "jobDefinition": {
            "appName": "bench", "processorName": "work", "inputFiles": [],
            "outputFiles": [{"name": "out", "fileBaseName": "out.txt"}],
            "parameters": [{"name": "i", "value": i}, {"name": "n", "value": 3}],
        },
        "requiredResources": RESOURCES,
        "tags": ["bench"],
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server process and its worker processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Server:
    url: str
    pid: int


@contextmanager
def serve(factory: str, env: dict[str, str], workers: int, module: str = "hub_rate_apps") -> Iterator[Server]:
    """``python -m uvicorn --factory`` on a free port of 127.0.0.1 (``module``: of bench/)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "--factory", f"{module}:{factory}", "--app-dir", str(BENCH),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "PYTHONPATH": str(BENCH.parent)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/docs-not-there", timeout=2).status_code:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{factory} did not start") from None
                time.sleep(0.1)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Phase:
    rate: float
    p50: float
    p99: float
    cpu: float = 0.0  # the server's CPU seconds per request: steadier than rates on a shared machine


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator must cost
    far less CPU than the servers it measures (httpx costs about as much as a bare endpoint)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def request(self, method: str, path: str, body: Optional[bytes]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self.reader.readuntil(b"\r\n")
        length = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length)
        return int(status_line.split()[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


Request = tuple[str, str, Optional[dict[str, Any]], int]  # method, path, JSON body, expected status


def measure_phase(server: Server, clients: int, requests: list[Request], headers: dict[str, str], warmup: Sequence[Request] = ()) -> Phase:
    """``requests`` from ``clients`` connections, after ``warmup`` (sent the same way, neither timed nor counted)."""
    return asyncio.run(run_phase(server.url, clients, requests, headers, warmup, server.pid))


async def run_phase(
    url: str, clients: int, requests: list[Request], headers: dict[str, str], warmup: Sequence[Request] = (), pid: Optional[int] = None,
) -> Phase:
    """Send ``requests`` (method, path, body, expected status) from ``clients`` concurrent connections.

    ``warmup`` goes first over the same connections, so what is measured is the server's steady state:
    its pools' connections opened, its statements prepared (a hub that has just started opens
    database connections on its first requests, each costing tens of milliseconds)."""
    latencies: list[float] = []

    async def worker(conn: Connection, it: Iterator[tuple[str, str, Optional[bytes], int]], timed: bool) -> None:
        for method, path, body, expected in it:
            t = time.perf_counter()
            status, data = await conn.request(method, path, body)
            if timed:
                latencies.append(time.perf_counter() - t)
            if status != expected:
                raise RuntimeError(f"{method} {path}: {status} (expected {expected}): {data[:300]!r}")

    def prepared(batch: Sequence[Request]) -> Iterator[tuple[str, str, Optional[bytes], int]]:
        return iter([(m, p, json.dumps(b).encode() if b is not None else None, e) for m, p, b, e in batch])

    conns = [Connection(url, headers) for _ in range(clients)]
    warm = "/bare/jobs/warm" if "bare" in requests[0][1] else "/v1/job-counts"
    await asyncio.gather(*(c.request("GET", warm, None) for c in conns))
    if warmup:
        warm_it = prepared(warmup)
        await asyncio.gather(*(worker(c, warm_it, timed=False) for c in conns))
    it = prepared(requests)
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(worker(c, it, timed=True) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    cpu = (cpu_seconds(pid) - cpu_before) / len(requests) if pid is not None else 0.0
    latencies.sort()
    return Phase(
        rate=len(latencies) / elapsed,
        p50=latencies[len(latencies) // 2],
        p99=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        cpu=cpu,
    )


def prepare_hub(url: str, data_dir: Path) -> str:
    ctx = HubContext.create(HubSettings(data_dir=data_dir, database_url=url))
    with ctx.transaction() as s:
        accounts.create_user(s, "alice")
        _, key = accounts.create_api_key(s, "alice")
        accounts.create_service(s, SERVICE, "alice")
        accounts.add_app(s, SERVICE, PairioApp.model_validate(APP))
    ctx.close()
    return key


def bench_database(name: str, url: str, data_dir: Path, args: argparse.Namespace) -> dict[tuple[int, str], list[Phase]]:
    key = prepare_hub(url, data_dir)
    env = {"PAIRIO_HUB_DATA_DIR": str(data_dir), "PAIRIO_HUB_DATABASE_URL": url}
    auth = {"Authorization": f"Bearer {key}"}
    results: dict[tuple[int, str], list[Phase]] = {}
    counter = itertools.count()
    with serve("hub_app", env, args.workers) as hub, serve("bare_app", {}, args.workers) as bare:
        for rnd in range(args.rounds):
            for clients in args.clients:
                n = args.requests
                defs = [f"{uuid.uuid4().hex}-{next(counter)}" for _ in range(n)]
                warm_defs = [f"{uuid.uuid4().hex}-{next(counter)}" for _ in range(clients * args.warmup)]
                phases: dict[str, Phase] = {}

                def posts(definitions: list[str], status: int, path: str = "/v1/jobs") -> list[Request]:
                    return [("POST", path, job_body(d), status) for d in definitions]

                phases["bare POST"] = measure_phase(bare, clients, posts(defs, 201, "/bare/jobs"), {}, posts(warm_defs, 201, "/bare/jobs"))
                created: list[str] = []
                phases["createJob"] = measure_phase(hub, clients, posts(defs, 201), auth, posts(warm_defs, 201))
                phases["cache hit"] = measure_phase(hub, clients, posts(defs, 200), auth, posts(warm_defs, 200))
                with httpx.Client(base_url=hub.url, headers=auth) as c:
                    page = c.get("/v1/jobs", params={"limit": min(n, 1000), "serviceName": SERVICE}).json()
                    created = [j["jobId"] for j in page["jobs"]]
                gets = [("GET", f"/v1/jobs/{created[i % len(created)]}", None, 200) for i in range(n)]
                phases["getJob"] = measure_phase(hub, clients, gets, auth, gets[: len(warm_defs)])
                bare_gets: list[Request] = [("GET", f"/bare/jobs/{i}", None, 200) for i in range(n)]
                phases["bare GET"] = measure_phase(bare, clients, bare_gets, {}, bare_gets[: len(warm_defs)])
                for phase, value in phases.items():
                    results.setdefault((clients, phase), []).append(value)
                print(
                    f"  [{name} round {rnd + 1} clients {clients}] "
                    + ", ".join(f"{p} {v.rate:.0f}/s p99 {v.p99 * 1000:.0f} ms" for p, v in phases.items()),
                    flush=True,
                )
    return results


def report(name: str, results: dict[tuple[int, str], list[Phase]], clients: list[int]) -> None:
    print(f"\n{name}: requests per second (median of rounds [range]), p50 / p99 ms (worst round)")
    for c in clients:
        for phase in ("bare POST", "createJob", "cache hit", "getJob", "bare GET"):
            runs = results[(c, phase)]
            rates = [r.rate for r in runs]
            print(
                f"  {c:2d} clients  {phase:10s} {statistics.median(rates):7.0f}/s [{min(rates):.0f}-{max(rates):.0f}]"
                f"   p50 {max(r.p50 for r in runs) * 1000:6.1f}  p99 {max(r.p99 for r in runs) * 1000:7.1f}"
                f"   server CPU {statistics.median(r.cpu for r in runs) * 1000:5.2f} ms/request"
            )
        for phase, base in (("createJob", "bare POST"), ("cache hit", "bare POST"), ("getJob", "bare GET")):
            ratios = [a.rate / b.rate for a, b in zip(results[(c, phase)], results[(c, base)])]
            cpu = [b.cpu / a.cpu for a, b in zip(results[(c, phase)], results[(c, base)]) if a.cpu]
            cpu_text = f"; by server CPU per request {statistics.median(cpu):.2f} [{min(cpu):.2f}-{max(cpu):.2f}]" if cpu else ""
            print(f"  {c:2d} clients  ratio {phase} / {base}: {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]{cpu_text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--clients", default="8,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=1000, help="requests per phase")
    parser.add_argument(
        "--warmup", type=int, default=8,
        help="requests per client sent before each phase, not timed: the phase measures the servers' steady state",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (both servers)")
    parser.add_argument("--postgres-url", default=os.environ.get("PAIRIO_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    names = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for name in names:
        with tempfile.TemporaryDirectory() as d:
            if name == "sqlite":
                results = bench_database(name, f"sqlite:///{Path(d) / 'hub.db'}", Path(d) / "hub", args)
            else:
                with postgres_schema(args.postgres_url) as url:
                    results = bench_database(name, url, Path(d) / "hub", args)
        report(f"{name} ({args.workers} worker{'s' if args.workers > 1 else ''})", results, args.clients)


if __name__ == "__main__":
    main()
