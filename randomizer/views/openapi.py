"""The OpenAPI 3.1 description of /api/v1 (SPEC §4.2)."""

from __future__ import annotations

from typing import Any

from randomizer import __name__ as package

PROBLEM = {"$ref": "#/components/responses/Problem"}
IDEMPOTENCY = {"$ref": "#/components/parameters/IdempotencyKey"}
KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
SCREENING_NUMBER = {"name": "screening_number", "in": "query", "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 64}}  # fmt: skip
OPTIONAL_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": KEY_SCHEMA}  # fmt: skip
PARTICIPANT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
STUDY = {"name": "study", "in": "path", "required": True, "schema": {"type": "string"}}
SIGNATURE = {
    "type": "object",
    "required": ["password"],
    "properties": {
        "password": {"type": "string", "description": "The signer's password"},
        "totp": {"type": "string", "description": "Current one-time code, when enrolled"},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _op(summary: str, roles: str, ok: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    codes = ("400", "401", "403", "404", "405", "409", "413", "414", "415", "422", "503")
    errors = {code: PROBLEM for code in codes}
    return {
        "summary": summary,
        "description": f"Allowed roles: {roles}.",
        "responses": {ok[0]: {"description": "Success", **_json(ok[1])}, **errors},
        **extra,
    }


def document() -> dict[str, Any]:
    """The OpenAPI document served at /api/v1/openapi.json."""
    participant = _obj(
        ["participant_id", "site", "status", "randomization_number"],
        participant_id={"type": "integer"},
        site={"type": "string"},
        status={"type": "string"},
        randomization_number={"type": ["string", "null"]},
        unblinded={"type": "boolean", "description": "Not shown to outcome assessors"},
        unblinded_at={"type": ["string", "null"], "format": "date-time"},
    )
    participant["properties"]["kits"] = {
        "type": "array",
        "items": _obj(["visit", "kit_code"], visit={"type": "string"}, kit_code={"type": "string"}),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "randomizer API",
            "version": "1",
            "description": f"{package}: randomization and blinding service. Bearer tokens "
            "(`randomizer token create NAME`); errors are RFC 9457 problem details.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/studies/{study}/participants": {
                "post": _op(
                    "Register and screen a participant",
                    "investigator",
                    (
                        "201",
                        _obj(
                            ["participant_id", "status", "failed_criteria"],
                            participant_id={"type": "integer"},
                            status={"enum": ["eligible", "screen_failed"]},
                            failed_criteria={"type": "array", "items": {"type": "string"}},
                        ),
                    ),
                    parameters=[STUDY, OPTIONAL_IDEMPOTENCY],
                    requestBody=_json(
                        _obj(
                            ["site", "screening_number", "factors", "eligibility"],
                            site={"type": "string"},
                            screening_number={"type": "string"},
                            factors={"type": "object", "additionalProperties": {"type": "string"}},
                            eligibility={"type": "object"},
                        )
                    ),
                ),
                "get": _op(
                    "Participants with this screening number, as your role may see them",
                    "investigator (own sites), assessor, admin",
                    ("200", {"type": "array", "items": participant}),
                    parameters=[STUDY, SCREENING_NUMBER],
                ),
            },
            "/participants/{id}": {
                "get": _op(
                    "A participant as your role may see it",
                    "investigator, assessor, admin, pharmacist, statistician",
                    ("200", participant),
                    parameters=[PARTICIPANT_ID],
                )
            },
            "/participants/{id}/randomize": {
                "post": _op(
                    "Randomize (signed)",
                    "investigator",
                    (
                        "201",
                        _obj(
                            ["participant_id", "randomization_number", "kit_code", "randomized_at"],
                            participant_id={"type": "integer"},
                            randomization_number={"type": "string"},
                            kit_code={"type": "string"},
                            randomized_at={"type": "string", "format": "date-time"},
                        ),
                    ),
                    parameters=[PARTICIPANT_ID, IDEMPOTENCY],
                    requestBody=_json(_obj(["signature"], signature=SIGNATURE)),
                )
            },
            "/participants/{id}/dispense": {
                "post": _op(
                    "Allocate the kit for a dispensing visit (signed)",
                    "investigator",
                    (
                        "201",
                        _obj(
                            ["visit", "kit_code"],
                            visit={"type": "string"},
                            kit_code={"type": "string"},
                        ),
                    ),
                    parameters=[PARTICIPANT_ID, IDEMPOTENCY],
                    requestBody=_json(
                        _obj(
                            ["visit", "signature"],
                            visit={"type": "string"},
                            override_reason={"type": "string"},
                            signature=SIGNATURE,
                        )
                    ),
                )
            },
            "/participants/{id}/unblind": {
                "post": _op(
                    "Emergency unblinding of one participant (signed, audited)",
                    "investigator",
                    (
                        "200",
                        _obj(
                            ["participant_id", "arm", "unblinded_at"],
                            participant_id={"type": "integer"},
                            arm=_obj(
                                ["code", "name"], code={"type": "string"}, name={"type": "string"}
                            ),
                            unblinded_at={"type": "string", "format": "date-time"},
                        ),
                    ),
                    parameters=[PARTICIPANT_ID, IDEMPOTENCY],
                    requestBody=_json(
                        _obj(
                            ["reason_category", "reason", "signature"],
                            reason_category={"type": "string"},
                            reason={"type": "string"},
                            signature=SIGNATURE,
                        )
                    ),
                )
            },
            "/studies/{study}/kits": {
                "get": _op(
                    "Kit list of a site",
                    "pharmacist (own sites, with products), admin",
                    ("200", {"type": "object"}),
                    parameters=[
                        STUDY,
                        {"name": "site", "in": "query", "schema": {"type": "string"}},
                    ],
                )
            },
            "/audit": {
                "get": _op(
                    "Audit events after a sequence number",
                    "admin, statistician",
                    ("200", {"type": "object"}),
                    parameters=[
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                )
            },
            "/audit/verify": {
                "get": _op(
                    "Verify the audit chain",
                    "admin, statistician",
                    (
                        "200",
                        _obj(
                            ["ok", "events", "head"],
                            ok={"type": "boolean"},
                            events={"type": "integer"},
                            head={"type": "string"},
                        ),
                    ),
                )
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": True,
                    "schema": KEY_SCHEMA,
                }
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "headers": {
                        "Retry-After": {
                            "description": "With 503 (database unavailable): seconds to wait",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                        "Allow": {
                            "description": "With 405: the methods this path accepts",
                            "schema": {"type": "string"},
                        },
                    },
                    "content": {
                        "application/problem+json": {
                            "schema": _obj(
                                ["type", "title", "status", "detail"],
                                type={"type": "string"},
                                title={"type": "string"},
                                status={"type": "integer"},
                                detail={"type": "string"},
                            )
                        }
                    },
                }
            },
        },
    }
