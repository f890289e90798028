"""Audit trail pages and API for admin and statistician: filters, CSV, verify, anchor, logs."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit, audit_anchor
from randomizer.instance import secrets_of
from randomizer.models import Study, User
from randomizer.services import unblinding
from tests.conftest import PASSWORD, login
from tests.unblinding_support import ARM_TEXTS, api, arm_of, events, randomized, supply, token_for


def _things(session: Session) -> None:
    """Three events by two actors, on two participants."""
    for actor, action, pid, reason in (
        ("alice", "thing.create", 1, '=HYPERLINK("http://evil")'),
        ("bob", "thing.update", 2, None),
        ("alice", "other.delete", 2, None),
    ):
        audit.record(
            session, actor=audit.Actor(actor, "admin"), action=action, participant_id=pid,
            new={"n": pid}, reason=reason,
        )  # fmt: skip
    session.commit()


def _seqs(html: str) -> set[str]:
    """The actions shown in an audit page."""
    return set(re.findall(r'<small class="hint code">([a-z_.]+)</small>', html))


@pytest.mark.parametrize("who", ["admin1", "stat1"])
def test_admin_and_statistician_read_the_trail(
    client: FlaskClient, session: Session, users: dict[str, User], who: str
):
    _things(session)
    login(client, who)
    page = client.get("/audit")
    assert page.status_code == 200
    assert {"thing.create", "thing.update", "other.delete"} <= _seqs(page.get_data(as_text=True))


@pytest.mark.parametrize("who", ["inv1", "pharm1", "assess1"])
def test_other_roles_may_not_read_the_trail(
    client: FlaskClient, session: Session, users: dict[str, User], who: str
):
    login(client, who)
    for path in ("/audit", "/audit/export.csv", "/audit/anchor", "/audit/unblinding"):
        assert client.get(path).status_code == 403, path
    for path in ("/audit/verify", "/audit/anchor", "/audit/unblinding"):
        assert client.post(path).status_code == 403, path


FILTERS = [
    ({"actor": "alice"}, {"thing.create", "other.delete"}),
    ({"action": "thing.update"}, {"thing.update"}),
    ({"action": "thing."}, {"thing.create", "thing.update"}),
    ({"participant": "2"}, {"thing.update", "other.delete"}),
    ({"actor": "alice", "participant": "2"}, {"other.delete"}),
    ({"date_from": "2000-01-01", "date_to": "2999-12-31", "actor": "bob"}, {"thing.update"}),
    ({"date_to": "2000-01-01"}, set()),
]


@pytest.mark.parametrize(("args", "expected"), FILTERS)
def test_the_trail_filters_by_actor_action_participant_and_date(
    client: FlaskClient,
    session: Session,
    users: dict[str, User],
    args: dict[str, str],
    expected: set[str],
):
    _things(session)
    login(client, "admin1")
    page = client.get("/audit", query_string=args)
    found = _seqs(page.get_data(as_text=True)) & {"thing.create", "thing.update", "other.delete"}
    assert found == expected


@pytest.mark.parametrize("args", [{"date_from": "31/12/2026"}, {"participant": "x"}])
def test_a_bad_filter_is_named(client: FlaskClient, users: dict[str, User], args: dict[str, str]):
    login(client, "admin1")
    page = client.get("/audit", query_string=args)
    assert page.status_code == 422
    assert 'class="error"' in page.get_data(as_text=True)


def test_the_csv_export_has_the_filtered_events_and_no_formulas(
    client: FlaskClient, session: Session, users: dict[str, User]
):
    _things(session)
    login(client, "stat1")
    response = client.get("/audit/export.csv", query_string={"actor": "alice"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["action"] for r in rows] == ["thing.create", "other.delete"]
    assert rows[0]["reason"].startswith("'=")
    assert rows[0]["digest"] and rows[0]["prev_digest"]


def test_the_verify_button_reports_an_intact_chain(
    client: FlaskClient, session: Session, users: dict[str, User]
):
    _things(session)
    login(client, "admin1")
    page = client.post("/audit/verify")
    assert page.status_code == 200
    assert 'class="verify-ok"' in page.get_data(as_text=True)


def test_the_anchor_download_is_a_signed_anchor_of_the_current_head(
    client: FlaskClient, session: Session, users: dict[str, User]
):
    _things(session)
    login(client, "admin1")
    assert client.get("/audit/anchor").status_code == 200
    response = client.post("/audit/anchor")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    anchor = json.loads(response.data)
    secrets = secrets_of(session)
    result = audit_anchor.check_anchor(
        session, secrets.audit_key, anchor, secrets.anchor_key().public_key()
    )
    assert result.ok and anchor["events"] == result.events


# --- the unblinding log ----------------------------------------------------------------


@pytest.fixture
def unblinded(session: Session, study: Study, users: dict[str, User]) -> dict[str, Any]:
    supply(session, study)
    participant = randomized(session, study, users["investigator"], "SCR-001")
    arm = arm_of(session, study, participant)
    unblinding.unblind(
        session, participant, actor_user=users["investigator"], reason_category="overdose",
        reason="Took four doses by mistake.", password=PASSWORD,
        confirm_number=participant.randomization_number,
    )  # fmt: skip
    session.commit()
    return {"number": participant.randomization_number, "arm": arm}


def test_the_unblinding_log_says_who_when_why_and_whom_without_arms(
    client: FlaskClient, users: dict[str, User], unblinded: dict[str, Any]
):
    for who in ("admin1", "stat1"):
        login(client, who)
        html = client.get("/audit/unblinding").get_data(as_text=True)
        assert unblinded["number"] in html and "inv1" in html
        assert "Took four doses by mistake." in html and "overdose" in html
        assert not [text for text in ARM_TEXTS if text in html]
        client.post("/logout")


def test_the_statistician_sees_arms_in_the_log_and_that_is_audited(
    client: FlaskClient, session: Session, users: dict[str, User], unblinded: dict[str, Any]
):
    login(client, "stat1")
    page = client.post("/audit/unblinding")
    assert page.status_code == 200
    assert unblinded["arm"] in page.get_data(as_text=True)
    [event] = events(session, "unblinding.log_with_arms")
    assert event.actor == "stat1"
    assert not [text for text in ARM_TEXTS if text in (event.new_values or "")]


def test_the_admin_may_not_see_arms_in_the_log(
    client: FlaskClient, session: Session, users: dict[str, User], unblinded: dict[str, Any]
):
    login(client, "admin1")
    page = client.post("/audit/unblinding")
    assert page.status_code == 403
    assert unblinded["arm"] not in page.get_data(as_text=True)
    assert events(session, "unblinding.log_with_arms") == []


# --- the API ---------------------------------------------------------------------------


def test_the_api_feed_pages_events_after_a_sequence_number(
    client: FlaskClient, session: Session, users: dict[str, User]
):
    token = token_for(session, users["statistician"])
    _things(session)
    total = audit.verify(session, secrets_of(session).audit_key).events
    session.rollback()
    seen: list[int] = []
    after = 0
    while True:
        body = api(client, f"/api/v1/audit?after={after}&limit=4", token, method="GET").json
        seen += [e["seq"] for e in body["events"]]
        after = body["next_after"]
        if not body["more"]:
            break
    assert seen == list(range(1, total + 1))
    assert body["head"]["events"] == total


def test_the_api_feed_holds_no_arm_after_an_unblinding(
    client: FlaskClient, session: Session, users: dict[str, User], unblinded: dict[str, Any]
):
    token = token_for(session, users["admin"])
    body = api(client, "/api/v1/audit?after=0&limit=1000", token, method="GET")
    assert body.status_code == 200
    text = json.dumps(body.json)
    assert "participant.unblind" in text
    assert not [arm for arm in ARM_TEXTS if arm in text]


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0", "limit=100000"])
def test_a_bad_feed_parameter_is_a_problem(
    client: FlaskClient, session: Session, users: dict[str, User], query: str
):
    token = token_for(session, users["admin"])
    response = api(client, f"/api/v1/audit?{query}", token, method="GET")
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize("who", ["investigator", "pharmacist", "assessor"])
def test_only_admin_and_statistician_use_the_audit_api(
    client: FlaskClient, session: Session, users: dict[str, User], who: str
):
    token = token_for(session, users[who])
    assert api(client, "/api/v1/audit", token, method="GET").status_code == 403
    assert api(client, "/api/v1/audit/verify", token, method="GET").status_code == 403


def test_the_api_verify_reports_the_chain(
    client: FlaskClient, session: Session, users: dict[str, User]
):
    token = token_for(session, users["admin"])
    body = api(client, "/api/v1/audit/verify", token, method="GET").json
    assert body["ok"] is True and body["events"] >= 1 and len(body["head"]) == 64
