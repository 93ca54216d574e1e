"""Checking a job definition against its app's spec, filling defaults, and hashing it."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pairio.models import PairioApp, PairioAppProcessor, PairioAppProcessorParameter, PairioJobDefinition, PairioJobParameter

from ..errors import BadRequest

_LIST_ITEM_RE = re.compile(r"^(?P<base>.+)(?:\.(?P<index>\d+)|\[(?P<bracket_index>\d+)\])$")  # x.0, or x[0] as the original names them
_SCALAR_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
}


def value_has_type(value: Any, type_name: str) -> bool:
    if type_name.startswith("Optional["):
        return value is None or value_has_type(value, type_name[len("Optional[") : -1])
    if type_name.startswith("List["):
        inner = type_name[len("List[") : -1]
        return isinstance(value, list) and all(_SCALAR_CHECKS[inner](v) for v in value)
    return _SCALAR_CHECKS[type_name](value)


def _check_parameter(spec: PairioAppProcessorParameter, value: Any, where: str) -> None:
    if not value_has_type(value, spec.type):
        raise BadRequest(
            f"parameter {spec.name!r} of {where} must be of type {spec.type}, got {json.dumps(value)[:100]} "
            f"({type(value).__name__})"
        )
    if spec.options is not None and value not in spec.options:
        raise BadRequest(f"parameter {spec.name!r} of {where} must be one of {spec.options}, got {value!r}")


def normalize_job_definition(app: PairioApp, definition: PairioJobDefinition) -> PairioJobDefinition:
    """Check the definition against the processor's spec and return it with parameter defaults filled in.

    Raises BadRequest naming the first problem: unknown processor, missing or unknown
    inputs and outputs, unknown parameters, missing required ones, wrong types.
    """
    processor = app.get_processor(definition.processorName)
    if processor is None:
        known = ", ".join(p.name for p in app.processors) or "none"
        raise BadRequest(
            f"app {app.name!r} has no processor {definition.processorName!r} (processors: {known})"
        )
    where = f"{app.name}/{processor.name}"
    _check_inputs(processor, definition, where)
    _check_outputs(processor, definition, where)
    return definition.model_copy(update={"parameters": _checked_parameters(processor, definition, where)})


def _check_inputs(processor: PairioAppProcessor, definition: PairioJobDefinition, where: str) -> None:
    spec_inputs = {i.name: i for i in processor.inputs}
    given: set[str] = set()
    for f in definition.inputFiles:
        name = f.name
        m = _LIST_ITEM_RE.match(name)
        if name not in spec_inputs and m and m.group("base") in spec_inputs and spec_inputs[m.group("base")].list:
            name = m.group("base")
        if name not in spec_inputs:
            raise BadRequest(
                f"{where} has no input {f.name!r} (inputs: {', '.join(spec_inputs) or 'none'})"
            )
        given.add(name)
    missing = [n for n, spec in spec_inputs.items() if n not in given and not spec.list]
    if missing:
        raise BadRequest(f"{where} needs input file(s) {', '.join(repr(m) for m in missing)}; add them to inputFiles")


def _check_outputs(processor: PairioAppProcessor, definition: PairioJobDefinition, where: str) -> None:
    spec_outputs = {o.name for o in processor.outputs}
    given = {f.name for f in definition.outputFiles}
    unknown = given - spec_outputs
    if unknown:
        raise BadRequest(
            f"{where} has no output {sorted(unknown)[0]!r} (outputs: {', '.join(sorted(spec_outputs)) or 'none'})"
        )
    missing = spec_outputs - given
    if missing:
        raise BadRequest(
            f"{where} produces output(s) {', '.join(repr(m) for m in sorted(missing))}; "
            "add them to outputFiles with a fileBaseName"
        )


def _checked_parameters(
    processor: PairioAppProcessor, definition: PairioJobDefinition, where: str
) -> list[PairioJobParameter]:
    specs = {p.name: p for p in processor.parameters}
    given = {p.name: p for p in definition.parameters}
    unknown = set(given) - set(specs)
    if unknown:
        raise BadRequest(
            f"{where} has no parameter {sorted(unknown)[0]!r} (parameters: {', '.join(specs) or 'none'})"
        )
    result: list[PairioJobParameter] = []
    for name, spec in specs.items():
        if name in given:
            _check_parameter(spec, given[name].value, where)
            result.append(given[name])
        elif spec.required:
            raise BadRequest(f"{where} needs parameter {name!r} ({spec.type}): {spec.description}".rstrip(": "))
        else:
            result.append(PairioJobParameter(name=name, value=spec.default))
    return result


def app_fingerprint(app: PairioApp, processor_name: str) -> str:
    """What of the app goes into a job's hash: its version, or else the processor's runnable spec.

    A new release (new version, image or executable) then gives new hashes, so the
    cache never serves results computed by an older release. Descriptions do not count.
    """
    if app.version:
        return f"version:{app.version}"
    processor = app.get_processor(processor_name)
    assert processor is not None
    # originalSdk says how a bridge starts the image, not what it computes (and existing fingerprints stay as they were)
    runnable = processor.model_dump(exclude={"description", "label", "tags", "originalSdk"})
    for key in ("inputs", "outputs", "parameters"):
        for item in runnable[key]:
            item.pop("description", None)
    return "spec:" + _sha1(runnable)


def canonical_job_definition(definition: PairioJobDefinition) -> dict[str, Any]:
    """The definition with lists sorted by name and a null cacheBust left out."""
    d: dict[str, Any] = {
        "appName": definition.appName,
        "processorName": definition.processorName,
        "inputFiles": sorted((f.model_dump() for f in definition.inputFiles), key=lambda x: x["name"]),
        "outputFiles": sorted((f.model_dump() for f in definition.outputFiles), key=lambda x: x["name"]),
        "parameters": sorted((p.model_dump() for p in definition.parameters), key=lambda x: x["name"]),
    }
    if definition.cacheBust is not None:
        d["cacheBust"] = definition.cacheBust
    return d


def job_definition_hash(definition: PairioJobDefinition, fingerprint: str) -> str:
    return _sha1({"jobDefinition": canonical_job_definition(definition), "app": fingerprint})


def _sha1(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def spec_hash(app: PairioApp) -> str:
    return _sha1(app.model_dump())
