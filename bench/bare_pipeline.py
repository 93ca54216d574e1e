"""The least a hub and a bridge can do per job: the yardstick bench/bench_local_makespan.py sets beside Pairio.

Same process structure as Pairio's, with nothing in it but what running a job through a hub needs:

- **hub**: a bare FastAPI app served by uvicorn (as ``pairio hub serve`` is, access log off), on a
  SQLite file in WAL mode with the hub's pragmas. Three routes, one committed transaction each: claim
  (pending -> starting), running, and finish (which also claims the slot's next job, as Pairio's does).
  No keys, no validation beyond JSON, no events, no outputs, no console or resource logs. Started by
  bench_hub_rate's ``serve``, as that bench's bare app is.
- **bridge**: one process, one thread per slot, each with its own HTTP connection. Per job it writes
  the job file and its state (written, fsynced, renamed: the one durable write before a start),
  starts the processor under ``/bin/sh`` (the cheapest supervisor that outlives the bridge and keeps
  the exit code), reports ``running``, waits, reads the exit code and reports the end. No watcher in
  Python, no resource sampling, no limits, no cancel, no masking, no restart recovery.

So its makespan is what any design of this shape (a hub over HTTP with a database, a bridge, a
supervisor per job) pays on this machine at least; Pairio's features are what it pays above that.

    python bench/bare_pipeline.py bridge URL SLOTS JOBS_DIR PROCESSOR RECORD_DIR SLEEP
prints one JSON line: the first claim and the last finish (epoch seconds), the jobs run, and its CPU and its
children's (the supervisors with their processors) in seconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from fastapi import FastAPI

# ---------------------------------------------------------------- the hub


def bare_hub_app() -> FastAPI:
    """uvicorn --factory: the hub. ``BARE_DB``: the SQLite file; ``BARE_JOBS``: how many pending jobs it starts with."""
    path = os.environ["BARE_DB"]
    local = threading.local()

    def connection() -> sqlite3.Connection:
        conn: Optional[sqlite3.Connection] = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            local.conn = conn
        return conn

    @contextmanager
    def transaction() -> Iterator[sqlite3.Connection]:
        conn = connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    with transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, client TEXT, updated REAL)")
        conn.execute("CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id)")
        conn.executemany("INSERT INTO jobs (status) VALUES ('pending')", [()] * int(os.environ.get("BARE_JOBS", "0")))

    def claim(client: str, max_jobs: int) -> list[dict[str, Any]]:
        with transaction() as conn:
            pending = conn.execute("SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT ?", (max_jobs,))
            ids = [row[0] for row in pending]
            conn.executemany(
                "UPDATE jobs SET status = 'starting', client = ?, updated = ? WHERE id = ?",
                [(client, time.time(), i) for i in ids],
            )
        return [{"jobId": str(i)} for i in ids]

    def move(job_id: str, client: str, before: str, after: str) -> bool:
        with transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = ?, updated = ? WHERE id = ? AND client = ? AND status = ?",
                (after, time.time(), int(job_id), client, before),
            )
            return cursor.rowcount == 1

    app = FastAPI()

    @app.post("/claim")
    def claim_route(body: dict[str, Any]) -> dict[str, Any]:
        return {"jobs": claim(str(body["client"]), int(body["maxJobs"]))}

    @app.post("/jobs/{job_id}/running")
    def running_route(job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": move(job_id, str(body["client"]), "starting", "running")}

    @app.post("/jobs/{job_id}/finish")
    def finish_route(job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        ok = move(job_id, str(body["client"]), "running", str(body["status"]))
        return {"ok": ok, "claimedJobs": claim(str(body["client"]), int(body.get("claim", 0))) if ok else []}

    return app


# ---------------------------------------------------------------- the bridge


def write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def run_slot(url: str, client: str, jobs_dir: Path, processor: str, record_dir: str, sleep: float, log: list[float]) -> int:
    import httpx

    ran = 0
    with httpx.Client(base_url=url, timeout=60) as http:
        log.append(time.time())
        queue = http.post("/claim", json={"client": client, "maxJobs": 1}).raise_for_status().json()["jobs"]
        while queue:
            job_id = queue.pop()["jobId"]
            job_dir = jobs_dir / job_id
            (job_dir / "work").mkdir(parents=True)
            job_file = job_dir / "job.json"
            job_file.write_text(json.dumps({
                "jobId": job_id, "processorName": "work", "inputs": [], "outputs": [],
                "parameters": {"record_dir": record_dir, "sleep": sleep, "index": int(job_id), "message": ""},
            }))
            write_durably(job_dir / "state.json", b'{"step": "submitting"}')
            supervisor = subprocess.Popen(
                ["/bin/sh", "-c", '"$@" >../console.txt 2>&1; echo $? >../exit-code', "sh", sys.executable, processor],
                cwd=job_dir / "work", stdin=subprocess.DEVNULL, env={**os.environ, "PAIRIO_JOB_FILE": str(job_file)},
                start_new_session=True,
            )
            (job_dir / "supervisor-pid").write_text(str(supervisor.pid))  # a restart that finds none looks for the exit code
            http.post(f"/jobs/{job_id}/running", json={"client": client}).raise_for_status()
            supervisor.wait()
            exit_code = int((job_dir / "exit-code").read_text())
            status = "completed" if exit_code == 0 else "failed"
            answer = http.post(f"/jobs/{job_id}/finish", json={"client": client, "status": status, "claim": 1}).raise_for_status()
            log.append(time.time())
            queue = answer.json()["claimedJobs"]
            ran += 1
    return ran


def bridge_main(url: str, slots: int, jobs_dir: Path, processor: str, record_dir: str, sleep: float) -> None:
    client = f"bare-{os.getpid()}"
    logs: list[list[float]] = [[] for _ in range(slots)]
    ran = [0] * slots

    def slot(i: int) -> None:
        ran[i] = run_slot(url, client, jobs_dir, processor, record_dir, sleep, logs[i])

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = os.times()
    print(json.dumps({
        "firstClaim": min(log[0] for log in logs), "lastFinish": max(log[-1] for log in logs), "jobs": sum(ran),
        "cpu": cpu.user + cpu.system, "childrenCpu": cpu.children_user + cpu.children_system,
    }))


# ---------------------------------------------------------------- run it (from the bench)


def run(work: Path, processor: Path, jobs: int, slots: int, sleep: float) -> dict[str, Any]:
    """The bare hub seeded with ``jobs`` jobs, then the bare bridge with ``slots`` slots until none is left:
    the makespan (first claim to last finish) and the CPU per process, as bench_local_makespan reports Pairio's."""
    from bench_hub_rate import cpu_seconds, serve  # the bench's process only: the hub and the bridge import less

    work.mkdir(parents=True)
    env = {"BARE_DB": str(work / "hub.sqlite"), "BARE_JOBS": str(jobs)}
    with serve("bare_hub_app", env, 1, module="bare_pipeline") as hub:
        hub_before = cpu_seconds(hub.pid)
        bridge = subprocess.run(
            [sys.executable, __file__, "bridge", hub.url, str(slots), str(work / "jobs"), str(processor),
             str(work / "records"), str(sleep)],
            stdout=subprocess.PIPE, text=True, check=False,
        )
        hub_cpu = cpu_seconds(hub.pid) - hub_before
    if bridge.returncode != 0:
        raise SystemExit(f"the bare bridge failed (exit {bridge.returncode})")
    summary = json.loads(bridge.stdout.strip().splitlines()[-1])
    if summary["jobs"] != jobs:
        raise SystemExit(f"the bare pipeline ran {summary['jobs']} of {jobs} jobs")
    return {
        "makespan": summary["lastFinish"] - summary["firstClaim"],
        "cpu": {"hub": hub_cpu, "bridge": summary["cpu"], "supervisors and processors": summary["childrenCpu"]},
    }


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "bridge":
        bridge_main(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5], sys.argv[6], float(sys.argv[7]))
    else:
        sys.exit(__doc__)
