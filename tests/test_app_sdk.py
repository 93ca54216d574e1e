"""The app SDK: spec generation, ``pairio make-app-spec``, and processors run from a job file in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, List, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from pairio.app import App, InputFile, OutputFile, ProcessorBase, ProcessorDefinitionError
from pairio.jobfile import JOB_FILE_ENV, JOB_FILE_NAME, PairioJobFile, PairioJobFileInput, PairioJobFileOutput
from pairio.models import PairioApp, PairioJobRequiredResources

REPO = Path(__file__).resolve().parent.parent
HELLO_WORLD_DIR = REPO / "apps" / "hello_world"
HELLO_WORLD_MAIN = HELLO_WORLD_DIR / "main.py"
RESOURCES = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=1, timeSec=60)


# ---------------------------------------------------------------- spec generation (in-process)


class EveryKindContext(BaseModel):
    recording: InputFile = Field(description="the recording")
    extra_files: List[InputFile] = Field(description="any number of extra files")
    result: OutputFile = Field(description="the result")
    label: str = Field(description="a label")
    count: int = Field(description="how many", default=3)
    ratio: float = Field(default=0.5)
    verbose: bool = False
    channels: List[int] = Field(description="channel ids", default_factory=lambda: [1, 2])
    names: list[str] = Field(default=["a"])
    threshold: Optional[float] = Field(description="none for automatic", default=None)
    method: Literal["fast", "slow"] = Field(description="how", default="fast")
    level: int = Field(default=1, json_schema_extra={"options": [1, 2, 3]})
    token: str = Field(default="", json_schema_extra={"secret": True})


class EveryKind(ProcessorBase):
    name = "every_kind"
    description = "uses every kind of field"
    label = "Every kind"
    image = "ghcr.io/example/every:1"
    attributes = {"wip": True, "category": "test"}
    tags = ["demo"]

    @staticmethod
    def run(context: EveryKindContext) -> None:
        pass


def spec_of(*processors: type[ProcessorBase], **app_kwargs: Any) -> PairioApp:
    app = App("test_app", description="for tests", **app_kwargs)
    for p in processors:
        app.add_processor(p)
    return app.get_spec()


def test_spec_has_inputs_outputs_parameters_and_attributes() -> None:
    spec = spec_of(EveryKind, executable="/app/main.py", image="ignored:because-the-processor-sets-one")
    (p,) = spec.processors
    assert (p.name, p.description, p.label, p.image, p.executable) == (
        "every_kind", "uses every kind of field", "Every kind", "ghcr.io/example/every:1", "/app/main.py")
    assert [(i.name, i.list, i.description) for i in p.inputs] == [
        ("recording", False, "the recording"), ("extra_files", True, "any number of extra files")]
    assert [(o.name, o.description) for o in p.outputs] == [("result", "the result")]
    params = {x.name: x for x in p.parameters}
    assert list(params) == ["label", "count", "ratio", "verbose", "channels", "names", "threshold", "method", "level", "token"]
    assert {n: x.type for n, x in params.items()} == {
        "label": "str", "count": "int", "ratio": "float", "verbose": "bool", "channels": "List[int]", "names": "List[str]",
        "threshold": "Optional[float]", "method": "str", "level": "int", "token": "str"}
    assert {n: x.default for n, x in params.items()} == {
        "label": None, "count": 3, "ratio": 0.5, "verbose": False, "channels": [1, 2], "names": ["a"],
        "threshold": None, "method": "fast", "level": 1, "token": ""}
    assert [n for n, x in params.items() if x.required] == ["label"]
    assert params["method"].options == ["fast", "slow"] and params["level"].options == [1, 2, 3]
    assert params["count"].options is None
    assert params["token"].secret and not params["count"].secret
    assert params["count"].description == "how many" and params["ratio"].description == ""
    assert [(a.name, a.value) for a in p.attributes] == [("wip", True), ("category", "test")]
    assert p.tags == ["demo"]


def test_processor_image_and_executable_default_to_the_apps() -> None:
    class Plain(ProcessorBase):
        name = "plain"

        @staticmethod
        def run(context: BaseModel) -> None:
            pass

    (p,) = spec_of(Plain, image="ghcr.io/example/app:2", executable="/app/main.py").processors
    assert (p.image, p.executable, p.inputs, p.outputs, p.parameters) == ("ghcr.io/example/app:2", "/app/main.py", [], [], [])


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (dict, "type dict is not allowed"),
        (List[OutputFile], "lists of output files are not supported"),
        (List[List[int]], "is not allowed"),
        (Optional[List[List[int]]], "is not allowed"),  # Optional[List[int]] is allowed, as in the original SDK
    ],
)
def test_unsupported_field_types_are_refused_when_the_processor_is_added(annotation: Any, message: str) -> None:
    context_model = type("BadContext", (BaseModel,), {"__annotations__": {"x": annotation}})

    def run(context: Any) -> None:
        pass

    run.__annotations__ = {"context": context_model}  # a class made here cannot be named in a string annotation
    Bad = type("Bad", (ProcessorBase,), {"name": "bad", "run": staticmethod(run)})
    with pytest.raises(ProcessorDefinitionError, match=message) as raised:
        App("a").add_processor(Bad)
    assert "BadContext.x" in str(raised.value)


def test_processor_definition_mistakes_say_how_to_fix_them() -> None:
    class NoName(ProcessorBase):
        @staticmethod
        def run(context: BaseModel) -> None:
            pass

    class NotStatic(ProcessorBase):
        name = "not_static"

        def run(self, context: BaseModel) -> None:  # type: ignore[override]
            pass

    class NoHint(ProcessorBase):
        name = "no_hint"

        @staticmethod
        def run(context) -> None:  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(ProcessorDefinitionError, match="needs a 'name' class attribute"):
        App("a").add_processor(NoName)
    with pytest.raises(ProcessorDefinitionError, match="@staticmethod"):
        App("a").add_processor(NotStatic)
    with pytest.raises(ProcessorDefinitionError, match="pydantic BaseModel type hint"):
        App("a").add_processor(NoHint)
    app = App("a")
    app.add_processor(EveryKind)
    with pytest.raises(ProcessorDefinitionError, match="already has a processor named 'every_kind'"):
        app.add_processor(EveryKind)
    with pytest.raises(ProcessorDefinitionError, match="invalid app name"):
        App("no spaces allowed")


# ---------------------------------------------------------------- pairio make-app-spec


def run_pairio(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pairio.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_make_app_spec_reproduces_the_committed_hello_world_spec(tmp_path: Path) -> None:
    output = tmp_path / "spec.json"
    result = run_pairio("make-app-spec", "--app-dir", str(HELLO_WORLD_DIR), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "processors: hello_world_1, hello_world_2, count_characters" in result.stdout
    text = output.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "name": "hello_world"')
    assert json.loads(text) == json.loads((HELLO_WORLD_DIR / "spec.json").read_text())
    spec = PairioApp.model_validate_json(text)
    count = spec.get_processor("count_characters")
    assert count is not None and [(x.name, x.type, x.default) for x in count.parameters] == [("include_whitespace", "bool", True)]


def test_make_app_spec_writes_into_the_app_dir_by_default(tmp_path: Path) -> None:
    write_app(tmp_path, "")
    result = run_pairio("make-app-spec", "--app-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    spec = PairioApp.model_validate_json((tmp_path / "spec.json").read_text())
    assert spec.name == "test_app" and [p.name for p in spec.processors] == ["greet", "raises", "forgets_output", "copy"]


def test_make_app_spec_errors_are_clear(tmp_path: Path) -> None:
    result = run_pairio("make-app-spec", "--app-dir", str(tmp_path))
    assert result.returncode != 0 and "main.py does not exist" in result.stderr

    (tmp_path / "main.py").write_text("raise RuntimeError('broken at import')\n")
    result = run_pairio("make-app-spec", "--app-dir", str(tmp_path))
    assert result.returncode != 0 and "failed with exit code 1" in result.stderr and "broken at import" in result.stderr

    (tmp_path / "main.py").write_text("print('I forgot app.run()')\n")
    result = run_pairio("make-app-spec", "--app-dir", str(tmp_path))
    assert result.returncode != 0 and "wrote no spec" in result.stderr and "app.run()" in result.stderr
    assert not (tmp_path / "spec.json").exists()


# ---------------------------------------------------------------- running jobs from a job file


TEST_APP = '''
from typing import List
from pydantic import BaseModel, Field
from pairio.app import App, InputFile, OutputFile, ProcessorBase

app = App("test_app", executable="/app/main.py")

class GreetContext(BaseModel):
    times: int = Field(default=1)
    shout: bool = False

class Greet(ProcessorBase):
    name = "greet"
    @staticmethod
    def run(context: GreetContext) -> None:
        for _ in range(context.times):
            print("hi!" if context.shout else "hi")

class RaisesContext(BaseModel):
    output: OutputFile

class Raises(ProcessorBase):
    name = "raises"
    @staticmethod
    def run(context: RaisesContext) -> None:
        print("about to fail")
        raise ValueError("the data is corrupt")

class ForgetsOutputContext(BaseModel):
    output: OutputFile
    other: OutputFile

class ForgetsOutput(ProcessorBase):
    name = "forgets_output"
    @staticmethod
    def run(context: ForgetsOutputContext) -> None:
        open("o.txt", "w").write("x")
        context.output.upload("o.txt")

class CopyContext(BaseModel):
    parts: List[InputFile]
    output: OutputFile

class Copy(ProcessorBase):
    name = "copy"
    @staticmethod
    def run(context: CopyContext) -> None:
        text = ""
        for i, part in enumerate(context.parts):
            local = part.download(f"downloaded/{i}.txt")
            text += open(local).read()
        open("joined.txt", "w").write(text)
        context.output.upload("joined.txt")

for p in (Greet, Raises, ForgetsOutput, Copy):
    app.add_processor(p)
'''


def write_app(app_dir: Path, extra: str) -> Path:
    main = app_dir / "main.py"
    main.write_text(TEST_APP + textwrap.dedent(extra) + "\nif __name__ == '__main__':\n    app.run()\n")
    return main


def make_job_dir(
    jobs_dir: Path,
    app_name: str,
    processor_name: str,
    inputs: Optional[dict[str, tuple[str, str]]] = None,
    outputs: Optional[dict[str, str]] = None,
    parameters: Optional[dict[str, Any]] = None,
) -> Path:
    """A job directory as a bridge lays it out; inputs map name -> (fileBaseName, content), outputs name -> fileBaseName."""
    job_dir = jobs_dir / f"job-{processor_name}"
    (job_dir / "work").mkdir(parents=True)
    staged: list[PairioJobFileInput] = []
    for name, (base, content) in (inputs or {}).items():
        path = job_dir / "inputs" / name / base
        path.parent.mkdir(parents=True)
        path.write_text(content)
        staged.append(PairioJobFileInput(name=name, fileBaseName=base, url=f"https://example.org/{name}/{base}", path=str(path)))
    PairioJobFile(
        jobId=job_dir.name,
        serviceName="svc",
        appName=app_name,
        processorName=processor_name,
        inputs=staged,
        outputs=[
            PairioJobFileOutput(name=name, fileBaseName=base, path=str(job_dir / "outputs" / name / base))
            for name, base in (outputs or {}).items()
        ],
        parameters=parameters or {},
        requiredResources=RESOURCES,
        workingDir=str(job_dir / "work"),
    ).write(job_dir / JOB_FILE_NAME)
    return job_dir


def run_job(main: Path, job_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, JOB_FILE_ENV: str(job_dir / JOB_FILE_NAME)}
    env.pop("PAIRIO_APP_SPEC_OUTPUT", None)
    return subprocess.run(
        [sys.executable, str(main)], cwd=job_dir / "work", env=env, capture_output=True, text=True, timeout=60
    )


def test_hello_world_1_prints_the_greeting(tmp_path: Path) -> None:
    result = run_job(HELLO_WORLD_MAIN, make_job_dir(tmp_path, "hello_world", "hello_world_1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n"

    named = run_job(HELLO_WORLD_MAIN, make_job_dir(tmp_path / "2", "hello_world", "hello_world_1", parameters={"name": "Ada"}))
    assert named.returncode == 0 and named.stdout == "Hello, Ada!\n"


def test_hello_world_2_writes_its_output_file(tmp_path: Path) -> None:
    job_dir = make_job_dir(tmp_path, "hello_world", "hello_world_2", outputs={"output": "output.txt"}, parameters={"name": "world"})
    result = run_job(HELLO_WORLD_MAIN, job_dir)
    assert result.returncode == 0, result.stderr
    assert (job_dir / "outputs" / "output" / "output.txt").read_text() == "Hello, world!"
    assert not (job_dir / "work" / "output.txt").exists()  # moved, not copied


@pytest.mark.parametrize(("include_whitespace", "expected"), [(True, 13), (False, 12)])
def test_count_characters_counts_its_input(tmp_path: Path, include_whitespace: bool, expected: int) -> None:
    job_dir = make_job_dir(
        tmp_path, "hello_world", "count_characters",
        inputs={"input": ("input.txt", "Hello, world!")}, outputs={"output": "output.json"},
        parameters={"include_whitespace": include_whitespace},
    )
    result = run_job(HELLO_WORLD_MAIN, job_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads((job_dir / "outputs" / "output" / "output.json").read_text()) == {"num_characters": expected}
    assert (job_dir / "inputs" / "input" / "input.txt").read_text() == "Hello, world!"  # the staged file is left alone


def test_count_characters_uses_the_default_parameter_when_the_job_file_has_none(tmp_path: Path) -> None:
    job_dir = make_job_dir(tmp_path, "hello_world", "count_characters",
                           inputs={"input": ("input.txt", "a b")}, outputs={"output": "output.json"})
    assert run_job(HELLO_WORLD_MAIN, job_dir).returncode == 0
    assert json.loads((job_dir / "outputs" / "output" / "output.json").read_text()) == {"num_characters": 3}


def test_parameters_from_the_job_file_reach_the_processor(tmp_path: Path) -> None:
    main = write_app(tmp_path, "")
    result = run_job(main, make_job_dir(tmp_path / "jobs", "test_app", "greet", parameters={"times": 2, "shout": True}))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi!\nhi!\n"


def test_list_inputs_arrive_in_index_order(tmp_path: Path) -> None:
    main = write_app(tmp_path, "")
    job_dir = make_job_dir(
        tmp_path / "jobs", "test_app", "copy",
        inputs={"parts.10": ("c.txt", "C"), "parts.2": ("b.txt", "B"), "parts.0": ("a.txt", "A")},
        outputs={"output": "joined.txt"},
    )
    result = run_job(main, job_dir)
    assert result.returncode == 0, result.stderr
    assert (job_dir / "outputs" / "output" / "joined.txt").read_text() == "ABC"


def test_a_processor_that_raises_fails_with_its_traceback(tmp_path: Path) -> None:
    main = write_app(tmp_path, "")
    result = run_job(main, make_job_dir(tmp_path / "jobs", "test_app", "raises", outputs={"output": "o.txt"}))
    assert result.returncode != 0
    assert "about to fail" in result.stdout
    assert "Traceback" in result.stderr and "ValueError: the data is corrupt" in result.stderr
    assert "processor 'raises' raised an exception" in result.stderr


def test_an_output_not_produced_fails_the_job_naming_it(tmp_path: Path) -> None:
    main = write_app(tmp_path, "")
    job_dir = make_job_dir(tmp_path / "jobs", "test_app", "forgets_output", outputs={"output": "o.txt", "other": "other.txt"})
    result = run_job(main, job_dir)
    assert result.returncode != 0
    assert "without producing output(s) 'other'" in result.stderr and "'output'" not in result.stderr
    assert (job_dir / "outputs" / "output" / "o.txt").read_text() == "x"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"times": "3"}, "parameter 'times': Input should be a valid integer, got '3' (str)"),
        ({"shout": 1}, "parameter 'shout': Input should be a valid boolean, got 1 (int)"),
        ({"volume": 11}, "has no parameter 'volume' (parameters: times, shout)"),
    ],
)
def test_bad_parameters_in_the_job_file_fail_with_a_clear_message(tmp_path: Path, parameters: dict[str, Any], message: str) -> None:
    main = write_app(tmp_path, "")
    result = run_job(main, make_job_dir(tmp_path / "jobs", "test_app", "greet", parameters=parameters))
    assert result.returncode != 0
    assert "pairio: cannot run the job:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_job_file_that_does_not_fit_the_app_is_refused(tmp_path: Path) -> None:
    main = write_app(tmp_path, "")
    wrong_app = run_job(main, make_job_dir(tmp_path / "a", "other_app", "greet"))
    assert wrong_app.returncode != 0 and "the job file is for app 'other_app', but this is app 'test_app'" in wrong_app.stderr
    unknown = run_job(main, make_job_dir(tmp_path / "b", "test_app", "nope"))
    assert unknown.returncode != 0 and "has no processor 'nope' (processors: greet, raises, forgets_output, copy)" in unknown.stderr
    no_output = run_job(main, make_job_dir(tmp_path / "c", "test_app", "raises"))
    assert no_output.returncode != 0 and "produces output 'output', but the job file has none" in no_output.stderr


def test_main_without_a_job_file_prints_usage(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (JOB_FILE_ENV, "PAIRIO_APP_SPEC_OUTPUT")}
    result = subprocess.run([sys.executable, str(HELLO_WORLD_MAIN)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "PAIRIO_JOB_FILE" in result.stderr and "make-app-spec" in result.stderr



class FetchContext(BaseModel):
    url: str = Field(description="What to fetch", default="")


class Fetch(ProcessorBase):
    name = "fetch"
    description = "Reads a remote file"
    needs_network = True

    @staticmethod
    def run(context: FetchContext) -> None:
        pass


def test_a_processor_that_needs_the_network_says_so_in_its_spec() -> None:
    app = App(name="net_app", description="", image="img", executable="/app/main.py")
    app.add_processor(Fetch)
    spec = app.get_spec()
    assert spec.processors[0].needsNetwork is True
    assert PairioApp.model_validate(json.loads(spec.model_dump_json())).processors[0].needsNetwork is True
