"""Registration under an optional Idempotency-Key, and the look-up by screening number."""

from __future__ import annotations

import pytest

from randomizer import audit
from randomizer.services.users import update_user
from tests.enrollment_support import ELIGIBLE, actions, call, prepare_supply, token_for

REGISTER = "/api/v1/studies/TST/participants"


@pytest.fixture
def trial(session, study, users):
    prepare_supply(session, study)
    return study


def _body(number: str = "SCR-1", site: str = "S1") -> dict[str, object]:
    return {
        "site": site,
        "screening_number": number,
        "factors": {"grade": "low"},
        "eligibility": dict(ELIGIBLE),
    }


def _lookup(client, token, number: str = "SCR-1", study: str = "TST"):
    path = f"/api/v1/studies/{study}/participants?screening_number={number}"
    return call(client, "GET", path, token, key=None)


def test_registration_retried_with_its_key_answers_the_same_participant(
    client, session, trial, users
):
    token = token_for(session, users["investigator"])
    first = call(client, "POST", REGISTER, token, _body(), key="reg-1")
    again = call(client, "POST", REGISTER, token, _body(), key="reg-1")
    assert first.status_code == again.status_code == 201
    assert again.json == first.json
    assert len(actions(session, "participant.register")) == 1


def test_registration_key_reused_for_another_participant_is_422(client, session, trial, users):
    token = token_for(session, users["investigator"])
    assert call(client, "POST", REGISTER, token, _body(), key="reg-1").status_code == 201
    reused = call(client, "POST", REGISTER, token, _body("SCR-2"), key="reg-1")
    assert reused.status_code == 422
    assert reused.json["field"] == "Idempotency-Key"


def test_registration_replay_refused_after_the_investigator_left_the_site(
    client, session, trial, users
):
    token = token_for(session, users["investigator"])
    assert call(client, "POST", REGISTER, token, _body(), key="reg-1").status_code == 201
    update_user(session, users["investigator"], actor=audit.SYSTEM, sites=("S2",))
    session.commit()
    replay = call(client, "POST", REGISTER, token, _body(), key="reg-1")
    assert replay.status_code == 403
    assert "participant_id" not in replay.json


def test_lost_registration_answer_is_found_by_screening_number(client, session, trial, users):
    token = token_for(session, users["investigator"])
    created = call(client, "POST", REGISTER, token, _body(), key=None).json
    found = _lookup(client, token)
    assert found.status_code == 200
    assert [p["participant_id"] for p in found.json] == [created["participant_id"]]
    assert found.json[0]["screening_number"] == "SCR-1"
    assert found.json[0]["status"] == "eligible"


def test_lookup_of_an_unknown_screening_number_is_an_empty_list(client, session, trial, users):
    token = token_for(session, users["investigator"])
    response = _lookup(client, token, "NOBODY")
    assert response.status_code == 200
    assert response.json == []


def test_lookup_hides_participants_of_other_sites(client, session, trial, users):
    call(client, "POST", REGISTER, token_for(session, users["investigator"]), _body(), key=None)
    assert _lookup(client, token_for(session, users["investigator2"])).json == []


def test_assessor_looks_up_without_kit_codes(client, session, trial, users):
    call(client, "POST", REGISTER, token_for(session, users["investigator"]), _body(), key=None)
    found = _lookup(client, token_for(session, users["assessor"])).json
    assert len(found) == 1
    assert "kits" not in found[0]


@pytest.mark.parametrize("role", ["pharmacist", "statistician"])
def test_lookup_is_refused_to_other_roles(client, session, trial, users, role):
    assert _lookup(client, token_for(session, users[role])).status_code == 403


def test_lookup_needs_a_screening_number(client, session, trial, users):
    token = token_for(session, users["investigator"])
    response = call(client, "GET", "/api/v1/studies/TST/participants", token, key=None)
    assert response.status_code == 422
    assert response.json["field"] == "screening_number"


def test_lookup_in_an_unknown_study_is_404(client, session, trial, users):
    assert (
        _lookup(client, token_for(session, users["investigator"]), study="NOPE").status_code == 404
    )
