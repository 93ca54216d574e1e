"""UI: the playground. Pick a processor, fill in a form made from its spec, submit, see the Python that does the same."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Any, Mapping, Optional
from urllib.parse import unquote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from pydantic import ValidationError

from pairio.models import (
    PairioApp,
    PairioAppProcessor,
    PairioAppProcessorParameter,
    PairioJobDefinition,
    PairioJobRequiredResources,
)
from pairio.names import check_file_base_name, check_tag

from ..core import accounts
from ..core import jobs as core
from ..deps import Ctx, DbSession
from ..errors import HubError, NotFound
from .auth import FormFields, OptionalViewer, require_viewer
from .common import router, see_other
from .render import render

DEFAULT_RESOURCES = {"numCpus": "1", "numGpus": "0", "memoryGb": "1", "timeSec": "3600"}


@dataclass
class Choice:
    """The service, app and processor picked so far, with what can be picked next."""

    services: list[str]
    service: str = ""
    apps: list[str] = field(default_factory=list)
    app: Optional[PairioApp] = None
    processor: Optional[PairioAppProcessor] = None


def _choose(s: DbSession, params: Mapping[str, str], user_id: Optional[str]) -> Choice:
    services = [x.service_name for x in accounts.list_services(s, user_id)] if user_id else []
    if not services:
        services = [x.service_name for x in accounts.list_services(s)]
    choice = Choice(services=services, service=params.get("service", ""))
    if choice.service not in services:
        choice.service = services[0] if len(services) == 1 else ""
    if not choice.service:
        return choice
    choice.apps = [a.app_name for a in accounts.list_apps(s, choice.service)]
    app_name = params.get("app", "") or (choice.apps[0] if len(choice.apps) == 1 else "")
    if app_name in choice.apps:
        choice.app = PairioApp.model_validate(accounts.get_app(s, choice.service, app_name).spec)
        name = params.get("processor", "") or (choice.app.processors[0].name if len(choice.app.processors) == 1 else "")
        choice.processor = choice.app.get_processor(name)
    return choice


# ---------------------------------------------------------------- form values -> a job


def field_value(p: PairioAppProcessorParameter) -> str:
    """A parameter's default as the form shows it."""
    if p.default is None:
        return ""
    if isinstance(p.default, bool):
        return "true" if p.default else "false"
    if isinstance(p.default, list):
        return json.dumps(p.default)
    return str(p.default)


def _scalar(text: str, type_name: str, where: str) -> Any:
    if type_name == "str":
        return text
    if type_name == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a whole number") from None
    if type_name == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a number") from None
    if type_name == "bool":
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{where}: choose true or false")
    raise ValueError(f"{where}: unknown type {type_name}")


def parse_parameter(p: PairioAppProcessorParameter, text: str) -> tuple[bool, Any]:
    """(given, value) of a parameter's form field; an empty field leaves the default (or null when optional)."""
    where = f"parameter {p.name}"
    if p.type.startswith("Optional["):
        if text.strip() == "":
            return True, None
        return True, _scalar(text.strip(), p.type[9:-1], where)
    if p.type.startswith("List["):
        inner = p.type[5:-1]
        stripped = text.strip()
        if stripped == "":
            return (True, []) if p.required else (False, None)
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except ValueError:
                raise ValueError(f"{where}: not a JSON list") from None
            if not isinstance(items, list):
                raise ValueError(f"{where}: not a JSON list")
            return True, items  # typed by JSON already; the hub checks them against the spec
        return True, [_scalar(x.strip(), inner, where) for x in stripped.split(",") if x.strip()]
    if p.type == "str":
        return True, text
    if text.strip() == "":
        if p.required:
            raise ValueError(f"{where} is required")
        return False, None
    return True, _scalar(text.strip(), p.type, where)


def _input_file_name(url: str, fallback: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    try:
        return check_file_base_name(name)
    except ValueError:
        return fallback


@dataclass
class Submission:
    definition: Optional[dict[str, Any]]
    resources: dict[str, Any]
    tags: list[str]
    skip_cache: bool
    errors: list[str]


def parse_submission(processor: PairioAppProcessor, app_name: str, fields: Mapping[str, str]) -> Submission:
    errors: list[str] = []
    parameters = []
    for p in processor.parameters:
        try:
            given, value = parse_parameter(p, fields.get(f"p.{p.name}", field_value(p)))
        except ValueError as e:
            errors.append(str(e))
            continue
        if given:
            parameters.append({"name": p.name, "value": value})
    inputs = []
    for i in processor.inputs:
        url = fields.get(f"in.{i.name}.url", "").strip()
        if not url:
            errors.append(f"input {i.name} needs a URL (an http(s) URL, e.g. another job's output)")
            continue
        file_name = fields.get(f"in.{i.name}.file", "").strip() or _input_file_name(url, i.name)
        inputs.append({"name": i.name, "fileBaseName": file_name, "url": url})
    outputs = [{"name": o.name, "fileBaseName": fields.get(f"out.{o.name}.file", "").strip() or o.name} for o in processor.outputs]
    definition = {"appName": app_name, "processorName": processor.name, "inputFiles": inputs, "outputFiles": outputs, "parameters": parameters}
    try:
        PairioJobDefinition.model_validate(definition)
    except ValidationError as e:
        errors.extend(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
    resources: dict[str, Any] = {}
    for name, default in DEFAULT_RESOURCES.items():
        text = fields.get(f"r.{name}", default).strip() or default
        try:
            resources[name] = int(text) if name in ("numCpus", "numGpus") else float(text)
        except ValueError:
            errors.append(f"{name}: {text!r} is not a number")
    if len(resources) == len(DEFAULT_RESOURCES):
        try:
            PairioJobRequiredResources.model_validate(resources)
        except ValidationError as e:
            errors.extend(f"{err['loc'][0]}: {err['msg']}" for err in e.errors())
    tags = [t.strip() for t in fields.get("tags", "").split(",") if t.strip()]
    for t in tags:
        try:
            check_tag(t)
        except ValueError as e:
            errors.append(str(e))
    return Submission(definition, resources, tags, fields.get("skipCache", "") in ("on", "true", "1"), errors)


def python_code(service: str, sub: Submission, secret_names: Collection[str] = ()) -> str:
    """The ``submit_job`` call that submits what the form describes (secret parameters' values left out)."""
    d = sub.definition or {}
    names = ["PairioJobDefinition"] + (["PairioJobInputFile"] if d.get("inputFiles") else []) + (
        ["PairioJobOutputFile"] if d.get("outputFiles") else []) + (["PairioJobParameter"] if d.get("parameters") else [])
    lines = ["from pairio import (", f"    {', '.join(names)},", "    PairioJobRequiredResources, submit_job,", ")", ""]
    lines += [f"# fix first: {e}" for e in sub.errors]
    lines += [
        "job = submit_job(",
        f"    service_name={service!r},",
        "    job_definition=PairioJobDefinition(",
        f"        appName={d.get('appName', '')!r}, processorName={d.get('processorName', '')!r},",
    ]
    if d.get("inputFiles"):
        lines.append("        inputFiles=[")
        for f in d["inputFiles"]:
            lines += [
                f"            PairioJobInputFile(name={f['name']!r}, fileBaseName={f['fileBaseName']!r},",
                f"                               url={f['url']!r}),",
            ]
        lines.append("        ],")
    if d.get("outputFiles"):
        lines.append("        outputFiles=[")
        lines += [f"            PairioJobOutputFile(name={f['name']!r}, fileBaseName={f['fileBaseName']!r})," for f in d["outputFiles"]]
        lines.append("        ],")
    if d.get("parameters"):
        lines.append("        parameters=[")
        lines += [
            f"            PairioJobParameter(name={p['name']!r}, value=...),  # secret: put its value here"
            if p["name"] in secret_names else f"            PairioJobParameter(name={p['name']!r}, value={p['value']!r}),"
            for p in d["parameters"]
        ]
        lines.append("        ],")
    lines.append("    ),")
    r = sub.resources
    lines += [
        "    required_resources=PairioJobRequiredResources(",
        f"        numCpus={r.get('numCpus', 1)!r}, numGpus={r.get('numGpus', 0)!r}, memoryGb={r.get('memoryGb', 1.0)!r}, timeSec={r.get('timeSec', 3600.0)!r},",
        "    ),",
    ]
    if sub.tags:
        lines.append(f"    tags={sub.tags!r},")
    if sub.skip_cache:
        lines.append("    skip_cache=True,")
    lines += [")", "print(job.job_url)", "job.wait_until_done()"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- routes


def _page(request: Request, s: DbSession, viewer: Any, values: Mapping[str, str], *, errors: Optional[list[str]] = None, status_code: int = 200) -> HTMLResponse:
    choice = _choose(s, values, viewer.user_id if viewer else None)
    code = None
    if choice.processor is not None and choice.app is not None:
        code = python_code(choice.service, parse_submission(choice.processor, choice.app.name, values), _secret_names(choice.processor))
    can_submit = bool(viewer and choice.service and accounts.roles_of(s, choice.service, viewer.user_id).create_jobs)
    return render(
        request, "submit.html", viewer=viewer, choice=choice, values=values, field_value=field_value, code=code,
        errors=errors or [], resources=DEFAULT_RESOURCES, can_submit=can_submit, status_code=status_code, title="Submit a job",
    )


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request, s: DbSession, viewer: OptionalViewer) -> HTMLResponse:
    return _page(request, s, viewer, dict(request.query_params))


@router.get("/submit/code", response_class=PlainTextResponse)
def submit_code(request: Request, s: DbSession, viewer: OptionalViewer) -> PlainTextResponse:
    """The Python for the form's current values (the playground's script asks as the user types)."""
    values = dict(request.query_params)
    choice = _choose(s, values, viewer.user_id if viewer else None)
    if choice.processor is None or choice.app is None:
        raise NotFound("choose a service, an app and a processor")
    return PlainTextResponse(python_code(choice.service, parse_submission(choice.processor, choice.app.name, values), _secret_names(choice.processor)))


def _secret_names(processor: PairioAppProcessor) -> set[str]:
    return {p.name for p in processor.parameters if p.secret}


@router.post("/submit")
def submit(request: Request, ctx: Ctx, s: DbSession, viewer: OptionalViewer, fields: FormFields) -> Any:
    user = require_viewer(s, request, fields)
    choice = _choose(s, fields, user.user_id)
    if choice.processor is None or choice.app is None:
        return _page(request, s, viewer, fields, errors=["choose a service, an app and a processor"], status_code=400)
    sub = parse_submission(choice.processor, choice.app.name, fields)
    if sub.errors or sub.definition is None:
        return _page(request, s, viewer, fields, errors=sub.errors, status_code=400)
    try:
        job, created = core.create_job(ctx, s, user.user_id, core.JobCreate(
            serviceName=choice.service, jobDefinition=PairioJobDefinition.model_validate(sub.definition),
            requiredResources=PairioJobRequiredResources.model_validate(sub.resources), tags=sub.tags, skipCache=sub.skip_cache,
        ))
    except HubError as e:  # raised before anything was written
        return _page(request, s, viewer, fields, errors=[e.message], status_code=e.status_code)
    redirect: RedirectResponse = see_other(f"/job/{job.job_id}", "submitted" if created else "cached")
    return redirect
