"""The original Pairio's users, apps and spec files on our package and hub (issue 12, points 1-3).

The peer is the original client and SDK themselves, ``pairio==0.5.9`` from PyPI, in
``.venv-original`` (scripts/ensure-original-pairio.sh): it generates spec files from
``tests/data/original_sdk_app``, an app written against its API, and submits jobs with its
``submit_job``. The same app runs on our SDK through a real hub and a real local bridge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.core.accounts import parse_app_spec
from hub.core.definition import app_fingerprint, job_definition_hash, normalize_job_definition, spec_hash
from hub.errors import BadRequest
from pairio.models import PairioApp, PairioJobDefinition

from . import test_bridge_e2e as e2e
from .test_bridge_e2e import PAIRIO, Stack, public_get

hub = e2e.hub
stack = e2e.stack

REPO = Path(__file__).resolve().parent.parent
APP_DIR = REPO / "tests" / "data" / "original_sdk_app"
ORIGINAL_VENV = REPO / ".venv-original"


@pytest.fixture(scope="module")
def original_bin() -> Path:
    """The bin folder of the venv holding pairio==0.5.9; CI must have it, elsewhere its absence skips."""
    python = ORIGINAL_VENV / "bin" / "python"
    found = python.is_file() and subprocess.run(
        [str(python), "-I", "-c", "import importlib.metadata as m, sys; sys.exit(m.version('pairio') != '0.5.9')"], check=False
    ).returncode == 0
    if not found:
        message = f"pairio==0.5.9 is not installed in {ORIGINAL_VENV}; run scripts/ensure-original-pairio.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python.parent


def original_env(original_bin: Path, **extra: str) -> dict[str, str]:
    # Its python runs isolated (-I) where it could see this checkout's own pairio package in the working directory.
    # The original's make-app-spec-file runs 'python main.py': its own venv's python must come first.
    return {**os.environ, "PATH": f"{original_bin}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def spec_from_original_sdk(original_bin: Path, out: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(original_bin / "pairio"), "make-app-spec-file", "--app-dir", str(APP_DIR), "--spec-output-file", str(out)],
        capture_output=True, text=True, timeout=120, check=False, env=original_env(original_bin),
    )
    assert out.is_file(), f"the original SDK wrote no spec:\n{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text())


def spec_from_our_sdk(out: Path, *, command: str = "make-app-spec-file") -> dict[str, Any]:
    option = "--spec-output-file" if command == "make-app-spec-file" else "--output"
    result = subprocess.run(
        PAIRIO + [command, "--app-dir", str(APP_DIR), option, str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"pairio {command} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text())


# ---------------------------------------------------------------- point 1: import paths


def test_the_originals_import_paths_work() -> None:
    import pairio
    from pairio.client import (  # noqa: F401
        PairioJobDefinition,
        PairioJobInputFile,
        PairioJobOutputFile,
        PairioJobParameter,
        PairioJobRequiredResources,
        submit_job,
    )
    from pairio.sdk import App, BaseModel, Field, InputFile, OutputFile, ProcessorBase, upload_additional_job_output  # noqa: F401

    assert pairio.BaseModel is BaseModel and pairio.Field is Field and isinstance(pairio.__version__, str)
    # our own names stay
    from pairio import PairioClient  # noqa: F401
    from pairio import submit_job as our_submit_job
    from pairio.app import App as OurApp

    assert OurApp is App and our_submit_job is submit_job


def test_upload_additional_job_output_says_what_to_do_instead(tmp_path: Path) -> None:
    from pairio.sdk import upload_additional_job_output

    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(RuntimeError, match="declare an OutputFile field"):
        upload_additional_job_output(str(tmp_path / "x.txt"), "extra/x.txt")


# ---------------------------------------------------------------- point 2: the original SDK's API on ours


def test_spec_output_file_makes_main_py_write_its_spec(tmp_path: Path) -> None:
    out = tmp_path / "spec.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PAIRIO_APP_SPEC_OUTPUT", "PAIRIO_JOB_FILE")}
    result = subprocess.run(
        [sys.executable, str(APP_DIR / "main.py")], env={**env, "SPEC_OUTPUT_FILE": str(out)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith('{\n    "name": "original_style"')
    assert json.loads(out.read_text()) == spec_from_our_sdk(tmp_path / "ours.json")


def test_input_and_output_files_answer_the_original_sdk_calls(tmp_path: Path) -> None:
    from pairio.sdk import InputFile, OutputFile

    staged = tmp_path / "staged.txt"
    staged.write_text("abc")
    f = InputFile(name="x", file_base_name="a.txt", url="https://example.org/a.txt", path=str(staged), job_id="j1")
    assert (f.get_url(), f.is_local(), f.get_local_file_name(), f.local_file_name) == (
        "https://example.org/a.txt", True, str(staged), str(staged))
    f.download(dest_file_path=str(tmp_path / "copy.txt"))
    assert (tmp_path / "copy.txt").read_text() == "abc"
    assert f.download(str(staged)) == str(staged)  # already there: nothing to copy

    out = OutputFile(name="y", file_base_name="y.txt", path=str(tmp_path / "outputs" / "y" / "y.txt"))
    assert not out.was_uploaded and out.size is None
    local = tmp_path / "local.txt"
    local.write_text("first")
    out.upload(str(local), delete_local_file=False)
    assert local.read_text() == "first" and out.was_uploaded
    local.write_text("second")
    out.upload(str(local))  # the default deletes the local file, as the original's does; a repeat overwrites
    assert not local.exists() and Path(out.path).read_text() == "second"


def test_app_takes_the_original_constructor_arguments() -> None:
    from pairio.sdk import App

    app = App(app_name="a1", description="d", app_image="img:1", app_executable="/app/main.py")
    assert (app.name, app.description, app.image, app.executable) == ("a1", "d", "img:1", "/app/main.py")
    with pytest.raises(TypeError, match="give one of them"):
        App("a1", app_name="a2")


def test_the_original_style_app_runs_from_a_job_file_with_list_elements_and_nested_parameters(tmp_path: Path) -> None:
    from .test_app_sdk import make_job_dir, run_job

    job_dir = make_job_dir(
        tmp_path, "original_style", "summarize",
        inputs={"texts[1]": ("greeting.txt", "bb"), "texts[0]": ("greeting.txt", "a")},
        outputs={"summary": "summary.json"},
        parameters={"repeat": 3, "channels": [4], "threshold": None, "options.label": "L", "options.scale": 2.0},
    )
    result = run_job(APP_DIR / "main.py", job_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads((job_dir / "outputs" / "summary" / "summary.json").read_text()) == {
        "counts": [6.0, 12.0], "label": "L", "channels": [4], "threshold": None}
    assert (job_dir / "work" / "summary.json").exists(), "upload(..., delete_local_file=False) keeps the local file"


# ---------------------------------------------------------------- points 2 and 3: the same spec from both SDKs


def test_both_sdks_make_specs_that_register_as_the_same_app(original_bin: Path, tmp_path: Path) -> None:
    original = spec_from_original_sdk(original_bin, tmp_path / "original.json")
    ours_file_form = spec_from_our_sdk(tmp_path / "ours.json")
    ours = spec_from_our_sdk(tmp_path / "ours-2.json", command="make-app-spec")
    assert (tmp_path / "ours.json").read_text().startswith('{\n    "name"'), "make-app-spec-file indents by 4, as the original"
    assert ours_file_form == ours

    # The original's schema as it is: defaultValue, no required flags, attributes, list: true.
    summarize = next(p for p in original["processors"] if p["name"] == "summarize")
    assert {p["name"]: p.get("defaultValue") for p in summarize["parameters"]} == {
        "repeat": None, "channels": [1, 2], "threshold": None, "options.label": None, "options.scale": 1.0}
    assert summarize["inputs"] == [{"name": "texts", "description": "Text files to summarize", "list": True}]

    from_original, from_ours = parse_app_spec(original), parse_app_spec(ours)
    assert from_original == from_ours
    assert spec_hash(from_original) == spec_hash(from_ours)
    params = {p.name: p for p in from_original.get_processor("summarize").parameters}  # type: ignore[union-attr]
    # The original's rule: no default, required; an Optional parameter without one takes null.
    assert {n: p.required for n, p in params.items()} == {
        "repeat": True, "channels": False, "threshold": False, "options.label": True, "options.scale": False}
    assert [(a.name, a.value) for a in from_original.get_processor("summarize").attributes] == [  # type: ignore[union-attr]
        ("wip", True), ("label", "Summarize")]


def validate_and_hash(app: PairioApp, definition: dict[str, Any]) -> str:
    normalized = normalize_job_definition(app, PairioJobDefinition.model_validate(definition))
    return job_definition_hash(normalized, app_fingerprint(app, normalized.processorName))


def test_both_spec_forms_validate_and_hash_jobs_alike(original_bin: Path, tmp_path: Path) -> None:
    apps = [
        PairioApp.model_validate(spec_from_original_sdk(original_bin, tmp_path / "original.json")),
        PairioApp.model_validate(spec_from_our_sdk(tmp_path / "ours.json")),
    ]
    base = {
        "appName": "original_style", "processorName": "summarize",
        "inputFiles": [{"name": "texts[0]", "fileBaseName": "a.txt", "url": "https://example.org/a.txt"}],
        "outputFiles": [{"name": "summary", "fileBaseName": "summary.json"}],
    }
    good = {**base, "parameters": [{"name": "repeat", "value": 2}, {"name": "options.label", "value": "x"}]}
    hashes = {validate_and_hash(app, good) for app in apps}
    assert len(hashes) == 1
    # Missing a parameter without default, or giving a wrong type: refused by both, with the same message.
    for parameters, message in [
        ([{"name": "options.label", "value": "x"}], "needs parameter 'repeat'"),
        ([{"name": "repeat", "value": "2"}, {"name": "options.label", "value": "x"}], "must be of type int"),
        ([{"name": "repeat", "value": 2}, {"name": "options.label", "value": "x"}, {"name": "nope", "value": 1}], "no parameter 'nope'"),
    ]:
        errors = set()
        for app in apps:
            with pytest.raises(BadRequest, match=message) as raised:
                validate_and_hash(app, {**base, "parameters": parameters})
            errors.add(str(raised.value))
        assert len(errors) == 1, errors


def test_a_spec_with_both_default_and_defaultValue_is_refused() -> None:
    spec = {"name": "a", "description": "", "processors": [{
        "name": "p", "description": "", "label": "", "image": "", "executable": "", "inputs": [], "outputs": [],
        "attributes": [], "parameters": [{"name": "x", "type": "int", "description": "", "default": 1, "defaultValue": 2}],
    }]}
    with pytest.raises(BadRequest, match="both 'default' and 'defaultValue'"):
        parse_app_spec(spec)


# ---------------------------------------------------------------- end to end: real hub, real local bridge


def test_an_original_style_app_runs_on_our_sdk_with_its_original_spec_and_the_original_client(
    original_bin: Path, stack: Stack
) -> None:
    spec_file = stack.tmp_path / "spec.json"
    spec_from_original_sdk(original_bin, spec_file)
    original_spec = json.loads(spec_file.read_text())
    # The REST call that adds apps takes the original's form too...
    put = httpx.put(
        f"{stack.hub.url}/v1/services/{stack.service}/apps/original_style", json=original_spec,
        headers={"Authorization": f"Bearer {stack.key}"}, timeout=30,
    )
    assert put.status_code == 200, put.text
    registered = put.json()["appSpecification"]
    assert registered == parse_app_spec(original_spec).model_dump(mode="json"), "stored in our one spec model"
    # ... and so does pairio admin add-app, with the file as the original SDK wrote it.
    stack.hub.admin("add-app", stack.service, str(spec_file))
    stack.register("--app", f"original_style={sys.executable} {APP_DIR / 'main.py'}")
    stack.bridge.start()

    # A user's script written for the original client, run by the original client, against our hub.
    submit = subprocess.run(
        [str(original_bin / "python"), "-I", "-c", ORIGINAL_SUBMIT], capture_output=True, text=True, timeout=60, check=False,
        env=original_env(original_bin, PAIRIO_API_URL=stack.hub.url, PAIRIO_API_KEY=stack.key, SERVICE=stack.service),
    )
    assert submit.returncode == 0, f"the original client's submit_job failed:\n{submit.stdout}\n{submit.stderr}"
    greet_id, greeting_url, first_summary_id = submit.stdout.split()
    greet = stack.wait_done(stack.client.get_job(greet_id), 60)
    assert greet.status.value == "completed", (greet.error, stack.bridge.log)
    assert public_get(greeting_url).text == "Hello, Pairio!"
    first_summary = stack.wait_done(stack.client.get_job(first_summary_id), 60)
    assert first_summary.status.value == "completed", (first_summary.error, stack.bridge.log)
    assert first_summary.jobDependencies == [greet_id]
    assert json.loads(public_get(first_summary.get_output("summary")).text)["counts"] == [14.0]

    # A list input named as the original names its elements, and nested (dotted) parameters.
    summarize = stack.client.submit_job(stack.service, {
        "appName": "original_style", "processorName": "summarize",
        "inputFiles": [
            {"name": "texts[0]", "fileBaseName": "greeting.txt", "url": greeting_url},
            {"name": "texts[1]", "fileBaseName": "greeting.txt", "url": greeting_url},
        ],
        "outputFiles": [{"name": "summary", "fileBaseName": "summary.json"}],
        "parameters": [{"name": "repeat", "value": 2}, {"name": "options.label", "value": "twice"}],
    }, {"numCpus": 1, "numGpus": 0, "memoryGb": 0.5, "timeSec": 60})
    summarize = stack.wait_done(summarize, 60)
    assert summarize.status.value == "completed", (summarize.error, stack.bridge.log)
    assert json.loads(public_get(summarize.get_output("summary")).text) == {
        "counts": [28.0, 28.0], "label": "twice", "channels": [1, 2], "threshold": None}
    assert "summarized 2 files" in public_get(summarize.consoleOutputUrl).text


ORIGINAL_SUBMIT = """
import os
from pairio.client import (
    submit_job, PairioJobDefinition, PairioJobRequiredResources, PairioJobInputFile, PairioJobOutputFile, PairioJobParameter,
)
job = submit_job(
    service_name=os.environ['SERVICE'],
    job_definition=PairioJobDefinition(
        appName='original_style', processorName='greet', inputFiles=[],
        outputFiles=[PairioJobOutputFile(name='greeting', fileBaseName='greeting.txt')],
        parameters=[PairioJobParameter(name='name', value='Pairio')],
    ),
    required_resources=PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=60),
)
# A list input element named as the original names them, fed by the first job's output.
summary = submit_job(
    service_name=os.environ['SERVICE'],
    job_definition=PairioJobDefinition(
        appName='original_style', processorName='summarize',
        inputFiles=[PairioJobInputFile(name='texts[0]', fileBaseName='greeting.txt', url=job.get_output('greeting'))],
        outputFiles=[PairioJobOutputFile(name='summary', fileBaseName='summary.json')],
        parameters=[PairioJobParameter(name='repeat', value=1), PairioJobParameter(name='options.label', value='one')],
    ),
    required_resources=PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=60),
)
print(job.jobId, job.get_output('greeting').url, summary.jobId)
"""


def test_the_seeds_examples_run_with_the_original_client(original_bin: Path, stack: Stack) -> None:
    """examples/ as written (the original's imports), run by pairio==0.5.9's client against our hub."""
    from .test_bridge_examples import EXAMPLES, start_examples_stack

    start_examples_stack(stack)
    job_ids: list[str] = []
    for name in ("example1.py", "example2.py", "example3.py"):
        result = subprocess.run(
            [str(original_bin / "python"), "-I", str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, check=False,
            env=original_env(original_bin, PAIRIO_API_URL=stack.hub.url, PAIRIO_API_KEY=stack.key, PAIRIO_SERVICE_NAME=stack.service),
            cwd=stack.tmp_path,
        )
        assert result.returncode == 0, f"{name} on the original client failed:\n{result.stdout}\n{result.stderr}"
        # The original client prints its own hard-coded job page URL; the job id ends it.
        job_ids += [line.split()[0].rsplit("/", 1)[-1] for line in result.stdout.splitlines() if line.strip()]
    assert len(job_ids) == 4 and job_ids[2] == job_ids[1], "example3's first job is example2's: same definition, a cache hit"

    jobs = [stack.wait_done(stack.client.get_job(job_id), 60) for job_id in job_ids]
    assert [j.status.value for j in jobs] == ["completed"] * 4, ([j.error for j in jobs], stack.bridge.log)
    assert "Hello, world!" in public_get(jobs[0].consoleOutputUrl).text
    assert public_get(jobs[1].get_output("output")).text == "Hello, world!"
    assert jobs[3].jobDependencies == [jobs[1].jobId], "the original client names the dependency itself"
    assert json.loads(public_get(jobs[3].get_output("output")).text) == {"num_characters": 13}
