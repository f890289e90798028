"""The API against its own OpenAPI document, with schemathesis: no 500, no answer the
document does not describe (status, content type, body schema, required headers).

Cases are generated from the served document; a hook then makes most of them meaningful so
that they reach the services: the bearer token of a role the operation allows (sometimes
another role's), real participant ids, study and site codes and screening numbers, a fresh
Idempotency-Key, the signer's real password, valid factor levels and reason categories.

It runs on both backends: PostgreSQL is where malformed values used to fail (NUL in text,
integers beyond 32 bits), SQLite is the default set-up. The budget is small and fixed
(``EXAMPLES`` per operation and backend) to keep the suite fast.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from randomizer.db import db
from randomizer.models import Role
from randomizer.views.api_schema import operation_of
from tests.conftest import PASSWORD
from tests.enrollment_support import ELIGIBLE, prepare_supply, register, token_for
from tests.unblinding_support import randomized

#: Examples per operation and backend: conforming requests, then requests that break the
#: document somewhere (wrong types, out-of-range numbers, missing fields...).
POSITIVE, NEGATIVE = 8, 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
USERS = {
    Role.ADMIN: "admin",
    Role.STATISTICIAN: "statistician",
    Role.PHARMACIST: "pharmacist",
    Role.INVESTIGATOR: "investigator",
    Role.ASSESSOR: "assessor",
}


def documented_values_are_accepted(ctx: Any, response: Any, case: Any) -> None:
    """A request the document allows is never refused as malformed (400) or of the wrong
    media type (415): those refusals mean the document and the checks disagree."""
    if response.status_code in (400, 415):
        raise AssertionError(
            f"{case.operation.label}: a documented request was refused "
            f"{response.status_code}: {response.text}"
        )


class World:
    """The real values the hook puts into generated cases."""

    def __init__(self, app: Any, session: Any, study: Any, users: dict[str, Any]) -> None:
        prepare_supply(session, study)
        done = [randomized(session, study, users["investigator"], f"R-{n}") for n in range(3)]
        other = randomized(session, study, users["investigator2"], "R-S2", site="S2")
        waiting = [register(session, study, users["investigator"], f"E-{n}") for n in range(8)]
        self.participants = [p.id for p in (*done, other, *waiting)]
        self.screening_numbers = ["R-0", "R-S2", "E-0", "E-1", "NOBODY"]
        self.tokens = {role: token_for(session, users[name]) for role, name in USERS.items()}
        self.tokens_s2 = token_for(session, users["investigator2"])
        self.app = app


def _declared_routes(app: Any) -> Any:
    for rule in app.url_map.iter_rules():
        if operation_of(app.view_functions[rule.endpoint]) is not None:
            yield from (m for m in rule.methods if m not in ("HEAD", "OPTIONS"))


def _roles(app: Any, case: Any) -> tuple[Role, ...]:
    endpoint = "api." + case.operation.definition.raw["operationId"]
    declared = operation_of(app.view_functions[endpoint])
    assert declared is not None
    return declared.roles


def _meaningful(case: Any, rnd: random.Random, world: World) -> None:
    """Make the case reach the service most of the time; sometimes leave it as generated."""

    def often() -> bool:
        return rnd.random() < 0.8

    role = rnd.choice(_roles(world.app, case) if often() else list(Role))
    token = world.tokens[role]
    if role is Role.INVESTIGATOR and not often():
        token = world.tokens_s2
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    if "Idempotency-Key" in case.headers and often():
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
    path = case.path_parameters or {}
    if "participant_id" in path and often():
        path["participant_id"] = rnd.choice(world.participants)
    if "study_code" in path and often():
        path["study_code"] = "TST"
    query = case.query or {}
    if "site" in query and often():
        query["site"] = rnd.choice(["S1", "S2"])
    if "screening_number" in query and often():
        query["screening_number"] = rnd.choice(world.screening_numbers)
    if isinstance(case.body, dict):
        _meaningful_body(case.body, rnd, often)


def _meaningful_body(body: dict[str, Any], rnd: random.Random, often: Any) -> None:
    if isinstance(body.get("signature"), dict) and often():
        body["signature"]["password"] = PASSWORD
        body["signature"].pop("totp", None)
    if "visit" in body and often():
        body["visit"] = "month_6" if often() else "baseline"
        body["override_reason"] = "Infusion brought forward by the site."
    if "reason_category" in body and often():
        body["reason_category"] = "medical_emergency"
    if "participant_id" in body and often():
        body.pop("participant_id")
    if "eligibility" in body and often():
        body["site"] = "S1" if often() else "S2"
        body["factors"] = {"grade": rnd.choice(["low", "high"])}
        body["eligibility"] = dict(ELIGIBLE)


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


def test_every_operation_answers_as_documented_and_never_500(
    app, session, study, users, api_schema
):
    world = World(app, session, study, users)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == len(list(_declared_routes(app)))
    for operation in operations:
        _exercise(operation, world, GenerationMode.POSITIVE, POSITIVE)
        _exercise(operation, world, GenerationMode.NEGATIVE, NEGATIVE)


def _exercise(operation: Any, world: World, mode: GenerationMode, examples: int) -> None:
    checks = [*CHECKS, documented_values_are_accepted] if mode.is_positive else CHECKS

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode), rnd=st.randoms(use_true_random=False))
    def check(case: Any, rnd: random.Random) -> None:
        _meaningful(case, rnd, world)
        try:
            case.call_and_validate(checks=checks)
        finally:
            db.session.rollback()

    check()
