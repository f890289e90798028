"""Idempotency-Key records and the @idempotent decorator (sanitize before storage, replay)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.db import db
from randomizer.errors import IdempotencyError, InvalidInput
from randomizer.models import IdempotencyRecord
from randomizer.services import idempotency
from randomizer.services.users import user_for_token
from randomizer.views.idempotency import idempotent
from tests.enrollment_support import call, token_for

SECRET = b"k" * 32


def test_fingerprint_ignores_key_order_and_spacing():
    a = idempotency.request_fingerprint(SECRET, "POST", "/x", b'{"a": 1, "b": {"c": 2}}')
    b = idempotency.request_fingerprint(SECRET, "POST", "/x", b'{"b":{"c":2},"a":1}')
    assert a == b


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/x", b'{"a": 2}'), ("POST", "/y", b'{"a": 1}'), ("PUT", "/x", b'{"a": 1}')],
)
def test_fingerprint_tells_requests_apart(method, path, body):
    base = idempotency.request_fingerprint(SECRET, "POST", "/x", b'{"a": 1}')
    assert idempotency.request_fingerprint(SECRET, method, path, body) != base


def test_fingerprint_is_keyed_so_passwords_cannot_be_guessed_from_it():
    body = b'{"signature": {"password": "secret"}}'
    one = idempotency.request_fingerprint(SECRET, "POST", "/x", body)
    assert one != idempotency.request_fingerprint(b"other" * 8, "POST", "/x", body)


@pytest.mark.parametrize(
    ("raw", "key"), [("abc", "abc"), (' "quoted-key" ', "quoted-key"), ("a" * 255, "a" * 255)]
)
def test_keys_accepted(raw, key):
    assert idempotency.check_key(raw) == key


@pytest.mark.parametrize("raw", [None, "", "  ", '""', "a" * 256, "clé", "a\tb"])
def test_keys_refused(raw):
    with pytest.raises(IdempotencyError) as err:
        idempotency.check_key(raw)
    assert err.value.field == "Idempotency-Key"


def _claim(session, user, key="k", body_hash="h"):
    return idempotency.claim(
        session, user_id=user.id, key=key, endpoint="POST /x", request_hash=body_hash
    )


def test_claim_complete_then_replay(session, users):
    user = users["investigator"]
    held = _claim(session, user)
    assert held.answer is None
    idempotency.complete(session, held, 201, {"n": 1})
    session.commit()
    assert _claim(session, user).answer == (201, {"n": 1})


def test_claim_with_other_request_is_422(session, users):
    idempotency.complete(session, _claim(session, users["investigator"]), 201, {"n": 1})
    session.commit()
    with pytest.raises(idempotency.KeyReused) as err:
        _claim(session, users["investigator"], body_hash="other")
    assert err.value.status == 422


def test_a_claim_whose_transaction_died_leaves_nothing(session, users):
    _claim(session, users["investigator"])
    session.rollback()  # the worker or the database died before the commit
    assert session.scalars(select(IdempotencyRecord)).all() == []
    assert _claim(session, users["investigator"], body_hash="retry").answer is None


def test_a_concurrent_duplicate_waits_for_the_first_and_replays_its_answer(app, session, users):
    user_id, engine = users["investigator"].id, db.engine
    held = _claim(session, users["investigator"])
    seen: list[Any] = []

    def duplicate() -> None:
        with Session(engine) as other:
            seen.append(
                idempotency.claim(
                    other, user_id=user_id, key="k", endpoint="POST /x", request_hash="h"
                ).answer
            )

    thread = threading.Thread(target=duplicate)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), "the duplicate must wait for the first request's transaction"
    idempotency.complete(session, held, 201, {"n": 1})
    session.commit()
    thread.join(30)
    assert seen == [(201, {"n": 1})]


# --- the decorator ---------------------------------------------------------------------

CALLS: list[dict[str, Any]] = []


@pytest.fixture
def echo(app):
    """A test-only endpoint under /api/ using the decorator with sanitize and replay."""
    CALLS.clear()

    def sanitize(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "arm"}

    def replay(stored: dict[str, Any]) -> Any:
        return {**stored, "arm": "re-disclosed", "replayed": True}, 200

    @idempotent(authorize=lambda: None, sanitize=sanitize, replay=replay)
    def work() -> tuple[dict[str, Any], int]:
        body = request.get_json()
        CALLS.append(body)
        if body.get("fail"):
            raise InvalidInput("fail: refused on purpose.", field="fail")
        return {"value": body["v"], "arm": "SECRET-ARM"}, 200

    def view() -> Any:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        g.api_user = user_for_token(db.session(), token)
        return work()

    app.add_url_rule("/api/v1/_echo", "echo", view, methods=["POST"])
    return "/api/v1/_echo"


def test_decorator_stores_the_sanitized_answer_and_replays_through_the_hook(
    app, client, session, users, echo
):
    token = token_for(session, users["investigator"])
    first = call(client, "POST", echo, token, {"v": 1}, key="e-1")
    assert first.status_code == 200
    assert first.json == {"value": 1, "arm": "SECRET-ARM"}
    stored = session.scalars(select(IdempotencyRecord)).one()
    assert stored.response_body == {"value": 1}
    again = call(client, "POST", echo, token, {"v": 1}, key="e-1")
    assert again.json == {"value": 1, "arm": "re-disclosed", "replayed": True}
    assert len(CALLS) == 1


def test_decorator_refusal_leaves_no_record(app, client, session, users, echo):
    token = token_for(session, users["investigator"])
    refused = call(client, "POST", echo, token, {"v": 1, "fail": True}, key="e-2")
    assert refused.status_code == 422
    assert refused.mimetype == "application/problem+json"
    session.expire_all()
    assert session.scalars(select(IdempotencyRecord)).all() == []
    assert call(client, "POST", echo, token, {"v": 1}, key="e-2").status_code == 200


def test_decorator_answers_400_without_key(app, client, session, users, echo):
    token = token_for(session, users["investigator"])
    response = call(client, "POST", echo, token, {"v": 1}, key=None)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert CALLS == []
