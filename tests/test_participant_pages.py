"""Participant pages through the test client: screening, signed randomization, confirmation,
later dispensing, status changes, site scope and the assessor's read-only view."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from randomizer.db import db
from randomizer.models import AllocationSlot, Participant, ParticipantStatus, Role, SlotStatus
from tests.conftest import PASSWORD, csrf_token, login, make_study, make_user
from tests.enrollment_support import ELIGIBLE, actions, prepare_supply, register, snapshot

ARMS = ("ACTIVEX", "PLACEBOX", "Active product X", "Placebo product X")


@pytest.fixture
def trial(session, study, users):
    prepare_supply(session, study)
    return study


@pytest.fixture
def client(client):
    """Pages in English (the default is Spanish), so the tests can read the texts."""
    client.get("/lang/en")
    return client


@pytest.fixture
def inv_client(client, trial, users):
    assert login(client, "inv1").status_code == 302
    return client


def submission(html: str) -> str:
    found = re.search(r'name="submission" type="hidden" value="([0-9a-f]+)"', html) or re.search(
        r'id="submission" name="submission" type="hidden" value="([0-9a-f]+)"', html
    )
    assert found, "no submission token in the form"
    return found.group(1)


def screening_body(number="SCR-1", **over):
    body = {
        "site": "S1",
        "screening_number": number,
        "factor-grade": "low",
        "criterion-consent": "yes",
        "criterion-age": "40",
        "criterion-pregnant": "no",
    }
    body.update(over)
    return body


def screen(client, body):
    page = client.get("/studies/TST/participants/new")
    return client.post(
        "/studies/TST/participants/new",
        data={**body, "submission": submission(page.get_data(as_text=True))},
    )


def test_screening_form_has_a_field_per_eligibility_item(inv_client):
    html = inv_client.get("/studies/TST/participants/new").get_data(as_text=True)
    radios = re.findall(r'<input [^>]*name="(criterion-\w+)"[^>]*type="radio" value="(\w+)"', html)
    assert set(radios) == {(f"criterion-{c}", v) for c in ("consent", "pregnant")
                           for v in ("yes", "no")}  # fmt: skip
    assert re.search(r'<input [^>]*decimal"[^>]*name="criterion-age"[^>]*type="text"', html)
    assert "Included when the value is from 18 to 75" in html
    assert 'name="factor-grade"' in html


def test_screening_registers_an_eligible_participant(inv_client, session):
    response = screen(inv_client, screening_body())
    assert response.status_code == 302
    page = inv_client.get(response.location)
    assert "eligible and can be randomized" in page.get_data(as_text=True)
    participant = session.scalars(select(Participant)).one()
    assert participant.status is ParticipantStatus.ELIGIBLE
    assert participant.eligibility == ELIGIBLE


def test_screen_failure_names_the_criteria(inv_client, session):
    response = screen(inv_client, screening_body(**{"criterion-age": "12"}))
    page = inv_client.get(response.location).get_data(as_text=True)
    assert "Criteria not met: Age in years." in page
    assert session.scalars(select(Participant)).one().failed_criteria == ["age"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("criterion-consent", None),
        ("criterion-age", ""),
        ("criterion-age", "forty"),
        ("criterion-age", "nan"),
        ("factor-grade", ""),
        ("screening_number", ""),
    ],
)
def test_incomplete_screening_is_refused_next_to_the_field(inv_client, session, field, value):
    body = screening_body()
    if value is None:
        del body[field]
    else:
        body[field] = value
    response = screen(inv_client, body)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert f'id="{field}-error"' in html
    assert session.scalar(select(func.count()).select_from(Participant)) == 0


def test_duplicate_screening_number_shown_next_to_the_field(inv_client, session):
    screen(inv_client, screening_body())
    again = screen(inv_client, screening_body())
    assert again.status_code == 409
    assert 'id="screening_number-error"' in again.get_data(as_text=True)


def test_double_submitted_screening_registers_once(inv_client, session):
    page = inv_client.get("/studies/TST/participants/new").get_data(as_text=True)
    data = {**screening_body(), "submission": submission(page)}
    first = inv_client.post("/studies/TST/participants/new", data=data)
    second = inv_client.post("/studies/TST/participants/new", data=data)
    assert first.location == second.location
    assert session.scalar(select(func.count()).select_from(Participant)) == 1


def _randomize(client, pid, password=PASSWORD, token=None):
    page = client.get(f"/participants/{pid}/randomize").get_data(as_text=True)
    token = token or submission(page)
    return client.post(
        f"/participants/{pid}/randomize", data={"password": password, "submission": token}
    )


def test_randomize_page_states_the_meaning_and_asks_for_the_password(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    html = inv_client.get(f"/participants/{p.id}/randomize").get_data(as_text=True)
    assert "I confirm this participant is eligible and request randomization" in html
    assert 'type="password"' in html


def _study(session):
    from randomizer.models import Study

    return session.scalars(select(Study)).one()


def test_signed_randomization_leads_to_a_blinded_confirmation(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    response = _randomize(inv_client, p.id)
    assert response.status_code == 302
    assert response.location.endswith(f"/participants/{p.id}/confirmation")
    html = inv_client.get(response.location).get_data(as_text=True)
    session.refresh(p)
    assert p.randomization_number in html
    kit = session.scalars(select(AllocationSlot).where(AllocationSlot.participant_id == p.id)).one()
    assert kit.randomization_number in html
    assert "I confirm this participant is eligible" in html
    assert "inv1" in html and "UTC" in html
    assert "TEST" in html
    assert not any(arm in html for arm in ARMS)


def test_wrong_password_on_page_changes_nothing(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    before = snapshot(session)
    response = _randomize(inv_client, p.id, password="not-the-password")
    assert response.status_code == 401
    assert 'id="password-error"' in response.get_data(as_text=True)
    assert snapshot(session) == before


def test_double_click_on_randomize_has_one_effect(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    page = inv_client.get(f"/participants/{p.id}/randomize").get_data(as_text=True)
    token = submission(page)
    first = _randomize(inv_client, p.id, token=token)
    second = _randomize(inv_client, p.id, token=token)
    assert first.status_code == second.status_code == 302
    assert first.location == second.location
    assert len(actions(session, "participant.randomize")) == 1


def test_ineligible_participant_cannot_be_randomized_on_page(inv_client, session, users):
    answers = {**ELIGIBLE, "consent": False}
    p = register(session, _study(session), users["investigator"], "A", answers=answers)
    before = snapshot(session)
    html = inv_client.get(f"/participants/{p.id}/randomize").get_data(as_text=True)
    assert "Not eligible" in html
    response = _randomize(inv_client, p.id) if 'name="submission"' in html else None
    assert response is None
    assert snapshot(session) == before


def test_other_sites_participant_pages_are_404(inv_client, session, users):
    p = register(session, _study(session), users["investigator2"], "B", site="S2")
    for path in ("", "/randomize", "/confirmation", "/dispense", "/withdraw", "/correct"):
        assert inv_client.get(f"/participants/{p.id}{path}").status_code == 404, path


def test_list_shows_own_sites_with_test_marker(inv_client, session, users):
    study = _study(session)
    register(session, study, users["investigator"], "MINE-1")
    register(session, study, users["investigator2"], "THEIRS-1", site="S2")
    html = inv_client.get("/studies/TST/participants").get_data(as_text=True)
    assert "MINE-1" in html and "THEIRS-1" not in html
    assert "test-marker" in html


def test_assessor_sees_status_read_only_without_kit_codes(client, session, trial, users):
    p = register(session, trial, users["investigator"], "A")
    from randomizer.services import enrollment

    done = enrollment.randomize(session, p, signer=users["investigator"], password=PASSWORD)
    session.commit()
    login(client, "assess1")
    listing = client.get("/studies/TST/participants").get_data(as_text=True)
    assert done.randomization_number in listing
    assert "Randomize" not in listing.replace("Randomized", "")
    page = client.get(f"/participants/{p.id}").get_data(as_text=True)
    assert done.kit_code not in page and done.kit_code not in listing
    assert "Withdraw" not in page
    assert client.get(f"/participants/{p.id}/confirmation").status_code == 403
    assert client.post(f"/participants/{p.id}/randomize", data={}).status_code == 403


def test_month_6_page_needs_a_reason_outside_the_window(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    _randomize(inv_client, p.id)
    page = inv_client.get(f"/participants/{p.id}/dispense").get_data(as_text=True)
    assert "outside the window today" in page
    data = {"visit": "month_6", "password": PASSWORD, "submission": submission(page)}
    refused = inv_client.post(f"/participants/{p.id}/dispense", data=data)
    assert refused.status_code == 422
    assert 'id="override_reason-error"' in refused.get_data(as_text=True)
    done = inv_client.post(
        f"/participants/{p.id}/dispense", data={**data, "override_reason": "Brought forward"}
    )
    assert done.status_code == 302
    assert "is allocated for visit month_6" in inv_client.get(done.location).get_data(as_text=True)


def test_withdrawal_needs_a_reason_and_keeps_the_slot(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    _randomize(inv_client, p.id)
    page = inv_client.get(f"/participants/{p.id}/withdraw").get_data(as_text=True)
    token = submission(page)
    refused = inv_client.post(f"/participants/{p.id}/withdraw", data={"submission": token})
    assert refused.status_code == 422
    done = inv_client.post(
        f"/participants/{p.id}/withdraw", data={"submission": token, "reason": "Moved abroad"}
    )
    assert done.status_code == 302
    session.expire_all()
    assert session.get(Participant, p.id).status is ParticipantStatus.WITHDRAWN
    slot = session.scalars(select(AllocationSlot).where(AllocationSlot.participant_id == p.id))
    assert slot.one().status is SlotStatus.USED


def test_correction_page_saves_with_reason(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    page = inv_client.get(f"/participants/{p.id}/correct").get_data(as_text=True)
    assert 'value="A"' in page
    data = {**screening_body("A", **{"criterion-age": "80"}), "submission": submission(page),
            "reason": "Age misread"}  # fmt: skip
    response = inv_client.post(f"/participants/{p.id}/correct", data=data)
    assert response.status_code == 302
    session.expire_all()
    assert session.get(Participant, p.id).failed_criteria == ["age"]
    assert actions(session, "participant.correct")[0].reason == "Age misread"


def test_replace_kit_page_replaces_with_reason(inv_client, session, users):
    p = register(session, _study(session), users["investigator"], "A")
    _randomize(inv_client, p.id)
    page = inv_client.get(f"/participants/{p.id}/replace-kit").get_data(as_text=True)
    old = re.search(r'<option [^>]*value="([0-9A-Z-]+)"', page).group(1)
    data = {"kit_code": old, "what": "damaged", "submission": submission(page)}
    refused = inv_client.post(f"/participants/{p.id}/replace-kit", data=data)
    assert refused.status_code == 422
    done = inv_client.post(f"/participants/{p.id}/replace-kit", data={**data, "reason": "Cracked"})
    assert done.status_code == 302
    html = inv_client.get(done.location).get_data(as_text=True)
    assert f"Kit {old} was replaced by kit" in html
    assert not any(arm in html for arm in ARMS)


@pytest.mark.parametrize("app_config", [{"WTF_CSRF_ENABLED": True}])
def test_randomize_form_is_csrf_protected(app, client, app_config):
    # No `session` fixture here: its app context would be shared by every request (and
    # with it Flask-WTF's per-context token cache), which real requests never do.
    with app.app_context():
        study = make_study(db.session)
        inv = make_user(db.session, "inv1", Role.INVESTIGATOR, ("S1",))
        prepare_supply(db.session, study)
        pid = register(db.session, study, inv, "A").id
        db.session.remove()
    login_page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"username": "inv1", "password": PASSWORD,
                                "csrf_token": csrf_token(login_page)})  # fmt: skip
    page = client.get(f"/participants/{pid}/randomize").get_data(as_text=True)
    data = {"password": PASSWORD, "submission": submission(page)}
    assert client.post(f"/participants/{pid}/randomize", data=data).status_code == 400
    data["csrf_token"] = csrf_token(page)
    assert client.post(f"/participants/{pid}/randomize", data=data).status_code == 302
    with app.app_context():
        assert len(actions(db.session, "participant.randomize")) == 1
        db.session.remove()
