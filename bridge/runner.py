"""The runner shared by every bridge: claim -> stage -> submit -> poll -> collect -> report.

Heartbeats run in a thread of their own: each one waits at the hub (up to the heartbeat
interval) and is answered at once when a user cancels one of the bridge's jobs, so a
cancel reaches the main loop without polling for it. One main loop does the cheap,
frequent work: the cancellations heartbeats brought, one ``backend.poll`` for all
running jobs, console output to the hub, claims. The slow work of one job (staging
its inputs and submitting it; uploading its outputs and reporting its end) runs in a
small thread pool so a large download never delays a cancellation. Between passes the loop
sleeps until the next poll is due (``pollIntervalSec``), and wakes at once when a heartbeat brings
a cancel, a worker is done, a claim answered, or the backend says a job ended, so a free slot is
claimed again without delay. An idle bridge waits for jobs in its claim (a long poll of
``claimWaitSec``); a busy one claims in a claim thread of its own (a long poll of ``pollIntervalSec``),
one claim at a time, so a job's end is polled and reported while the claim waits at the hub.

Every step a restart must not take again (staged inputs, the submission, the end, the
report) is recorded in the job's ``state.json`` before the next one starts (see
``bridge.jobdir``; a directory without one holds a claimed job, prepared afresh), and every
report to the hub is idempotent (a ``running`` report is written with the next step), so:

- the hub unreachable: the runner backs off and retries; jobs keep running;
- the bridge killed and restarted: running jobs are re-adopted (their native ids are
  polled again), ended ones are reported, and a job that reached ``submitting`` is
  never submitted again. A job the hub still lists as ``starting`` for this client
  that was never submitted (no directory, or one that stopped at claimed/staged) is
  staged and submitted now: it never ran, so running it is safe. A job that was being
  submitted when the bridge died is failed instead, as it may or may not have started.
- a claim whose answer was lost (the hub may have handed out jobs) is followed by a
  look at the hub's list of this client's jobs, which adopts them the same way. So is a
  finished job's report that carried a claim: the report claims the next job for the slot
  it frees (one call instead of two; outputs are uploaded before, in a worker of their own).

SIGTERM (or a first Ctrl-C) drains: no more claims, the jobs at hand are followed to
the end and reported, then ``run`` returns. A second signal raises ``ImmediateExit``:
the jobs keep running detached and the next start re-adopts them.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import shutil
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Callable, Optional

import pairio
from pairio.jobfile import PairioJobFile, PairioJobFileInput, PairioJobFileOutput
from pairio.masking import mask_text
from pairio.models import PairioApp, PairioJobData, PairioJobRequiredResources
from pairio.names import check_name, secret_name_problem
from pairio.status import JobStatus
from pairio.waiting import HOST_BUSY_NOTE_PREFIX, QUEUE_NOTE_PREFIX, STARTED_NOTE_PREFIX

from . import original_sdk
from .backend import Backend, Capacity, JobSubmission, NativeOutcome, NativePhase, SubmitError, SubmitRetryLater
from .config import AppCommandsFile, BridgeConfig, BridgeConfigError, ContainerMode, ProcessorLaunch, processor_command
from .hub_api import (
    MAX_REPORTS_PER_CALL,
    ClaimRequest,
    ConsoleOffsetError,
    HubApi,
    HubApiError,
    HubAuthError,
    HubRejectedError,
    HubUnreachableError,
    StatusAnswer,
)
from .images import app_images, image_report
from .jobdir import JobDir, JobState, RecordedOutcome, RunnerPhase, job_dirs, remove_old_job_dirs
from .note_outbox import NoteOutbox
from .original_sdk import OriginalSdkNetwork
from .staging import CACHE_VISIBLE_TO_PROCESSOR, InputCache, InputStaging, StagingError, input_staging_for
from .watch import SECRETS_FILE

log = logging.getLogger("bridge")

MAX_CLAIM_JOBS = 10
REPORT_WORKERS = 4
CONSOLE_CHUNK_BYTES = 1024 * 1024
CONSOLE_BYTES_PER_CYCLE = 4 * CONSOLE_CHUNK_BYTES
HUB_BACKOFF_MAX_SEC = 10.0
AUTH_BACKOFF_SEC = 5.0
# A key the hub does not know stays unknown (client deleted, another hub): give up after this many.
MAX_REFUSALS_IN_A_ROW = 3
CANCEL_RESEND_SEC = 10.0
MIN_HEARTBEAT_SPACING_SEC = 0.2
"""heartbeats never come faster than this, whatever the hub answers"""
STATUS_LOG_INTERVAL_SEC = 60.0
STATUS_LOG_MIN_INTERVAL_SEC = 5.0
CLEANUP_INTERVAL_SEC = 3600.0
APP_SPEC_TTL_SEC = 60.0
SUBMIT_RETRY_SEC = 15.0
WORKER_RETRY_SEC = 30.0
RESOURCE_LOG_UPLOAD_INTERVAL_SEC = 10.0
RESOURCE_LOG_UPLOAD_SCALE_BYTES = 32 * 1024
BUSY_HOST_RECHECK_SEC = 2.0
BUSY_HOST_NOTE_PREFIX = HOST_BUSY_NOTE_PREFIX  # the hub reads these notes back as the job's waiting reason
FINISH_CALL_MAX_LOG_BYTES = 2 * 1024 * 1024
"""a larger resource log goes in its own upload, not in the finished job's JSON report"""
RUNNING_REPORT_DELAY_SEC = 0.5
"""a job's 'running' report waits this long after its start: a job that ends sooner has it in its finish report
(``startedAgoSec``), one call instead of two, as most short jobs do"""
CONSOLE_HOLD_SEC = RUNNING_REPORT_DELAY_SEC
"""a running job's new console output waits this long after the runner first sees it before it goes to the hub on its
own: a job that ends sooner sends it with its finish report (most short jobs print and end within this)"""
AHEAD_FOR_RUNS_UNDER_SEC = 5.0
"""jobs are claimed ahead (claimAheadJobs) only while the jobs here typically run shorter than this (or before any
ended): with long jobs a slot frees seldom, a job held ahead would mostly go back to the hub unstarted, and the gain
(the tens of milliseconds between a job's end and the next one's start) is nothing beside its run"""
RUN_TIME_SMOOTHING = 0.2
"""the weight of the latest job's run time in the typical one (an exponential moving average)"""
RESOURCE_LOG_FIRST_UPLOAD_SEC = 2.0
"""a running job's resource log is first sent this long after it started (a short job's goes with its report)"""


class ImmediateExit(BaseException):
    """A second SIGTERM/SIGINT: leave now; running jobs are re-adopted by the next start."""


class BridgeRefusedError(HubApiError):
    """The hub refused this bridge's key several times in a row: a person must register it again."""


# An original-SDK job's process exits right after reporting its final status (bridge/original_sdk.py).
ORIGINAL_SDK_EXIT_GRACE_SEC = 30.0


class _ClaimInterrupted(BaseException):
    """A signal arrived during an idle long-poll claim; stop waiting for jobs."""


class _ClaimAnswerLost(Exception):
    """The finish report that carried a claim got no answer: the hub may have claimed jobs for this bridge."""


@dataclass
class ClaimWithFinish:
    """A claim sent in a finished job's report, to fill the slot it frees without a call of its own.

    The main loop makes it (``BridgeRunner._claim_with_finish``) as the one claim in flight; the reporting
    worker sends it and settles ``answer`` (the jobs, or ``_ClaimAnswerLost``), which the loop takes as it
    takes a claim thread's answer.
    """

    request: ClaimRequest
    answer: Future[list[PairioJobData]] = field(default_factory=Future)
    sent: bool = False


@dataclass
class TrackedJob:
    """A job the runner is responsible for, until the hub has its final status."""

    dir: JobDir
    state: JobState
    resources: Optional[PairioJobRequiredResources] = None
    job: Optional[PairioJobData] = None
    """the hub's job, while it still has to be prepared"""
    busy: bool = False
    """a worker is preparing or finishing it; the main loop leaves it alone"""
    cancel_requested: bool = False
    cancel_sent_at: float = 0.0
    cancel_sent: bool = False
    """the backend was asked to stop it (``cancel_sent_at`` says when, for resends)"""
    retry_at: float = 0.0
    resource_log_sent_size: int = 0
    resource_log_next_upload: float = 0.0
    console_seen_at: Optional[float] = None
    """when the runner first saw console output of the job that the hub does not have (``CONSOLE_HOLD_SEC``)"""
    last_note: Optional[str] = None
    """the latest queue/progress note for the hub's timeline (queued or sent), so a note is sent only when it changes"""
    secret_values: list[str] = field(default_factory=list)
    """the job's secret values, held to mask them in what the runner logs, records and reports (from the hub
    again after a restart: its list of this client's jobs includes them)"""
    held: bool = False
    """claimed and staged, but waiting for other programs to leave the host room (respectMachineLoad)"""
    waiting_since: Optional[float] = None
    """claimed ahead (claimAheadJobs) and staged, waiting since then for a free slot"""
    submitted_at: Optional[float] = None
    """when this bridge handed it to the backend (not known for a job re-adopted after a restart)"""
    exit_grace_until: Optional[float] = None
    """an original-SDK job that reported its final status itself: stopped only if still running after this"""
    claim_with_finish: Optional[ClaimWithFinish] = None
    """the claim its finish report carries (set by the main loop when it hands the report to a worker)"""
    output_count: Optional[int] = None
    """how many outputs its processor writes (None: not known here, as for a job re-adopted after a restart)"""
    uploaded: Optional[tuple[JobStatus, Optional[str]]] = None
    """a finished job's outputs uploaded: the status to report (failed when one is missing or refused) and its error"""

    def masked(self, text: str) -> str:
        return mask_text(text, self.secret_values) if self.secret_values and text else text

    @property
    def job_id(self) -> str:
        return self.state.jobId

    @property
    def phase(self) -> RunnerPhase:
        return self.state.phase


@dataclass
class RunnerStats:
    completed: int = 0
    failed: int = 0
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=5))


class BridgeRunner:
    """Runs the jobs a hub hands to one compute client, on one backend."""

    def __init__(
        self,
        config: BridgeConfig,
        backend: Backend,
        hub_api: HubApi,
        *,
        exit_when_idle: bool = False,
        input_cache: Optional[InputCache] = None,
        max_workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        app_commands_file: Optional[AppCommandsFile] = None,
    ) -> None:
        self.config = config
        self.app_commands_file = app_commands_file
        """bridge.json, re-read for app commands changed while the bridge runs ('pairio-bridge apps add')"""
        self._app_commands_lock = threading.Lock()
        self.backend = backend
        self.hub = hub_api
        self.notes = NoteOutbox(hub_api)
        """the jobs' timeline notes, sent together once per pass of the main loop"""
        self._notes_in_flight = False
        self.exit_when_idle = exit_when_idle
        self.cache = input_cache or InputCache(config.cache_path)
        self.jobs_root = config.jobs_path
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bridge-job")
        self._report_pool = ThreadPoolExecutor(max_workers=REPORT_WORKERS, thread_name_prefix="bridge-report")
        self._claim_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-claim")
        self._claim_in_flight: Optional[Future[list[PairioJobData]]] = None
        """a busy bridge's claim, waiting at the hub in the claim thread while the main loop follows the running jobs"""
        """finished jobs' reports, running jobs' console output and notes go through workers of their own: they never wait
        behind submissions (each an sbatch), and the main loop (polls, claims) never waits on their hub calls"""
        self._lock = threading.Lock()
        self._jobs: dict[str, TrackedJob] = {}
        self._stats = RunnerStats()
        self._draining = False
        self._in_idle_claim = False
        self._reconcile_needed = True
        self._hub_retry_at = 0.0
        self._hub_failures = 0
        self._refusals = 0
        self._refused: Optional[HubApiError] = None
        self._stop_requests: set[str] = set()
        self._stop_requests_lock = threading.Lock()
        self._wake = threading.Event()
        """set when a heartbeat brings jobs to stop, a job ends on the backend or a worker is done: cuts the main loop's sleep short"""
        self._job_ended = threading.Event()
        """set by the backend when one of its jobs may have ended: poll now, not at the next interval"""
        self._recheck_when_free: set[str] = set()
        """jobs a worker held at a poll for a job's end: polled once more as soon as none of them is held"""
        self._next_poll = 0.0
        self._next_console = 0.0
        backend.notify_job_end(self._on_job_end)
        self._heartbeats_stop = threading.Event()
        self._next_status_log = 0.0
        self._next_cleanup = 0.0
        self._last_status_line = ""
        self._last_status_log = -STATUS_LOG_MIN_INTERVAL_SEC
        self._idle_claim_returned_nothing = False
        self._capacity_note = ""
        self._app_specs: dict[str, tuple[float, PairioApp]] = {}
        self._finish_call = True
        """the hub takes a finished job's report in one call (older hubs: one call per part)"""
        self._hub_takes_finish_claims = True
        """false after the hub refused a claim in a finish report (an older hub): the freed slot is claimed for apart"""
        self._reported_info: Optional[dict[str, object]] = None
        self._hub_takes_info = True
        """false after the hub refused the description (an older hub): heartbeats go without it"""
        self._hub_takes_scope = True
        """false after the hub refused the claim's apps and container mode (an older hub): claims go without them"""
        self._submit_lock = threading.Lock()
        """with claimAheadJobs: a job's look for a free slot and its taking it (the phase SUBMITTING), one job at a time"""
        self._ahead_paused = False
        """a job claimed ahead was given back: none is claimed ahead again until a job ends here"""
        self._slot_frees = 0
        """how many times a job here ended (a look for a slot that saw none, while one ended, looks again)"""
        self._typical_run_sec: Optional[float] = None
        """the jobs' typical time from submission to end here (None until one ended): jobs are claimed ahead only
        while it is unknown or short (``AHEAD_FOR_RUNS_UNDER_SEC``)"""
        self._drain_seen = False
        """the drain has given back the jobs held ahead (``_dispatch_work``)"""
        self._hub_takes_started_ago = True
        """false after the hub refused a finish report's startedAgoSec (an older hub): 'running' goes at the start"""
        self._hub_takes_running_batches = True
        """false after the hub did not know the call for several jobs' 'running' (an older hub): one call per job"""
        self._hub_takes_release = True
        """false after the hub did not know the release call or a claim's aheadJobs (an older hub): no job is claimed ahead"""
        self._claim_in_flight_ahead = False
        """the claim in flight asks for jobs ahead of a free slot (an older hub refuses it with 422)"""
        """what the hub was last told of where and how this bridge runs (sent again when it changes)"""

    # ---------------------------------------------------------------- lifecycle

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self._draining:
            raise ImmediateExit(f"{name} while draining")
        self._draining = True
        log.info("%s: draining (no new jobs; finishing %d job(s)); send it again to exit at once", name, len(self._jobs))
        if self._in_idle_claim:
            raise _ClaimInterrupted()

    def request_drain(self) -> None:
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    def run(self) -> None:
        """Run until drained (SIGTERM) or, with ``exit_when_idle``, until there is nothing to do."""
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        self._adopt_local_jobs()
        log.info(
            "bridge %r (compute client %s) of service %r on %s at %s; %d job(s) adopted",
            self.config.label, self.config.computeClientId, self.config.serviceName, self.backend.name,
            self.hub.hub_url, len(self._jobs),
        )
        if self.config.containerMode is ContainerMode.NONE and not app_names(self.config):
            log.warning(
                "this bridge has no app commands, so it claims no job; add one with "
                "'pairio-bridge apps add --dir BRIDGE_DIR APP=\"python /abs/path/main.py\"' (no restart needed)"
            )
        heartbeats = threading.Thread(target=self._heartbeat_loop, name="bridge-heartbeat", daemon=True)
        heartbeats.start()
        try:
            self.check_images()  # the heartbeats run meanwhile: adopted jobs stay this bridge's however long it takes
            while True:
                self.run_cycle()
                if self._refused is not None:
                    raise self._refusal_error(self._refused)
                if self._finished():
                    break
        finally:
            self._heartbeats_stop.set()
        self._log_status(force=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._report_pool.shutdown(wait=True, cancel_futures=True)
        self._claim_pool.shutdown(wait=True, cancel_futures=True)
        self.cache.close()

    def _refusal_error(self, error: HubApiError) -> BridgeRefusedError:
        left = f"; {len(self._jobs)} job(s) here are left as they are" if self._jobs else ""
        return BridgeRefusedError(
            f"the hub at {self.hub.hub_url} refused this bridge {self._refusals} times in a row ({error}); "
            f"compute client {self.config.computeClientId} was deleted, or bridge.json belongs to another hub: register "
            f"the bridge again (pairio-bridge register --dir DIR --service {self.config.serviceName} --force){left}"
        )

    def _finished(self) -> bool:
        if self._claim_in_flight is not None:
            return False  # its answer may bring jobs: they are this bridge's to run
        if self._draining and not self._jobs and self._hub_failures:
            # Nothing runs here; jobs a lost claim answer may have taken go back to pending when this client expires.
            log.info("drained: no jobs left, and the hub does not answer; exiting")
            return True
        if self._jobs or self._reconcile_needed:
            return False
        if self._draining:
            log.info("drained: no jobs left; exiting")
            return True
        if self.exit_when_idle and self._idle_claim_returned_nothing:
            log.info("idle: nothing running and no job to claim; exiting (--exit-when-idle)")
            return True
        return False

    def run_cycle(self) -> None:
        """One pass of the main loop; when busy it sleeps until the next poll is due, or until woken.

        It is woken by a job's end on the backend, a heartbeat's cancel, a worker done, or the claim thread's
        answer; an idle bridge waits in its claim's long poll instead.
        """
        now = self._clock()
        if now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP_INTERVAL_SEC
            self._clean_up_old_job_dirs()
        if self._reconcile_needed and self._hub_ok() and self._claim_in_flight is None:
            # never beside a claim: the hub's list could show the jobs its answer is bringing
            self._reconcile_with_hub()
        self._apply_stop_requests()
        self._take_claim_answer()
        self._poll_backend()
        self._report_running()
        self._stream_console()
        self._stream_resource_logs()
        self._dispatch_work()
        self._send_queued_notes()
        self._forget_reported()
        self._log_status()
        if not self._claim():
            self._wake.wait(self._sleep_sec())

    def _sleep_sec(self) -> float:
        """Until the next poll is due (a poll interval at most): a wake-up for a worker or a claim does not put the poll off."""
        interval = self.config.pollIntervalSec
        return min(interval, max(0.0, self._next_poll - self._clock()))

    # ---------------------------------------------------------------- the hub's availability

    def _hub_ok(self) -> bool:
        return self._clock() >= self._hub_retry_at

    def _hub_failed(self, error: HubApiError, *, client_call: bool = False) -> None:
        """Back off from a hub that is down, or from a key it refuses (a person must fix that).

        ``client_call``: the call was the compute client's own (heartbeat, claim, its job list),
        so a refusal means the key itself is refused, not one job's call.
        """
        self._hub_failures += 1
        if isinstance(error, HubAuthError):
            delay = AUTH_BACKOFF_SEC
            log.error("the hub refuses this bridge: %s", error)
            if client_call:
                self._refusals += 1
                if self._refusals >= MAX_REFUSALS_IN_A_ROW:
                    self._refused = error
        else:
            delay = min(HUB_BACKOFF_MAX_SEC, 0.5 * 2 ** min(self._hub_failures, 8))
            # The hub client logs when the hub stops answering; say it here only when it did not.
            first = self._hub_failures == 1 and getattr(self.hub, "answering", True)
            log.log(logging.WARNING if first else logging.DEBUG, "hub unavailable (%s); retrying in %.0f s; jobs keep running", error, delay)
        self._hub_retry_at = self._clock() + delay

    def _hub_succeeded(self) -> None:
        if self._hub_failures:
            log.debug("the hub answers again")
        self._hub_failures = 0
        self._refusals = 0

    # ---------------------------------------------------------------- adopting jobs (start, lost claims)

    def _adopt_local_jobs(self) -> None:
        """Take up every job directory whose job is not reported yet (a restart)."""
        for d in job_dirs(self.jobs_root):
            try:
                state = d.read_state()
            except (OSError, ValueError) as e:
                log.error("job directory %s has an unreadable state.json (%s); skipping it", d.path, e)
                continue
            state = state or JobState(jobId=d.job_id)
            if state.phase is RunnerPhase.REPORTED:
                continue
            tracked = TrackedJob(dir=d, state=state, resources=_resources_from_job_file(d))
            if state.phase is RunnerPhase.SUBMITTING:
                self._recover_interrupted_submission(tracked)
            self._jobs[d.job_id] = tracked
            log.info("re-adopted job %s (%s%s)", d.job_id, state.phase.value, f", native id {state.nativeId}" if state.nativeId else "")

    def _recover_interrupted_submission(self, tracked: TrackedJob) -> None:
        """The bridge died inside ``backend.submit``: find the job, or make sure it is never started twice.

        ``Backend.adopt`` tells which; a backend that cannot tell (NotImplementedError) has
        the job failed, since it may or may not be running.
        """
        state = tracked.state
        try:
            state.nativeId = self.backend.adopt(tracked.dir.path)
        except LookupError:
            log.info("job %s: its submission was interrupted before anything started; it will be submitted", tracked.job_id)
            state.phase, state.submitAttempted = RunnerPhase.STAGED, False
            tracked.dir.write_state(state)
            return
        except NotImplementedError:
            pass
        else:
            state.phase = RunnerPhase.SUBMITTED
            tracked.dir.write_state(state)
            return
        self._record_outcome(tracked, NativeOutcome(
            NativePhase.LOST,
            error="the bridge stopped while handing the job to its backend; it was not started again, so that it never runs twice",
        ))

    def _reconcile_with_hub(self) -> None:
        """Compare with the hub's list of this client's jobs: prepare the unsubmitted ones, drop stale ones."""
        try:
            hub_jobs = {j.jobId: j for j in self.hub.my_active_jobs()}
        except HubApiError as e:
            self._hub_failed(e, client_call=True)
            return
        self._hub_succeeded()
        self._reconcile_needed = False
        for job_id, tracked in list(self._jobs.items()):
            if job_id in hub_jobs and not tracked.secret_values:
                tracked.secret_values = _secret_values(hub_jobs[job_id])
            if tracked.busy or tracked.phase not in (RunnerPhase.CLAIMED, RunnerPhase.STAGED):
                continue
            hub_job = hub_jobs.get(job_id)
            if hub_job is not None and hub_job.status is JobStatus.STARTING:
                tracked.job = hub_job
                tracked.resources = hub_job.requiredResources
            elif tracked.job is None:
                self._give_up(tracked, "the hub no longer assigns this job to this bridge; it was never started here")
        for job_id, hub_job in hub_jobs.items():
            if job_id in self._jobs:
                continue
            d = JobDir(self.jobs_root / job_id)
            state = _safe_state(d)
            if state is not None and state.phase is RunnerPhase.REPORTED:
                continue  # reported by this bridge just now; the hub's list is older than the report
            if hub_job.status is JobStatus.STARTING:
                log.info("adopting job %s, claimed for this bridge but never started", job_id)
                self._track_new(hub_job)
            else:
                self._report_lost(hub_job)

    def _report_lost(self, hub_job: PairioJobData) -> None:
        try:
            self.hub.set_status(
                hub_job.jobId, JobStatus.FAILED,
                "the bridge has no record of this running job (its job directory is gone); it cannot be followed",
            )
        except HubApiError as e:
            log.warning("could not fail untracked job %s: %s", hub_job.jobId, e)

    def _track_new(self, job: PairioJobData) -> TrackedJob:
        """Follow a job the hub just assigned to this bridge (a claim, or found starting in the hub's list)."""
        d = JobDir(self.jobs_root / job.jobId)
        state = _safe_state(d)
        if state is None or not state.submitAttempted:
            state = JobState(jobId=job.jobId)  # never handed to the backend: start afresh
        elif state.phase is RunnerPhase.SUBMITTING:
            state.phase = RunnerPhase.FINISHED
            state.outcome = RecordedOutcome(
                phase=NativePhase.LOST, error="the bridge stopped while handing the job to its backend; not started again"
            )
        elif state.phase is RunnerPhase.REPORTED and state.outcome is not None:
            # The hub gave back a job this bridge already ran (it expired before hearing of it):
            # report that run again instead of running the job a second time.
            state.phase, state.runningReported, state.outputsUploaded = RunnerPhase.FINISHED, False, []
        tracked = TrackedJob(
            dir=d, state=state, resources=job.requiredResources, job=job, secret_values=_secret_values(job),
            output_count=len(job.jobDefinition.outputFiles),
        )
        self._jobs[job.jobId] = tracked
        return tracked

    # ---------------------------------------------------------------- heartbeat and cancellation

    def _heartbeat_loop(self) -> None:
        """The heartbeat thread: one waiting heartbeat after another, until ``run`` ends."""
        while not self._heartbeats_stop.is_set():
            if not self._hub_ok():
                self._heartbeats_stop.wait(min(1.0, max(0.05, self._hub_retry_at - self._clock())))
                continue
            started = time.monotonic()
            try:
                self._heartbeat()
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                if not self._heartbeats_stop.is_set():  # else: the connections were closed under it at exit
                    log.exception("heartbeat failed")
            self._heartbeats_stop.wait(max(0.0, MIN_HEARTBEAT_SPACING_SEC - (time.monotonic() - started)))

    def _heartbeat(self) -> None:
        """One heartbeat; the hub answers early when a job not yet being stopped must stop (the main loop stops it)."""
        tracked = list(self._jobs.values())  # a copy: the main loop changes the dict meanwhile
        # a job that already ended here is only waiting to be reported or cleaned up
        stopping = [t.job_id for t in tracked if t.cancel_requested or t.phase in (RunnerPhase.FINISHED, RunnerPhase.REPORTED)]
        info = bridge_info(self.config, self.backend)
        try:
            answer = self.hub.heartbeat(
                sorted(t.job_id for t in tracked), wait_sec=self.config.heartbeatIntervalSec, stopping_job_ids=stopping,
                bridge_info=info if info != self._reported_info and self._hub_takes_info else None,
            )
        except HubRejectedError as e:
            if e.status_code == 422 and self._hub_takes_info and info != self._reported_info:
                log.warning("the hub refused this bridge's description (%s); heartbeats go without it (an older hub?)", e.message)
                self._hub_takes_info = False
                return
            if not self._heartbeats_stop.is_set():
                self._hub_failed(e, client_call=True)
            return
        except HubApiError as e:
            if not self._heartbeats_stop.is_set():  # else the bridge is closing its connections under this call
                self._hub_failed(e, client_call=True)
            return
        self._reported_info = info
        self._hub_succeeded()
        if answer.cancel_job_ids:
            with self._stop_requests_lock:
                self._stop_requests.update(answer.cancel_job_ids)
            self._wake.set()

    def _apply_stop_requests(self) -> None:
        """Stop the jobs heartbeats said to stop (in the main loop, which owns the jobs).

        A job a worker held when its stop was asked (sending its ``running`` report or a note) is stopped once
        the worker is done: the heartbeat lists it as stopping from then on, so the hub does not ask again.
        """
        self._wake.clear()
        with self._stop_requests_lock:
            job_ids, self._stop_requests = self._stop_requests, set()
        for job_id in job_ids:
            tracked = self._jobs.get(job_id)
            # a job that already ended here is only waiting to be reported or cleaned up
            if tracked is not None and tracked.phase not in (RunnerPhase.FINISHED, RunnerPhase.REPORTED):
                if not self._lets_original_sdk_job_exit(tracked):
                    self._cancel(tracked)
        for tracked in list(self._jobs.values()):
            if tracked.cancel_requested and not tracked.cancel_sent and not tracked.busy and tracked.phase is RunnerPhase.SUBMITTED:
                self._cancel(tracked)

    def _lets_original_sdk_job_exit(self, tracked: TrackedJob) -> bool:
        """An original-SDK job reports its final status itself and then exits: its container is not stopped for that.

        The hub asks to stop it because it is final; for ``ORIGINAL_SDK_EXIT_GRACE_SEC`` it may
        end by itself (a stop then would leave the engine removing the container mid-exit). A
        canceled job is stopped at once, as any job.
        """
        if not tracked.state.originalSdk or tracked.phase is not RunnerPhase.SUBMITTED or tracked.cancel_requested:
            return False
        if tracked.exit_grace_until is None:
            try:
                job, _ = self.hub.get_job(tracked.job_id)
            except HubApiError:
                return False
            if job.canceled or not job.status.is_terminal:
                return False
            tracked.exit_grace_until = self._clock() + ORIGINAL_SDK_EXIT_GRACE_SEC
            log.info("job %s reported %s itself; waiting for its container to end", tracked.job_id, job.status.value)
        return self._clock() < tracked.exit_grace_until

    def _cancel(self, tracked: TrackedJob) -> None:
        """Stop a job the hub says to stop (canceled, deleted, or no longer this bridge's)."""
        if not tracked.cancel_requested:
            log.info("job %s: stopping it, as the hub asks", tracked.job_id)
        tracked.cancel_requested = True
        if tracked.waiting_since is not None:
            tracked.retry_at = 0.0  # claimed ahead and waiting for a slot: fail it now, not when one frees
        if tracked.busy or tracked.phase is not RunnerPhase.SUBMITTED or not tracked.state.nativeId:
            return  # a preparing job is stopped by its worker before it is submitted
        if self._clock() - tracked.cancel_sent_at < CANCEL_RESEND_SEC:
            return
        tracked.cancel_sent_at = self._clock()
        try:
            self.backend.cancel([tracked.state.nativeId])
            tracked.cancel_sent = True
        except Exception:  # noqa: BLE001 - a backend failure must not stop the loop; retried next heartbeat
            log.exception("job %s: the backend could not cancel native job %s", tracked.job_id, tracked.state.nativeId)
            tracked.cancel_sent_at = 0.0

    # ---------------------------------------------------------------- following running jobs

    def _on_job_end(self) -> None:
        self._job_ended.set()
        self._wake.set()

    def _poll_backend(self) -> None:
        """One batched look at the running jobs: every poll interval, and at once when the backend says one ended.

        The loop also runs when workers finish and claims return; those do not poll again (a Slurm
        backend's poll is a call to its scheduler), except once for the jobs a worker held (sending
        their console output or a note) when the backend said a job ended: the one that ended may be
        among them.
        """
        now = self._clock()
        event = self._job_ended.is_set()
        recheck = bool(self._recheck_when_free) and not any(
            (t := self._jobs.get(job_id)) is not None and t.busy for job_id in self._recheck_when_free
        )
        if now < self._next_poll and not event and not recheck:
            return
        self._job_ended.clear()
        self._next_poll = now + self.config.pollIntervalSec
        submitted = [t for t in self._jobs.values() if t.phase is RunnerPhase.SUBMITTED and t.state.nativeId]
        held = {t.job_id for t in submitted if t.busy}
        self._recheck_when_free = held if event else set() if recheck else self._recheck_when_free & held
        running = {t.state.nativeId: t for t in submitted if not t.busy}
        if not running:
            return
        try:
            outcomes = self.backend.poll(list(running))
        except Exception:  # noqa: BLE001 - poll again next cycle
            log.exception("the %s backend failed to poll %d job(s)", self.backend.name, len(running))
            return
        for native_id, outcome in outcomes.items():
            tracked = running.get(native_id)
            if tracked is None:
                continue
            if outcome.phase.is_final:
                log.info("job %s ended on the backend: %s%s", tracked.job_id, outcome.phase.value, f" ({tracked.masked(outcome.error)})" if outcome.error else "")
                self._record_outcome(tracked, outcome)
            else:
                self._note_progress(tracked, outcome)

    def _note_progress(self, tracked: TrackedJob, outcome: NativeOutcome) -> None:
        """Put queue waits on the job's timeline (e.g. Slurm's reason), once per change."""
        if outcome.phase is NativePhase.QUEUED:
            note = f"{QUEUE_NOTE_PREFIX}{self.backend.name} queue" + (f": {outcome.reason}" if outcome.reason else "")
        elif tracked.last_note is not None and tracked.last_note.startswith("waiting"):
            note = f"{STARTED_NOTE_PREFIX}{self.backend.name} backend"
        else:
            return
        if note != tracked.last_note and self._hub_ok():
            self._queue_note(tracked, note)

    def _queue_note(self, tracked: TrackedJob, note: str) -> None:
        """A line for the job's timeline: it goes with the other notes of this pass, in one call (``_send_notes``)."""
        tracked.last_note = note
        self.notes.put(tracked.job_id, tracked.masked(note))

    def _send_queued_notes(self) -> None:
        """Hand the notes queued so far to a reporting worker: the main loop never waits for the hub."""
        if self._notes_in_flight or not self._hub_ok():
            return
        notes = self.notes.take()
        if notes:
            self._notes_in_flight = True
            self._report_pool.submit(self._send_notes, notes)

    def _send_notes(self, notes: list[tuple[str, str]]) -> None:
        try:
            self.notes.send(notes)
        except HubApiError as e:
            self._hub_failed(e)
            for job_id, _ in notes:  # noted again at the next look, once the hub answers
                if (tracked := self._jobs.get(job_id)) is not None:
                    tracked.last_note = None
        except Exception:  # noqa: BLE001 - notes are worth a log line, not the bridge
            log.exception("could not send %d note(s) to the hub", len(notes))
        finally:
            self.notes.done(notes)
            self._notes_in_flight = False
            self._wake.set()  # a finish report held back for its job's note may go now

    def _send_running_job_extra(self, tracked: TrackedJob, what: str, call: Callable[[], object]) -> bool:
        """A running job's resource log to the hub (by a reporting worker); False when the hub is down,
        so it goes again later. A refusal is logged and not retried."""
        if not self._hub_ok():
            return False
        try:
            call()
        except HubUnreachableError as e:
            self._hub_failed(e)
            return False
        except HubRejectedError as e:
            log.debug("job %s: the hub refused %s (%s)", tracked.job_id, what, e)
        return True

    def _record_outcome(self, tracked: TrackedJob, outcome: NativeOutcome) -> None:
        if tracked.submitted_at is not None:
            self._note_run_time(self._clock() - tracked.submitted_at)
        self._slot_freed()
        tracked.state.phase = RunnerPhase.FINISHED
        tracked.state.outcome = RecordedOutcome.of(outcome)
        if tracked.state.outcome.error:
            tracked.state.outcome.error = tracked.masked(tracked.state.outcome.error)
        # a watcher that never started leaves the secrets file behind
        (tracked.dir.path / SECRETS_FILE).unlink(missing_ok=True)
        tracked.dir.write_state(tracked.state)

    def _report_running(self) -> None:
        """'running' reports now due (``RUNNING_REPORT_DELAY_SEC``), and those that failed right after submission (the hub
        was down): all in one call, by a reporting worker, so that many jobs starting at once cost one call and the
        main loop (polls, claims) never waits on it."""
        now = self._clock()
        due = [
            tracked for tracked in list(self._jobs.values())
            if not tracked.busy and tracked.phase is RunnerPhase.SUBMITTED and not tracked.state.runningReported
            and not self._running_report_waits(tracked, now)
        ]
        if due and self._hub_ok():
            self._start_jobs_worker(due, self._send_running_reports, "_send_running_reports", self._report_pool)

    def _send_running_reports(self, jobs: list[TrackedJob]) -> None:
        if self._hub_takes_running_batches:
            try:
                for start in range(0, len(jobs), MAX_REPORTS_PER_CALL):
                    chunk = jobs[start:start + MAX_REPORTS_PER_CALL]
                    answers, refused = self.hub.report_running([t.job_id for t in chunk])
                    for tracked in chunk:
                        if tracked.job_id in answers:
                            self._running_taken(tracked, answers[tracked.job_id])
                    by_id = {t.job_id: t for t in chunk}
                    for refusal in refused:
                        if refusal.job_id in by_id:
                            self._running_refused(by_id[refusal.job_id], f"{refusal.detail} (HTTP {refusal.status_code})")
                return
            except HubRejectedError as e:
                if isinstance(e, HubAuthError) or e.status_code not in (404, 405):
                    raise
                log.info("the hub takes no 'running' reports of several jobs in one call (an older hub?); one call per job from now on")
                self._hub_takes_running_batches = False
        for tracked in jobs:
            if not tracked.state.runningReported and not self._send_running(tracked):
                return  # the hub is down: the rest wait for it

    def _send_running(self, tracked: TrackedJob) -> bool:
        """Report 'running'; False when the hub is unreachable (retried later)."""
        try:
            answer = self.hub.set_status(tracked.job_id, JobStatus.RUNNING)
        except HubUnreachableError as e:
            self._hub_failed(e)
            return False
        except HubRejectedError as e:
            self._running_refused(tracked, str(e))
            return True
        self._running_taken(tracked, answer)
        return True

    def _running_taken(self, tracked: TrackedJob, answer: StatusAnswer) -> None:
        tracked.state.runningReported = True  # on disk with the job's next state (a restart reports it again: harmless)
        if answer.canceled:
            self._cancel(tracked)

    def _running_refused(self, tracked: TrackedJob, why: str) -> None:
        """The hub ended the job or gave it to another client meanwhile: stop it here."""
        log.warning("job %s: the hub refused 'running' (%s); stopping it", tracked.job_id, why)
        tracked.state.runningReported = True
        tracked.dir.write_state(tracked.state)
        self._cancel(tracked)

    def _stream_console(self) -> None:
        now = self._clock()
        if now < self._next_console:
            return  # running jobs' output goes out once per poll interval, however often the loop runs
        self._next_console = now + self.config.pollIntervalSec
        for tracked in list(self._jobs.values()):
            if tracked.busy or tracked.phase is not RunnerPhase.SUBMITTED or tracked.state.originalSdk:
                continue  # an original-SDK job uploads its console output itself
            if not self._hub_ok():
                return
            if not self._has_unsent_console(tracked):
                continue
            if tracked.console_seen_at is None:
                tracked.console_seen_at = now
            if now - tracked.console_seen_at >= CONSOLE_HOLD_SEC:
                # by a reporting worker: with many jobs running, the main loop (polls, claims) never waits on these calls
                self._start_worker(tracked, self._send_console_of_running_job, self._report_pool)

    @staticmethod
    def _has_unsent_console(tracked: TrackedJob) -> bool:
        try:
            return tracked.dir.console_file.stat().st_size > tracked.state.consoleOffsetSent
        except FileNotFoundError:
            return False

    def _send_console_of_running_job(self, tracked: TrackedJob) -> None:
        try:
            self._send_console(tracked, CONSOLE_BYTES_PER_CYCLE)
        except HubRejectedError as e:
            log.warning("job %s: the hub refused console output (%s)", tracked.job_id, e)
        if not self._has_unsent_console(tracked):
            tracked.console_seen_at = None  # output after a quiet spell waits its CONSOLE_HOLD_SEC; a steady stream does not

    def _stream_resource_logs(self) -> None:
        """Upload running jobs' resource logs now and then, so their pages plot CPU and memory while they run.

        The hub takes the whole log each time, so the interval grows with its size
        (a day-long job's log is re-sent every few minutes, not every few seconds).
        """
        now = self._clock()
        for tracked in list(self._jobs.values()):
            if tracked.busy or tracked.phase is not RunnerPhase.SUBMITTED or now < tracked.resource_log_next_upload:
                continue
            if not self._hub_ok():
                return
            data = tracked.dir.resource_log()
            size = len(data or b"")
            tracked.resource_log_next_upload = now + RESOURCE_LOG_UPLOAD_INTERVAL_SEC * max(1.0, size / RESOURCE_LOG_UPLOAD_SCALE_BYTES)
            if not data or size == tracked.resource_log_sent_size:
                continue
            # by a reporting worker, as console output: the main loop (polls, claims) never waits on the upload
            self._start_worker(tracked, lambda t, data=data: self._send_resource_log_of_running_job(t, data), self._report_pool)

    def _send_resource_log_of_running_job(self, tracked: TrackedJob, data: bytes) -> None:
        if self._send_running_job_extra(tracked, "the resource log", lambda: self.hub.upload_resource_log(tracked.job_id, data)):
            tracked.resource_log_sent_size = len(data)

    def _send_console(self, tracked: TrackedJob, budget: Optional[int]) -> None:
        """Send console bytes the hub does not have yet, from the recorded offset (all of them when budget is None)."""
        sent = 0
        state = tracked.state
        while budget is None or sent < budget:
            data = tracked.dir.read_console_chunk(state.consoleOffsetSent, CONSOLE_CHUNK_BYTES)
            if not data:
                break
            try:
                state.consoleOffsetSent = self.hub.append_console_output(tracked.job_id, state.consoleOffsetSent, data)
            except ConsoleOffsetError as e:
                # Bytes the hub never stored (it restarted before committing them): resend from its end.
                state.consoleOffsetSent = e.console_output_size
            else:
                sent += len(data)
            tracked.dir.write_state(state)
            if len(data) < CONSOLE_CHUNK_BYTES:
                break

    # ---------------------------------------------------------------- workers: prepare and finish

    def _dispatch_work(self) -> None:
        now = self._clock()
        if self._draining and not self._drain_seen:
            self._drain_seen = True
            self._slot_freed()  # jobs claimed ahead go back at once when the bridge drains, not when their wait is over
        # jobs to start first: a finished job's report then claims for what is left (a job claimed ahead took the slot)
        for tracked in sorted(self._jobs.values(), key=lambda t: t.phase not in (RunnerPhase.CLAIMED, RunnerPhase.STAGED)):
            if tracked.busy or now < tracked.retry_at:
                continue
            if tracked.phase in (RunnerPhase.CLAIMED, RunnerPhase.STAGED) and tracked.job is not None:
                self._start_worker(tracked, self._prepare)
            elif tracked.phase is RunnerPhase.SUBMITTING:
                # backend.submit raised something unexpected: find out, as after a restart, whether the job started
                self._start_worker(tracked, self._recover_interrupted_submission)
            elif tracked.phase is RunnerPhase.FINISHED and self._hub_ok() and not self.notes.waiting_for(tracked.job_id):
                if self._uploads_first(tracked):
                    # apart from the report: a claim that report carries must not wait out a long upload
                    self._start_worker(tracked, self._upload_finished_outputs, self._report_pool)
                else:
                    tracked.claim_with_finish = self._claim_with_finish(tracked)
                    self._start_worker(tracked, self._finish, self._report_pool)

    def _start_worker(self, tracked: TrackedJob, work: Callable[[TrackedJob], None], pool: Optional[ThreadPoolExecutor] = None) -> None:
        self._start_jobs_worker([tracked], lambda jobs: work(jobs[0]), work.__name__, pool)

    def _start_jobs_worker(
        self, jobs: list[TrackedJob], work: Callable[[list[TrackedJob]], None], what: str, pool: Optional[ThreadPoolExecutor] = None
    ) -> None:
        """``work(jobs)`` in a worker, the jobs busy meanwhile (the main loop leaves them alone)."""
        for tracked in jobs:
            tracked.busy = True

        def run() -> None:
            try:
                work(jobs)
            except HubApiError as e:
                self._hub_failed(e)
            except Exception:  # noqa: BLE001 - keep the bridge alive; the jobs are retried after a pause
                names = ", ".join(t.job_id for t in jobs)
                log.exception("job %s: unexpected error in %s; retrying in %.0f s", names, what.strip("_"), WORKER_RETRY_SEC)
                for tracked in jobs:
                    tracked.retry_at = self._clock() + WORKER_RETRY_SEC
            finally:
                for tracked in jobs:
                    tracked.busy = False
                self._wake.set()  # the main loop takes it from here (report, forget, claim the next) without waiting out its sleep

        (pool or self._pool).submit(run)

    def _prepare(self, tracked: TrackedJob) -> None:
        """Write the job directory, stage inputs, submit, report running."""
        job = tracked.job
        assert job is not None
        d, state = tracked.dir, tracked.state
        refused = _refused_secret(job)
        if refused is not None:
            # The hub refuses such names; a job that got past it (an older hub) must not start anything here either.
            d.create()
            self._record_outcome(tracked, NativeOutcome(NativePhase.FAILED, error=refused))
            return
        if state.phase is RunnerPhase.CLAIMED:
            # No state file yet: a job directory without one is a claimed job (JobState's default), prepared
            # afresh after a restart; the first write that must reach the disk is the one before the submission.
            d.create()
            job_file = build_job_file(job, d, lazy_cache=self._lazy_cache(job))
            job_file.write(d.job_file)
            staged = job_file.inputs if job_file.inputStaging == "ahead" else []
            try:
                for item in staged:
                    self.cache.stage(item.url, d.input_path(item.name, item.fileBaseName))
            except StagingError as e:
                self._record_outcome(tracked, NativeOutcome(NativePhase.FAILED, error=f"could not stage an input: {e}"))
                return
            state.phase = RunnerPhase.STAGED
            if staged:
                d.write_state(state)  # a restart does not download them again
        if tracked.cancel_requested:
            self._record_outcome(tracked, NativeOutcome(NativePhase.FAILED, error="canceled before it started"))
            return
        if self._held_for_busy_host(tracked, job):
            return
        try:
            launch, original = self._command_for(job, d)
            secrets = _job_secrets(job)
            if original:
                secrets.update(original_sdk.key_secret(job.jobPrivateKey, job.jobId))
                tracked.secret_values.append(secrets[original_sdk.JOB_KEY_VARIABLE])
                state.originalSdk = True
        except (BridgeConfigError, HubRejectedError, ValueError) as e:
            self._record_outcome(tracked, NativeOutcome(NativePhase.FAILED, error=str(e)))
            return
        submission = JobSubmission(
            job_id=job.jobId, job_dir=d.path, command=launch.command, resources=job.requiredResources,
            secrets=secrets, pass_env=tuple(self.config.passEnv), container_args=launch.watcher_args,
        )
        try:
            with self._submit_lock if self.config.claimAheadJobs else contextlib.nullcontext():
                if self.config.claimAheadJobs and self._waits_for_slot(tracked, job):
                    return
                # on the backend from here, as the next look for room counts: the slot is taken, the lock can go
                # (submissions, an sbatch each on Slurm, go on side by side)
                state.phase = RunnerPhase.SUBMITTING
            state.submitAttempted = True
            d.write_state(state)
            native_id = self.backend.submit(submission)
        except SubmitRetryLater as e:
            log.warning("job %s: the %s backend cannot take it now (%s); trying again in %.0f s", job.jobId, self.backend.name, e, SUBMIT_RETRY_SEC)
            state.phase, state.submitAttempted = RunnerPhase.STAGED, False
            d.write_state(state)
            tracked.retry_at = self._clock() + SUBMIT_RETRY_SEC
            return
        except SubmitError as e:
            self._record_outcome(tracked, NativeOutcome(NativePhase.FAILED, error=f"the {self.backend.name} backend refused the job: {e}"))
            return
        except BaseException:
            (d.path / SECRETS_FILE).unlink(missing_ok=True)
            raise
        state.phase = RunnerPhase.SUBMITTED
        state.nativeId = native_id
        d.write_state(state)
        tracked.job = None
        tracked.submitted_at = self._clock()
        tracked.resource_log_next_upload = self._clock() + RESOURCE_LOG_FIRST_UPLOAD_SEC
        log.info("job %s (%s/%s) submitted as %s", job.jobId, job.jobDefinition.appName, job.jobDefinition.processorName, native_id)
        description = self.backend.describe(native_id)
        if description:
            self._queue_note(tracked, f"submitted as {description}")
        if tracked.cancel_requested:  # asked while it was being submitted
            self.backend.cancel([native_id])
            tracked.cancel_sent, tracked.cancel_sent_at = True, self._clock()
        if not self._defers_running(tracked) and self._hub_ok():
            self._send_running(tracked)  # else at its due time (_report_running) or with its finish report

    def _defers_running(self, tracked: TrackedJob) -> bool:
        """Whether the job's 'running' report may wait (``RUNNING_REPORT_DELAY_SEC``), to go with its finish report if
        it ends first: not for an original-SDK job (its processor talks to the hub itself) nor with an older hub."""
        return self._finish_call and self._hub_takes_started_ago and not tracked.state.originalSdk

    def _running_report_waits(self, tracked: TrackedJob, now: float) -> bool:
        """Whether a started job's deferred 'running' report is not due yet (a re-adopted job's is due at once)."""
        return tracked.submitted_at is not None and self._defers_running(tracked) and now < tracked.submitted_at + RUNNING_REPORT_DELAY_SEC

    # ---------------------------------------------------------------- jobs claimed ahead (claimAheadJobs)

    def _waits_for_slot(self, tracked: TrackedJob, job: PairioJobData) -> bool:
        """Whether the job must wait for a slot (claimed ahead while every slot was busy); past claimAheadHoldSec, or when
        the bridge drains, it goes back to the hub instead. Called under the submit lock: room is checked and taken at once."""
        frees_seen = self._slot_frees
        if self._has_room(job.requiredResources):
            if tracked.waiting_since is not None:
                log.debug("job %s: a slot is free after %.3f s; starting it", job.jobId, self._clock() - tracked.waiting_since)
                tracked.waiting_since = None
            return False
        now = self._clock()
        if tracked.waiting_since is None:
            tracked.waiting_since = now
            log.debug("job %s was claimed ahead: it starts when a slot frees (at most %g s from now)", job.jobId, self.config.claimAheadHoldSec)
        waited = now - tracked.waiting_since
        if self._hub_takes_release and (self._draining or waited >= self.config.claimAheadHoldSec):
            why = "the bridge is stopping" if self._draining else f"no slot of this bridge freed within {waited:.0f} s"
            self._release(tracked, f"claimed ahead while every slot was busy; {why}")
            return True
        tracked.retry_at = tracked.waiting_since + self.config.claimAheadHoldSec  # a job's end retries it sooner
        if self._slot_frees != frees_seen:
            tracked.retry_at = 0.0  # a job ended while we looked: look again at once
        return True

    def _has_room(self, resources: PairioJobRequiredResources) -> bool:
        """A slot free for a job of ``resources``: fewer jobs handed to the backend than the bridge runs at once, and the
        backend's free resources cover it."""
        on_backend = sum(1 for t in list(self._jobs.values()) if t.phase in (RunnerPhase.SUBMITTING, RunnerPhase.SUBMITTED))
        if on_backend >= self.config.max_jobs_at_once:
            return False
        free = self.backend.capacity()
        return free.numCpus >= resources.numCpus and free.numGpus >= resources.numGpus and free.memoryGb >= resources.memoryGb

    def _release(self, tracked: TrackedJob, reason: str) -> None:
        """Give a job claimed ahead back to the hub (pending again for any bridge) and forget it here."""
        tracked.retry_at = self._clock() + WORKER_RETRY_SEC  # should the hub not answer: not again at once
        try:
            self.hub.release(tracked.job_id, reason)
        except HubRejectedError as e:
            if e.status_code in (404, 405) and "no job" not in e.message:
                log.warning("the hub does not take jobs back (%s; an older hub?): no job is claimed ahead any more", e.message)
                self._hub_takes_release = False
                tracked.retry_at = 0.0
                return
            log.info("job %s: the hub did not take it back (%s); it is not this bridge's to run", tracked.job_id, e.message)
        self._ahead_paused = True
        log.info("job %s given back to the hub: %s", tracked.job_id, reason)
        tracked.state.phase = RunnerPhase.REPORTED
        shutil.rmtree(tracked.dir.path, ignore_errors=True)  # never started: nothing in it to keep

    def _note_run_time(self, seconds: float) -> None:
        typical = self._typical_run_sec
        self._typical_run_sec = seconds if typical is None else typical + RUN_TIME_SMOOTHING * (seconds - typical)

    def _jobs_run_short(self) -> bool:
        """Whether the jobs here typically end soon enough for claiming ahead to pay (``AHEAD_FOR_RUNS_UNDER_SEC``); before
        any ended, yes: long ones send the jobs held ahead back once, and no job ends, so none is claimed ahead again."""
        typical = self._typical_run_sec
        return typical is None or typical < AHEAD_FOR_RUNS_UNDER_SEC

    def _slot_freed(self) -> None:
        """A job here ended: jobs waiting for a slot look again at once, and claiming ahead may go on."""
        self._ahead_paused = False
        self._slot_frees += 1
        for waiting in list(self._jobs.values()):  # also called from workers: a copy, as the main loop may add jobs
            if waiting.waiting_since is not None:
                waiting.retry_at = 0.0

    def _lazy_cache(self, job: PairioJobData) -> Optional[LazyInputs]:
        """None when the job's inputs are staged ahead; else where its processor fetches them through."""
        staging = input_staging_for(self.config.inputStaging, self.backend.name)
        needs_network = False
        if staging is InputStaging.LAZY and self.config.containerMode in (ContainerMode.PODMAN, ContainerMode.DOCKER):
            try:
                processor = self._app_spec(job.serviceName, job.jobDefinition.appName).get_processor(job.jobDefinition.processorName)
            except HubRejectedError:
                processor = None  # the launch fails with the hub's reason; staging ahead changes nothing there
            needs_network = processor is not None and processor.needsNetwork
        return lazy_inputs(staging, self.backend.name, self.config.containerMode, needs_network, self.cache.cache_dir)

    def _held_for_busy_host(self, tracked: TrackedJob, job: PairioJobData) -> bool:
        """Keep a staged job back while the backend says other programs keep the host busy.

        The job's timeline says so once per wait (not at each look); 'started' follows when it runs.
        """
        reason = self.backend.busy_reason(job.requiredResources)
        tracked.held = reason is not None
        if reason is None:
            return False
        if not (tracked.last_note or "").startswith(BUSY_HOST_NOTE_PREFIX):
            log.info("job %s waits: %s (respectMachineLoad)", job.jobId, reason)
            self._queue_note(tracked, BUSY_HOST_NOTE_PREFIX + reason)
        else:
            log.debug("job %s still waits: %s", job.jobId, reason)
        tracked.retry_at = self._clock() + BUSY_HOST_RECHECK_SEC
        return True

    def _refresh_app_commands(self) -> None:
        """Take up app commands changed in bridge.json. One caller at a time (the main loop before a claim, workers
        before a job's command): a second caller returns only once the first has taken up the change it found, so a
        job claimed after ``pairio-bridge apps add`` never runs with the command from before."""
        if self.app_commands_file is None:
            return
        with self._app_commands_lock:
            try:
                commands = self.app_commands_file.changed()
            except BridgeConfigError as e:
                log.warning("kept the app commands it had: %s", e)
                return
            if commands is not None and commands != self.config.appCommands:
                log.info("app commands changed in bridge.json: now %s", ", ".join(sorted(commands)) or "none")
                self.config = self.config.model_copy(update={"appCommands": commands})

    def _command_for(self, job: PairioJobData, d: JobDir) -> tuple[ProcessorLaunch, bool]:
        """What the watcher runs, and whether the image was built with the original SDK (bridge/original_sdk.py)."""
        self._refresh_app_commands()
        app_name = job.jobDefinition.appName
        image, executable, needs_network, original = job.imageUri, None, False, False
        if self.config.containerMode.value != "none":
            processor = self._app_spec(job.serviceName, app_name).get_processor(job.jobDefinition.processorName)
            if processor is not None:
                image, executable, needs_network = image or processor.image, processor.executable, processor.needsNetwork
                original = processor.originalSdk
        launch = processor_command(
            self.config, app_name=app_name, image=image, executable=executable, job_dir=d.path, job_id=job.jobId,
            resources=job.requiredResources, needs_network=needs_network, original_sdk=original,
            fetches_inputs=PairioJobFile.read(d.job_file).inputStaging == "lazy",
        )
        return launch, original

    def check_images(self) -> None:
        """podman/docker: say in the log whether the images of the service's apps are on the engine's host
        (with pull policy 'never', a missing one fails its app's jobs: the line says how to fix it)."""
        engine = self.config.containerMode.value
        if engine not in ("podman", "docker"):
            return
        try:
            apps = self.hub.list_apps(self.config.serviceName)
            images = app_images(apps)
            check = self.backend.check_images(engine, sorted(images)) if images else None
        except Exception as e:  # noqa: BLE001 - only a report: the bridge runs on, and each job's create says the same
            log.warning(
                "could not check the images of service %r's apps (%s: %s); a job whose image is missing fails when it starts",
                self.config.serviceName, type(e).__name__, e,
            )
            return
        now = self._clock()
        self._app_specs.update({app.name: (now, app) for app in apps})
        if check is not None:
            for level, message in image_report(check, images, engine, self.config.pullPolicy):
                log.log(level, message)

    def _app_spec(self, service_name: str, app_name: str) -> PairioApp:
        cached = self._app_specs.get(app_name)
        if cached is not None and self._clock() - cached[0] < APP_SPEC_TTL_SEC:
            return cached[1]
        spec = self.hub.get_app(service_name, app_name)
        self._app_specs[app_name] = (self._clock(), spec)
        return spec

    @staticmethod
    def _uploads_first(tracked: TrackedJob) -> bool:
        """A finished job's outputs go up in a worker of their own before its report (jobs without outputs skip it)."""
        state = tracked.state
        return (
            tracked.uploaded is None and tracked.output_count != 0 and not state.originalSdk
            and state.outcome is not None and state.outcome.phase is NativePhase.SUCCEEDED
        )

    def _upload_finished_outputs(self, tracked: TrackedJob) -> None:
        tracked.uploaded = self._upload_outputs(tracked)

    def _finish(self, tracked: TrackedJob) -> None:
        """Upload outputs and the resource log, send the last console bytes, report the final status
        (with the claim for the freed slot the main loop attached, if any)."""
        claim, tracked.claim_with_finish = tracked.claim_with_finish, None
        try:
            self._report_finished(tracked, claim)
        finally:
            if claim is not None and not claim.answer.done():
                # never sent: nothing was claimed; sent and unanswered (an unexpected error): the hub's list tells
                if claim.sent:
                    claim.answer.set_exception(_ClaimAnswerLost())
                else:
                    claim.answer.set_result([])

    def _report_finished(self, tracked: TrackedJob, claim: Optional[ClaimWithFinish]) -> None:
        d, state = tracked.dir, tracked.state
        assert state.outcome is not None
        status = JobStatus.FAILED
        error: Optional[str] = _error_of(state.outcome)
        if state.originalSdk:
            if self._finished_by_itself(tracked):
                return
            if state.outcome.phase is NativePhase.SUCCEEDED:
                error = "the job's process (original Pairio SDK) ended without reporting its final status to the hub"
        elif state.outcome.phase is NativePhase.SUCCEEDED:
            status, error = tracked.uploaded or self._upload_outputs(tracked)
        started_ago: Optional[float] = None
        if not state.runningReported and state.nativeId and tracked.submitted_at is not None and self._defers_running(tracked):
            started_ago = max(0.0, self._clock() - tracked.submitted_at)  # it ran: the finish report says since when
        elif status is JobStatus.COMPLETED and not state.runningReported:
            if not self._send_running(tracked):
                return
        if error is not None:
            error = tracked.masked(error)
        # an original-SDK job uploads its console output itself: only its resource log goes from here
        answer = (
            self._finish_in_one_call(tracked, status, error, claim, started_ago) if self._finish_call and not state.originalSdk else None
        )
        if answer is None:
            if started_ago is not None and not state.runningReported and not self._send_running(tracked):
                return  # the parts go one by one: 'running' first
            if state.runningReported or state.nativeId:
                if not state.originalSdk:
                    self._send_console(tracked, None)
                self._upload_resource_log(tracked)
            try:
                answer = self.hub.set_status(tracked.job_id, status, error, image_digest=state.outcome.imageDigest)
            except HubRejectedError as e:
                self._give_up(tracked, f"the hub refused the final status {status.value}: {e}")
                return
        state.phase = RunnerPhase.REPORTED
        state.finalStatus = answer.status.value
        state.finalError = tracked.masked(answer.error) if answer.error else answer.error
        d.write_state(state)
        self._note_result(tracked.job_id, answer.status, state.finalError)

    def _finished_by_itself(self, tracked: TrackedJob) -> bool:
        """An original-SDK job reports its own final status: when the hub has it, record it and report nothing."""
        job, _ = self.hub.get_job(tracked.job_id)
        if not job.status.is_terminal:
            return False
        state = tracked.state
        if state.runningReported or state.nativeId:
            self._upload_resource_log(tracked)
        state.phase = RunnerPhase.REPORTED
        state.finalStatus = job.status.value
        state.finalError = tracked.masked(job.error) if job.error else job.error
        tracked.dir.write_state(state)
        self._note_result(tracked.job_id, job.status, state.finalError)
        return True

    def _finish_in_one_call(
        self, tracked: TrackedJob, status: JobStatus, error: Optional[str], claim: Optional[ClaimWithFinish] = None,
        started_ago: Optional[float] = None,
    ) -> Optional[StatusAnswer]:
        """The console's last bytes, the resource log and the final status in one call (the slot is free sooner),
        and ``claim``, when the main loop attached one: its answer is settled as soon as the hub's comes;
        ``started_ago``: the job's 'running' report was not sent, it ran from that many seconds ago.

        None when the separate calls must do it: more console output than one call carries, a resource
        log too large, a hub without the call, or a refusal (they report or explain it as they always did).
        """
        d, state = tracked.dir, tracked.state
        assert state.outcome is not None
        console: Optional[tuple[int, bytes]] = None
        resource_log: Optional[bytes] = None
        if state.runningReported or state.nativeId:
            data = d.read_console_chunk(state.consoleOffsetSent, CONSOLE_CHUNK_BYTES)
            if len(data) >= CONSOLE_CHUNK_BYTES:
                return None  # a long tail: streamed in chunks first
            console = (state.consoleOffsetSent, data) if data else None
            if not state.resourceLogUploaded:
                resource_log = d.resource_log() or None
                if resource_log is not None and len(resource_log) > FINISH_CALL_MAX_LOG_BYTES:
                    return None
        try:
            if claim is not None:
                claim.sent = True
            answer = self.hub.finish(
                tracked.job_id, status, error, image_digest=state.outcome.imageDigest, console=console, resource_log=resource_log,
                claim=claim.request if claim is not None else None, started_ago=started_ago,
            )
        except HubRejectedError as e:
            if claim is not None:
                claim.answer.set_result([])  # a refused call claims nothing
            if started_ago is not None and e.status_code == 422 and "startedAgo" in e.message:
                log.info("the hub refused a finish report's startedAgoSec (%s; an older hub?); reporting 'running' apart", e.message)
                self._hub_takes_started_ago = False
                if not self._send_running(tracked):
                    return None
                return self._finish_in_one_call(tracked, status, error)
            if claim is not None and e.status_code == 422:
                log.info("the hub refused a claim in a finish report (%s; an older hub?); claiming for freed slots apart", e.message)
                self._hub_takes_finish_claims = False
                return self._finish_in_one_call(tracked, status, error, started_ago=started_ago)
            self._finish_refused(tracked, e)
            return None
        # no answer at all (HubUnreachableError): _finish settles the claim as lost
        if claim is not None:
            claim.answer.set_result(answer.claimed or [])
        if console is not None:
            state.consoleOffsetSent = console[0] + len(console[1])
        if state.runningReported or state.nativeId:
            state.resourceLogUploaded = True
        return answer

    def _finish_refused(self, tracked: TrackedJob, e: HubRejectedError) -> None:
        """The hub refused a one-call report: the separate calls report or explain it."""
        if isinstance(e, ConsoleOffsetError):
            tracked.state.consoleOffsetSent = e.console_output_size  # bytes the hub never stored: resent from its end
            tracked.dir.write_state(tracked.state)
        elif e.status_code == 405 or (e.status_code == 404 and e.message == "Not Found"):
            log.info("the hub has no single call for a finished job's report (an older hub); using one call per part")
            self._finish_call = False

    def _upload_outputs(self, tracked: TrackedJob) -> tuple[JobStatus, Optional[str]]:
        d, state = tracked.dir, tracked.state
        job_file = d.read_job_file()
        for output in job_file.outputs:
            if output.name in state.outputsUploaded:
                continue
            path = d.output_path(output.name, output.fileBaseName)
            if not path.is_file():
                return JobStatus.FAILED, f"processor did not produce output {output.name!r} (expected {output.fileBaseName} at {path})"
            try:
                self.hub.upload_output(tracked.job_id, output.name, path)
            except HubRejectedError as e:
                return JobStatus.FAILED, f"could not upload output {output.name!r}: {e.message}"
            state.outputsUploaded.append(output.name)
            d.write_state(state)
        return JobStatus.COMPLETED, None

    def _upload_resource_log(self, tracked: TrackedJob) -> None:
        if tracked.state.resourceLogUploaded:
            return
        data = tracked.dir.resource_log()
        if data:
            try:
                self.hub.upload_resource_log(tracked.job_id, data)
            except HubRejectedError as e:
                log.warning("job %s: the hub refused the resource log (%s)", tracked.job_id, e)
        tracked.state.resourceLogUploaded = True
        tracked.dir.write_state(tracked.state)

    def _give_up(self, tracked: TrackedJob, note: str) -> None:
        """Stop reporting a job the hub will not take reports for any more."""
        note = tracked.masked(note)
        log.warning("job %s: %s", tracked.job_id, note)
        if tracked.phase is RunnerPhase.SUBMITTED and tracked.state.nativeId:
            try:
                self.backend.cancel([tracked.state.nativeId])
            except Exception:  # noqa: BLE001
                log.exception("job %s: the backend could not cancel it", tracked.job_id)
        tracked.state.phase = RunnerPhase.REPORTED
        tracked.state.note = note
        if tracked.dir.path.is_dir():
            tracked.dir.write_state(tracked.state)

    def _forget_reported(self) -> None:
        for job_id, tracked in list(self._jobs.items()):
            if tracked.phase is RunnerPhase.REPORTED and not tracked.busy:
                del self._jobs[job_id]

    # ---------------------------------------------------------------- claiming

    def _claim(self) -> bool:
        """Claim jobs if there is room; True when the call waited (an idle long poll), so the loop need not sleep.

        An idle bridge waits for a job in this thread (``claimWaitSec``; a signal cuts it short). A busy
        one claims in the claim thread (a long poll of ``pollIntervalSec``) while this loop goes on polling
        its jobs, and takes the answer at its next pass (``_take_claim_answer``). One claim at a time,
        sized from the jobs at hand when it starts: jobs only leave meanwhile, so it never claims too many.
        A finished job's report may carry the claim instead (``_claim_with_finish``), sized as if that job had left.
        """
        request = self._claim_request()
        if request is None:
            return False
        idle = not self._jobs
        # a claim ahead does not wait at the hub: one that gets nothing pauses claiming ahead until a job ends here
        wait = self.config.claimWaitSec if idle else 0.0 if request.ahead else self.config.pollIntervalSec
        count, capacity, scope = request.max_jobs, request.capacity, request.runs
        self._claim_in_flight_ahead = request.ahead > 0
        if not idle:
            claim = self._claim_pool.submit(self.hub.claim, count, wait, capacity, scope, request.ahead)
            self._claim_in_flight = claim
            claim.add_done_callback(lambda _: self._wake.set())
            return False
        try:
            self._in_idle_claim = True
            try:
                jobs = self.hub.claim(count, wait, capacity, scope)
            finally:
                self._in_idle_claim = False
        except _ClaimInterrupted:
            # The hub may have handed out jobs whose answer we dropped: look for them before exiting.
            self._reconcile_needed = True
            return True
        except HubApiError as e:
            self._claim_failed(e)
            return False
        self._claimed(jobs, idle=True)
        return True

    def _claim_request(self, leaving: int = 0) -> Optional[ClaimRequest]:
        """What a claim made now asks for, or None when none should go: one is in flight, the bridge drains or
        must first compare its jobs with the hub's, the hub is down, or there is no room.

        ``leaving``: jobs about to leave (a finish report carrying the claim), counted as gone.
        """
        if self._claim_in_flight is not None or self._draining or self._reconcile_needed or not self._hub_ok():
            return None
        free = self.config.max_jobs_at_once - len(self._jobs) + leaving
        if any(t.held for t in self._jobs.values()):
            return None  # a job held for a busy host is enough; the others stay pending for other bridges
        ahead = free <= 0
        if ahead:
            free = self._ahead_room(leaving)
            if free <= 0 or (not leaving and free < self.config.claimAheadJobs):
                # a claim of its own goes for a whole refill; short of that, the next finish report's claim tops it up
                return None
        try:
            capacity = self._free_capacity(ahead=ahead)
        except Exception:  # noqa: BLE001 - a backend failure must not stop the loop; try again next cycle
            log.exception("the %s backend could not say how much room it has", self.backend.name)
            return None
        if capacity.numCpus < 1 or capacity.memoryGb <= 0:
            self._capacity_note = f"no room for another job on the {self.backend.name} backend (free: {capacity.numCpus} CPUs, {capacity.memoryGb:g} GB)"
            return None
        self._capacity_note = ""
        self._refresh_app_commands()  # apps added or removed since take effect in this claim
        scope = claim_scope(self.config) if self._hub_takes_scope else None
        return ClaimRequest(min(free, MAX_CLAIM_JOBS), capacity, scope, ahead=self.config.claimAheadJobs if ahead else 0)

    def _ahead_room(self, leaving: int = 0) -> int:
        """How many jobs may be claimed ahead of a free slot now: claimAheadJobs less the jobs not yet handed to the
        backend, and as the hub counts them (every job here until its end is reported, less ``leaving``); 0 while
        that is off, paused (a job was given back, or a claim ahead got none: until a job ends here), while jobs here
        run long (``_jobs_run_short``), or when the hub cannot take jobs back."""
        if not self.config.claimAheadJobs or self._ahead_paused or not self._hub_takes_release or not self._jobs_run_short():
            return 0
        # one a worker is submitting now is on its way to a slot (the hub holds the true count: it hands out no more);
        # so is one that will take the slot of a job leaving, which the claim of that job's finish report refills
        waiting = self._jobs_waiting_for_a_slot()
        beyond_slots = len(self._jobs) - leaving - self.config.max_jobs_at_once
        return min(self.config.claimAheadJobs - max(0, waiting - leaving), self.config.claimAheadJobs - beyond_slots)

    def _jobs_waiting_for_a_slot(self) -> int:
        """Jobs claimed and not handed to the backend, none of them being prepared or submitted right now."""
        return sum(1 for t in list(self._jobs.values()) if t.phase in (RunnerPhase.CLAIMED, RunnerPhase.STAGED) and not t.busy)

    def _claim_with_finish(self, tracked: TrackedJob) -> Optional[ClaimWithFinish]:
        """The claim a finished job's report carries for the slot it frees, made the one claim in flight;
        None when the report goes without one (see ``_claim_request``; an original-SDK job's report, an older hub)."""
        if not (self._hub_takes_finish_claims and self._finish_call) or tracked.state.originalSdk:
            return None
        request = self._claim_request(leaving=1)
        if request is None:
            return None
        claim = ClaimWithFinish(request)
        claim.answer.add_done_callback(lambda _: self._wake.set())
        self._claim_in_flight = claim.answer
        self._claim_in_flight_ahead = request.ahead > 0
        return claim

    def _take_claim_answer(self) -> None:
        """The claim thread's answer, once it came: follow the jobs it brought (even when draining: they are this bridge's now)."""
        claim = self._claim_in_flight
        if claim is None or not claim.done():
            return
        self._claim_in_flight = None
        try:
            jobs = claim.result()
            if self._claim_in_flight_ahead and not jobs:
                self._ahead_paused = True
        except _ClaimAnswerLost:
            self._reconcile_needed = True  # the report that carried the claim failed, and said so (_hub_failed)
            return
        except HubApiError as e:
            self._claim_failed(e)
            return
        except Exception:  # noqa: BLE001 - a bug in the call: the answer may be lost, so look at the hub's list
            log.exception("the claim failed unexpectedly; comparing with the hub's list of this bridge's jobs")
            self._reconcile_needed = True
            return
        self._claimed(jobs, idle=False)

    def _claim_failed(self, e: HubApiError) -> None:
        if isinstance(e, HubRejectedError) and e.status_code == 422 and self._claim_in_flight_ahead:
            log.warning("the hub refused a claim ahead of a free slot (%s; an older hub?): no job is claimed ahead any more", e.message)
            self._hub_takes_release = False
            return
        if isinstance(e, HubRejectedError) and e.status_code == 422 and self._hub_takes_scope:
            log.warning(
                "the hub refused the claim's apps and container mode (%s); claiming without them (an older hub?): "
                "jobs of apps this bridge cannot run will fail here", e.message,
            )
            self._hub_takes_scope = False
            return
        if not isinstance(e, HubRejectedError):
            self._reconcile_needed = True  # the answer may have been lost after the hub claimed jobs
        self._hub_failed(e, client_call=True)

    def _claimed(self, jobs: list[PairioJobData], *, idle: bool) -> None:
        self._hub_succeeded()
        self._idle_claim_returned_nothing = idle and not jobs
        for job in jobs:
            log.info("claimed job %s (%s/%s)", job.jobId, job.jobDefinition.appName, job.jobDefinition.processorName)
            self._track_new(job)
        if jobs:
            self._dispatch_work()

    def _free_capacity(self, ahead: bool = False) -> Capacity:
        """The backend's free resources, less those of jobs claimed but not yet handed to it; ``ahead``: as they will be
        once the running jobs have ended (what the jobs claimed ahead find as slots free, one by one: claimAheadJobs and
        the hub's count of them bound how many)."""
        free = self.backend.capacity()
        cpus, gpus, memory = free.numCpus, free.numGpus, free.memoryGb
        if ahead:
            for t in self._jobs.values():
                if t.phase is RunnerPhase.SUBMITTED and t.resources is not None:
                    cpus, gpus, memory = cpus + t.resources.numCpus, gpus + t.resources.numGpus, memory + t.resources.memoryGb
        for tracked in self._jobs.values():
            if tracked.phase in (RunnerPhase.CLAIMED, RunnerPhase.STAGED) and tracked.resources is not None:
                cpus -= tracked.resources.numCpus
                gpus -= tracked.resources.numGpus
                memory -= tracked.resources.memoryGb
        return Capacity(numCpus=max(0, cpus), numGpus=max(0, gpus), memoryGb=max(0.0, memory))

    # ---------------------------------------------------------------- housekeeping and progress

    def _clean_up_old_job_dirs(self) -> None:
        removed = remove_old_job_dirs(self.jobs_root, self.config.jobDirCleanupAgeSec)
        if removed:
            log.info("removed %d job director%s older than %.0f s", len(removed), "y" if len(removed) == 1 else "ies", self.config.jobDirCleanupAgeSec)

    def _note_result(self, job_id: str, status: JobStatus, error: Optional[str]) -> None:
        if status is JobStatus.COMPLETED:
            self._stats.completed += 1
            self._stats.recent.append(f"{job_id} completed")
            log.info("job %s completed", job_id)
        else:
            self._stats.failed += 1
            self._stats.recent.append(f"{job_id} {status.value}")
            log.info("job %s %s: %s", job_id, status.value, error)

    def status_line(self) -> str:
        phases = Counter(t.phase for t in self._jobs.values())
        preparing = phases[RunnerPhase.CLAIMED] + phases[RunnerPhase.STAGED] + phases[RunnerPhase.SUBMITTING]
        line = (
            f"{phases[RunnerPhase.SUBMITTED]} running, {preparing} preparing, {phases[RunnerPhase.FINISHED]} reporting; "
            f"done: {self._stats.completed} completed, {self._stats.failed} failed"
        )
        if self._draining:
            line += " (draining)"
        elif self._capacity_note:
            line += f"; {self._capacity_note}"
        return line

    def _log_status(self, force: bool = False) -> None:
        """A status line when the counts changed (at most every few seconds) and once a minute regardless."""
        line = self.status_line()
        now = self._clock()
        changed = line != self._last_status_line and now >= self._last_status_log + STATUS_LOG_MIN_INTERVAL_SEC
        if force or changed or now >= self._next_status_log:
            self._last_status_log = now
            recent = f"; recent: {', '.join(self._stats.recent)}" if self._stats.recent else ""
            log.info("status: %s%s", line, recent)
            self._last_status_line = line
            self._next_status_log = now + STATUS_LOG_INTERVAL_SEC


# ---------------------------------------------------------------- pure helpers


def claim_scope(config: BridgeConfig) -> dict[str, object]:
    """What this bridge can run, sent with every claim so the hub hands out nothing else.

    Container mode none runs the apps it has a command for (and no original-SDK image, which
    needs a container); a container engine runs any processor with an image, and original-SDK
    images only when their containers get a network to the hub.
    """
    if config.containerMode is ContainerMode.NONE:
        return {"containerMode": ContainerMode.NONE.value, "apps": app_names(config)}
    return {"containerMode": config.containerMode.value, "originalSdkImages": config.originalSdkNetwork is not OriginalSdkNetwork.NONE}


def bridge_info(config: BridgeConfig, backend: Backend) -> dict[str, object]:
    """Where and how this bridge runs, for its compute client's page (the heartbeat carries it when it changed)."""
    info: dict[str, object] = {
        "host": platform.node() or "unknown",
        "backend": backend.name,
        "containerMode": config.containerMode.value,
        "version": pairio.__version__,
    }
    remote = backend.remote_host()
    if remote:
        info["remoteHost"] = remote
    if config.containerMode is ContainerMode.NONE:
        info["apps"] = app_names(config)
    return info


def app_names(config: BridgeConfig) -> list[str]:
    """The apps it has a command for; a key no app can be named (hub app names are checked names) is left out."""
    names = []
    for name in sorted(config.appCommands):
        try:
            names.append(check_name(name, "app name"))
        except ValueError:
            continue
    return names


@dataclass(frozen=True)
class LazyInputs:
    """Inputs are fetched by the processor, through ``cache_dir`` when it can see the bridge's cache."""

    cache_dir: Optional[str]


def lazy_inputs(
    staging: InputStaging, backend_name: str, container_mode: ContainerMode, needs_network: bool, cache_dir: Path
) -> Optional[LazyInputs]:
    """How a job's processor gets its inputs: None when they are staged ahead (see bridge.staging).

    Lazy needs a job with network: a podman or docker container has one only when its
    processor declares needsNetwork, so other containers get their inputs ahead. Only a
    processor outside any container on the bridge's file system sees the bridge's cache.
    """
    if staging is InputStaging.AHEAD:
        return None
    if container_mode is ContainerMode.NONE:
        visible = backend_name in CACHE_VISIBLE_TO_PROCESSOR
        return LazyInputs(cache_dir=str(cache_dir.resolve()) if visible else None)
    if container_mode in (ContainerMode.PODMAN, ContainerMode.DOCKER) and not needs_network:
        return None
    return LazyInputs(cache_dir=None)  # the container sees only the job's directory


def build_job_file(job: PairioJobData, d: JobDir, lazy_cache: Optional[LazyInputs] = None) -> PairioJobFile:
    """The job file for ``job`` in directory ``d``: where its inputs are staged (or fetched, when lazy) and its outputs go."""
    definition = job.jobDefinition
    for output in definition.outputFiles:
        d.output_path(output.name, output.fileBaseName).parent.mkdir(parents=True, exist_ok=True)
    return PairioJobFile(
        jobId=job.jobId,
        serviceName=job.serviceName,
        appName=definition.appName,
        processorName=definition.processorName,
        inputs=[
            PairioJobFileInput(name=i.name, fileBaseName=i.fileBaseName, url=i.url, path=str(d.input_path(i.name, i.fileBaseName).resolve()))
            for i in definition.inputFiles
        ],
        outputs=[
            PairioJobFileOutput(name=o.name, fileBaseName=o.fileBaseName, path=str(d.output_path(o.name, o.fileBaseName).resolve()))
            for o in definition.outputFiles
        ],
        parameters={p.name: p.value for p in definition.parameters},
        requiredResources=job.requiredResources,
        workingDir=str(d.work_dir.resolve()),
        inputStaging="lazy" if lazy_cache is not None else "ahead",
        cacheDir=lazy_cache.cache_dir if lazy_cache is not None else None,
    )


def _job_secrets(job: PairioJobData) -> dict[str, str]:
    """The job's secrets: variables of its processor's environment only (the watcher puts them there)."""
    return {secret.name: secret.value for secret in job.secrets or []}


def _secret_values(job: PairioJobData) -> list[str]:
    return [secret.value for secret in job.secrets or []]


def _refused_secret(job: PairioJobData) -> Optional[str]:
    """Why the job may not run here because of a secret's name (the hub's rule, checked again), or None."""
    for secret in job.secrets or []:
        problem = secret_name_problem(secret.name)
        if problem is not None:
            return (
                f"the job's secret {secret.name!r} was refused: {problem}; nothing was started. "
                "Submit the job again with the secret under another name, such as MYAPP_API_TOKEN"
            )
    return None


def _error_of(outcome: RecordedOutcome) -> str:
    if outcome.error:
        return outcome.error
    if outcome.phase is NativePhase.LOST:
        return "the bridge lost the job's process: it ended without leaving a result"
    if outcome.exitCode is not None:
        return f"processor exited with code {outcome.exitCode}"
    return "the job failed without an error message from its backend"


def _resources_from_job_file(d: JobDir) -> Optional[PairioJobRequiredResources]:
    try:
        return d.read_job_file().requiredResources
    except (OSError, ValueError):
        return None


def _safe_state(d: JobDir) -> Optional[JobState]:
    try:
        return d.read_state()
    except (OSError, ValueError):
        return None
