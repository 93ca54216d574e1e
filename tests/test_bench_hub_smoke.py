"""The hub benchmarks run end to end at tiny sizes (no timing is checked: the figures are for people)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys

import pytest

from .hubtools import POSTGRES_URL, REPO, postgres_schema


def run_bench(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_hub_rate_runs(database: str) -> None:
    out = run_bench(
        "bench/bench_hub_rate.py", "--database", database, "--clients", "2", "--requests", "12", "--rounds", "1",
        "--postgres-url", POSTGRES_URL,
    )
    assert "ratio createJob / bare POST" in out and "ratio getJob / bare GET" in out


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_scale_runs(database: str) -> None:
    out = run_bench(
        "bench/bench_scale.py", "--database", database, "--jobs", "400", "--baseline-jobs", "150", "--rounds", "2",
        "--postgres-url", POSTGRES_URL,
    )
    assert "createJob + claim" in out and "claim candidates:" in out


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_job_detail_runs(database: str) -> None:
    out = run_bench("bench/bench_job_detail.py", "--database", database, "--jobs", "30", "--reads", "3", "--rounds", "2")
    assert f"{database}: 30 pending jobs" in out and "ratio now/before " in out, out


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_jobs_page_runs(database: str) -> None:
    url = [] if database == "sqlite" else ["--database-url", POSTGRES_URL]  # the bench makes a schema of its own
    out = run_bench("bench/bench_jobs_page.py", "--jobs", "120", "--baseline-jobs", "60", "--rounds", "1", *url)
    assert "60 jobs vs 120 jobs" in out and re.search(r"all pages .* ratio +\d", out), out
    assert "query plans at the large size:" in out, out


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_claim_wakeup_runs(database: str) -> None:
    with contextlib.ExitStack() as stack:
        url = [] if database == "sqlite" else ["--database-url", stack.enter_context(postgres_schema())]
        out = run_bench("bench/bench_claim_wakeup.py", "--rounds", "2", *url)
    assert "ratio wake-up / immediate claim:" in out and "ratio wake-up / (create + immediate claim):" in out, out


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_wire_poll_runs(database: str) -> None:
    out = run_bench(
        "bench/bench_wire_poll.py", "--database", database, "--clients", "2", "--polls", "12", "--jobs", "4",
        "--creations", "6", "--rounds", "1", "--postgres-url", POSTGRES_URL,
    )
    assert "ratio wire getJob / bare POST:" in out and "creations beside polls" in out, out
