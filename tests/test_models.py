"""Unit tests of the shared models: validation messages, hashing, the status enum."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from hub.core.definition import app_fingerprint, canonical_job_definition, job_definition_hash, normalize_job_definition
from hub.errors import BadRequest
from pairio.models import (
    PairioApp,
    PairioComputeClientComputeSlot,
    PairioJobDefinition,
    PairioJobOutputFile,
    PairioJobParameter,
    PairioJobRequiredResources,
)
from pairio.status import TERMINAL_STATUSES, JobStatus, is_allowed_transition

from .hubtools import HELLO_WORLD_SPEC


def res(**kw: float) -> dict[str, float]:
    return {"numCpus": 1, "numGpus": 0, "memoryGb": 4, "timeSec": 60, **kw}


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (res(numCpus=0), "numCpus"),
        (res(numCpus=-1), "numCpus"),
        (res(numCpus=1.5), "numCpus"),
        (res(numGpus=-1), "numGpus"),
        (res(memoryGb=0), "memoryGb"),
        (res(memoryGb=math.inf), "memoryGb"),
        (res(memoryGb=math.nan), "memoryGb"),
        (res(memoryGb=1e12), "memoryGb"),
        (res(timeSec=0), "timeSec"),
        (res(timeSec=1e10), "timeSec"),
        (res(numCpus=10**9), "numCpus"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(bad: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValidationError) as e:
        PairioJobRequiredResources.model_validate(bad)
    assert fragment in str(e.value)


def test_resources_accept_integral_floats_from_json() -> None:
    r = PairioJobRequiredResources.model_validate(res(numCpus=2.0))
    assert r.numCpus == 2


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "x\x00y", "", "..", "a..b", "x" * 300, "tab\there"])
def test_file_base_name_path_tricks_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as e:
        PairioJobOutputFile(name="output", fileBaseName=name)
    assert "fileBaseName" in str(e.value)


@pytest.mark.parametrize("name", ["../etc", "a/b", "x y", "", "<script>", "a" * 101, "-rf"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as e:
        PairioJobDefinition(appName=name, processorName="p")
    assert "letters, digits" in str(e.value)


@pytest.mark.parametrize("value", [{"a": 1}, [{"a": 1}], math.nan, object()])
def test_parameter_values_are_json_scalars_or_lists(value: object) -> None:
    with pytest.raises(ValidationError):
        PairioJobParameter(name="p", value=value)


def test_unknown_fields_are_errors() -> None:
    with pytest.raises(ValidationError) as e:
        PairioJobDefinition.model_validate({"appName": "a", "processorName": "p", "inputfiles": []})
    assert "inputfiles" in str(e.value)


def test_duplicate_names_are_errors() -> None:
    with pytest.raises(ValidationError, match="duplicate parameter"):
        PairioJobDefinition(
            appName="a", processorName="p",
            parameters=[PairioJobParameter(name="x", value=1), PairioJobParameter(name="x", value=2)],
        )


def test_status_enum_terminal_set_and_transitions() -> None:
    assert TERMINAL_STATUSES == {JobStatus.COMPLETED, JobStatus.FAILED}
    assert JobStatus("running").is_terminal is False
    assert is_allowed_transition(JobStatus.PENDING, JobStatus.STARTING)
    assert is_allowed_transition(JobStatus.RUNNING, JobStatus.FAILED)
    assert not is_allowed_transition(JobStatus.COMPLETED, JobStatus.FAILED)
    assert not is_allowed_transition(JobStatus.FAILED, JobStatus.RUNNING)
    assert not is_allowed_transition(JobStatus.PENDING, JobStatus.COMPLETED)


def test_slot_fit_uses_min_and_max() -> None:
    slot = PairioComputeClientComputeSlot(numCpus=8, numGpus=1, memoryGb=32, timeSec=3600, minNumGpus=1)
    assert slot.fits(PairioJobRequiredResources(numCpus=4, numGpus=1, memoryGb=8, timeSec=60))
    assert not slot.fits(PairioJobRequiredResources(numCpus=4, numGpus=0, memoryGb=8, timeSec=60))
    assert not slot.fits(PairioJobRequiredResources(numCpus=16, numGpus=1, memoryGb=8, timeSec=60))
    with pytest.raises(ValidationError, match="minNumCpus is larger"):
        PairioComputeClientComputeSlot(numCpus=2, numGpus=0, memoryGb=1, timeSec=1, minNumCpus=4)


APP = PairioApp.model_validate(HELLO_WORLD_SPEC)


def definition(**kw: object) -> PairioJobDefinition:
    base: dict[str, object] = {"appName": "hello_world", "processorName": "hello_world_2",
                               "outputFiles": [{"name": "output", "fileBaseName": "output.txt"}]}
    return PairioJobDefinition.model_validate({**base, **kw})


def h(d: PairioJobDefinition, app: PairioApp = APP) -> str:
    n = normalize_job_definition(app, d)
    return job_definition_hash(n, app_fingerprint(app, n.processorName))


def test_hash_fills_defaults_and_ignores_order_and_null_cache_bust() -> None:
    assert h(definition()) == h(definition(parameters=[{"name": "name", "value": "world"}]))
    assert h(definition()) == h(definition(cacheBust=None))
    assert h(definition()) != h(definition(cacheBust="x"))
    assert h(definition()) != h(definition(parameters=[{"name": "name", "value": "you"}]))
    two = {"appName": "hello_world", "processorName": "typed"}
    a = PairioJobDefinition.model_validate({**two, "parameters": [{"name": "n", "value": 1}, {"name": "x", "value": 2.0}]})
    b = PairioJobDefinition.model_validate({**two, "parameters": [{"name": "x", "value": 2.0}, {"name": "n", "value": 1}]})
    assert h(a) == h(b)
    assert "cacheBust" not in canonical_job_definition(definition())


def test_hash_changes_with_a_new_app_release_but_not_with_descriptions() -> None:
    spec = dict(HELLO_WORLD_SPEC)
    described = PairioApp.model_validate({**spec, "description": "changed", "processors": [
        {**p, "description": "other words"} for p in spec["processors"]]})
    assert h(definition(), described) == h(definition())
    new_image = PairioApp.model_validate({**spec, "processors": [
        {**p, "image": "ghcr.io/x/hello:2"} for p in spec["processors"]]})
    assert h(definition(), new_image) != h(definition())
    versioned = PairioApp.model_validate({**spec, "version": "1.0"})
    versioned2 = PairioApp.model_validate({**spec, "version": "1.1"})
    assert h(definition(), versioned) != h(definition(), versioned2)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"processorName": "nope"}, "has no processor 'nope'"),
        ({"outputFiles": []}, "produces output(s) 'output'"),
        ({"outputFiles": [{"name": "output", "fileBaseName": "o.txt"}, {"name": "extra", "fileBaseName": "e.txt"}]}, "has no output 'extra'"),
        ({"inputFiles": [{"name": "input", "fileBaseName": "i.txt", "url": "https://x/y"}]}, "has no input 'input'"),
        ({"parameters": [{"name": "nme", "value": "x"}]}, "has no parameter 'nme'"),
        ({"parameters": [{"name": "name", "value": 3}]}, "must be of type str"),
    ],
)
def test_definition_checked_against_the_spec(kw: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest) as e:
        normalize_job_definition(APP, definition(**kw))
    assert message in e.value.message


def test_typed_parameters() -> None:
    def typed(**params: object) -> PairioJobDefinition:
        return PairioJobDefinition(appName="hello_world", processorName="typed",
                                   parameters=[PairioJobParameter(name=k, value=v) for k, v in params.items()])

    n = normalize_job_definition(APP, typed(n=3))
    assert {p.name: p.value for p in n.parameters} == {"n": 3, "x": 1.5, "flag": False, "names": [], "mode": "fast", "maybe": None}
    assert normalize_job_definition(APP, typed(n=3, x=2, names=["a"], maybe=4))
    for bad, msg in [({}, "needs parameter 'n'"), ({"n": True}, "type int"), ({"n": 1.5}, "type int"),
                     ({"n": 1, "flag": "yes"}, "type bool"), ({"n": 1, "names": [1]}, "type List[str]"),
                     ({"n": 1, "mode": "medium"}, "must be one of")]:
        with pytest.raises(BadRequest) as e:
            normalize_job_definition(APP, typed(**bad))
        assert msg in e.value.message
