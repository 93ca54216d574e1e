"""The local backend: the shared contract, plus what only a local machine has (capacity, GPUs, a killed watcher)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import psutil
import pytest

from bridge.backend import Backend, NativePhase, SubmitError
from bridge.local.backend import LocalBackend, NativeId
from bridge.local.resources import DeclaredLimits

from .bridge_contract import SLEEP_UNTIL_STOPPED, SPAWN_ESCAPING_CHILD, BackendContract, assert_gone, wait_for


def fast_backend(
    jobs_root: Path,
    *,
    declared: DeclaredLimits = DeclaredLimits(),
    gpu_ids: Optional[list[str]] = [],
    respect_machine_load: bool = False,
) -> LocalBackend:
    """Short watcher intervals keep the suite fast; the defaults are for real jobs."""
    return LocalBackend(
        jobs_root,
        declared=declared,
        gpu_ids=gpu_ids,
        respect_machine_load=respect_machine_load,
        sample_interval_sec=0.1,
        log_interval_sec=0.2,
        kill_grace_sec=0.5,
    )


RECORD_GPUS_AND_WAIT = """
import os, time
open("gpus.txt", "w").write(os.environ["CUDA_VISIBLE_DEVICES"])
time.sleep(120)
"""


class TestLocalBackend(BackendContract):
    def make_backend(self, tmp_path: Path) -> Backend:
        return fast_backend(self.jobs_root(tmp_path))

    # ------------------------------------------------------------ local only

    def test_running_jobs_reserve_their_cpus_and_memory(self, tmp_path: Path) -> None:
        if (psutil.cpu_count() or 1) < 2:
            pytest.skip("needs a machine with at least 2 CPUs")
        declared = DeclaredLimits(num_cpus=64, memory_gb=4.0)
        backend = fast_backend(self.jobs_root(tmp_path), declared=declared)
        before = backend.capacity()
        assert before.memoryGb == 4.0
        ids = [self.submit(backend, tmp_path, "import time; time.sleep(120)", num_cpus=1, memory_gb=1.5)[0] for _ in range(2)]

        during = backend.capacity()
        assert during.numCpus == before.numCpus - 2
        assert during.memoryGb == pytest.approx(1.0)
        # A restarted bridge re-learns the reservations from the job directories.
        restarted = LocalBackend(self.jobs_root(tmp_path), declared=declared, gpu_ids=[])
        assert restarted.capacity() == during

        backend.cancel(ids)
        for native_id in ids:
            self.wait_final(backend, native_id)
        assert backend.capacity() == before
        assert restarted.capacity() == before

    def test_gpus_are_assigned_one_job_each(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
        backend = fast_backend(self.jobs_root(tmp_path), gpu_ids=None)  # detected
        assert backend.capacity().numGpus == 2
        submitted = [self.submit(backend, tmp_path, RECORD_GPUS_AND_WAIT, num_gpus=1) for _ in range(2)]

        assert backend.capacity().numGpus == 0
        with pytest.raises(SubmitError, match="needs 1 GPUs but this machine has 0 free of 2"):
            self.submit(backend, tmp_path, RECORD_GPUS_AND_WAIT, num_gpus=1)
        gpu_files = [job.job_dir / "work" / "gpus.txt" for _, job in submitted]
        wait_for(lambda: all(f.exists() for f in gpu_files), bool, 15)
        assert sorted(f.read_text() for f in gpu_files) == ["0", "1"]

        restarted = LocalBackend(self.jobs_root(tmp_path))
        assert restarted.capacity().numGpus == 0
        with pytest.raises(SubmitError):
            self.submit(restarted, tmp_path, RECORD_GPUS_AND_WAIT, num_gpus=1)

        backend.cancel([native_id for native_id, _ in submitted])
        for native_id, _ in submitted:
            self.wait_final(backend, native_id)
        assert backend.capacity().numGpus == 2

    def test_a_killed_watcher_makes_the_job_lost_and_its_processes_end(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        script = "import os, time\nopen('main.pid', 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
        native_id, job = self.submit(backend, tmp_path, script)
        pid_file = job.job_dir / "work" / "main.pid"
        wait_for(pid_file.exists, bool, 15)
        main_process = psutil.Process(int(pid_file.read_text()))

        os.kill(NativeId.parse(native_id).watcher_pid, signal.SIGKILL)
        outcome = self.wait_final(backend, native_id)
        assert outcome.phase == NativePhase.LOST
        assert outcome.error is not None and "watcher process disappeared without a result" in outcome.error
        assert_gone(main_process)

    def test_a_processor_that_cannot_start_fails_the_job(self, backend: Backend, tmp_path: Path) -> None:
        job = self.prepare_job(tmp_path, "")
        job.command = [str(tmp_path / "no-such-processor")]
        outcome = self.wait_final(backend, backend.submit(job))
        assert outcome.phase == NativePhase.FAILED
        assert outcome.error is not None and "could not start the processor" in outcome.error

    def test_submitting_the_same_job_again_does_not_run_it_twice(self, backend: Backend, tmp_path: Path) -> None:
        job = self.prepare_job(tmp_path, "import time; print('ran', flush=True); time.sleep(0.5)")
        native_id = backend.submit(job)
        assert backend.submit(job) == native_id
        assert self.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
        assert backend.submit(job) == native_id
        assert (job.job_dir / "console.txt").read_text().count("ran") == 1

    def test_adopt_finds_the_job_in_its_directory(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        native_id, job = self.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
        restarted = LocalBackend(self.jobs_root(tmp_path))
        assert restarted.adopt(job.job_dir) == native_id
        with pytest.raises(LookupError, match="no local job was started"):
            restarted.adopt(tmp_path)
        restarted.cancel([native_id])
        assert self.wait_final(restarted, native_id).phase == NativePhase.FAILED


FAKE_NVIDIA_SMI = """#!{python}
import sys
if sys.argv[1:] == ["-L"]:
    print("GPU 0: Fake GPU (UUID: GPU-aaaa)")
    print("GPU 1: Fake GPU (UUID: GPU-bbbb)")
else:
    # --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits -i <ids>
    for index in sys.argv[sys.argv.index("-i") + 1].split(","):
        print(f"{{index}}, 55, 2048")
"""


def test_gpus_found_by_nvidia_smi_are_assigned_and_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: a stand-in nvidia-smi answers the two queries the backend and the watcher make.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI.format(python=sys.executable))
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    backend = fast_backend(tmp_path / "jobs", gpu_ids=None)
    assert backend.gpu_ids == ["0", "1"]
    contract = TestLocalBackend()
    native_id, job = contract.submit(backend, tmp_path, "import time; time.sleep(0.8)", num_gpus=1)
    assert contract.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
    samples = [json.loads(line) for line in (job.job_dir / "resource_log.jsonl").read_text().splitlines()]
    assert samples and all(
        s["gpus"] == [{"index": "0", "utilizationPercent": 55.0, "memoryUsedBytes": 2048 * 1024 * 1024}] for s in samples
    )


def test_console_is_complete_in_order_and_masked_even_across_writes(tmp_path: Path) -> None:
    """The watcher pipes the processor's output through the masker: 2 MB arrive whole and in order, and a
    secret written in two pieces is masked too."""
    contract = TestLocalBackend()
    backend = fast_backend(tmp_path / "jobs")
    script = """
        import sys, time
        for i in range(20000):
            sys.stdout.write(f"line {i:05d} " + "y" * 100 + "\\n")
        sys.stdout.write("half tok-split-")
        sys.stdout.flush()
        time.sleep(0.3)
        sys.stdout.write("s3cret end\\n")
        sys.stdout.flush()
        sys.stderr.write("err tok-split-s3cret\\n")
    """
    job = contract.prepare_job(tmp_path, script)
    job.secrets = {"MY_TOKEN": "tok-split-s3cret"}
    native_id = backend.submit(job)
    assert contract.wait_final(backend, native_id).phase == NativePhase.SUCCEEDED
    lines = (job.job_dir / "console.txt").read_text().splitlines()
    assert lines[:20000] == [f"line {i:05d} " + "y" * 100 for i in range(20000)]
    assert lines[20000:] == ["half *** end", "err ***"]
