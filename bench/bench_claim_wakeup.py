"""How fast does a waiting (long-poll) claim return once a job is created?

Starts a real hub (uvicorn on 127.0.0.1, SQLite in a temporary directory), then for
each round:

- wake-up: a bridge waits in ``POST /v1/compute/claim`` with ``waitSec=30``; the
  script creates a job and measures the time from sending the create request to the
  waiting claim's answer;
- immediate: a job is already pending; the time of a plain ``waitSec=0`` claim;
- create: the time of the create request alone.

It prints medians and 90th percentiles and the ratios. A wake-up close to
create + immediate means the waiting bridge learns of the job as soon as it exists,
instead of at its next poll.

    python bench/bench_claim_wakeup.py [--rounds 30] [--database-url postgresql+psycopg://...]

With a PostgreSQL URL the hub gets a schema of its own in that database, dropped at the end (unless
the URL names one: ``options=-csearch_path=...``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.context import HubContext  # noqa: E402
from hub.core import accounts  # noqa: E402
from hub.settings import HubSettings  # noqa: E402
from pairio.models import PairioApp, PairioComputeClientComputeSlot  # noqa: E402

SERVICE = "bench_service"
APP_SPEC: dict[str, Any] = {
    "name": "bench_app",
    "processors": [{"name": "noop", "executable": "/bin/true", "parameters": [{"name": "i", "type": "int", "default": 0}]}],
}
RESOURCES = {"numCpus": 1, "numGpus": 0, "memoryGb": 1, "timeSec": 60}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(settings: HubSettings) -> tuple[str, str]:
    """A user, a service with one app, a compute client; returns the user's and the client's keys."""
    ctx = HubContext.create(settings)
    try:
        with ctx.transaction() as s:
            accounts.create_user(s, "bench")
            _, user_key = accounts.create_api_key(s, "bench")
            accounts.create_service(s, SERVICE, "bench")
            accounts.add_app(s, SERVICE, PairioApp.model_validate(APP_SPEC))
            slot = PairioComputeClientComputeSlot(numCpus=8, numGpus=0, memoryGb=32, timeSec=3600, multiplicity=10_000)
            _, cc_key = accounts.register_compute_client(s, SERVICE, "bench", "bench bridge", [slot])
    finally:
        ctx.close()
    return user_key, cc_key


def start_hub(data_dir: Path, database_url: str | None, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PAIRIO_HUB_DATA_DIR": str(data_dir), "PAIRIO_HUB_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    if database_url:
        env["PAIRIO_HUB_DATABASE_URL"] = database_url
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "hub.app:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/services", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited with code {proc.returncode}")
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the hub did not answer within 30 s")


class Bench:
    def __init__(self, url: str, user_key: str, cc_key: str) -> None:
        self.user = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {user_key}"}, timeout=60)
        self.bridge = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {cc_key}"}, timeout=60)
        self.waiter = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {cc_key}"}, timeout=60)
        self.counter = 0

    def create_job(self) -> str:
        self.counter += 1
        definition = {"appName": "bench_app", "processorName": "noop", "parameters": [{"name": "i", "value": self.counter}]}
        r = self.user.post("/v1/jobs", json={"serviceName": SERVICE, "jobDefinition": definition, "requiredResources": RESOURCES})
        r.raise_for_status()
        return str(r.json()["jobId"])

    def claim(self, client: httpx.Client, wait_sec: float) -> list[str]:
        r = client.post("/v1/compute/claim", json={"maxJobs": 1, "waitSec": wait_sec})
        r.raise_for_status()
        return [j["jobId"] for j in r.json()["jobs"]]

    def wake_up_round(self) -> tuple[float, float]:
        """(create request latency, create sent -> waiting claim answered)."""
        out: dict[str, Any] = {}

        def wait() -> None:
            out["jobs"] = self.claim(self.waiter, 30)
            out["at"] = time.perf_counter()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)  # the claim finds nothing and starts waiting
        sent = time.perf_counter()
        job_id = self.create_job()
        created = time.perf_counter()
        thread.join()
        if out["jobs"] != [job_id]:
            raise RuntimeError(f"the waiting claim got {out['jobs']}, expected [{job_id}]")
        return created - sent, out["at"] - sent

    def immediate_round(self) -> float:
        job_id = self.create_job()
        t0 = time.perf_counter()
        got = self.claim(self.bridge, 0)
        elapsed = time.perf_counter() - t0
        if got != [job_id]:
            raise RuntimeError(f"the immediate claim got {got}, expected [{job_id}]")
        return elapsed


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)]


def ms(v: float) -> str:
    return f"{v * 1000:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--database-url", default=None, help="default: SQLite in the temporary data directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pairio-bench-") as tmp, contextlib.ExitStack() as stack:
        data_dir = Path(tmp) / "hub"
        database_url = args.database_url
        if database_url and database_url.startswith("postgresql") and "search_path" not in database_url:
            # a schema of its own, dropped at the end: the database is left as it was, and runs can repeat
            sys.path.insert(0, str(REPO / "bench"))
            from bench_hub_rate import postgres_schema

            database_url = stack.enter_context(postgres_schema(database_url))
        settings = HubSettings(data_dir=data_dir, database_url=database_url)
        user_key, cc_key = seed(settings)
        port = free_port()
        hub = start_hub(data_dir, database_url, port)
        try:
            bench = Bench(f"http://127.0.0.1:{port}", user_key, cc_key)
            for _ in range(3):  # warm up connections and caches
                bench.immediate_round()
                bench.wake_up_round()
            creates, wakes, immediates = [], [], []
            for _ in range(args.rounds):
                create, wake = bench.wake_up_round()
                creates.append(create)
                wakes.append(wake)
                immediates.append(bench.immediate_round())
        finally:
            hub.terminate()
            hub.wait(timeout=20)

    med = statistics.median
    print(f"database: {args.database_url or 'SQLite (temporary directory)'}; rounds: {args.rounds}")
    print(f"{'':38} {'median':>10} {'p90':>10}")
    print(f"{'create job (POST /v1/jobs)':38} {ms(med(creates)):>10} {ms(p90(creates)):>10}")
    print(f"{'immediate claim (waitSec=0)':38} {ms(med(immediates)):>10} {ms(p90(immediates)):>10}")
    print(f"{'wake-up: create sent -> claim answered':38} {ms(med(wakes)):>10} {ms(p90(wakes)):>10}")
    print(f"ratio wake-up / immediate claim:            {med(wakes) / med(immediates):5.2f}")
    print(f"ratio wake-up / (create + immediate claim): {med(wakes) / (med(creates) + med(immediates)):5.2f}")


if __name__ == "__main__":
    main()
