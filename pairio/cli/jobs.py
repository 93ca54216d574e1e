"""``pairio jobs``: list, show, follow, cancel and delete jobs on a hub."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Optional, TypeVar

import click

from pairio.batch import wait_for_jobs
from pairio.client import JobFilters, PairioClient
from pairio.errors import JobsWaitTimeoutError
from pairio.job import PairioJob
from pairio.status import JobStatus

from .tables import format_time, render_table


@dataclass
class JobsOptions:
    url: Optional[str] = None
    api_key: Optional[str] = None

    def client(self) -> PairioClient:
        return PairioClient(self.url, self.api_key)


URL_HELP = "the hub's URL [default: $PAIRIO_API_URL or what 'pairio login' saved]"
KEY_HELP = "your API key [default: $PAIRIO_API_KEY or what 'pairio login' saved]; the environment keeps it out of shell history"
FC = TypeVar("FC", bound=Callable[..., Any])


def _remember(field: str) -> Callable[[click.Context, click.Parameter, Optional[str]], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
        options = ctx.ensure_object(JobsOptions)  # one object: the group's, which each subcommand's context shares
        if value is not None:
            setattr(options, field, value)

    return store


def hub_options(command: FC) -> FC:
    """--url and --key, taken before the subcommand (``pairio jobs --url U list``) or after it (``pairio jobs list --url U``)."""
    command = click.option("--key", "--api-key", default=None, expose_value=False, callback=_remember("api_key"), help=KEY_HELP)(command)
    return click.option("--url", default=None, expose_value=False, callback=_remember("url"), help=URL_HELP)(command)


def _status_text(job: PairioJob) -> str:
    if job.status == JobStatus.PENDING and not job.isRunnable:
        return "pending (waits for dependencies)"
    if job.canceled and not job.status.is_terminal:
        return f"{job.status} (cancel requested)"
    return str(job.status)


def _resources_text(job: PairioJob) -> str:
    r = job.requiredResources
    return f"{r.numCpus} CPU, {r.numGpus} GPU, {r.memoryGb:g} GB, {r.timeSec:g} s"


def _job_json(job: PairioJob) -> dict[str, Any]:
    return {**job.model_dump(mode="json"), "jobUrl": job.job_url}


@click.group()
@hub_options
def jobs() -> None:
    """List, show, cancel and delete jobs (the key comes from --key, PAIRIO_API_KEY or 'pairio login')."""


@jobs.command("list")
@hub_options
@click.option("--service", "-s", default=None, help="only jobs of this service")
@click.option("--status", multiple=True, type=click.Choice([s.value for s in JobStatus]), help="only jobs with this status (repeatable)")
@click.option("--tag", multiple=True, help="only jobs with this tag (repeatable: every tag given)")
@click.option("--user", default=None, help="only jobs submitted by this user")
@click.option("--batch", default=None, help="only jobs of this batch (submit_job's batch_id)")
@click.option("--app", default=None, help="only jobs of this app")
@click.option("--processor", default=None, help="only jobs of this processor")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="at most this many jobs, newest first")
@click.option("--json", "as_json", is_flag=True, help="print the jobs as JSON")
@click.pass_obj
def list_jobs(
    options: JobsOptions, service: Optional[str], status: tuple[str, ...], tag: tuple[str, ...],
    user: Optional[str], batch: Optional[str], app: Optional[str], processor: Optional[str], limit: int, as_json: bool,
) -> None:
    """Jobs matching every filter given, newest first."""
    filters: JobFilters = {}
    if batch:
        filters["batch_id"] = batch
    if app:
        filters["app_name"] = app
    if processor:
        filters["processor_name"] = processor
    if service:
        filters["service_name"] = service
    if user:
        filters["user_id"] = user
    if status:
        filters["status"] = list(status)
    if tag:
        filters["tags"] = list(tag)
    with options.client() as client:
        found = client.find_jobs(limit=limit, **filters)
    if as_json:
        click.echo(json.dumps([_job_json(j) for j in found], indent=2))
        return
    if not found:
        click.echo("no jobs match", err=True)
        return
    rows = [
        [j.jobId, _status_text(j), j.serviceName, f"{j.jobDefinition.appName}/{j.jobDefinition.processorName}",
         j.userId, format_time(j.timestampCreatedSec), ",".join(j.tags)]
        for j in found
    ]
    click.echo(render_table(["JOB ID", "STATUS", "SERVICE", "APP/PROCESSOR", "USER", "CREATED", "TAGS"], rows))


@jobs.command("show")
@hub_options
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="print the job and its events as JSON")
@click.pass_obj
def show_job(options: JobsOptions, job_id: str, as_json: bool) -> None:
    """A job's details, outputs and events (what happened to it, oldest first)."""
    with options.client() as client:
        job = client.get_job(job_id)
        events = client.get_job_events(job_id)
    if as_json:
        click.echo(json.dumps({**_job_json(job), "events": [e.model_dump(mode="json") for e in events]}, indent=2))
        return
    d = job.jobDefinition
    fields = [
        ("job", job.jobId),
        ("url", job.job_url),
        ("status", _status_text(job)),
        ("waiting", job.waitingReason.message if job.waitingReason else ""),
        ("queue position", str(job.queuePosition) if job.queuePosition else ""),
        ("error", job.error or ""),
        ("service", job.serviceName),
        ("app", f"{d.appName} / {d.processorName}"),
        ("user", job.userId),
        ("tags", ", ".join(job.tags)),
        ("resources", _resources_text(job)),
        ("depends on", ", ".join(job.jobDependencies)),
        ("compute client", job.computeClientName or job.computeClientId or ""),
        ("created", format_time(job.timestampCreatedSec)),
        ("started", format_time(job.timestampStartedSec) if job.timestampStartedSec else ""),
        ("finished", format_time(job.timestampFinishedSec) if job.timestampFinishedSec else ""),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        if value:
            click.echo(f"{name.ljust(width)}  {value}")
    if d.parameters:
        click.echo("parameters:")
        for p in d.parameters:
            click.echo(f"  {p.name} = {json.dumps(p.value)}")
    if d.inputFiles:
        click.echo("inputs:")
        for f in d.inputFiles:
            click.echo(f"  {f.name}  {f.fileBaseName}  {f.url}")
    if job.outputFileResults:
        click.echo("outputs:")
        for o in job.outputFileResults:
            size = f"  ({o.size} bytes)" if o.size is not None else ""
            click.echo(f"  {o.name}  {o.fileBaseName}  {o.url}{size}")
    click.echo("events:")
    for e in events:
        click.echo(f"  {format_time(e.timestampSec)}  {str(e.status or '').ljust(9)}  {e.message}")


@jobs.command("cancel")
@hub_options
@click.argument("job_id")
@click.pass_obj
def cancel_job(options: JobsOptions, job_id: str) -> None:
    """Stop a job: a pending job fails at once, a running one when its compute client hears."""
    with options.client() as client:
        job = client.cancel_job(job_id)
    if job.status.is_terminal:
        click.echo(f"job {job.jobId}: {job.status}" + (f" ({job.error})" if job.error else ""))
    else:
        click.echo(f"job {job.jobId}: {job.status}, cancel requested; its compute client stops it within seconds")


@jobs.command("logs")
@hub_options
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="keep printing what the job prints until it ends")
@click.pass_obj
def job_logs(options: JobsOptions, job_id: str, follow: bool) -> None:
    """What the job printed (its console output) so far."""
    if follow:
        _follow_logs(options, job_id)
        return
    with options.client() as client:
        text = client.get_console_output(job_id)
        if not text:
            job = client.get_job(job_id)
            click.echo(f"job {job_id} has no console output yet (status: {job.status})", err=True)
            return
    click.echo(text, nl=not text.endswith("\n"))


@jobs.command("delete")
@hub_options
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.pass_obj
def delete_jobs(options: JobsOptions, job_ids: tuple[str, ...]) -> None:
    """Delete jobs and their files (all or none); jobs waiting on them fail."""
    with options.client() as client:
        client.delete_jobs(list(job_ids))
    click.echo(f"deleted {len(job_ids)} job(s)")


def _follow_logs(options: JobsOptions, job_id: str, poll_interval_sec: float = 1.0, max_poll_interval_sec: float = 5.0) -> None:
    """Print the console output as it grows (only the new bytes each poll) until the job has ended and all is shown."""
    offset = 0
    delay = poll_interval_sec
    with options.client() as client:
        while True:
            job = client.get_job(job_id)  # first: output that arrives after a final status is read below
            chunk = client.get_console_output_since(job_id, offset)
            while chunk:
                offset += len(chunk)
                click.echo(chunk.decode("utf-8", errors="replace"), nl=False)
                delay = poll_interval_sec
                chunk = client.get_console_output_since(job_id, offset)
            if job.status.is_terminal:
                if job.status == JobStatus.FAILED:
                    click.echo(f"job {job_id}: failed" + (f" ({job.error})" if job.error else ""), err=True)
                    raise SystemExit(1)
                return
            time.sleep(delay)
            delay = min(delay * 1.5, max_poll_interval_sec)


@jobs.command("wait")
@hub_options
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID...]")
@click.option("--batch", default=None, help="every job of this batch (submit_job's batch_id)")
@click.option("--timeout", "timeout_sec", type=click.FloatRange(min=0, min_open=True), default=None, help="give up after this many seconds (exit status 2)")
@click.option("--quiet", "-q", is_flag=True, help="no progress line")
@click.pass_obj
def wait_jobs(options: JobsOptions, job_ids: tuple[str, ...], batch: Optional[str], timeout_sec: Optional[float], quiet: bool) -> None:
    """Wait until the jobs (or a batch's) are completed or failed, with a progress line on a terminal.

    Exit status 0 when every job completed, 1 when some failed (they are listed first), 2 on --timeout.
    """
    if bool(job_ids) == bool(batch):
        raise click.UsageError("give job ids, or --batch ID (not both)")
    with options.client() as client:
        if batch:
            waiting = client.find_jobs(batch_id=batch)
            if not waiting:
                raise click.ClickException(f"no jobs in batch {batch!r} (check the id: 'pairio jobs list --batch {batch}')")
        else:
            waiting = [client.get_job(job_id) for job_id in job_ids]
        try:
            done = wait_for_jobs(waiting, timeout_sec=timeout_sec, progress=False if quiet else None)
        except JobsWaitTimeoutError as e:
            click.echo(f"Error: {e}", err=True)
            raise SystemExit(2) from None
    failed = [j for j in done if j.status == JobStatus.FAILED]
    rows = [[j.jobId, _status_text(j), f"{j.jobDefinition.appName}/{j.jobDefinition.processorName}", (j.error or "")[:80]] for j in failed]
    failed_ids = {j.jobId for j in failed}
    rows += [[j.jobId, _status_text(j), f"{j.jobDefinition.appName}/{j.jobDefinition.processorName}", ""] for j in done if j.jobId not in failed_ids]
    click.echo(render_table(["JOB ID", "STATUS", "APP/PROCESSOR", "ERROR"], rows))
    if failed:
        click.echo(f"Error: {len(failed)} of {len(done)} jobs failed", err=True)
        raise SystemExit(1)
