"""POST /api/v1/participants/{id}/unblind (SPEC §4.2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.models import IdempotencyRecord, Participant, Study, Unblinding, User
from tests.conftest import PASSWORD
from tests.unblinding_support import ARM_TEXTS, api, arm_of, counts, events, randomized, supply

BODY: dict[str, Any] = {
    "reason_category": "medical_emergency",
    "reason": "Unexplained acute kidney injury.",
    "signature": {"password": PASSWORD},
}


@pytest.fixture
def participant(session: Session, study: Study, users: dict[str, User]) -> Participant:
    supply(session, study)
    return randomized(session, study, users["investigator"], "SCR-001")


@pytest.fixture
def token(session: Session, users: dict[str, User]) -> str:
    from tests.unblinding_support import token_for

    return token_for(session, users["investigator"])


def _path(participant: Participant) -> str:
    return f"/api/v1/participants/{participant.id}/unblind"


def test_unblinding_answers_the_arm_uncached(
    client: FlaskClient, session: Session, study: Study, participant: Participant, token: str
):
    expected = arm_of(session, study, participant)
    response = api(client, _path(participant), token, BODY)
    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert set(body) == {"participant_id", "arm", "unblinded_at"}
    assert body["participant_id"] == participant.id
    assert body["arm"]["code"] == expected
    assert body["arm"]["name"] in ARM_TEXTS
    assert body["unblinded_at"].endswith("Z")
    assert len(events(session, "participant.unblind")) == 1


def test_the_stored_idempotent_answer_never_holds_the_arm(
    client: FlaskClient, session: Session, participant: Participant, token: str
):
    assert api(client, _path(participant), token, BODY).status_code == 200
    [record] = session.scalars(select(IdempotencyRecord)).all()
    stored = json.dumps(record.response_body)
    assert not [text for text in ARM_TEXTS if text in stored]
    assert record.response_body == {
        "participant_id": participant.id,
        "unblinded_at": record.response_body["unblinded_at"],
    }


def test_a_retry_with_the_same_key_discloses_again_as_a_new_audited_event(
    client: FlaskClient, session: Session, participant: Participant, token: str
):
    first = api(client, _path(participant), token, BODY, key="k-1")
    again = api(client, _path(participant), token, BODY, key="k-1")
    assert again.status_code == 200
    assert again.json == first.json
    assert again.headers["Cache-Control"] == "no-store"
    assert len(events(session, "participant.unblind")) == 1
    assert len(events(session, "participant.unblind_redisplay")) == 1
    assert len(session.scalars(select(Unblinding)).all()) == 1


def test_the_same_key_with_another_body_is_refused(
    client: FlaskClient, participant: Participant, token: str
):
    api(client, _path(participant), token, BODY, key="k-2")
    other = {**BODY, "reason": "Something else."}
    assert api(client, _path(participant), token, other, key="k-2").status_code == 422


def _two_participants(participant: Participant, other: Participant) -> list[dict[str, Any]]:
    return [
        {**BODY, "participant_ids": [participant.id, other.id]},
        {**BODY, "participant_id": other.id},
        {**BODY, "participant_id": [participant.id, other.id]},
        {**BODY, "participants": [{"id": participant.id}, {"id": other.id}]},
    ]


def test_a_body_naming_two_participants_is_refused_and_changes_nothing(
    client: FlaskClient,
    session: Session,
    study: Study,
    users: dict[str, User],
    participant: Participant,
    token: str,
):
    other = randomized(session, study, users["investigator"], "SCR-002")
    before = counts(session)
    for body in _two_participants(participant, other):
        response = api(client, _path(participant), token, body)
        assert response.status_code == 422, body
        assert response.mimetype == "application/problem+json"
    assert counts(session) == before


REFUSALS = [
    ("no reason", {"reason": None}, 422),
    ("whitespace reason", {"reason": "   "}, 422),
    ("unknown category", {"reason_category": "curiosity"}, 422),
    ("wrong password", {"signature": {"password": "not-the-password"}}, 401),
    ("no signature", {"signature": None}, 422),
]


@pytest.mark.parametrize(
    ("over", "status"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_refused_request_answers_a_problem_and_changes_nothing(
    client: FlaskClient,
    session: Session,
    participant: Participant,
    token: str,
    over: dict[str, Any],
    status: int,
):
    before = counts(session)
    response = api(client, _path(participant), token, {**BODY, **over})
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert counts(session) == before


@pytest.mark.parametrize(("who", "status"), [("investigator2", 404), ("pharmacist", 403),
                                             ("assessor", 403), ("admin", 403),
                                             ("statistician", 403)])  # fmt: skip
def test_only_an_investigator_of_the_site_may_unblind(
    client: FlaskClient,
    session: Session,
    users: dict[str, User],
    participant: Participant,
    who: str,
    status: int,
):
    from tests.unblinding_support import token_for

    other = token_for(session, users[who])
    before = counts(session)
    response = api(client, _path(participant), other, BODY)
    assert response.status_code == status
    assert counts(session) == before


def test_an_unknown_participant_answers_like_another_sites(
    client: FlaskClient, session: Session, users: dict[str, User], token: str
):
    response = api(client, "/api/v1/participants/999999/unblind", token, BODY)
    assert response.status_code == 404
    assert response.json["detail"] == "No participant 999999 at your sites."


def test_unblinding_without_an_idempotency_key_is_refused(
    client: FlaskClient, participant: Participant, token: str
):
    response = client.post(
        _path(participant), json=BODY, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    ("role", "sees_flag"),
    [("admin", True), ("statistician", True), ("investigator", True), ("assessor", False)],
)
def test_the_unblinded_flag_shows_to_the_roles_that_may_know_it(
    client: FlaskClient,
    session: Session,
    users: dict[str, User],
    participant: Participant,
    token: str,
    role: str,
    sees_flag: bool,
):
    from tests.unblinding_support import token_for

    assert api(client, _path(participant), token, BODY).status_code == 200
    reader = token_for(session, users[role])
    response = client.get(
        f"/api/v1/participants/{participant.id}", headers={"Authorization": f"Bearer {reader}"}
    )
    assert response.status_code == 200
    body = response.json
    assert ("unblinded" in body) is sees_flag
    if sees_flag:
        assert body["unblinded"] is True and body["unblinded_at"].endswith("Z")
    assert not any(text in response.get_data(as_text=True) for text in ARM_TEXTS)
