"""The two apps bench/bench_hub_rate.py serves the same way (uvicorn ``--factory``): the hub and a bare FastAPI app.

``PAIRIO_BENCH_PROFILE=<file>`` samples the server's threads every few milliseconds
(``sys._current_frames``) and writes the most frequent frames to ``<file>.<pid>`` every 2 s
(uvicorn ends by re-raising SIGTERM, so there is no clean exit to wait for).
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import Any

from fastapi import FastAPI


def hub_app() -> FastAPI:
    from hub.app import create_app

    _maybe_profile()
    return create_app()


def bare_app() -> FastAPI:
    _maybe_profile()
    app = FastAPI()

    @app.post("/bare/jobs", status_code=201)
    def create(body: dict[str, Any]) -> dict[str, Any]:
        return {"jobId": "x", "status": "pending", "jobDefinition": body.get("jobDefinition")}

    @app.get("/bare/jobs/{job_id}")
    def get(job_id: str) -> dict[str, Any]:
        return {"jobId": job_id, "status": "pending"}

    return app


def _maybe_profile() -> None:
    path = os.environ.get("PAIRIO_BENCH_PROFILE")
    if not path:
        return
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    samples = [0]

    def sample() -> None:
        me = threading.get_ident()
        last_dump = time.monotonic()
        while True:
            time.sleep(0.005)
            if time.monotonic() - last_dump > 2:
                dump()
                last_dump = time.monotonic()
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                names = []
                f = frame
                while f is not None:
                    names.append(f"{f.f_code.co_filename.rsplit('site-packages/', 1)[-1]}:{f.f_code.co_name}")
                    f = f.f_back
                if not names or "threading.py:wait" in names[0] or "selectors.py:select" in names[0] or "queue" in names[0]:
                    continue
                samples[0] += 1
                leaf[names[0]] += 1
                for n in set(names):
                    inclusive[n] += 1

    def dump() -> None:
        with open(f"{path}.{os.getpid()}", "w") as out:
            out.write(f"busy samples: {samples[0]}\n\nleaf:\n")
            for name, n in leaf.most_common(40):
                out.write(f"{n:7d} {name}\n")
            out.write("\ninclusive:\n")
            for name, n in inclusive.most_common(120):
                out.write(f"{n:7d} {name}\n")

    threading.Thread(target=sample, daemon=True).start()
