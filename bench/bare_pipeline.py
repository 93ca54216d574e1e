"""The least a hub and a bridge can do per job: the yardstick bench/bench_local_makespan.py sets beside Pairio.

Same process structure as Pairio's, with nothing in it but what running a job through a hub needs:

- **hub**: a bare FastAPI app served by uvicorn (as ``pairio hub serve`` is, access log off), on a
  SQLite file in WAL mode with the hub's pragmas. Three routes, one committed transaction each: claim
  (pending -> starting), running, and finish (which also claims the slot's next job, as Pairio's does),
  and a read of the counts that says it is up. No keys, no validation beyond JSON, no events, no
  outputs, no console or resource logs.
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
import socket
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

    @app.get("/counts")
    def counts_route() -> dict[str, int]:
        return dict(connection().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int, children: bool) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def run(work: Path, processor: Path, jobs: int, slots: int, sleep: float) -> dict[str, Any]:
    """The bare hub seeded with ``jobs`` jobs, then the bare bridge with ``slots`` slots until none is left:
    the makespan (first claim to last finish) and the CPU per process, as bench_local_makespan reports Pairio's."""
    work.mkdir(parents=True)
    port = _free_port()
    here = str(Path(__file__).resolve().parent)
    hub = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "bare_pipeline:bare_hub_app", "--app-dir", here,
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "BARE_DB": str(work / "hub.sqlite"), "BARE_JOBS": str(jobs)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(hub, url)
        hub_before = _cpu_seconds(hub.pid, children=False)
        bridge = subprocess.Popen(
            [sys.executable, __file__, "bridge", url, str(slots), str(work / "jobs"), str(processor),
             str(work / "records"), str(sleep)],
            stdout=subprocess.PIPE, text=True,
        )
        out, _ = bridge.communicate()
        hub_cpu = _cpu_seconds(hub.pid, children=False) - hub_before
        if bridge.returncode != 0:
            raise SystemExit(f"the bare bridge failed (exit {bridge.returncode})")
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        hub.terminate()
        hub.wait()
    if summary["jobs"] != jobs:
        raise SystemExit(f"the bare pipeline ran {summary['jobs']} of {jobs} jobs")
    return {
        "makespan": summary["lastFinish"] - summary["firstClaim"],
        "cpu": {"hub": hub_cpu, "bridge": summary["cpu"], "supervisors and processors": summary["childrenCpu"]},
    }


def _wait_until_up(hub: subprocess.Popen[bytes], url: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if hub.poll() is not None:
            raise SystemExit(f"the bare hub exited ({hub.returncode})")
        try:
            httpx.get(url + "/counts", timeout=5).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the bare hub did not answer within 60 s")


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "bridge":
        bridge_main(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5], sys.argv[6], float(sys.argv[7]))
    else:
        sys.exit(__doc__)
