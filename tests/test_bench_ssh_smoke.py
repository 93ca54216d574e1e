"""bench/bench_ssh.py still runs: once, at a tiny size, against a real sshd (its figures are not checked here)."""

from __future__ import annotations

from .ssh_support import require_ssh_tools
from .test_bench_smoke import run_bench


def test_ssh_bench_runs_and_says_where_the_time_went() -> None:
    require_ssh_tools()
    out = run_bench("bench_ssh.py", "--jobs", "3", "--slots", "2")
    assert "ratio: " in out and "sequential 'ssh host cmd'" in out, out
    assert "result.json there -> mirrored here" in out and "hub requests from the bridge" in out, out
