"""Pairio: run analysis apps as jobs on a hub's compute clients, from Python.

    from pairio import submit_job, PairioJobDefinition, PairioJobRequiredResources

The hub and key come from ``PAIRIO_API_URL`` / ``PAIRIO_API_KEY`` or ``pairio login``;
``PairioClient`` talks to a hub given explicitly.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

# The original Pairio package offers these at its top level too (its SDK imports them from here).
from pydantic import BaseModel, Field

from .batch import as_completed, wait_for_jobs
from .client import (
    JobFilters,
    JobRequest,
    PairioClient,
    RetryPolicy,
    cancel_job,
    default_client,
    delete_jobs,
    find_jobs,
    get_job,
    set_default_client,
    submit_job,
    submit_jobs,
)
from .errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    JobsWaitTimeoutError,
    JobWaitTimeoutError,
    MissingApiKeyError,
    NotFoundError,
    PairioConfigError,
    PairioConnectionError,
    PairioError,
    PairioHTTPError,
    PairioResponseError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServerError,
    UnknownOutputError,
)
from .job import PairioJob
from .models import (
    PairioApp,
    PairioAppProcessor,
    PairioAppProcessorAttribute,
    PairioAppProcessorInputFile,
    PairioAppProcessorOutputFile,
    PairioAppProcessorParameter,
    PairioBridgeInfo,
    PairioComputeClient,
    PairioComputeClientComputeSlot,
    PairioJobDefinition,
    PairioJobEvent,
    PairioJobInputFile,
    PairioJobOutputFile,
    PairioJobOutputFileResult,
    PairioJobParameter,
    PairioJobRequiredResources,
    PairioJobSecret,
    PairioService,
    PairioServiceApp,
    PairioServiceUser,
)
from .status import TERMINAL_STATUSES, JobStatus
from .waiting import PairioWaitingReason, WaitingCode

try:
    __version__ = _version("pairio")
except _PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    # submitting and following jobs
    "submit_job",
    "submit_jobs",
    "JobRequest",
    "get_job",
    "find_jobs",
    "cancel_job",
    "delete_jobs",
    "wait_for_jobs",
    "as_completed",
    "PairioClient",
    "RetryPolicy",
    "JobFilters",
    "default_client",
    "set_default_client",
    "PairioJob",
    "JobStatus",
    "TERMINAL_STATUSES",
    # job definitions
    "PairioJobDefinition",
    "PairioJobInputFile",
    "PairioJobOutputFile",
    "PairioJobParameter",
    "PairioJobRequiredResources",
    "PairioJobSecret",
    "PairioJobOutputFileResult",
    "PairioJobEvent",
    "PairioWaitingReason",
    "WaitingCode",
    # apps, services, compute clients
    "PairioApp",
    "PairioAppProcessor",
    "PairioAppProcessorInputFile",
    "PairioAppProcessorOutputFile",
    "PairioAppProcessorParameter",
    "PairioAppProcessorAttribute",
    "PairioServiceApp",
    "PairioService",
    "PairioServiceUser",
    "PairioBridgeInfo",
    "PairioComputeClient",
    "PairioComputeClientComputeSlot",
    # errors
    "PairioError",
    "PairioConfigError",
    "MissingApiKeyError",
    "PairioConnectionError",
    "PairioResponseError",
    "UnknownOutputError",
    "JobWaitTimeoutError",
    "JobsWaitTimeoutError",
    "PairioHTTPError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "ServerError",
    # pydantic's, as the original package offers them
    "BaseModel",
    "Field",
]
