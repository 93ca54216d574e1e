"""The benchmarks still run: each one once, at a tiny size (their figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True, timeout=600, check=False, cwd=REPO
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_local_makespan_bench_runs_and_says_where_the_time_went() -> None:
    out = run_bench("bench_local_makespan.py", "--jobs", "4", "--slots", "2")
    assert "ratio: " in out and "baseline (direct, 2 at a time)" in out, out
    assert "result.json -> final status at hub" in out and "hub requests from the bridge" in out, out
    assert "CPU-bound floor of the ratio" in out, out
    assert "bare pipeline (bench/bare_pipeline.py" in out and out.count("CPU-bound floor of the ratio") == 3, out
    assert "ratio with a new interpreter per job and no claims ahead: " in out, out


def test_cancel_bench_runs_and_gives_its_ratio() -> None:
    out = run_bench("bench_cancel.py", "--rounds", "1")
    assert "end to end: median" in out and "baseline: median" in out and "ratio (medians): " in out, out
