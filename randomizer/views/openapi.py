"""The OpenAPI 3.1 description of /api/v1 (SPEC §4.2), generated, never written by hand.

Every path and method comes from the app's URL map; what an operation takes and answers
from its ``@operation`` declaration (``api_schema``), whose pydantic models (``api_shapes``)
are the very ones the views validate and answer with; path arguments from the URL
converters; the Idempotency-Key header from ``@idempotent``. So the document cannot say
something the code does not do.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from randomizer import __name__ as package
from randomizer.errors import RETRY_AFTER_SECONDS
from randomizer.services.idempotency import MAX_KEY_LENGTH
from randomizer.views.api_schema import Operation, operation_of
from randomizer.views.api_shapes import Problem
from randomizer.views.idempotency import KEY_ATTRIBUTE

BASE = "/api/v1"
REF = "#/components/schemas/{model}"
#: Every operation may meet these refusals: a bad or unknown value, a token without the
#: role, a method the path lacks, a body or URL too large, a database that is down.
ERRORS = ("400", "401", "403", "404", "405", "409", "413", "414", "415", "422", "503")
_ARGUMENT = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
IDEMPOTENCY_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_LENGTH,
    # Printable ASCII without spaces or quotes (a quoted key is accepted too, RFC 8941).
    "pattern": "^[!#-~]+$",
    "description": "A new unique value (such as a UUID) per request; the same on a retry",
}


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document served at /api/v1/openapi.json."""
    found = [
        (rule, method, declared)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(BASE + "/")
        and (declared := operation_of(app.view_functions[rule.endpoint])) is not None
        for method in sorted(rule.methods or ()) if method not in ("HEAD", "OPTIONS")
    ]  # fmt: skip
    refs, schemas = _schemas([declared for _, _, declared in found])
    paths: dict[str, dict[str, Any]] = {}
    for rule, method, declared in sorted(found, key=lambda f: (f[0].rule, f[1])):
        view = app.view_functions[rule.endpoint]
        path = _ARGUMENT.sub(r"{\g<name>}", rule.rule.removeprefix(BASE))
        parameters = _path_parameters(app, rule.rule) + _query_parameters(declared)
        key = getattr(view, KEY_ATTRIBUTE, None)
        if key is not None:
            parameters.append(_key_parameter(required=key == "required"))
        paths.setdefault(path, {})[method.lower()] = _operation(
            declared, refs, parameters, rule.endpoint
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "randomizer API",
            "version": "1",
            "description": f"{package}: randomization and blinding service. Bearer tokens "
            "(`randomizer token create NAME`); errors are RFC 9457 problem details.",
        },
        "servers": [{"url": BASE}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
            "responses": _problem_responses(refs[(Problem, "serialization")]),
        },
    }


def _schemas(
    operations: list[Operation],
) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """JSON Schemas of every body (as validated) and answer (as serialized), by reference."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Problem, "serialization"): None}
    for declared in operations:
        wanted[(declared.answer, "serialization")] = None
        if declared.body is not None:
            wanted[(declared.body, "validation")] = None
    refs, definitions = models_json_schema(list(wanted), ref_template=REF)
    return dict(refs), dict(definitions.get("$defs", {}))


def _operation(
    declared: Operation, refs: dict[Any, Any], parameters: list[dict[str, Any]], endpoint: str
) -> dict[str, Any]:
    answer = refs[(declared.answer, "serialization")]
    if declared.many:
        answer = {"type": "array", "items": answer}
    roles = ", ".join(role.value for role in declared.roles)
    notes = f" ({declared.notes})" if declared.notes else ""
    result: dict[str, Any] = {
        "operationId": endpoint.removeprefix("api."),
        "summary": declared.summary,
        "description": f"Allowed roles: {roles}{notes}.",
        "parameters": parameters,
        "responses": {
            str(declared.status): {
                "description": "Success",
                "content": {"application/json": {"schema": answer}},
            },
            **{code: {"$ref": f"#/components/responses/{_response(code)}"} for code in ERRORS},
        },
    }
    if declared.body is not None:
        body = refs[(declared.body, "validation")]
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return result


def _response(code: str) -> str:
    return {"405": "MethodNotAllowed", "503": "Unavailable"}.get(code, "Problem")


def _path_parameters(app: Flask, rule: str) -> list[dict[str, Any]]:
    out = []
    for found in _ARGUMENT.finditer(rule):
        converter = app.url_map.converters[found["converter"] or "default"]
        schema = dict(getattr(converter, "openapi_schema", {"type": "string"}))
        out.append({"name": found["name"], "in": "path", "required": True, "schema": schema})
    return out


def _query_parameters(declared: Operation) -> list[dict[str, Any]]:
    if declared.query is None:
        return []
    schema = declared.query.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title" and (k, v) != ("default", None)}
        # An optional query argument is absent, never null.
        choices = [c for c in prop.pop("anyOf", []) if c.get("type") != "null"]
        if choices:
            prop = {**choices[0], **prop}
        out.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return out


def _key_parameter(*, required: bool) -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": required,
        "schema": IDEMPOTENCY_KEY,
    }


def _problem_responses(problem: dict[str, Any]) -> dict[str, Any]:
    content = {"application/problem+json": {"schema": problem}}
    allow = {"description": "The methods this path accepts", "required": True,
             "schema": {"type": "string", "minLength": 1}}  # fmt: skip
    retry = {"description": f"Seconds to wait before retrying ({RETRY_AFTER_SECONDS})",
             "required": True, "schema": {"type": "integer", "minimum": 1}}  # fmt: skip
    return {
        "Problem": {"description": "RFC 9457 problem details", "content": content},
        "MethodNotAllowed": {
            "description": "The method is not available on this path",
            "headers": {"Allow": allow},
            "content": content,
        },
        "Unavailable": {
            "description": "The database is unavailable; nothing was changed",
            "headers": {"Retry-After": retry},
            "content": content,
        },
    }
