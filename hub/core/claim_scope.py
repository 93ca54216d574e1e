"""What a bridge says it can run, and which pending jobs that lets a claim hand it.

A bridge's claim names its container mode and, in mode ``none``, the apps it has a command
for; a container-mode bridge runs any processor that has an image, and processors of
images built with the original SDK only when its containers reach the hub. A claim that
says nothing (older bridges, the original compute client) may take any job, as before.

Jobs a claim may not take are skipped, never failed: they stay pending for a bridge that
runs them. The claim walks the pending jobs of each runnable app in order through the
``ix_jobs_claimable_app`` index (one short indexed read per app, merged oldest first), so
a million pending jobs of apps this bridge lacks cost it nothing; processors it cannot
run within an app it can are skipped row by row, within the claim's scan limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from pairio.models import PairioApp, PairioAppProcessor

from ..db.raw import on_connection, prebuilt
from ..db.tables import Job, ServiceApp
from .jobs import cached_parsed_app, parsed_app

CONTAINER_MODES = ("none", "podman", "docker", "apptainer")
NO_CONTAINER = "none"


@dataclass(frozen=True)
class ClaimScope:
    """What a bridge can run, from its claim; None: not said (any)."""

    apps: Optional[frozenset[str]] = None
    """container mode none: the apps the bridge has a command for"""
    container_mode: Optional[str] = None
    """none, or the engine that runs processors' images"""
    original_sdk_images: bool = True
    """container modes: whether it runs images built with the original SDK (their containers must reach the hub)"""

    @property
    def says_anything(self) -> bool:
        return self.apps is not None or self.container_mode is not None

    def runs_processor(self, processor: PairioAppProcessor) -> bool:
        if self.container_mode is None:
            return True
        if self.container_mode == NO_CONTAINER:
            return not processor.originalSdk  # such images run in a container only
        return bool(processor.image) and bool(processor.executable) and (self.original_sdk_images or not processor.originalSdk)


@dataclass(frozen=True)
class RunnableJobs:
    """The jobs one claim may take: by app (one indexed walk each), then by processor."""

    processors: Mapping[str, Optional[frozenset[str]]]
    """app name -> the processors of it the bridge runs (None: all of them)"""

    @property
    def app_names(self) -> list[str]:
        return sorted(self.processors)

    def accepts(self, job: Job) -> bool:
        if job.app_name not in self.processors:
            return False
        allowed = self.processors[job.app_name]
        return allowed is None or job.processor_name in allowed


def runnable_jobs(s: Session, service_name: str, scope: ClaimScope) -> Optional[RunnableJobs]:
    """None when the scope allows every job of the service (the claim needs no filter)."""
    if not scope.says_anything:
        return None
    apps = service_apps(s, service_name)
    processors = runnable_processors(scope, apps)
    if scope.apps is None and _all_of(processors, apps):
        return None  # e.g. a container bridge and every processor has an image: the plain walk is cheaper
    return RunnableJobs(processors)


def runnable_processors(scope: ClaimScope, apps: Mapping[str, PairioApp]) -> dict[str, Optional[frozenset[str]]]:
    """App name -> the processors the scope runs (None: all); apps with none are left out.

    Only apps the service has count (a bridge naming hundreds of others costs its claim
    nothing): jobs are submitted only for registered apps.
    """
    names: Iterable[str] = scope.apps if scope.apps is not None else apps
    result: dict[str, Optional[frozenset[str]]] = {}
    for name in names:
        app = apps.get(name)
        if app is None:
            continue
        runs = [p.name for p in app.processors if scope.runs_processor(p)]
        if runs:
            result[name] = None if len(runs) == len(app.processors) else frozenset(runs)
    return result


def _all_of(processors: Mapping[str, Optional[frozenset[str]]], apps: Mapping[str, PairioApp]) -> bool:
    return set(processors) == set(apps) and all(v is None for v in processors.values())


_APP_VERSIONS = prebuilt(select(ServiceApp.app_name, ServiceApp.spec_hash).where(ServiceApp.service_name == bindparam("service")))


def service_apps(s: Session, service_name: str) -> dict[str, PairioApp]:
    """The service's apps, each spec parsed once per version (claims that wait re-read them often)."""
    rows = on_connection(s.connection()).execute(_APP_VERSIONS, {"service": service_name}).all()
    apps: dict[str, PairioApp] = {}
    for app_name, spec_hash in rows:
        app = cached_parsed_app(service_name, app_name, spec_hash)
        if app is None:
            row = s.get(ServiceApp, (service_name, app_name))
            if row is None:
                continue  # deleted meanwhile
            app = parsed_app(row)
        apps[app_name] = app
    return apps
