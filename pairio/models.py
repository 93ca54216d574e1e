"""Data models shared by the hub, the client and the bridges.

Field names are camelCase, exactly as in the Pairio wire protocol, so the JSON
these models produce is what existing clients already read and write.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .names import (
    FILE_BASE_NAME_SCHEMA,
    INPUT_NAME_SCHEMA,
    NAME_SCHEMA,
    SECRET_NAME_SCHEMA,
    TAG_SCHEMA,
    check_file_base_name,
    check_input_name,
    check_name,
    check_secret_name,
    check_tag,
)
from .status import JobStatus

# Upper bounds keep a typo (memoryGb=40000000) from becoming a job no compute
# client can ever run; they are far above any single node we know of.
MAX_NUM_CPUS = 4096
MAX_NUM_GPUS = 64
MAX_MEMORY_GB = 65536.0
MAX_TIME_SEC = 366 * 24 * 3600.0
MAX_TAGS = 100
MAX_PARAMETER_VALUE_CHARS = 100_000

# The checks validate; json_schema_extra shows the same rules (from pairio.names) in the OpenAPI document.
Name = Annotated[str, AfterValidator(check_name), Field(json_schema_extra=NAME_SCHEMA)]
InputName = Annotated[str, AfterValidator(check_input_name), Field(json_schema_extra=INPUT_NAME_SCHEMA)]
Tag = Annotated[str, AfterValidator(check_tag), Field(json_schema_extra=TAG_SCHEMA)]
FileBaseName = Annotated[str, AfterValidator(check_file_base_name), Field(json_schema_extra=FILE_BASE_NAME_SCHEMA)]
SecretName = Annotated[str, AfterValidator(check_secret_name), Field(json_schema_extra=SECRET_NAME_SCHEMA)]

ParameterScalar = Union[bool, int, float, str, None]
ParameterValue = Union[ParameterScalar, list[Any]]


class _Model(BaseModel):
    """Strict about unknown fields: a misspelt field is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _ReadModel(BaseModel):
    """Models the client reads back from the hub: tolerant of fields added by newer hubs."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _check_parameter_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("parameter values must be finite numbers (no NaN or infinity)")
    if isinstance(value, str) and len(value) > MAX_PARAMETER_VALUE_CHARS:
        raise ValueError(f"parameter string values are limited to {MAX_PARAMETER_VALUE_CHARS} characters")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        if depth >= 4:
            raise ValueError("parameter lists may be nested at most 4 deep")
        return [_check_parameter_value(v, depth + 1) for v in value]
    raise ValueError(
        f"parameter values must be JSON scalars (string, number, boolean, null) or lists of them, not {type(value).__name__}"
    )


# ---------------------------------------------------------------- job definition


class PairioJobInputFile(_Model):
    name: InputName
    fileBaseName: FileBaseName
    url: str = Field(min_length=1, max_length=4096, json_schema_extra={"pattern": r"^https?://[^\x00-\x20]*$"})

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError(f"input file url must start with http:// or https://, got {v[:80]!r}")
        if any(ord(c) < 32 or c == " " for c in v):
            raise ValueError("input file url must not contain spaces or control characters")
        return v


class PairioJobOutputFile(_Model):
    name: Name
    fileBaseName: FileBaseName


def _parameter_value_schema(depth: int = 4) -> dict[str, Any]:
    """What _check_parameter_value accepts, as JSON Schema: scalars, and lists nested at most 4 deep."""
    scalar: dict[str, Any] = {"type": ["string", "number", "boolean", "null"], "maxLength": MAX_PARAMETER_VALUE_CHARS}
    if depth == 0:
        return scalar
    return {"anyOf": [scalar, {"type": "array", "items": _parameter_value_schema(depth - 1)}]}


class PairioJobParameter(_Model):
    name: Name
    value: Any = Field(default=None, json_schema_extra=_parameter_value_schema())

    @field_validator("value")
    @classmethod
    def _value_is_json_scalar_or_list(cls, v: Any) -> Any:
        return _check_parameter_value(v)


# The type of errors for rules that span fields (no JSON Schema can say them): the hub
# answers them 400, not 422, since a request can match the published schema and still break them.
CROSS_FIELD_RULE = "cross_field_rule"


def _cross_field_error(message: str) -> PydanticCustomError:
    return PydanticCustomError(CROSS_FIELD_RULE, message)


def _unique_names(items: list[Any], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise _cross_field_error(f"duplicate {what} name {item.name!r}")
        seen.add(item.name)


class PairioJobDefinition(_Model):
    appName: Name
    processorName: Name
    inputFiles: list[PairioJobInputFile] = Field(default_factory=list, max_length=1000)
    outputFiles: list[PairioJobOutputFile] = Field(default_factory=list, max_length=1000)
    parameters: list[PairioJobParameter] = Field(default_factory=list, max_length=1000)
    cacheBust: Optional[str] = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _names_unique(self) -> "PairioJobDefinition":
        _unique_names(self.inputFiles, "input file")
        _unique_names(self.outputFiles, "output file")
        _unique_names(self.parameters, "parameter")
        return self


class PairioJobRequiredResources(_Model):
    numCpus: int = Field(ge=1, le=MAX_NUM_CPUS, description="CPU cores (at least 1)")
    numGpus: int = Field(ge=0, le=MAX_NUM_GPUS, description="GPUs (0 for none)")
    memoryGb: float = Field(gt=0, le=MAX_MEMORY_GB, allow_inf_nan=False, description="memory in GB")
    timeSec: float = Field(gt=0, le=MAX_TIME_SEC, allow_inf_nan=False, description="wall-clock limit in seconds")


class PairioJobSecret(_Model):
    name: SecretName
    value: str = Field(max_length=100_000)


class PairioJobOutputFileResult(_ReadModel):
    name: str
    fileBaseName: str
    url: str
    size: Optional[int] = None


class PairioJobEvent(_ReadModel):
    timestampSec: float
    status: Optional[JobStatus] = None
    message: str


# ---------------------------------------------------------------- apps


ParameterType = Literal[
    "str", "int", "float", "bool",
    "List[str]", "List[int]", "List[float]", "List[bool]",
    "Optional[str]", "Optional[int]", "Optional[float]", "Optional[bool]",
    "Optional[List[str]]", "Optional[List[int]]", "Optional[List[float]]", "Optional[List[bool]]",
]


def implied_required(default: Any, type_name: str) -> bool:
    """Whether a parameter is required when its spec does not say: when it has no default.

    The original Pairio's rule (its spec.json omits ``defaultValue`` for a default of None,
    and its hub then demands the parameter). A parameter of an Optional type is the one
    exception: null is a value it takes, so it defaults to null instead.
    """
    return default is None and not type_name.startswith("Optional[")


class PairioAppProcessorInputFile(_Model):
    name: Name
    description: str = ""
    # null, which the original spec schema allows, means a plain input; it is stored as false.
    list: Optional[bool] = Field(default=False, description="true for a list input (null: false)")

    @field_validator("list")
    @classmethod
    def _null_is_false(cls, v: Optional[bool]) -> bool:
        return bool(v)


class PairioAppProcessorOutputFile(_Model):
    name: Name
    description: str = ""


class PairioAppProcessorParameter(_Model):
    name: Name
    description: str = ""
    type: ParameterType = "str"
    default: Any = None
    required: bool = Field(default=False, description="true when the parameter has no default")
    options: Optional[list[Any]] = None
    secret: bool = False
    # Declared so that the published schema shows the original form; read into default, never kept.
    defaultValue: Any = Field(default=None, exclude=True, repr=False, description="the original Pairio's name for default")

    @model_validator(mode="before")
    @classmethod
    def _from_original_form(cls, data: Any) -> Any:
        """Read the original Pairio's form too: ``defaultValue``, and no ``required`` (see implied_required)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "defaultValue" in data:
            if "default" in data:
                raise _cross_field_error(
                    f"parameter {data.get('name')!r} has both 'default' and 'defaultValue'; keep one "
                    "('defaultValue' is the original Pairio's name for 'default')"
                )
            data["default"] = data.pop("defaultValue")
        if "required" not in data:
            type_name = data.get("type", "str")
            data["required"] = implied_required(data.get("default"), type_name if isinstance(type_name, str) else "")
        return data


class PairioAppProcessorAttribute(_Model):
    name: Name
    value: Any = None


class PairioAppProcessor(_Model):
    name: Name
    description: str = ""
    label: str = ""
    image: str = ""
    executable: str = ""
    needsNetwork: bool = Field(
        default=False,
        description="container mode: the processor needs the network (e.g. it reads inputs remotely); otherwise its container has none",
    )
    originalSdk: bool = Field(
        default=False,
        description="the image was built with the original Pairio SDK (pairio 0.5.x): its job process talks to the hub itself, "
        "so bridges give it the original environment and a network to the hub (set by the service admin at add-app)",
    )
    inputs: list[PairioAppProcessorInputFile] = Field(default_factory=list)
    outputs: list[PairioAppProcessorOutputFile] = Field(default_factory=list)
    parameters: list[PairioAppProcessorParameter] = Field(default_factory=list)
    attributes: list[PairioAppProcessorAttribute] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_unique(self) -> "PairioAppProcessor":
        _unique_names(self.inputs, "input")
        _unique_names(self.outputs, "output")
        _unique_names(self.parameters, "parameter")
        return self


class PairioApp(_Model):
    """An app specification, as written by ``pairio make-app-spec`` into spec.json."""

    name: Name
    description: str = ""
    version: str = Field(default="", max_length=200)
    processors: list[PairioAppProcessor] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_unique(self) -> "PairioApp":
        _unique_names(self.processors, "processor")
        return self

    def get_processor(self, name: str) -> Optional[PairioAppProcessor]:
        return next((p for p in self.processors if p.name == name), None)


class PairioServiceApp(_ReadModel):
    serviceName: str
    appName: str
    appSpecification: PairioApp
    appSpecificationHash: str
    timestampCreatedSec: float
    timestampUpdatedSec: float

    @property
    def processors(self) -> list[PairioAppProcessor]:
        return self.appSpecification.processors


# ---------------------------------------------------------------- services, compute clients


class PairioServiceUser(_Model):
    userId: str
    admin: bool = False
    createJobs: bool = False
    processJobs: bool = False


class PairioService(_ReadModel):
    serviceName: str
    userId: str
    users: list[PairioServiceUser] = Field(default_factory=list)
    timestampCreatedSec: float


class PairioComputeClientComputeSlot(_Model):
    """What a compute client can run: jobs between the min* and max values, multiplicity at once."""

    numCpus: int = Field(ge=1, le=MAX_NUM_CPUS)
    numGpus: int = Field(ge=0, le=MAX_NUM_GPUS)
    memoryGb: float = Field(gt=0, le=MAX_MEMORY_GB, allow_inf_nan=False)
    timeSec: float = Field(gt=0, le=MAX_TIME_SEC, allow_inf_nan=False)
    minNumCpus: int = Field(default=0, ge=0, le=MAX_NUM_CPUS)
    minNumGpus: int = Field(default=0, ge=0, le=MAX_NUM_GPUS)
    minMemoryGb: float = Field(default=0, ge=0, le=MAX_MEMORY_GB, allow_inf_nan=False)
    minTimeSec: float = Field(default=0, ge=0, le=MAX_TIME_SEC, allow_inf_nan=False)
    multiplicity: int = Field(default=1, ge=1, le=10_000)

    @model_validator(mode="after")
    def _min_below_max(self) -> "PairioComputeClientComputeSlot":
        for field in ("numCpus", "numGpus", "memoryGb", "timeSec"):
            low = getattr(self, "min" + field[0].upper() + field[1:])
            if low > getattr(self, field):
                raise _cross_field_error(f"compute slot min{field[0].upper() + field[1:]} is larger than {field}")
        return self

    def fits(self, r: PairioJobRequiredResources) -> bool:
        return (
            self.minNumCpus <= r.numCpus <= self.numCpus
            and self.minNumGpus <= r.numGpus <= self.numGpus
            and self.minMemoryGb <= r.memoryGb <= self.memoryGb
            and self.minTimeSec <= r.timeSec <= self.timeSec
        )


class PairioBridgeInfo(_ReadModel):
    """Where and how a compute client's bridge runs, as the bridge last reported it (hub REST only, not the wire protocol)."""

    host: str = Field(description="the host name of the machine the bridge runs on")
    backend: str = Field(description="where its jobs run: local, slurm or ssh")
    remoteHost: Optional[str] = Field(default=None, description="ssh, or slurm over ssh: the host jobs are sent to")
    containerMode: str = Field(description="how processors start: none (the app's command), podman, docker or apptainer")
    apps: Optional[list[str]] = Field(
        default=None, description="container mode none: the apps it has a command for (it claims only their jobs); null: any app with an image"
    )
    version: str = Field(description="the bridge's pairio version")
    timestampReportedSec: float = Field(description="when the bridge last reported a change of these")


class PairioComputeClient(_ReadModel):
    computeClientId: str
    computeClientPrivateKey: Optional[str] = None
    serviceName: str
    label: str
    description: str = ""
    userId: str
    computeSlots: list[PairioComputeClientComputeSlot] = Field(default_factory=list)
    timestampCreatedSec: float
    timestampLastActiveSec: Optional[float] = None
    bridgeInfo: Optional[PairioBridgeInfo] = Field(default=None, description="null until its bridge reports itself (older bridges and the original compute client never do)")


# ---------------------------------------------------------------- jobs


class PairioJobData(_ReadModel):
    """A job as the hub returns it (the wire protocol's Job shape, plus ``events``)."""

    jobId: str
    jobPrivateKey: Optional[str] = None
    serviceName: str
    userId: str
    batchId: Optional[str] = None
    tags: list[str] = Field(default_factory=list)
    jobDefinition: PairioJobDefinition
    jobDefinitionHash: str
    jobDependencies: list[str] = Field(default_factory=list)
    requiredResources: PairioJobRequiredResources
    targetComputeClientIds: Optional[list[str]] = None
    secrets: Optional[list[PairioJobSecret]] = None
    inputFileUrlList: list[str] = Field(default_factory=list)
    outputFileUrlList: list[str] = Field(default_factory=list)
    outputFileResults: list[PairioJobOutputFileResult] = Field(default_factory=list)
    consoleOutputUrl: str
    resourceUtilizationLogUrl: str
    timestampCreatedSec: float
    timestampStartingSec: Optional[float] = None
    timestampStartedSec: Optional[float] = None
    timestampFinishedSec: Optional[float] = None
    canceled: bool = False
    status: JobStatus
    isRunnable: bool
    error: Optional[str] = None
    computeClientId: Optional[str] = None
    computeClientName: Optional[str] = None
    computeClientUserId: Optional[str] = None
    imageUri: Optional[str] = None
    imageDigest: Optional[str] = None
    """the resolved digest (``sha256:...``) of the image the job's container ran, once its bridge reported it"""
