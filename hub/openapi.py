"""The hub's OpenAPI document, its API pages served offline, and complete ``Allow`` headers on 405.

FastAPI's document describes the happy path only: it says 422 answers are a list of
objects (the hub answers ``{"detail": "<message>"}``) and leaves out 400, 401, 403,
404, 409 and 413. ``hub_openapi`` adds what each route can answer, from what the
route takes (a key, path parameters, a body, a method that changes something), with
one error model. The wire protocol (``POST /api/<callName>``) is one route in the
hub but is documented as one operation per call, each with its request body and
``{"error": "<message>"}`` answers (the original protocol's shape and codes).

/docs and /redoc load Swagger UI and ReDoc from the hub (the ``fastapi-offline``
package ships both, MIT licensed), so they work without internet access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pairio.names import FILE_BASE_NAME_SCHEMA, NAME_SCHEMA

DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
_REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """Every error of the REST API (and of the pages' JSON) has this shape."""

    detail: str = Field(description="what is wrong and how to fix it")


class WireErrorBody(BaseModel):
    """Errors of the original wire protocol (``/api/<callName>``)."""

    error: str = Field(description="what is wrong and how to fix it")


_WHY = {
    400: "the request breaks a rule the schema cannot express (a value the database cannot store, an unknown app or processor parameter, a bad cursor)",
    401: "no API key, or a key the hub does not know",
    403: "the key's user lacks the role this needs",
    404: "something the request names does not exist",
    409: "the request is valid but the current state forbids it",
    413: "the request body is larger than the hub's limit",
    422: "the request does not match this schema; the message says which field and why",
}
_WIRE_WHY = {
    400: "the body is not valid JSON, does not match the call's request, or the state forbids the call",
    401: "no API key, a key the hub does not know, or its user lacks the role this needs",
    404: "something the request names does not exist",
    413: "the request body is larger than the hub's limit",
    500: "the hub failed; its log has the details",
}


def error_statuses(method: str, op: dict[str, Any]) -> list[int]:
    """The error statuses an operation can answer, judged from what it takes (its parameters, body, key)."""
    params = op.get("parameters", [])
    changes = method not in ("get", "head")
    statuses = []
    if params or "requestBody" in op:
        statuses += [400, 422]
    if op.get("security"):
        statuses += [401, 403, 404]
    if any(p.get("in") == "path" for p in params) or changes:
        statuses.append(404)
    if changes:
        statuses += [409, 413]
    return sorted(set(statuses))


# Path parameters that are names, where every route refuses other values (400, or 404 since none can exist).
# (user_id is left out: removing a user who is not in a service is a harmless no-op, whatever the id.)
_PATH_NAME_SCHEMAS = {
    "service_name": NAME_SCHEMA, "app_name": NAME_SCHEMA, "output_name": NAME_SCHEMA,
    "file_base_name": FILE_BASE_NAME_SCHEMA,
}
# Bodies a route reads as raw JSON so that the core can say what is wrong; the schema is what it accepts.
_RAW_BODY_SCHEMAS = {("put", "/v1/services/{service_name}/apps/{app_name}"): "PairioApp"}


def _document_path_names(op: dict[str, Any]) -> None:
    for param in op.get("parameters", []):
        if param.get("in") == "path" and param["name"] in _PATH_NAME_SCHEMAS:
            param["schema"] = {**param.get("schema", {}), "type": "string", **_PATH_NAME_SCHEMAS[param["name"]]}


def _document_raw_bodies(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for (method, path), model in _RAW_BODY_SCHEMAS.items():
        op = doc["paths"].get(path, {}).get(method)
        if op is None:
            continue
        if model not in schemas and model + "-Input" in schemas:
            model += "-Input"
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}


def _error_response(description: str, model: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}


def hub_openapi(app: FastAPI, wire_calls: dict[str, type[BaseModel]]) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, WireErrorBody):
        schemas[model.__name__] = model.model_json_schema(ref_template=_REF)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in doc["paths"].items():
        if path.startswith("/api/"):
            continue
        for method, op in operations.items():
            _document_path_names(op)
            responses = op.setdefault("responses", {})
            for status in error_statuses(method, op):
                described = responses.get(str(status), {}).get("description")
                if described == "Validation Error":
                    described = None
                responses[str(status)] = _error_response(described or _WHY[status], "ErrorBody")
    _document_raw_bodies(doc)
    _document_wire_calls(doc, wire_calls)
    return doc


def _document_wire_calls(doc: dict[str, Any], wire_calls: dict[str, type[BaseModel]]) -> None:
    """One operation per call of ``POST /api/<callName>`` in place of the route's catch-all path."""
    generic = [p for p in doc["paths"] if p.startswith("/api/")]
    template = doc["paths"][generic[0]]["post"] if generic else {}
    for p in generic:
        del doc["paths"][p]
    keyed, defs = models_json_schema([(m, "validation") for m in wire_calls.values()], ref_template=_REF)
    schemas = doc["components"]["schemas"]
    for name, schema in defs.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    for call_name, model in sorted(wire_calls.items()):
        body_name = f"Wire{call_name[0].upper()}{call_name[1:]}Request"
        schema = dict(keyed[(model, "validation")])
        if "$ref" in schema:  # a model that is also a component: copy it, since 'type' is added
            schema = dict(schemas[schema["$ref"].rsplit("/", 1)[-1]])
        schema["properties"] = {"type": {"const": f"{call_name}Request", "type": "string"}, **schema.get("properties", {})}
        schema["required"] = ["type", *schema.get("required", [])]
        schema["title"] = body_name
        schemas[body_name] = schema
        responses: dict[str, Any] = {"200": {
            "description": f'{{"type": "{call_name}Response", ...}} as shared/docs/wire-protocol.md describes',
            "content": {"application/json": {"schema": {"type": "object", "required": ["type"], "properties": {
                "type": {"const": f"{call_name}Response", "type": "string"}}}}},
        }}
        for status, why in _WIRE_WHY.items():
            responses[str(status)] = _error_response(why, "WireErrorBody")
        doc["paths"][f"/api/{call_name}"] = {"post": {
            "tags": template.get("tags", ["wire protocol"]),
            "summary": f"{call_name} (original wire protocol)",
            "description": template.get("description", ""),
            "operationId": f"wire_{call_name}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model=body_name)}}}},
            "responses": responses,
        }}


# ---------------------------------------------------------------- 405 with every allowed method


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _route_table(routes: list[Any]) -> list[tuple[Any, str, set[str]]]:
    """(path regex, path template, methods) of every route, through included routers."""
    table: list[tuple[Any, str, set[str]]] = []
    for route in routes:
        if getattr(route, "methods", None) and getattr(route, "path_regex", None) is not None:
            table.append((route.path_regex, route.path, set(route.methods)))
        elif getattr(route, "original_router", None) is not None:  # FastAPI's included routers
            table += _route_table(route.original_router.routes)
    return table


def allowed_methods(app: FastAPI, scope: dict[str, Any]) -> list[str]:
    """The methods of the resource at this path (Starlette's 405 names only one route's methods).

    Where templates overlap ('/v1/jobs/delete' and '/v1/jobs/{job_id}') the resource is the most
    specific one, as in the OpenAPI document.
    """
    if not hasattr(app.state, "route_table"):
        app.state.route_table = _route_table(app.router.routes)
    path = scope["path"]
    templates: dict[str, set[str]] = {}
    for regex, template, methods in app.state.route_table:
        if regex.match(path):
            templates.setdefault(template, set()).update(methods)
    if not templates:  # routes of a kind we do not know: ask each route
        return [m for m in _METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in app.router.routes)]
    template = min(templates, key=lambda t: (t.count("{"), t))
    return sorted(templates[template])


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Starlette's HTTP errors (unknown path, wrong method) in the hub's error shape."""
    headers = dict(exc.headers or {})
    detail = str(exc.detail)
    if exc.status_code == 405:
        allow = allowed_methods(request.app, request.scope)
        headers["Allow"] = ", ".join(allow)
        detail = f"{request.method} is not allowed here; use {', '.join(allow)}"
    key = "error" if request.url.path.startswith("/api/") else "detail"
    return JSONResponse({key: detail}, status_code=exc.status_code, headers=headers)


# ---------------------------------------------------------------- the pages


def install_docs(app: FastAPI, wire_calls: dict[str, type[BaseModel]]) -> None:
    """/openapi.json, /docs and /redoc, with their scripts served by the hub."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hub_openapi(app, wire_calls)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(DOCS_ASSETS_DIR)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} · API",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png", oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title=f"{app.title} · API", redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False,
        )
