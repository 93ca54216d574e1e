"""Per-job overhead of container mode: the same trivial job (``python3 -c pass``) run natively and in podman.

Both go through a ``LocalBackend`` and its watcher, from ``submit`` until ``poll`` says the
job ended; the container run adds podman's create, start, attach, wait and rm. The test
setup's private engine settings and offline image are used (tests/container_support.py), so
nothing of the host's podman is touched and nothing is pulled: by default a store of the
bench's own in a temporary directory, with the test image built into it and the store reset
at the end; with ``--image IMAGE``, the store that CONTAINERS_CONF and CONTAINERS_STORAGE_CONF
already name (as the tests' ``podman_setup`` fixture sets them) and an image in it, used as
they are (nothing built, the store not reset).

It prints the medians, the overhead and the ratio container / native.

    python bench/bench_container_overhead.py [--rounds 8] [--image localhost/pairio-test-python:1]
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.backend import JobSubmission, NativePhase  # noqa: E402
from bridge.containers import PullPolicy, container_name, oci_create_command  # noqa: E402
from bridge.local.backend import LocalBackend  # noqa: E402
from pairio.jobfile import PairioJobFile  # noqa: E402
from pairio.models import PairioJobRequiredResources  # noqa: E402
from tests.container_support import HOST_PYTHON, TEST_IMAGE, build_test_image, remove_run_root, write_engine_config  # noqa: E402

RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=60)


ENGINE_SETTINGS = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")


def trivial_job(jobs_root: Path, image: str | None) -> JobSubmission:
    """The job natively (``image`` None) or in a podman container of ``image``."""
    job_id = uuid.uuid4().hex[:12]
    job_dir = (jobs_root / job_id).resolve()
    (job_dir / "work").mkdir(parents=True)
    PairioJobFile(
        jobId=job_id, serviceName="bench", appName="bench", processorName="pass", outputs=[], parameters={},
        requiredResources=RESOURCES, workingDir=str(job_dir / "work"),
    ).write(job_dir / "job.json")
    if image is None:
        return JobSubmission(job_id, job_dir, [str(HOST_PYTHON), "-c", "pass"], RESOURCES)
    command = oci_create_command(
        "podman", image=image, argv=["python3", "-c", "pass"], job_dir=job_dir, job_id=job_id, resources=RESOURCES,
        pull_policy=PullPolicy.NEVER,
    )
    args = ("--container-engine", "podman", "--container-image", image, "--container-name", container_name(job_id))
    return JobSubmission(job_id, job_dir, command, RESOURCES, container_args=args)


def run_once(backend: LocalBackend, jobs_root: Path, image: str | None) -> float:
    started = time.monotonic()
    native_id = backend.submit(trivial_job(jobs_root, image))
    while not (outcome := backend.poll([native_id])[native_id]).phase.is_final:
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    if outcome.phase is not NativePhase.SUCCEEDED:  # a failed start is quick: it must not pass for a fast job
        sys.exit(f"the {'container' if image else 'native'} job did not succeed: {outcome.phase.value} {outcome.error or ''}")
    return elapsed


@contextmanager
def private_store(base: Path) -> Iterator[str]:
    """A podman store of the bench's own under ``base`` with the test image built offline; reset at the end."""
    env = write_engine_config(base)
    os.environ.update(env)
    build_test_image(env, base, TEST_IMAGE)
    try:
        yield TEST_IMAGE
    finally:
        subprocess.run(["podman", "system", "reset", "--force"], capture_output=True, timeout=300)
        remove_run_root(base)


def given_store(image: str) -> str:
    """``image`` in the store the environment names (never the host's default store)."""
    missing = [name for name in ENGINE_SETTINGS if not os.environ.get(name)]
    if missing:
        sys.exit(f"--image uses the podman store that {' and '.join(ENGINE_SETTINGS)} name; not set: {', '.join(missing)}")
    return image


def median_times(jobs_root: Path, image: str, rounds: int) -> tuple[float, float]:
    """Median seconds per job, natively and in ``image``."""
    backend = LocalBackend(jobs_root, gpu_ids=[], sample_interval_sec=0.05, log_interval_sec=0.2)
    for each in (None, image):
        run_once(backend, jobs_root, each)  # warm-up: caches, the image's layers
    native = [run_once(backend, jobs_root, None) for _ in range(rounds)]
    container = [run_once(backend, jobs_root, image) for _ in range(rounds)]
    return statistics.median(native), statistics.median(container)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--image", default=None,
        help="an image in the podman store that CONTAINERS_CONF and CONTAINERS_STORAGE_CONF name, used as it is "
        "(nothing built, the store not reset); default: a private store with the test image built offline",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pairio-bench-containers-") as tmp:
        base = Path(tmp)
        if args.image is not None:
            native, container = median_times(base / "jobs", given_store(args.image), args.rounds)
        else:
            with private_store(base) as image:
                native, container = median_times(base / "jobs", image, args.rounds)
    print(f"native:  median {native * 1000:.0f} ms over {args.rounds} jobs")
    print(f"podman:  median {container * 1000:.0f} ms over {args.rounds} jobs")
    print(f"overhead {(container - native) * 1000:.0f} ms per job, ratio container/native {container / native:.2f}")


if __name__ == "__main__":
    main()
