"""OpenAPI 3.1 from an app's route table (`routes.Route`), with the same pydantic models the
routes validate and answer with; internal routes are left out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from axiom_shared.errors import ErrorBody
from axiom_shared.routes import Route


def path_param(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


def header_param(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 257},
    }


_ERROR_TEXT = {
    400: "malformed request",
    401: "missing or wrong credentials",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    413: "body too large",
    415: "body is not JSON",
    422: "invalid field",
    429: "rate limited",
    503: "a dependency is unavailable; retry",
}


def build_openapi(routes: Iterable[Route], title: str, version: str) -> dict[str, Any]:
    operations = [route for route in routes if not route.internal]
    # Bodies are documented as they are validated, answers as they are serialized.
    wanted: set[tuple[type[BaseModel], JsonSchemaMode]] = {(ErrorBody, "serialization")}
    for op in operations:
        if op.body:
            wanted.add((op.body, "validation"))
        wanted.update((m, "serialization") for m in op.responses.values() if m is not None)
    refs, schemas = models_json_schema(
        sorted(wanted, key=lambda pair: (pair[0].__name__, pair[1])),
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        for status, model in sorted(op.responses.items()):
            if status in op.response_docs:
                responses[str(status)] = dict(op.response_docs[status])
                continue
            if model is None:
                responses[str(status)] = {"description": _ERROR_TEXT.get(status, "no body")}
                continue
            schema: dict[str, Any] = dict(refs[(model, "serialization")])
            if op.array_response and status < 300:
                schema = {"type": "array", "items": schema}
            description = "success" if status < 300 else _ERROR_TEXT.get(status, "error")
            responses[str(status)] = {
                "description": description,
                "content": {"application/json": {"schema": schema}},
            }
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()}_{op.path}".replace("/", "_")
            .replace("{", "")
            .replace("}", ""),
            "responses": responses,
        }
        if op.tags:
            entry["tags"] = list(op.tags)
        if op.parameters:
            entry["parameters"] = [dict(parameter) for parameter in op.parameters]
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": dict(refs[(op.body, "validation")])}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {})},
    }


def errors(*statuses: int) -> dict[int, type[BaseModel] | None]:
    """Error answers in the one error format, for a route's `responses`."""
    return dict.fromkeys(statuses, ErrorBody)


#: What a JSON body can be refused with before its handler runs.
BODY_ERRORS = (400, 413, 415, 422)
