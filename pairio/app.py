"""The app SDK: an ``App`` holds processors; ``app.run()`` in ``main.py`` writes its spec or runs a job.

    from pydantic import BaseModel, Field
    from pairio.app import App, ProcessorBase, InputFile, OutputFile

    class CountContext(BaseModel):
        input: InputFile = Field(description="a text file")
        output: OutputFile = Field(description="JSON with the count")

    class Count(ProcessorBase):
        name = "count"

        @staticmethod
        def run(context: CountContext) -> None:
            ...

    app = App("counter", description="counts things")
    app.add_processor(Count)
    if __name__ == "__main__":
        app.run()

``app.run()`` looks at the environment:

- ``PAIRIO_APP_SPEC_OUTPUT``: write the app's spec as JSON to that path
  (what ``pairio make-app-spec`` does); ``SPEC_OUTPUT_FILE``, the original Pairio's
  variable, does the same;
- ``PAIRIO_JOB_FILE``: run the job that job file describes (what a bridge does). Inputs are
  already on disk and outputs go where the job file says, so a processor needs no network.
  A processor that raises, or leaves a declared output unproduced, makes the process exit
  non-zero with the reason on stderr, and the bridge fails the job with that text.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn, Optional

from pydantic import BaseModel, ValidationError

from .jobfile import JOB_FILE_ENV, PairioJobFile, PairioJobFileInput
from .models import PairioApp
from .names import check_name
from .processor import (
    ContextFields,
    InputFile,
    OutputFile,
    ProcessorBase,
    ProcessorDefinitionError,
    get_dotted,
    processor_spec,
    set_dotted,
)

APP_SPEC_OUTPUT_ENV = "PAIRIO_APP_SPEC_OUTPUT"
# What the original Pairio's 'make-app-spec-file' sets; it gets the same spec, 4-space indented as there.
ORIGINAL_SPEC_OUTPUT_ENV = "SPEC_OUTPUT_FILE"
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2

__all__ = [
    "App",
    "ProcessorBase",
    "InputFile",
    "OutputFile",
    "ProcessorDefinitionError",
    "JobSetupError",
    "APP_SPEC_OUTPUT_ENV",
]


class JobSetupError(Exception):
    """The job file does not fit this app (wrong app, unknown processor, bad parameters...)."""


class App:
    def __init__(
        self,
        name: Optional[str] = None,
        *,
        description: str = "",
        version: str = "",
        image: str = "",
        executable: str = "",
        app_name: Optional[str] = None,
        app_image: Optional[str] = None,
        app_executable: Optional[str] = None,
    ) -> None:
        """``image`` and ``executable`` are the defaults for processors that do not set their own.

        ``app_name``, ``app_image`` and ``app_executable`` are the original Pairio SDK's
        names for ``name``, ``image`` and ``executable``, so its apps run unchanged.
        """
        if name is not None and app_name is not None and name != app_name:
            raise ProcessorDefinitionError(f"App() got name {name!r} and app_name {app_name!r}; give one of them")
        chosen = name if name is not None else app_name
        if chosen is None:
            raise ProcessorDefinitionError("App() needs the app's name, as in App('my_app', description='...')")
        try:
            self.name = check_name(chosen, "app name")
        except ValueError as e:
            raise ProcessorDefinitionError(str(e)) from None
        self.description = description
        self.version = version
        self.image = image or app_image or ""
        self.executable = executable or app_executable or ""
        self._processors: dict[str, type[ProcessorBase]] = {}

    def add_processor(self, processor: type[ProcessorBase]) -> None:
        spec = processor_spec(processor)  # checks the class now, where the mistake is, not at job time
        if spec.name in self._processors:
            raise ProcessorDefinitionError(f"app {self.name!r} already has a processor named {spec.name!r}")
        self._processors[spec.name] = processor

    @property
    def processor_names(self) -> list[str]:
        return list(self._processors)

    def get_spec(self) -> PairioApp:
        return PairioApp(
            name=self.name,
            description=self.description,
            version=self.version,
            processors=[processor_spec(p, self.image, self.executable) for p in self._processors.values()],
        )

    def run(self) -> None:
        """Entry point of ``main.py``: write the spec or run a job, depending on the environment."""
        spec_output = os.environ.get(APP_SPEC_OUTPUT_ENV)
        if spec_output:
            Path(spec_output).write_text(self.get_spec().model_dump_json(indent=2) + "\n")
            return
        original_spec_output = os.environ.get(ORIGINAL_SPEC_OUTPUT_ENV)
        if original_spec_output:
            Path(original_spec_output).write_text(self.get_spec().model_dump_json(indent=4) + "\n")
            return
        job_file = os.environ.get(JOB_FILE_ENV)
        if job_file:
            sys.exit(run_job(self, Path(job_file)))
        self._exit_with_usage()

    def _exit_with_usage(self) -> NoReturn:
        print(
            f"This is the Pairio app {self.name!r} (processors: {', '.join(self._processors) or 'none'}).\n"
            "It is run by a bridge, not by hand:\n"
            f"  {JOB_FILE_ENV}=/path/to/job.json python main.py   runs the job that job file describes\n"
            "  pairio make-app-spec --app-dir DIR                    writes DIR/spec.json",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)

    def _processor(self, name: str) -> type[ProcessorBase]:
        processor = self._processors.get(name)
        if processor is None:
            raise JobSetupError(
                f"app {self.name!r} has no processor {name!r} (processors: {', '.join(self._processors) or 'none'}); "
                "is the spec the hub holds out of date with main.py? Regenerate it with 'pairio make-app-spec'"
            )
        return processor


# ---------------------------------------------------------------- running a job


def run_job(app: App, job_file_path: Path) -> int:
    """Run the job a job file describes; the exit status for the process (0 when it succeeded)."""
    try:
        job = _read_job_file(job_file_path)
        if job.appName != app.name:
            raise JobSetupError(f"the job file is for app {job.appName!r}, but this is app {app.name!r}")
        processor = app._processor(job.processorName)
        fields = ContextFields.of(processor)
        context = _build_context(fields, job, where=f"{app.name}/{processor.name}")
        working_dir = Path(job.workingDir)
        working_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(working_dir)
    except JobSetupError as e:
        print(f"pairio: cannot run the job: {e}", file=sys.stderr)
        return EXIT_JOB_FAILED

    try:
        processor.run(context)
    except Exception:
        sys.stdout.flush()  # keep the console in order: what the processor printed, then the traceback
        traceback.print_exc()
        print(f"pairio: processor {processor.name!r} raised an exception (traceback above)", file=sys.stderr)
        return EXIT_JOB_FAILED
    sys.stdout.flush()

    missing = [get_dotted(context, name) for name in fields.outputs if not get_dotted(context, name).was_produced]
    if missing:
        listed = ", ".join(f"{o.name!r} (expected at {o.path})" for o in missing)
        print(
            f"pairio: processor {processor.name!r} finished without producing output(s) {listed}; "
            "call context.<output>.upload(local_path) for every output",
            file=sys.stderr,
        )
        return EXIT_JOB_FAILED
    return 0


def _read_job_file(path: Path) -> PairioJobFile:
    try:
        return PairioJobFile.read(path)
    except FileNotFoundError:
        raise JobSetupError(f"job file {str(path)!r} (from ${JOB_FILE_ENV}) does not exist") from None
    except ValidationError as e:
        raise JobSetupError(f"job file {str(path)!r} is not a valid Pairio job file: {e}") from None


def _build_context(fields: ContextFields, job: PairioJobFile, where: str) -> BaseModel:
    values: dict[str, Any] = {}
    for name in fields.inputs:
        entry = job.input(name)
        if entry is None:
            raise JobSetupError(f"{where} needs input {name!r}, but the job file has none; add it to the job's inputFiles")
        set_dotted(values, name, _input_file(entry, job))
    for name in fields.list_inputs:
        set_dotted(values, name, [_input_file(entry, job) for entry in _list_input_entries(job, name)])
    for name in fields.outputs:
        output = job.output(name)
        if output is None:
            raise JobSetupError(f"{where} produces output {name!r}, but the job file has none; add it to the job's outputFiles")
        set_dotted(values, name, OutputFile(name=output.name, file_base_name=output.fileBaseName, path=output.path, job_id=job.jobId))

    unknown = sorted(set(job.parameters) - set(fields.parameters))
    if unknown:
        raise JobSetupError(
            f"{where} has no parameter {unknown[0]!r} (parameters: {', '.join(fields.parameters) or 'none'}); "
            "is the spec the hub holds out of date with main.py? Regenerate it with 'pairio make-app-spec'"
        )
    for name, value in job.parameters.items():
        set_dotted(values, name, value)  # 'outer.inner' goes into the nested model 'outer'
    try:
        # Strict, like the hub's own check: "3" is not an int and 1 is not a bool.
        return fields.model.model_validate(values, strict=True)
    except ValidationError as e:
        raise JobSetupError(_describe_validation_error(e, where)) from None


def _input_file(entry: PairioJobFileInput, job: PairioJobFile) -> InputFile:
    return InputFile(
        name=entry.name, file_base_name=entry.fileBaseName, url=entry.url, path=entry.path, job_id=job.jobId,
        lazy=job.inputStaging == "lazy", cache_dir=job.cacheDir,
    )


def _list_input_entries(job: PairioJobFile, name: str) -> list[PairioJobFileInput]:
    """The items of a list input: named ``name``, ``name.<index>`` or ``name[<index>]`` (the original's form), in index order."""
    item_name = re.compile(rf"^{re.escape(name)}(?:\.(\d+)|\[(\d+)\])?$")
    indexed: list[tuple[int, PairioJobFileInput]] = []
    for entry in job.inputs:
        m = item_name.match(entry.name)
        if m:
            index = m.group(1) or m.group(2)
            indexed.append((int(index) if index else -1, entry))
    return [entry for _, entry in sorted(indexed, key=lambda pair: pair[0])]


def _describe_validation_error(error: ValidationError, where: str) -> str:
    problems: list[str] = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        given: Optional[str] = None if item["type"] == "missing" else f"{item.get('input')!r} ({type(item.get('input')).__name__})"
        problems.append(f"parameter {location!r}: {item['msg']}" + (f", got {given}" if given else ""))
    return f"the job's parameters do not fit {where}: " + "; ".join(problems) + "; fix them in the job definition"
