"""Per-job overhead of container mode: the same trivial job (``python3 -c pass``) run natively and in podman.

Both go through a ``LocalBackend`` and its watcher, from ``submit`` until ``poll`` says the
job ended; the container run adds podman's create, start, attach, wait and rm. The test
setup's private engine settings and offline image are used (tests/container_support.py), so
nothing of the host's podman is touched and nothing is pulled.

It prints the medians, the overhead and the ratio container / native.

    python bench/bench_container_overhead.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.backend import JobSubmission  # noqa: E402
from bridge.containers import PullPolicy, container_name, oci_create_command  # noqa: E402
from bridge.local.backend import LocalBackend  # noqa: E402
from pairio.jobfile import PairioJobFile  # noqa: E402
from pairio.models import PairioJobRequiredResources  # noqa: E402
from tests.container_support import HOST_PYTHON, TEST_IMAGE, build_test_image, write_engine_config  # noqa: E402

RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=60)


def trivial_job(jobs_root: Path, in_container: bool) -> JobSubmission:
    job_id = uuid.uuid4().hex[:12]
    job_dir = (jobs_root / job_id).resolve()
    (job_dir / "work").mkdir(parents=True)
    PairioJobFile(
        jobId=job_id, serviceName="bench", appName="bench", processorName="pass", outputs=[], parameters={},
        requiredResources=RESOURCES, workingDir=str(job_dir / "work"),
    ).write(job_dir / "job.json")
    if not in_container:
        return JobSubmission(job_id, job_dir, [str(HOST_PYTHON), "-c", "pass"], RESOURCES)
    command = oci_create_command(
        "podman", image=TEST_IMAGE, argv=["python3", "-c", "pass"], job_dir=job_dir, job_id=job_id, resources=RESOURCES,
        pull_policy=PullPolicy.NEVER,
    )
    args = ("--container-engine", "podman", "--container-image", TEST_IMAGE, "--container-name", container_name(job_id))
    return JobSubmission(job_id, job_dir, command, RESOURCES, container_args=args)


def run_once(backend: LocalBackend, jobs_root: Path, in_container: bool) -> float:
    started = time.monotonic()
    native_id = backend.submit(trivial_job(jobs_root, in_container))
    while not backend.poll([native_id])[native_id].phase.is_final:
        time.sleep(0.01)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pairio-bench-containers-") as tmp:
        base = Path(tmp)
        env = write_engine_config(base)
        os.environ.update(env)
        build_test_image(env, base, TEST_IMAGE)
        try:
            backend = LocalBackend(base / "jobs", gpu_ids=[], sample_interval_sec=0.05, log_interval_sec=0.2)
            for in_container in (False, True):
                run_once(backend, base / "jobs", in_container)  # warm-up: caches, the image's layers
            times = {c: [run_once(backend, base / "jobs", c) for _ in range(args.rounds)] for c in (False, True)}
        finally:
            subprocess.run(["podman", "system", "reset", "--force"], capture_output=True, timeout=300)
    native, container = statistics.median(times[False]), statistics.median(times[True])
    print(f"native:  median {native * 1000:.0f} ms over {args.rounds} jobs")
    print(f"podman:  median {container * 1000:.0f} ms over {args.rounds} jobs")
    print(f"overhead {(container - native) * 1000:.0f} ms per job, ratio container/native {container / native:.2f}")


if __name__ == "__main__":
    main()
