"""The hub benchmarks run end to end at tiny sizes (no timing is checked: the figures are for people)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .hubtools import POSTGRES_URL, REPO


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
