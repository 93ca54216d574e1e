"""The hub freezes its start-up objects once, so full collections under load skip them (hub/collector.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent(
    """
    import gc, json, sys
    from fastapi.testclient import TestClient
    from hub.app import create_app
    from hub.collector import freeze_startup_objects
    from hub.settings import HubSettings

    before = gc.get_freeze_count()
    with TestClient(create_app(HubSettings(data_dir=sys.argv[1]))) as client:
        assert client.get("/v1/job-counts").status_code in (200, 401)
        after_start = gc.get_freeze_count()
    with TestClient(create_app(HubSettings(data_dir=sys.argv[1]))):
        after_second = gc.get_freeze_count()
    print(json.dumps({"before": before, "after_start": after_start, "after_second": after_second,
                      "again": freeze_startup_objects()}))
    """
)


def test_a_starting_hub_freezes_its_start_up_objects_once(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["before"] == 0
    # FastAPI, pydantic, SQLAlchemy and the hub's own routes and statements: far more than a few objects
    assert counts["after_start"] > 10_000
    # a second app in the same process (tests build many) does not freeze again: the frozen count only
    # falls (frozen objects that reference counting frees leave it)
    assert counts["after_second"] <= counts["after_start"]
    assert counts["again"] is False
