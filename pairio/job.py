"""``PairioJob``: a job as the hub returned it, plus the calls a user makes on it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from pydantic import PrivateAttr

from .errors import JobWaitTimeoutError, UnknownOutputError
from .models import PairioJobData, PairioJobEvent
from .waiting import PairioWaitingReason

if TYPE_CHECKING:
    from .client import PairioClient


class PairioJob(PairioJobData):
    """A job: every field of the wire protocol's Job (``jobId``, ``status``, ``outputFileResults``, ...).

    Fields are a snapshot from the hub; ``refresh()`` and ``wait_until_done()`` update them.
    """

    waitingReason: Optional[PairioWaitingReason] = None
    """why it does not run yet (read with ``get_job``/``refresh``; lists leave it out): ``.code`` and ``.message``"""
    queuePosition: Optional[int] = None
    """a runnable pending job's place among its service's pending jobs, 1 = claimed next (read with ``get_job``/``refresh``)"""

    _client: Optional["PairioClient"] = PrivateAttr(default=None)

    @classmethod
    def from_hub(cls, data: object, client: "PairioClient") -> "PairioJob":
        job = cls.model_validate(data)
        job._client = client
        return job

    @property
    def client(self) -> "PairioClient":
        if self._client is None:
            from .client import default_client

            self._client = default_client()
        return self._client

    # ---------------------------------------------------------------- derived values

    @property
    def hub_url(self) -> str:
        """The hub's public base URL: what precedes ``/v1/jobs/<jobId>/`` in the job's own URLs."""
        marker = f"/v1/jobs/{self.jobId}/"
        cut = self.consoleOutputUrl.rfind(marker)
        return self.consoleOutputUrl[:cut] if cut > 0 else self.client.url

    @property
    def job_url(self) -> str:
        """Where people look at the job: ``<hub public URL>/job/<jobId>``."""
        return f"{self.hub_url}/job/{self.jobId}"

    def get_output(self, name: str) -> str:
        """The URL of the output named ``name``; known from creation on, so another job can take it as input."""
        for result in self.outputFileResults:
            if result.name == name:
                return result.url
        raise UnknownOutputError(self.jobId, name, [r.name for r in self.outputFileResults])

    # ---------------------------------------------------------------- calls to the hub

    def refresh(self) -> "PairioJob":
        """Read the job again from the hub and update this object's fields."""
        self._update_from(self.client.get_job(self.jobId))
        return self

    def _update_from(self, other: PairioJobData) -> None:
        for name in type(self).model_fields:
            setattr(self, name, getattr(other, name))

    def cancel(self) -> "PairioJob":
        """Stop the job: a pending job fails at once, a running one as soon as its compute client hears."""
        self._update_from(self.client.cancel_job(self.jobId))
        return self

    def get_console_output(self) -> str:
        """What the job printed so far (empty before it starts)."""
        return self.client.get_console_output(self.jobId, console_output_url=self.consoleOutputUrl)

    def get_events(self) -> list[PairioJobEvent]:
        """What happened to the job, oldest first (created, claimed, started, finished, errors)."""
        return self.client.get_job_events(self.jobId)

    def wait_until_done(
        self,
        wait_sec: Optional[float] = None,
        *,
        poll_interval_sec: float = 1.0,
        max_poll_interval_sec: float = 10.0,
        verbose: bool = True,
    ) -> "PairioJob":
        """Poll the hub until the job is completed or failed, printing each status change.

        Polls quickly at first and then less often (up to ``max_poll_interval_sec``), so a
        long job does not load the hub. Returns the job (check ``status`` and ``error``);
        raises ``JobWaitTimeoutError`` (a ``TimeoutError``) when ``wait_sec`` passes first.
        """
        deadline = None if wait_sec is None else time.monotonic() + wait_sec
        last_status = self.status
        delay = poll_interval_sec
        while True:
            self.refresh()
            if self.status != last_status:
                if verbose:
                    print(f"job {self.jobId}: {self.status}", flush=True)
                last_status = self.status
            if self.status.is_terminal:
                return self
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobWaitTimeoutError(self.jobId, self.status, float(wait_sec or 0))
                time.sleep(min(delay, remaining))
            else:
                time.sleep(delay)
            delay = min(delay * 1.5, max_poll_interval_sec)

    def __repr__(self) -> str:
        return f"PairioJob(jobId={self.jobId!r}, status={self.status.value!r}, service={self.serviceName!r})"
