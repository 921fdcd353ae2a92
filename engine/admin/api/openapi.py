"""The OpenAPI 3.1 document, generated from the route table and the pydantic models (JSON Schema
2020-12 is OpenAPI 3.1's dialect, which is what pydantic emits), and a docs page that renders it
with no script from elsewhere."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from engine.admin.api.models import ErrorOut
from engine.admin.api.routing import Route

REF = "#/components/schemas/{model}"
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 400: "Malformed JSON",
               401: "Missing, unknown, revoked or expired token", 403: "The token lacks the scope",
               404: "No such resource in this tenant", 409: "Conflict", 413: "Body too large",
               422: "Invalid input: errors lists each bad field's path", 429: "Rate limited (see Retry-After)",
               503: "The broker is unavailable: try again"}  # fmt: skip


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_list) of a response annotation: a model or list[model]."""
    if get_origin(annotation) is list:
        return get_args(annotation)[0], True
    return annotation, False


def _schemas(routes: list[Route]) -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorOut, "serialization")]
    for r in routes:
        if r.body is not None:
            wanted.append((r.body, "validation"))
        model, _ = _model_of(r.response)
        if model is not None:
            wanted.append((model, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template=REF)
    return {(m, mode): ref for (m, mode), ref in refs.items()}, top.get("$defs", {})  # type: ignore[misc]


def _parameters(route: Route, defs: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in route.path_params:
        kind = {"type": "integer", "minimum": 1} if name == "version" else {"type": "string", "format": "uuid"}
        params.append({"name": name, "in": "path", "required": True, "schema": kind})
    if route.query is not None:
        schema: dict[str, Any] = route.query.model_json_schema(ref_template=REF)
        defs.update(schema.pop("$defs", {}))
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(route: Route, refs: dict[Any, dict[str, Any]], defs: dict[str, Any]) -> dict[str, Any]:
    error_ref = refs[(ErrorOut, "serialization")]
    op: dict[str, Any] = {
        "operationId": re.sub(r"\W+", "_", f"{route.method.lower()}{route.path}").strip("_"),
        "summary": route.summary,
        "tags": [route.tag],
        "description": f"Scopes: {' or '.join(route.scopes)}.",
        "x-scopes": list(route.scopes),
        "parameters": _parameters(route, defs),
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": _content(refs[(route.body, "validation")])}
    model, is_list = _model_of(route.response)
    ok: dict[str, Any] = {"description": STATUS_TEXT.get(route.status, "OK")}
    if model is not None:
        schema = refs[(model, "serialization")]
        ok["content"] = _content({"type": "array", "items": schema} if is_list else schema)
    responses: dict[str, Any] = {str(route.status): ok}
    errors = {401, 403, 429, *route.errors}
    if route.body is not None:
        errors |= {400, 413, 422}
    if route.query is not None:
        errors.add(422)
    for status in sorted(errors):
        response: dict[str, Any] = {"description": STATUS_TEXT[status], "content": _content(error_ref)}
        if status == 429:
            response["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        responses[str(status)] = response
    op["responses"] = responses
    return op


def document(routes: list[Route], version: str = "1.0.0") -> dict[str, Any]:
    refs, defs = _schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, defs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conversation engine admin API",
            "version": version,
            "description": "Configure a tenant's bots, channels and brain; read conversations; answer as an agent. "
            "Every call needs `Authorization: Bearer <token>` (`engine token create`).",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an API token"}},
        },
    }


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Admin API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;margin-top:2em}.op{margin:.6em 0;padding:.5em .8em;border-left:4px solid #888;
background:#fafafa}.m{font:bold 13px monospace;display:inline-block;width:4.5em}.GET{border-color:#2a7}
.POST{border-color:#27c}.PUT{border-color:#c80}.PATCH{border-color:#a5c}.DELETE{border-color:#c33}
code,pre{font:13px monospace}pre{background:#f3f3f3;padding:.6em;overflow:auto;max-height:22em}
details summary{cursor:pointer}small{color:#666}
</style></head><body>
<h1>Admin API</h1>
<p>The machine-readable document: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).
Every call needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>
<div id="api">Loading...</div>
<script>
fetch("openapi.json").then(r => r.json()).then(doc => {
  const out = document.getElementById("api"); out.textContent = "";
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text) e.textContent = text;
    if (cls) e.className = cls; return e; };
  const byTag = {};
  for (const [path, ops] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(ops))
    (byTag[op.tags[0]] = byTag[op.tags[0]] || []).push([method.toUpperCase(), path, op]);
  for (const [tag, ops] of Object.entries(byTag)) {
    out.appendChild(el("h2", tag));
    for (const [method, path, op] of ops) {
      const box = el("div", null, "op " + method);
      box.appendChild(el("span", method, "m")); box.appendChild(el("code", doc.servers[0].url + path));
      box.appendChild(el("div", op.summary + " (" + op.description + ")"));
      const params = (op.parameters || []).map(p => p.name + " (" + p.in + (p.required ? ", required" : "") + ")");
      if (params.length) box.appendChild(el("small", "Parameters: " + params.join(", ")));
      const codes = Object.keys(op.responses).join(", ");
      box.appendChild(el("div", null)).appendChild(el("small", "Responses: " + codes));
      if (op.requestBody) { const d = el("details"); d.appendChild(el("summary", "Request body"));
        d.appendChild(el("pre", JSON.stringify(op.requestBody.content["application/json"].schema, null, 1)));
        box.appendChild(d); }
      out.appendChild(box);
    }
  }
  const d = el("details"); d.appendChild(el("summary", "Schemas"));
  d.appendChild(el("pre", JSON.stringify(doc.components.schemas, null, 1))); out.appendChild(d);
});
</script></body></html>
"""
