"""bench/bench_container_overhead.py still runs: once, at a tiny size, in the session's private podman
store with its test image (tests/container_support.py; its figures are not checked here)."""

from __future__ import annotations

from .container_support import PodmanSetup, podman_setup  # noqa: F401  (fixture)
from .test_bench_smoke import run_bench


def test_container_overhead_bench_runs_and_gives_its_ratio(podman_setup: PodmanSetup) -> None:  # noqa: F811
    # the fixture put CONTAINERS_CONF and CONTAINERS_STORAGE_CONF in this process's environment: the bench inherits them
    out = run_bench("bench_container_overhead.py", "--rounds", "1", "--image", podman_setup.image)
    assert "native:  median" in out and "podman:  median" in out and "ratio container/native " in out, out
