"""Every malformed value, on every route of the URL map, as every role: a 4xx, never a 500.

The values are those found to answer 500 before the input layer existed: NUL and other
control characters, integers beyond the column range, non-ASCII digits, CRLF. Each is sent
in turn as every path argument, every query value and every form value of each route.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from randomizer.db import db
from tests.conftest import login
from tests.enrollment_support import call, prepare_supply, register, token_for
from tests.unblinding_support import randomized

MALFORMED = [
    "\x00",
    "a\x00b",
    "99999999999",
    "999999999999",
    "99999999999999999999",
    "²",
    "١٢",
    "-1",
    "\r\nSet-Cookie: x=1",
    "/\r\n/evil.example",
    "\x7f",
    "\x1b[31m",
]
QUERY_NAMES = (
    "after", "before", "limit", "page", "participant", "site", "status", "next", "actor",
    "action", "date_from", "date_to", "screening_number", "study",
)  # fmt: skip
FORM_NAMES = (
    "username", "password", "code", "count", "site", "lot", "expiry", "reason", "reason_category",
    "randomization_number", "confirm_number", "participant_id", "screening_number", "visit",
    "per_stratum", "slots", "kit_code", "kit", "status", "submission", "statistician", "admin",
    "statistician_password", "admin_password", "grade", "consent", "age", "override_reason",
)  # fmt: skip
#: A valid value for each path argument, so that the other arguments reach the view.
VALID_ARGS = {
    "participant_id": "1", "dispensation_id": "1", "shipment_id": "1", "code": "TST",
    "study_code": "TST", "kind": "dummy", "change": "withdraw", "filename": "style.css",
}  # fmt: skip
WEB_ROLES = ("anonymous", "admin1", "stat1", "pharm1", "inv1")
API_ROLES = ("admin", "investigator", "pharmacist")


@pytest.fixture
def trial(session, study, users):
    prepare_supply(session, study)
    randomized(session, study, users["investigator"], "SCR-1")
    register(session, study, users["investigator"], "SCR-2")
    return study


def _paths(rule: Any, value: str) -> list[str]:
    """The rule's path with each argument in turn replaced by the value (and one valid)."""
    args = sorted(rule.arguments)
    valid = {name: VALID_ARGS.get(name, "1") for name in args}
    paths = [_build(rule, valid)]
    for name in args:
        paths.append(_build(rule, {**valid, name: value}))
    return paths


def _build(rule: Any, values: dict[str, str]) -> str:
    path = rule.rule
    for name, raw in values.items():
        start, end = re.search(rf"<(?:[^<>]*:)?{name}>", path).span()  # type: ignore[union-attr]
        path = path[:start] + quote(raw, safe="") + path[end:]
    return path


def _requests(app, value: str, *, api: bool) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") != api or rule.endpoint == "auth.logout":
            continue
        for method in sorted(rule.methods & {"GET", "POST"}):
            for i, path in enumerate(_paths(rule, value)):
                out.append((method, path, {}))
                if i == 0:
                    out.append((method, path, {"query_string": dict.fromkeys(QUERY_NAMES, value)}))
                    if method == "POST":
                        out.append((method, path, {"data": dict.fromkeys(FORM_NAMES, value)}))
    return out


@pytest.mark.parametrize("who", WEB_ROLES)
def test_no_malformed_value_on_any_page_answers_500(app, session, trial, who):
    client = app.test_client()
    if who != "anonymous":
        login(client, who)
    failures = []
    for value in MALFORMED:
        for method, path, kwargs in _requests(app, value, api=False):
            status = _status(client.open, path, method=method, **kwargs)
            if status >= 500:
                failures.append((status, method, path, value, sorted(kwargs)))
    assert failures == []


@pytest.mark.parametrize("role", API_ROLES)
def test_no_malformed_value_on_any_api_route_answers_500(app, session, trial, users, role):
    client = app.test_client()
    token = token_for(session, users[role])
    failures = []
    for value in MALFORMED:
        for method, path, kwargs in _requests(app, value, api=True):
            body = _json_body(value) if method == "POST" else None
            query = kwargs.get("query_string")
            if query:
                path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
            key = _header(value, query)
            status = _status(call, client, method, path, token, body, key=key)
            if status >= 500:
                failures.append((status, method, path, value))
    assert failures == []


def _status(send: Any, *args: Any, **kwargs: Any) -> int:
    """The answer's status; an exception escaping the app (TESTING propagates them) is a 500."""
    try:
        response = send(*args, **kwargs)
    except Exception:  # any exception escaping the app is the 500 this test looks for
        db.session.rollback()
        return 500
    response.close()
    return int(response.status_code)


def _header(value: str, query: Any) -> str | bool:
    """The malformed value as the Idempotency-Key too, where HTTP can carry it at all."""
    sendable = not any(c in value for c in "\r\n\x00")
    return value if query and sendable else True


def _json_body(value: str) -> dict[str, Any]:
    return {
        "site": value, "screening_number": value, "factors": {"grade": value},
        "eligibility": {"consent": True, "age": value, "pregnant": False}, "visit": value,
        "reason_category": value, "reason": value, "override_reason": value,
        "signature": {"password": value, "totp": value},
    }  # fmt: skip


@pytest.mark.parametrize("value", ["\x00", "a\x00b", "\x1b"])
def test_a_control_character_in_a_sign_in_form_is_refused_before_sign_in(client, users, value):
    response = client.post("/login", data={"username": value, "password": "x"})
    assert response.status_code == 400


def test_crlf_in_next_is_ignored_after_sign_in(client, users):
    response = client.post(
        "/login?next=" + quote("/audit\r\nSet-Cookie: x=1", safe=""),
        data={"username": "admin1", "password": "correct-horse-battery"},
    )
    assert response.status_code == 302
    assert "\r" not in response.headers["Location"] and "\n" not in response.headers["Location"]
    assert response.headers["Location"].endswith("/")
