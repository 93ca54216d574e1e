"""The Slurm backend against the test session's real Slurm cluster (tests/slurm_support.py).

The shared backend contract, plus what only Slurm has: native directives visible in
``scontrol show job``, Slurm's TIMEOUT, sbatch's refusals, pending reasons, ``scancel``
from outside, jobs found again by name, squeue calls counted per poll cycle.
"""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

from bridge.backend import Backend, Capacity, NativeOutcome, NativePhase, SubmitError
from bridge.slurm.backend import JobFiles, SlurmBackend, SlurmNativeId, settle
from bridge.slurm.script import EXIT_CODE_FILE
from bridge.slurm.site import SlurmSiteOptions

from .bridge_contract import SLEEP_UNTIL_STOPPED, SPAWN_ESCAPING_CHILD, BackendContract, wait_for
from .slurm_support import SlurmLab

# a safety net, not a measure: its waits are liveness bounds of up to 120 s each, far below what they guard against
pytestmark = [pytest.mark.usefixtures("slurm_cluster"), pytest.mark.timeout(600)]

FAST_WATCHER = ("--sample-interval-sec", "0.1", "--log-interval-sec", "0.2", "--kill-grace-sec", "0.5")


def fast_site(**updates: object) -> SlurmSiteOptions:
    return SlurmSiteOptions.model_validate({"queuePollMinSec": 0.2, "queuePollMaxSec": 1.0, **updates})


def slurm_backend(site: SlurmSiteOptions | None = None, **kwargs: object) -> SlurmBackend:
    return SlurmBackend(site or fast_site(), watcher_args=FAST_WATCHER, **kwargs)  # type: ignore[arg-type]


class TestSlurmBackend(BackendContract):
    final_timeout_sec = 120.0
    """bounds for what never ends, not measures: Slurm schedules, starts and reports a job in its own time"""
    cancel_timeout_sec = 120.0

    def make_backend(self, tmp_path: Path) -> Backend:
        return slurm_backend()


# ---------------------------------------------------------------- settling (pure)


def files(result: NativeOutcome | None = None, code: int | None = None, cancel: bool = False) -> JobFiles:
    return JobFiles(result=result, script_exit_code=code, stderr_tail="", cancel_requested=cancel)


def test_settling_prefers_the_watchers_result_then_slurms_killer_states() -> None:
    ok = NativeOutcome(NativePhase.SUCCEEDED, exit_code=0)
    failed = NativeOutcome(NativePhase.FAILED, error="processor exited with code 3", exit_code=3)
    assert settle("7", ("PENDING", "Priority"), files()).reason == "Priority"
    assert settle("7", ("RUNNING", None), files(ok, 0)).phase is NativePhase.RUNNING  # not settled before Slurm says so
    assert settle("7", ("COMPLETED", None), files(ok, 0)) == ok
    assert settle("7", ("FAILED", "NonZeroExitCode"), files(failed, 3)) == failed
    timeout = settle("7", ("TIMEOUT", "TimeLimit"), files(code=143))
    assert timeout.phase is NativePhase.FAILED and "TIMEOUT" in (timeout.error or "")
    assert "cancelled on the cluster" in (settle("7", ("CANCELLED", None), files()).error or "")
    assert settle("7", ("CANCELLED", None), files(cancel=True)).error == "canceled"
    assert settle("7", ("NODE_FAIL", None), files()).error != settle("7", ("PREEMPTED", None), files()).error
    # left the queue
    assert settle("7", None, files(failed, 3)) == failed
    script_died = settle("7", None, files(code=127))
    assert script_died.phase is NativePhase.FAILED and "status 127" in (script_died.error or "")
    assert settle("7", None, files(), ("OUT_OF_MEMORY", "0:125", None)).error is not None
    # left the queue after Slurm stopped it: sacct (where kept) says why, before the watcher's "stopped by SIGTERM"
    stopped = NativeOutcome(NativePhase.FAILED, error="stopped by SIGTERM from outside Pairio (...)")
    assert "TIMEOUT" in (settle("7", None, files(stopped, 0), ("TIMEOUT", "0:15", "TimeLimit")).error or "")
    assert settle("7", None, files(stopped, 0)) == stopped
    assert "TIMEOUT" in (settle("7", None, files(code=143), ("TIMEOUT", "0:15", None)).error or "")
    assert settle("7", None, files(failed, 3), ("FAILED", "0:0", None)) == failed
    lost = settle("7", None, files())
    assert lost.phase is NativePhase.LOST and "no longer lists job 7" in (lost.error or "")


def test_native_ids() -> None:
    n = SlurmNativeId.parse("123:/shared/jobs/abc")
    assert (n.slurm_job_id, n.job_dir) == ("123", Path("/shared/jobs/abc"))
    assert str(n) == "123:/shared/jobs/abc"
    for bad in ("", "123", "abc:/x", "123:relative", "1;2:/x"):
        with pytest.raises(ValueError):
            SlurmNativeId.parse(bad)


# ---------------------------------------------------------------- on the real cluster


def test_scontrol_shows_the_requested_cpus_memory_and_time(slurm_cluster: SlurmLab, tmp_path: Path) -> None:
    contract = TestSlurmBackend()
    backend = slurm_backend()
    native_id, job = contract.submit(backend, tmp_path, "import time; time.sleep(30)", num_cpus=2, memory_gb=0.75, time_sec=150)
    slurm_id = SlurmNativeId.parse(native_id).slurm_job_id
    try:
        fields = slurm_cluster.show_job(slurm_id)
        assert fields["JobName"] == f"pairio-{job.job_id}"
        assert fields["NumCPUs"] == "2"
        assert fields["TimeLimit"] == "00:03:00"  # 150 s rounded up to whole minutes
        assert "mem=768M" in fields["TRES"]
        assert fields["WorkDir"] == str(job.job_dir)
        assert fields["StdOut"] == str(job.job_dir / "slurm.out")
        assert backend.describe(native_id) == f"Slurm job {slurm_id}"
    finally:
        backend.cancel([native_id])
    assert "cancel" in (contract.wait_final(backend, native_id).error or "")


def test_slurm_timeout_fails_with_slurms_reason(slurm_cluster: SlurmLab, tmp_path: Path) -> None:
    contract = TestSlurmBackend()
    backend = slurm_backend()
    native_id, job = contract.submit(backend, tmp_path, "import time; print('working', flush=True); time.sleep(300)", time_sec=600)
    slurm_id = SlurmNativeId.parse(native_id).slurm_job_id
    wait_for(lambda: backend.poll([native_id])[native_id].phase, lambda p: p is NativePhase.RUNNING, contract.final_timeout_sec)
    slurm_cluster.command("scontrol", "update", f"JobId={slurm_id}", "TimeLimit=0")
    outcome = contract.wait_final(backend, native_id)  # well before the job's own end (300 s) or limit (600 s)
    assert outcome.phase is NativePhase.FAILED
    assert "time limit" in (outcome.error or "") and "TIMEOUT" in (outcome.error or ""), outcome


def test_a_non_zero_exit_fails_with_the_exit_code(tmp_path: Path) -> None:
    contract = TestSlurmBackend()
    backend = slurm_backend()
    native_id, _ = contract.submit(backend, tmp_path, "import sys; print('bad input', flush=True); sys.exit(5)")
    outcome = contract.wait_final(backend, native_id)
    assert outcome.phase is NativePhase.FAILED and outcome.exit_code == 5
    assert "exited with code 5" in (outcome.error or "") and "bad input" in (outcome.error or "")


@pytest.mark.parametrize(
    "site_updates, resources, slurm_says",
    [
        ({}, {"num_gpus": 1}, "Invalid generic resource"),
        ({"gpuStyle": "gpus"}, {"num_gpus": 1}, ""),
        ({"partition": "nope"}, {}, "invalid partition"),
        ({}, {"memory_gb": 5000}, "Memory specification can not be satisfied"),
        ({}, {"num_cpus": 64}, ""),
    ],
)
def test_impossible_jobs_are_refused_at_submit_with_slurms_message(
    tmp_path: Path, site_updates: dict[str, object], resources: dict[str, object], slurm_says: str
) -> None:
    contract = TestSlurmBackend()
    backend = slurm_backend(fast_site(**site_updates))
    job = contract.prepare_job(tmp_path, "print('never')", **resources)  # type: ignore[arg-type]
    with pytest.raises(SubmitError) as refused:  # the submission itself fails: the job never waits in the queue
        backend.submit(job)
    message = str(refused.value)
    assert message.startswith("sbatch refused the job: ")
    assert slurm_says.lower() in message.lower()
    assert not (job.job_dir / "slurm_submit_attempted").exists()


def test_pending_jobs_say_why_they_wait(tmp_path: Path) -> None:
    contract = TestSlurmBackend()
    backend = slurm_backend(fast_site(extraDirectives=["--hold"]))
    native_id, _ = contract.submit(backend, tmp_path, "print('held')")
    try:
        outcome = backend.poll([native_id])[native_id]
        assert outcome.phase is NativePhase.QUEUED
        assert outcome.reason in ("JobHeldUser", "JobHeldAdmin"), outcome
    finally:
        backend.cancel([native_id])
    assert contract.wait_final(backend, native_id).phase is NativePhase.FAILED


def test_scancel_outside_pairio_says_the_job_was_cancelled_on_the_cluster(slurm_cluster: SlurmLab, tmp_path: Path) -> None:
    contract = TestSlurmBackend()
    backend = slurm_backend()
    native_id, job = contract.submit(backend, tmp_path, SPAWN_ESCAPING_CHILD + SLEEP_UNTIL_STOPPED)
    contract.wait_started(job)
    slurm_cluster.command("scancel", SlurmNativeId.parse(native_id).slurm_job_id)
    outcome = contract.wait_final(backend, native_id, timeout_sec=contract.cancel_timeout_sec)
    assert outcome.phase is NativePhase.FAILED
    assert "cancelled on the cluster" in (outcome.error or ""), outcome


def test_a_restarted_backend_finds_a_job_whose_id_was_never_recorded(tmp_path: Path) -> None:
    contract = TestSlurmBackend()
    first = slurm_backend(fast_site(extraDirectives=["--hold"]))
    native_id, job = contract.submit(first, tmp_path, "print('found again')")
    second = slurm_backend()
    try:
        assert second.adopt(job.job_dir) == native_id  # by its name, while it waits in the queue
        # a second submit of the same directory follows the queued job instead of starting another
        assert second.submit(job) == native_id
    finally:
        second.cancel([native_id])
    contract.wait_final(second, native_id)
    fresh = contract.prepare_job(tmp_path, "print('never submitted')")
    with pytest.raises(LookupError):
        second.adopt(fresh.job_dir)


def test_capacity_stops_at_max_queued_jobs(tmp_path: Path) -> None:
    contract = TestSlurmBackend()
    limits = Capacity(numCpus=4, numGpus=0, memoryGb=8)
    backend = slurm_backend(fast_site(maxQueuedJobs=3, extraDirectives=["--hold"]), slot_limits=limits)
    assert backend.capacity() == Capacity(numCpus=12, numGpus=0, memoryGb=24)  # three jobs of the largest size
    ids = [contract.submit(backend, tmp_path, "print(1)")[0] for _ in range(2)]
    assert backend.capacity() == limits
    ids.append(contract.submit(backend, tmp_path, "print(1)")[0])
    try:
        assert backend.capacity().numCpus == 0
    finally:
        backend.cancel(ids)
    wait_for(lambda: backend.poll(ids), lambda o: all(x.phase.is_final for x in o.values()), contract.cancel_timeout_sec)
    assert backend.capacity().numCpus == 12


def test_squeue_json_follows_jobs_as_the_text_format_does(slurm_cluster: SlurmLab, tmp_path: Path) -> None:
    """``squeueJson: true`` (the text format is the default): a held job's reason, then a job's success."""
    if slurm_cluster.command("squeue", "--json", check=False).returncode != 0:
        pytest.skip("this cluster's squeue has no --json")
    contract = TestSlurmBackend()
    held = slurm_backend(fast_site(squeueJson=True, extraDirectives=["--hold"]))
    native_id, _ = contract.submit(held, tmp_path, "print('held')")
    try:
        outcome = held.poll([native_id])[native_id]
        assert outcome.phase is NativePhase.QUEUED and outcome.reason in ("JobHeldUser", "JobHeldAdmin"), outcome
    finally:
        held.cancel([native_id])
    assert contract.wait_final(held, native_id).phase is NativePhase.FAILED
    backend = slurm_backend(fast_site(squeueJson=True))
    native_id, _ = contract.submit(backend, tmp_path, "print('ran')")
    assert contract.wait_final(backend, native_id).phase is NativePhase.SUCCEEDED


def test_squeue_calls_grow_with_poll_cycles_not_with_jobs(slurm_cluster: SlurmLab, tmp_path: Path) -> None:
    """A wrapped squeue (as a site would wrap it) counts the real calls: one per poll cycle for all jobs."""
    log = tmp_path / "squeue-calls.log"
    wrapper = tmp_path / "squeue-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec squeue "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    contract = TestSlurmBackend()
    backend = slurm_backend(fast_site(squeueCommand=str(wrapper), queuePollMinSec=0.01, queuePollMaxSec=0.01))
    ids = [contract.submit(backend, tmp_path, f"print({i})")[0] for i in range(12)]
    cycles = 0
    outcomes: dict[str, NativeOutcome] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cycles += 1
        outcomes = backend.poll(ids)
        if all(o.phase.is_final for o in outcomes.values()):
            break
        time.sleep(0.2)
    assert all(o.phase is NativePhase.SUCCEEDED for o in outcomes.values()), outcomes
    calls = log.read_text().splitlines()
    assert len(calls) <= cycles, (len(calls), cycles)
    assert all(",".join(SlurmNativeId.parse(i).slurm_job_id for i in ids[:1]) in c for c in calls)


def test_the_squeue_interval_backs_off_while_nothing_changes(tmp_path: Path) -> None:
    """On the backend's own clock (a fake one, so a busy machine changes nothing): squeue is asked less and less
    often while the queue stays the same, and at once after a change."""
    log = tmp_path / "squeue-calls.log"
    wrapper = tmp_path / "squeue-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho call >> {log}\nexec squeue "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    contract = TestSlurmBackend()
    now = [0.0]
    site = fast_site(squeueCommand=str(wrapper), queuePollMinSec=0.2, queuePollMaxSec=1.0, extraDirectives=["--hold"])
    backend = SlurmBackend(site, watcher_args=FAST_WATCHER, clock=lambda: now[0])

    def calls() -> int:
        return len(log.read_text().split()) if log.exists() else 0

    native_id, _ = contract.submit(backend, tmp_path, "print('held')")
    try:
        asked_at: list[float] = []
        for _ in range(100):  # a runner polling every 50 ms, for 5 s of the backend's clock
            before = calls()
            assert backend.poll([native_id])[native_id].phase is NativePhase.QUEUED
            if calls() > before:
                asked_at.append(now[0])
            now[0] += 0.05
        gaps = [b - a for a, b in zip(asked_at, asked_at[1:])]
        assert len(asked_at) <= 10, gaps  # 100 polls; without the back-off 25 calls at 0.2 s
        assert gaps[-1] > 0.9 and gaps[-1] > 2 * gaps[0], gaps
        backend.cancel([native_id])  # a change: the next poll asks at once, not after the back-off
        before = calls()
        backend.poll([native_id])
        assert calls() == before + 1

        def poll_later() -> NativeOutcome:
            now[0] += 1.0
            return backend.poll([native_id])[native_id]

        assert wait_for(poll_later, lambda o: o.phase.is_final, contract.cancel_timeout_sec).phase is NativePhase.FAILED
    finally:
        backend.cancel([native_id])


def test_a_job_end_is_signalled_from_its_files(tmp_path: Path) -> None:
    """The end-file watcher calls the runner's callback when a job's result appears, with no poll before it;
    a poll then settles the job (squeue is asked at once, whatever the queue poll interval: ten minutes here,
    far beyond the waits below)."""
    contract = TestSlurmBackend()
    backend = slurm_backend(fast_site(queuePollMinSec=600, queuePollMaxSec=600))
    ended = threading.Event()
    files_at_signal: list[bool] = []
    native_id = ""

    def on_end() -> None:
        job_dir = SlurmNativeId.parse(native_id).job_dir
        files_at_signal.append((job_dir / "result.json").exists() or (job_dir / EXIT_CODE_FILE).exists())
        ended.set()

    backend.notify_job_end(on_end)
    watcher = backend._end_watcher
    assert watcher is not None
    try:
        native_id, _ = contract.submit(backend, tmp_path, "print('done', flush=True)")
        assert ended.wait(60), "no end event for a job that ended"
        assert files_at_signal and all(files_at_signal)
        outcome = contract.wait_final(backend, native_id)
        assert outcome.phase is NativePhase.SUCCEEDED, outcome
    finally:
        backend.close()
    assert not watcher._thread.is_alive()
