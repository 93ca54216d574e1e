"""bench/bench_slurm_throughput.py still runs: 2 rounds of 2 jobs, on the session's test Slurm cluster
(``slurm_cluster``, tests/slurm_support.py; its figures are not checked here)."""

from __future__ import annotations

from .slurm_support import SlurmLab
from .test_bench_smoke import run_bench


def test_slurm_throughput_bench_runs_and_gives_its_ratio(slurm_cluster: SlurmLab) -> None:
    out = run_bench("bench_slurm_throughput.py", "--jobs", "2", "--rounds", "2", "--slurm-conf", str(slurm_cluster.conf))
    assert "plain sbatch loop:" in out and "through Pairio:" in out and "ratio pairio / plain sbatch: " in out, out
    assert "median per job through Pairio:" in out, out
