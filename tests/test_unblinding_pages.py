"""The emergency unblinding pages: lookup, signed form, the arm shown once and not cached."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer.models import Participant, Study, User
from tests.conftest import PASSWORD, login
from tests.unblinding_support import ARM_TEXTS, arm_of, counts, events, randomized, supply


@pytest.fixture
def participant(session: Session, study: Study, users: dict[str, User]) -> Participant:
    supply(session, study)
    return randomized(session, study, users["investigator"], "SCR-001")


@pytest.fixture
def known(session: Session, study: Study, participant: Participant) -> dict[str, Any]:
    """Plain values of the participant (read before the requests, transaction ended)."""
    values = {
        "id": participant.id,
        "number": participant.randomization_number,
        "arm": arm_of(session, study, participant),
    }
    session.rollback()
    return values


def _form(known: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "reason_category": "adverse_event",
        "reason": "Suspected anaphylaxis.",
        "confirm_number": known["number"],
        "password": PASSWORD,
        **over,
    }


def test_the_investigator_finds_the_participant_by_number(
    client: FlaskClient, known: dict[str, Any]
):
    login(client, "inv1")
    assert client.get("/unblinding").status_code == 200
    found = client.post("/unblinding", data={"randomization_number": known["number"]})
    assert found.status_code == 302
    assert found.headers["Location"].endswith(f"/participants/{known['id']}/unblind")
    missing = client.post("/unblinding", data={"randomization_number": "T99-0000"})
    assert missing.status_code == 404


def test_the_form_shows_the_participant_but_no_arm(client: FlaskClient, known: dict[str, Any]):
    login(client, "inv1")
    page = client.get(f"/participants/{known['id']}/unblind")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert known["number"] in html and "reason_category" in html
    assert not [text for text in ARM_TEXTS if text in html]


def test_a_signed_request_shows_the_arm_once_uncached_and_audited(
    client: FlaskClient, session: Session, known: dict[str, Any]
):
    login(client, "inv1")
    page = client.post(f"/participants/{known['id']}/unblind", data=_form(known))
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert known["arm"] in page.get_data(as_text=True)
    assert len(events(session, "participant.unblind")) == 1


def test_the_arm_is_never_in_a_url_or_a_redirect(
    client: FlaskClient, session: Session, known: dict[str, Any]
):
    login(client, "inv1")
    page = client.post(f"/participants/{known['id']}/unblind", data=_form(known))
    assert "Location" not in page.headers
    assert page.request.url.endswith(f"/participants/{known['id']}/unblind")
    assert known["arm"] not in page.request.url


REFUSALS = [
    ("whitespace reason", {"reason": "   "}, 422),
    ("no reason", {"reason": ""}, 422),
    ("no category", {"reason_category": ""}, 422),
    ("wrong password", {"password": "not-the-password"}, 401),
    ("wrong number", {"confirm_number": "T99-0000"}, 422),
]


@pytest.mark.parametrize(
    ("over", "status"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_refused_form_shows_the_error_and_changes_nothing(
    client: FlaskClient,
    session: Session,
    known: dict[str, Any],
    over: dict[str, Any],
    status: int,
):
    login(client, "inv1")  # signing in is audited: count after it
    before = counts(session)
    session.rollback()
    page = client.post(f"/participants/{known['id']}/unblind", data=_form(known, **over))
    assert page.status_code == status
    html = page.get_data(as_text=True)
    assert 'class="error"' in html
    assert not [text for text in ARM_TEXTS if text in html]
    session.rollback()
    assert counts(session) == before


def test_a_form_naming_two_participants_is_refused(
    client: FlaskClient,
    session: Session,
    study: Study,
    users: dict[str, User],
    known: dict[str, Any],
):
    other = randomized(session, study, users["investigator"], "SCR-002")
    other_id, other_number = other.id, other.randomization_number
    login(client, "inv1")
    before = counts(session)
    session.rollback()
    path = f"/participants/{known['id']}/unblind"
    for extra in (
        {"confirm_number": [known["number"], other_number]},
        {"participant_id": str(other_id)},
        {"participant_ids": [str(known["id"]), str(other_id)]},
    ):
        page = client.post(path, data={**_form(known), **extra})
        assert page.status_code == 422, extra
    session.rollback()
    assert counts(session) == before


@pytest.mark.parametrize(("who", "status"), [("inv2", 404), ("pharm1", 403), ("assess1", 403),
                                             ("admin1", 403), ("stat1", 403)])  # fmt: skip
def test_only_an_investigator_of_the_site_reaches_the_form(
    client: FlaskClient, session: Session, known: dict[str, Any], who: str, status: int
):
    login(client, who)
    before = counts(session)
    session.rollback()
    assert client.get(f"/participants/{known['id']}/unblind").status_code == status
    page = client.post(f"/participants/{known['id']}/unblind", data=_form(known))
    assert page.status_code == status
    session.rollback()
    assert counts(session) == before
