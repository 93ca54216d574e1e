"""Request and response bodies of the REST API (``/v1``), named by role."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool  # strict: 0 or "true" are not booleans

from pairio.models import (
    MAX_TAGS,
    Name,
    PairioComputeClient,
    PairioComputeClientComputeSlot,
    PairioJobData,
    PairioJobDefinition,
    PairioJobEvent,
    PairioJobRequiredResources,
    PairioJobSecret,
    PairioService,
    PairioServiceApp,
    Tag,
)

from pairio.waiting import PairioWaitingReason

from .core.jobs import JobCreate
from .core.waiting import QUEUE_COUNT_LIMIT

BatchId = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobCreateBody(_Body):
    serviceName: str = Field(max_length=100)
    jobDefinition: PairioJobDefinition
    requiredResources: PairioJobRequiredResources
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    batchId: Optional[str] = BatchId
    targetComputeClientIds: Optional[list[str]] = Field(default=None, max_length=100)
    secrets: Optional[list[PairioJobSecret]] = Field(default=None, max_length=100)
    jobDependencies: list[str] = Field(default_factory=list, max_length=1000)
    skipCache: StrictBool = False
    rerunFailing: StrictBool = False
    deleteFailing: StrictBool = False

    def to_core(self) -> JobCreate:
        return JobCreate(**{name: getattr(self, name) for name in type(self).model_fields})


MAX_JOBS_PER_BATCH_REQUEST = 1000


class JobsCreateBody(_Body):
    jobs: list[JobCreateBody] = Field(min_length=1, max_length=MAX_JOBS_PER_BATCH_REQUEST)


class JobsCreated(BaseModel):
    jobs: list["JobPublic"]
    created: list[bool] = Field(description="per job, in the order asked: true for a new job, false for a cache hit")


class JobPublic(PairioJobData):
    """A job as users see it; ``jobPrivateKey`` and ``secrets`` are always null, secret parameters ``"***"``."""


class JobDetailPublic(JobPublic):
    """One job read on its own (``GET /v1/jobs/{id}``): ``JobPublic`` and why it waits, if it does."""

    waitingReason: Optional[PairioWaitingReason] = Field(
        default=None, description="why the job does not run yet; null once it runs (and is not queued by its backend) or is finished"
    )
    queuePosition: Optional[int] = Field(
        default=None,
        description=f"for a runnable pending job: 1 if its service's compute clients claim it next (oldest first); "
        f"counted up to {QUEUE_COUNT_LIMIT + 1}",
    )


class JobsPublic(BaseModel):
    jobs: list[JobPublic]
    nextCursor: Optional[str] = Field(default=None, description="pass as ?cursor= to get the next page")


class JobEventsPublic(BaseModel):
    events: list[PairioJobEvent]


class FindByDefinitionBody(_Body):
    serviceName: str = Field(max_length=100)
    jobDefinition: PairioJobDefinition


class FindByDefinitionResult(BaseModel):
    found: bool
    job: Optional[JobPublic] = None


class DeleteJobsBody(_Body):
    jobIds: list[str] = Field(min_length=1, max_length=1000)


class JobCounts(BaseModel):
    counts: dict[str, int]


class BatchPublic(BaseModel):
    """Where the jobs of one batch (one ``batchId``) stand."""

    batchId: str
    counts: dict[str, int] = Field(description="jobs per status (every status, zeros included)")
    total: int
    finished: int = Field(description="jobs completed or failed")
    failed: int
    isFinished: bool = Field(description="every job of the batch is completed or failed")
    firstCreatedSec: float = Field(description="when the batch's first job was created (Unix seconds)")
    etaSec: Optional[float] = Field(
        default=None, description="seconds until the last job finishes at the pace so far; null before the first finishes or after the last"
    )


class ServiceCreateBody(_Body):
    serviceName: Name


class ServiceUserRolesBody(_Body):
    admin: StrictBool = False
    createJobs: StrictBool = False
    processJobs: StrictBool = False


class ServicesPublic(BaseModel):
    services: list[PairioService]


class ServiceAppsPublic(BaseModel):
    serviceApps: list[PairioServiceApp]


class ComputeClientCreateBody(_Body):
    serviceName: str = Field(max_length=100)
    label: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    computeSlots: list[PairioComputeClientComputeSlot] = Field(min_length=1, max_length=100)


class ComputeClientCreated(BaseModel):
    computeClient: PairioComputeClient
    computeClientPrivateKey: str = Field(description="shown once; the bridge keeps it in its configuration file")


class ComputeClientsPublic(BaseModel):
    computeClients: list[PairioComputeClient]


class ApiKeyCreateBody(_Body):
    label: str = Field(default="", max_length=200)


class ApiKeyPublic(BaseModel):
    keyId: str
    label: str
    timestampCreatedSec: float
    revoked: bool


class ApiKeyCreated(BaseModel):
    apiKey: str = Field(description="shown once; store it (pairio login) or in PAIRIO_API_KEY")
    key: ApiKeyPublic


class Me(BaseModel):
    userId: str


