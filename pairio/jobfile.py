"""The job file: what a bridge writes into a job's directory and a processor reads.

A processor runs with ``PAIRIO_JOB_FILE`` pointing at this JSON file. With ``inputStaging``
"ahead" (the default) it needs no network: inputs are already staged on disk. With "lazy"
an input's file appears at its path only once the processor fetches it (the SDK's
``InputFile.download()``); its URL is there to read remotely. Outputs are written where it says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .models import PairioJobRequiredResources

JOB_FILE_ENV = "PAIRIO_JOB_FILE"
JOB_FILE_NAME = "job.json"


class PairioJobFileInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    fileBaseName: str
    url: str
    path: str = Field(description="absolute path of the staged file")


class PairioJobFileOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    fileBaseName: str
    path: str = Field(description="absolute path where the processor must leave the file")


class PairioJobFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobId: str
    serviceName: str
    appName: str
    processorName: str
    inputs: list[PairioJobFileInput] = Field(default_factory=list)
    outputs: list[PairioJobFileOutput] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    requiredResources: PairioJobRequiredResources
    workingDir: str = Field(description="absolute path the processor runs in")
    inputStaging: Literal["ahead", "lazy"] = Field(
        default="ahead",
        description="ahead: every input is at its path before the processor starts; lazy: an input is fetched to its "
        "path when the processor asks for a local copy (InputFile.download())",
    )
    cacheDir: Optional[str] = Field(default=None, description="lazy: the bridge's input cache, where the processor can see it")

    def to_json(self) -> str:
        # An ahead job's file has no staging fields, so processors of older SDKs still read it.
        lazy_fields = None if self.inputStaging == "lazy" else {"inputStaging", "cacheDir"}
        return self.model_dump_json(indent=2, exclude=lazy_fields)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> "PairioJobFile":
        return cls.model_validate_json(path.read_text())

    def input(self, name: str) -> Optional[PairioJobFileInput]:
        return next((i for i in self.inputs if i.name == name), None)

    def output(self, name: str) -> Optional[PairioJobFileOutput]:
        return next((o for o in self.outputs if o.name == name), None)
