"""Jobs that left Slurm's queue while no bridge looked, settled by sacct on a cluster that keeps accounting.

A second throw-away cluster for this module runs slurmdbd on the MariaDB at 127.0.0.1:3306
(scripts/ensure-mariadb.sh) and forgets ended jobs after MinJobAge=2 s (slurmctld purges
them about once a minute). Jobs end while the backend does not poll, squeue stops listing
them, and only then does the backend look: a TIMEOUT must still read as a TIMEOUT, and a
job cancelled before it started (no files at all) as cancelled, not lost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.backend import NativePhase
from bridge.slurm.backend import SlurmBackend, SlurmNativeId

from . import test_slurm_backend as slurm_tests  # not its classes by name: pytest would collect them here
from .bridge_contract import wait_for
from .slurm_support import SlurmLab, slurm_missing
from .test_slurm_backend import FAST_WATCHER, fast_site


def _accounting_missing() -> str | None:
    missing = slurm_missing()
    if missing:
        return missing
    if shutil.which("slurmdbd") is None and not Path("/usr/sbin/slurmdbd").exists():
        return "slurmdbd is not installed (run scripts/ensure-test-packages.sh)"
    ping = subprocess.run(["mysqladmin", "ping", "-h", "127.0.0.1", "--silent"], capture_output=True, check=False)
    if ping.returncode != 0:
        return "no MariaDB answers on 127.0.0.1:3306 (run scripts/ensure-mariadb.sh)"
    return None


@pytest.fixture(scope="module")
def accounting_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmLab]:
    missing = _accounting_missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Slurm accounting tests cannot run in CI: {missing}")
        pytest.skip(missing)
    lab = SlurmLab(tmp_path_factory.mktemp("slurm-accounting"), accounting=True, min_job_age_sec=2)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def test_jobs_that_left_the_queue_are_settled_by_sacct(accounting_cluster: SlurmLab, tmp_path: Path) -> None:
    lab = accounting_cluster
    site = fast_site(commandEnv={"SLURM_CONF": str(lab.conf)})
    contract = slurm_tests.TestSlurmBackend()
    backend = SlurmBackend(site, watcher_args=FAST_WATCHER)
    running_id, _ = contract.submit(backend, tmp_path, "import time; print('working', flush=True); time.sleep(300)", time_sec=600)
    pending_id, _ = contract.submit(SlurmBackend(fast_site(commandEnv=site.commandEnv, extraDirectives=["--hold"])), tmp_path, "print('never')")
    running, pending = (SlurmNativeId.parse(i).slurm_job_id for i in (running_id, pending_id))
    wait_for(lambda: backend.poll([running_id])[running_id].phase, lambda p: p is NativePhase.RUNNING, 30)

    # the bridge stops looking; Slurm stops one job at its time limit and another is cancelled before it starts
    lab.command("scontrol", "update", f"JobId={running}", "TimeLimit=0")
    lab.command("scancel", pending)
    started = time.monotonic()
    wait_for(
        lambda: lab.command("squeue", "-h", "-t", "all", "-j", f"{running},{pending}", "-o", "%i", check=False).stdout.split(),
        lambda listed: not listed, 150, interval_sec=1.0,
    )
    print(f"slurmctld forgot both jobs after {time.monotonic() - started:.0f} s")

    outcomes = SlurmBackend(site, watcher_args=FAST_WATCHER).poll([running_id, pending_id])  # a restarted bridge
    timed_out, cancelled = outcomes[running_id], outcomes[pending_id]
    assert timed_out.phase is NativePhase.FAILED and "TIMEOUT" in (timed_out.error or ""), timed_out
    assert cancelled.phase is NativePhase.FAILED and "cancelled on the cluster" in (cancelled.error or ""), cancelled
    assert lab.command("sacct", "-n", "-P", "-X", "-j", running, "-o", "State").stdout.strip() == "TIMEOUT"
