"""Whether a job's required resources fit any compute slot of its service, and if not, what does not fit.

Used when a job is created (an event on its timeline when no slot can ever take it) and
when a pending job's waiting reason is computed (hub/core/waiting.py).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from sqlalchemy import Engine, bindparam, event, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pairio.models import PairioComputeClientComputeSlot, PairioJobRequiredResources

from ..db.raw import RawReads, on_connection, prebuilt
from ..db.tables import ComputeClient

_UNITS = {"numCpus": "CPUs", "numGpus": "GPUs", "memoryGb": "GB of memory", "timeSec": "s of run time"}


@dataclass(frozen=True)
class ClientSlots:
    """A compute client of the service as fit checks need it."""

    compute_client_id: str
    label: str
    slots: list[PairioComputeClientComputeSlot]
    last_active_sec: Optional[float]
    apps: Optional[tuple[str, ...]] = None
    """The apps its bridge last said it runs (container mode none); None: any app, or not said."""

    def runs_app(self, app_name: str) -> bool:
        return self.apps is None or app_name in self.apps


@dataclass(frozen=True)
class Misfit:
    """The slot closest to fitting a job that fits none, and what it cannot give."""

    slot: PairioComputeClientComputeSlot
    compute_client_label: str
    reasons: list[str]  # e.g. "numCpus: asks 64, the slot has 2"


# built once: composing it costs more than running it
_CLIENTS = prebuilt(
    select(
        ComputeClient.compute_client_id, ComputeClient.label, ComputeClient.compute_slots, ComputeClient.last_active_sec,
        ComputeClient.bridge_info,
    )
    .where(ComputeClient.service_name == bindparam("service"))
    .order_by(ComputeClient.created_sec, ComputeClient.compute_client_id)
)


def service_clients(s: Union[Session, Connection, RawReads], service_name: str) -> list[ClientSlots]:
    """The service's compute clients (``targeted`` keeps those a job names)."""
    return [
        ClientSlots(cc_id, label, [PairioComputeClientComputeSlot.model_validate(x) for x in slots], last_active, _named_apps(bridge_info))
        for cc_id, label, slots, last_active, bridge_info in s.execute(_CLIENTS, {"service": service_name})
    ]


def _named_apps(bridge_info: Any) -> Optional[tuple[str, ...]]:
    """The apps a bridge in container mode none said it runs; None when it runs any app or said nothing."""
    if not isinstance(bridge_info, dict) or bridge_info.get("containerMode") != "none" or not isinstance(bridge_info.get("apps"), list):
        return None
    return tuple(str(a) for a in bridge_info["apps"])


# Creating a job asks whether any slot fits it, and reading a pending job says why it waits; the service's
# clients rarely change, so a process remembers them for a moment (per engine: one per database). Answers
# that a change could make wrong are read afresh before they are given: creation's "no slot fits" (it
# becomes a note on the job's timeline) and a waiting reason's "no compute client online" among clients (a
# heartbeat may have come since). A client registered, changed or deleted in this process is read afresh at
# once, and again once that transaction commits (forget_service_clients); one changed through another hub
# process, within CLIENTS_MEMORY_SEC. Clients heard from within the heartbeat timeout as of the memory's read
# are taken as online: at most CLIENTS_MEMORY_SEC of the timeout (120 s by default) is misjudged.
CLIENTS_MEMORY_SEC = 2.0
_remembered: "weakref.WeakKeyDictionary[Engine, dict[str, tuple[float, list[ClientSlots]]]]" = weakref.WeakKeyDictionary()


def remembered_clients(engine: Any, service_name: str) -> Optional[list[ClientSlots]]:
    """The service's clients as read by this process less than ``CLIENTS_MEMORY_SEC`` ago through ``engine``; None if not
    (always None when ``engine`` is not an ``Engine``: no memory)."""
    memory = _remembered.get(engine) if isinstance(engine, Engine) else None
    remembered = memory.get(service_name) if memory is not None else None
    if remembered is None or remembered[0] <= time.monotonic():
        return None
    return remembered[1]


def read_clients(engine: Any, reader: Union[Session, Connection, RawReads], service_name: str) -> list[ClientSlots]:
    """``service_clients`` read now, and remembered for ``engine`` (when it is one)."""
    now = time.monotonic()
    everyone = service_clients(reader, service_name)
    if isinstance(engine, Engine):
        _remembered.setdefault(engine, {})[service_name] = (now + CLIENTS_MEMORY_SEC, everyone)
    return everyone


def targeted(clients: list[ClientSlots], targets: Optional[Sequence[str]]) -> list[ClientSlots]:
    """Those of ``clients`` named in ``targets`` (a job's ``targetComputeClientIds``); all when None."""
    return clients if targets is None else [c for c in clients if c.compute_client_id in targets]


def no_slot_fits(s: Session, service_name: str, targets: Optional[Sequence[str]], r: PairioJobRequiredResources) -> Optional[Misfit]:
    """The closest misfit when the service has compute clients (of ``targets``, if given) and none fits ``r``."""
    engine = s.get_bind()
    remembered = remembered_clients(engine, service_name)
    if remembered is not None and closest_misfit(targeted(remembered, targets), r) is None:
        return None  # no client (of the targets), or one that fits
    return closest_misfit(targeted(read_clients(engine, on_connection(s.connection()), service_name), targets), r)


def forget_service_clients(service_name: str, s: Optional[Session] = None) -> None:
    """A compute client of the service was registered, deleted, or changed its slots or apps: the next reads
    of its clients go to the database, now and (given the session making the change) once it commits."""
    for memory in list(_remembered.values()):
        memory.pop(service_name, None)
    if s is not None:
        event.listen(s, "after_commit", lambda _s: forget_service_clients(service_name), once=True)


def fits_some_slot(client: ClientSlots, r: PairioJobRequiredResources) -> bool:
    return any(slot.fits(r) for slot in client.slots)


def slot_misfits(slot: PairioComputeClientComputeSlot, r: PairioJobRequiredResources) -> list[str]:
    """Each resource of ``r`` outside the slot's range, in words."""
    reasons = []
    for name, unit in _UNITS.items():
        asked = getattr(r, name)
        most = getattr(slot, name)
        least = getattr(slot, "min" + name[0].upper() + name[1:])
        if asked > most:
            reasons.append(f"{name}: asks {asked:g}, the slot has {most:g} {unit}")
        elif asked < least:
            reasons.append(f"{name}: asks {asked:g}, the slot takes jobs of at least {least:g} {unit}")
    return reasons


def closest_misfit(clients: Sequence[ClientSlots], r: PairioJobRequiredResources) -> Optional[Misfit]:
    """None when some slot fits (or there are no slots); else the slot that misses on the fewest resources,
    the largest among those (GPUs, then CPUs, memory, time)."""
    best: Optional[tuple[tuple[int, float, float, float, float], Misfit]] = None
    for client in clients:
        for slot in client.slots:
            reasons = slot_misfits(slot, r)
            if not reasons:
                return None
            rank = (len(reasons), -slot.numGpus, -slot.numCpus, -slot.memoryGb, -slot.timeSec)
            if best is None or rank < best[0]:
                best = (rank, Misfit(slot, client.label, reasons))
    return best[1] if best else None


def describe_slot(slot: PairioComputeClientComputeSlot) -> str:
    return f"{slot.numCpus} CPUs, {slot.numGpus} GPUs, {slot.memoryGb:g} GB, {slot.timeSec:g} s"


def misfit_message(service_name: str, misfit: Misfit) -> str:
    return (
        f"no compute slot of service {service_name!r} fits this job: the largest, on compute client "
        f"{misfit.compute_client_label!r} ({describe_slot(misfit.slot)}), does not fit it ({'; '.join(misfit.reasons)})"
    )
