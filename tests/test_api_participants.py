"""The participant endpoints of SPEC §4.2 through the test client."""

from __future__ import annotations

import json

import pytest

from randomizer.models import AllocationSlot, Participant, ParticipantStatus
from tests.conftest import PASSWORD
from tests.enrollment_support import (
    ELIGIBLE,
    actions,
    call,
    prepare_supply,
    register,
    snapshot,
    token_for,
)

ARMS = ("ACTIVEX", "PLACEBOX")


@pytest.fixture
def trial(session, study, users):
    prepare_supply(session, study)
    return study


@pytest.fixture
def inv_token(session, users):
    return token_for(session, users["investigator"])


def enrol(client, token, number="SCR-1", **over):
    body = {
        "site": "S1",
        "screening_number": number,
        "factors": {"grade": "low"},
        "eligibility": dict(ELIGIBLE),
        **over,
    }
    return call(client, "POST", "/api/v1/studies/TST/participants", token, body, key=None)


def randomize(client, token, pid, password=PASSWORD, key=True):
    body = {"signature": {"password": password}}
    return call(client, "POST", f"/api/v1/participants/{pid}/randomize", token, body, key=key)


def test_register_eligible_participant(client, trial, inv_token):
    response = enrol(client, inv_token)
    assert response.status_code == 201
    assert response.json["status"] == "eligible"
    assert response.json["failed_criteria"] == []
    assert isinstance(response.json["participant_id"], int)


def test_register_screen_failure_names_criteria(client, trial, inv_token):
    answers = {"consent": False, "age": 12, "pregnant": True}
    response = enrol(client, inv_token, eligibility=answers)
    assert response.status_code == 201
    assert response.json["status"] == "screen_failed"
    assert response.json["failed_criteria"] == ["consent", "age", "pregnant"]


def test_register_at_another_site_is_refused(client, trial, inv_token):
    response = enrol(client, inv_token, site="S2")
    assert response.status_code == 403
    assert response.json["field"] == "site"


def test_register_duplicate_screening_number_conflicts(client, trial, inv_token):
    assert enrol(client, inv_token).status_code == 201
    again = enrol(client, inv_token)
    assert again.status_code == 409
    assert "screening_number" in again.json["detail"]


def test_register_unknown_study_is_404(client, trial, inv_token):
    body = {"site": "S1", "screening_number": "X", "factors": {}, "eligibility": {}}
    response = call(client, "POST", "/api/v1/studies/NOPE/participants", inv_token, body, key=None)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_randomize_answers_number_and_kit_without_arm(client, session, trial, inv_token):
    pid = enrol(client, inv_token).json["participant_id"]
    response = randomize(client, inv_token, pid)
    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == {"participant_id", "randomization_number", "kit_code", "randomized_at"}
    assert body["participant_id"] == pid
    assert body["randomized_at"].endswith("Z")
    assert not any(arm in response.get_data(as_text=True) for arm in ARMS)
    events = actions(session, "participant.randomize")
    assert len(events) == 1
    assert not any(arm in (events[0].new_values or "") for arm in ARMS)
    signature = json.loads(events[0].new_values or "{}")["signature"]
    assert signature["signer"] == "inv1"
    assert signature["meaning"].startswith("I confirm this participant is eligible")


def test_randomize_twice_with_new_key_is_409(client, trial, inv_token):
    pid = enrol(client, inv_token).json["participant_id"]
    assert randomize(client, inv_token, pid).status_code == 201
    again = randomize(client, inv_token, pid)
    assert again.status_code == 409
    assert again.json["type"].endswith("already-randomized")


def test_randomize_same_key_replays_original_answer(client, session, trial, inv_token):
    pid = enrol(client, inv_token).json["participant_id"]
    first = randomize(client, inv_token, pid, key="k-1")
    second = randomize(client, inv_token, pid, key="k-1")
    assert (second.status_code, second.json) == (first.status_code, first.json)
    assert len(actions(session, "participant.randomize")) == 1


def test_same_key_different_body_is_422(client, session, trial, inv_token):
    p1 = enrol(client, inv_token, "A").json["participant_id"]
    p2 = enrol(client, inv_token, "B").json["participant_id"]
    assert randomize(client, inv_token, p1, key="k-2").status_code == 201
    reused = randomize(client, inv_token, p2, key="k-2")
    assert reused.status_code == 422
    assert reused.json["type"].endswith("idempotency-key-reused")
    assert session.get(Participant, p2).status is ParticipantStatus.ELIGIBLE


def test_missing_idempotency_key_is_400_problem(client, trial, inv_token):
    pid = enrol(client, inv_token).json["participant_id"]
    response = randomize(client, inv_token, pid, key=None)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert "Idempotency-Key" in response.json["detail"]


def test_keys_are_scoped_per_user(client, session, trial, inv_token, users):
    other = token_for(session, users["investigator2"])
    p1 = enrol(client, inv_token, "A").json["participant_id"]
    body = {"site": "S2", "screening_number": "B", "factors": {"grade": "low"},
            "eligibility": ELIGIBLE}  # fmt: skip
    p2 = call(client, "POST", "/api/v1/studies/TST/participants", other, body, key=None)
    assert randomize(client, inv_token, p1, key="shared").status_code == 201
    assert randomize(client, other, p2.json["participant_id"], key="shared").status_code == 201


def test_refused_request_frees_its_key(client, trial, inv_token):
    pid = enrol(client, inv_token).json["participant_id"]
    assert (
        randomize(client, inv_token, pid, password="wrong-password!", key="k-3").status_code == 401
    )
    assert randomize(client, inv_token, pid, key="k-3").status_code == 201


def test_ineligible_is_422_and_consumes_nothing(client, session, trial, inv_token):
    pid = enrol(client, inv_token, eligibility={**ELIGIBLE, "age": 90}).json["participant_id"]
    before = snapshot(session)
    response = randomize(client, inv_token, pid)
    assert response.status_code == 422
    assert response.json["type"].endswith("not-eligible")
    assert snapshot(session) == before


def test_wrong_signature_is_401_and_consumes_nothing(client, session, trial, inv_token):
    pid = enrol(client, inv_token).json["participant_id"]
    before = snapshot(session)
    response = randomize(client, inv_token, pid, password="not-my-password")
    assert response.status_code == 401
    assert response.json["type"].endswith("signature-invalid")
    assert snapshot(session) == before


def test_no_supply_answer_is_identical_whichever_arm_is_short(
    client, session, study, users, inv_token
):
    """Two participants whose slots hold different arms meet the same empty site."""
    prepare_supply(session, study, sites=("S2",))  # nothing at S1
    answers = {}
    for n in range(6):
        pid = enrol(client, inv_token, f"N{n}").json["participant_id"]
        response = randomize(client, inv_token, pid)
        assert response.status_code == 409
        answers[n] = (response.status_code, response.get_data(), dict(response.headers))
    bodies = {a[1] for a in answers.values()}
    assert len(bodies) == 1
    assert json.loads(bodies.pop())["type"].endswith("supply-unavailable")
    assert session.query(AllocationSlot).filter_by(status="used").count() == 0


def test_get_participant_for_each_role(client, session, trial, inv_token, users):
    pid = enrol(client, inv_token).json["participant_id"]
    rnd = randomize(client, inv_token, pid).json
    for role in ("investigator", "admin", "statistician", "pharmacist", "assessor"):
        token = inv_token if role == "investigator" else token_for(session, users[role])
        response = call(client, "GET", f"/api/v1/participants/{pid}", token, key=None)
        assert response.status_code == 200, role
        body = response.json
        assert body["randomization_number"] == rnd["randomization_number"]
        assert body["site"] == "S1" and body["status"] == "randomized"
        if role == "assessor":
            assert "kits" not in body
            assert rnd["kit_code"] not in response.get_data(as_text=True)
        else:
            assert body["kits"] == [{"visit": "baseline", "kit_code": rnd["kit_code"]}]
        assert not any(arm in response.get_data(as_text=True) for arm in ARMS)


def test_other_sites_participant_is_404(client, session, trial, inv_token, users):
    pid = enrol(client, inv_token).json["participant_id"]
    other = token_for(session, users["investigator2"])
    unknown = call(client, "GET", "/api/v1/participants/999999", other, key=None)
    foreign = call(client, "GET", f"/api/v1/participants/{pid}", other, key=None)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json["detail"].replace(str(pid), "N") == unknown.json["detail"].replace(
        "999999", "N"
    )
    assert randomize(client, other, pid).status_code == 404


def test_only_investigators_randomize(client, session, trial, inv_token, users):
    pid = enrol(client, inv_token).json["participant_id"]
    for role in ("admin", "statistician", "pharmacist", "assessor"):
        token = token_for(session, users[role])
        assert randomize(client, token, pid).status_code == 403, role
        assert enrol(client, token, f"X-{role}").status_code == 403, role


def test_dispense_month_6_outside_window_needs_reason(client, session, trial, inv_token):
    pid = enrol(client, inv_token).json["participant_id"]
    assert randomize(client, inv_token, pid).status_code == 201
    path = f"/api/v1/participants/{pid}/dispense"
    body = {"visit": "month_6", "signature": {"password": PASSWORD}}
    refused = call(client, "POST", path, inv_token, body)
    assert refused.status_code == 422
    assert refused.json["field"] == "override_reason"
    done = call(client, "POST", path, inv_token, {**body, "override_reason": "Early infusion"})
    assert done.status_code == 201, done.json
    assert set(done.json) == {"visit", "kit_code"}
    assert done.json["visit"] == "month_6"
    event = actions(session, "participant.dispense")[0]
    assert event.reason == "Early infusion"


BAD_BODIES = [
    pytest.param(b"", "application/json", 400, None, id="empty"),
    pytest.param(b"{not json", "application/json", 400, None, id="malformed"),
    pytest.param(b"\xff\xfe\x00", "application/json", 400, None, id="not-utf8"),
    pytest.param(b"[" * 5000 + b"]" * 5000, "application/json", 400, None, id="deep-nesting"),
    pytest.param(b"[]", "application/json", 422, "body", id="array"),
    pytest.param(b"null", "application/json", 422, "body", id="null"),
    pytest.param(b'"text"', "application/json", 422, "body", id="string"),
    pytest.param(b"{}", "application/json", 422, "signature", id="no-signature"),
    pytest.param(b'{"signature": "pw"}', "application/json", 422, "signature", id="sig-string"),
    pytest.param(b'{"signature": {}}', "application/json", 422, "password", id="no-password"),
    pytest.param(
        b'{"signature": {"password": 5}}', "application/json", 422, "password", id="password-number"
    ),
    pytest.param(
        b'{"signature": {"password": ""}}', "application/json", 422, "password", id="password-empty"
    ),
    pytest.param(
        b'{"signature": {"password": null}}',
        "application/json",
        422,
        "password",
        id="password-null",
    ),
    pytest.param(
        b'{"signature": {"password": "x"}}', "text/plain", 415, "Content-Type", id="text-plain"
    ),
    pytest.param(
        b"signature=x", "application/x-www-form-urlencoded", 415, "Content-Type", id="form"
    ),
]


@pytest.mark.parametrize(("raw", "ctype", "status", "field"), BAD_BODIES)
def test_bad_randomize_bodies_get_problem_details(
    client, session, trial, inv_token, raw, ctype, status, field
):
    pid = enrol(client, inv_token).json["participant_id"]
    before = snapshot(session)
    path = f"/api/v1/participants/{pid}/randomize"
    response = call(client, "POST", path, inv_token, raw=raw, content_type=ctype)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert response.json["detail"]
    if field:
        assert field in response.json["detail"] or field in response.json.get("field", "")
    assert snapshot(session) == before


REGISTER_BAD = [
    pytest.param({}, "site", id="empty"),
    pytest.param({"site": 1}, "site", id="site-number"),
    pytest.param({"site": "S1"}, "screening_number", id="no-number"),
    pytest.param({"site": "S1", "screening_number": ["x"]}, "screening_number", id="number-list"),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "  ",
            "factors": {"grade": "low"},
            "eligibility": ELIGIBLE,
        },
        "screening_number",
        id="number-blank",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "x" * 65,
            "factors": {"grade": "low"},
            "eligibility": ELIGIBLE,
        },
        "screening_number",
        id="number-long",
    ),
    pytest.param({"site": "S1", "screening_number": "A"}, "factors", id="no-factors"),
    pytest.param(
        {"site": "S1", "screening_number": "A", "factors": []}, "factors", id="factors-array"
    ),
    pytest.param(
        {"site": "S1", "screening_number": "A", "factors": {"grade": "low"}},
        "eligibility",
        id="no-eligibility",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "A",
            "factors": {"grade": "mid"},
            "eligibility": ELIGIBLE,
        },
        "factors.grade",
        id="bad-level",
    ),
    pytest.param(
        {"site": "S1", "screening_number": "A", "factors": {"grade": 3}, "eligibility": ELIGIBLE},
        "factors.grade",
        id="level-number",
    ),
    pytest.param(
        {"site": "S1", "screening_number": "A", "factors": {}, "eligibility": ELIGIBLE},
        "factors.grade",
        id="missing-factor",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "A",
            "factors": {"grade": "low", "x": "y"},
            "eligibility": ELIGIBLE,
        },
        "factors.x",
        id="unknown-factor",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "A",
            "factors": {"grade": "low"},
            "eligibility": {**ELIGIBLE, "age": "forty"},
        },
        "eligibility.age",
        id="age-text",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "A",
            "factors": {"grade": "low"},
            "eligibility": {**ELIGIBLE, "age": "40"},
        },
        "eligibility.age",
        id="age-digits-in-a-string",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "A",
            "factors": {"grade": "low"},
            "eligibility": {**ELIGIBLE, "consent": "yes"},
        },
        "eligibility.consent",
        id="consent-text",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "A",
            "factors": {"grade": "low"},
            "eligibility": {"consent": True, "age": 40},
        },
        "eligibility.pregnant",
        id="missing-answer",
    ),
    pytest.param(
        {
            "site": "S1",
            "screening_number": "A",
            "factors": {"grade": "low"},
            "eligibility": {**ELIGIBLE, "smoker": True},
        },
        "eligibility.smoker",
        id="unknown-criterion",
    ),
    pytest.param(
        {
            "site": "S9",
            "screening_number": "A",
            "factors": {"grade": "low"},
            "eligibility": ELIGIBLE,
        },
        "site",
        id="unknown-site",
    ),
]


@pytest.mark.parametrize(("body", "field"), REGISTER_BAD)
def test_bad_register_bodies_name_the_field(client, session, trial, inv_token, body, field):
    before = snapshot(session)
    response = call(client, "POST", "/api/v1/studies/TST/participants", inv_token, body, key=None)
    assert 400 <= response.status_code < 500
    assert response.mimetype == "application/problem+json"
    assert field in response.json["detail"]
    assert snapshot(session) == before


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_number_that_is_not_finite_is_refused_naming_the_answer(
    client, session, trial, inv_token, number
):
    raw = (
        b'{"site": "S1", "screening_number": "A", "factors": {"grade": "low"}, '
        b'"eligibility": {"consent": true, "pregnant": false, "age": ' + number + b"}}"
    )
    before = snapshot(session)
    path = "/api/v1/studies/TST/participants"
    response = call(client, "POST", path, inv_token, raw=raw, key=None)
    assert response.status_code == 422
    assert response.json["field"] == "eligibility.age"
    assert snapshot(session) == before


DISPENSE_BAD = [
    pytest.param({"signature": {"password": PASSWORD}}, "visit", id="no-visit"),
    pytest.param({"visit": 6, "signature": {"password": PASSWORD}}, "visit", id="visit-number"),
    pytest.param(
        {"visit": "month_9", "signature": {"password": PASSWORD}}, "visit", id="unknown-visit"
    ),
    pytest.param(
        {"visit": "baseline", "signature": {"password": PASSWORD}}, "visit", id="baseline-again"
    ),
    pytest.param(
        {"visit": "month_6", "override_reason": 1, "signature": {"password": PASSWORD}},
        "override_reason",
        id="reason-number",
    ),
    pytest.param({"visit": "month_6"}, "signature", id="no-signature"),
]


@pytest.mark.parametrize(("body", "field"), DISPENSE_BAD)
def test_bad_dispense_bodies_name_the_field(client, session, trial, inv_token, body, field):
    pid = enrol(client, inv_token).json["participant_id"]
    assert randomize(client, inv_token, pid).status_code == 201
    before = snapshot(session)
    response = call(client, "POST", f"/api/v1/participants/{pid}/dispense", inv_token, body)
    assert 400 <= response.status_code < 500
    assert response.mimetype == "application/problem+json"
    assert field in response.json["detail"]
    assert snapshot(session) == before


@pytest.mark.parametrize(
    "path",
    ["/api/v1/participants/abc", "/api/v1/participants/99999999999999999999",
     "/api/v1/participants/0", "/api/v1/participants/-1"],
)  # fmt: skip
def test_unknown_participant_ids_are_404_problems(client, trial, inv_token, path):
    response = call(client, "GET", path, inv_token, key=None)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    response = call(
        client, "POST", path + "/randomize", inv_token, {"signature": {"password": "x"}}
    )
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_list_exhausted_is_a_clear_409(client, session, study, users, inv_token):
    prepare_supply(session, study, per_stratum=2)
    for n in range(2):
        pid = enrol(client, inv_token, f"E{n}").json["participant_id"]
        assert randomize(client, inv_token, pid).status_code == 201
    pid = enrol(client, inv_token, "E2").json["participant_id"]
    before = snapshot(session)
    response = randomize(client, inv_token, pid)
    assert response.status_code == 409
    assert response.json["type"].endswith("list-exhausted")
    assert "extend the list" in response.json["detail"]
    assert snapshot(session) == before


def test_register_through_service_is_visible_to_api(client, session, trial, inv_token, users):
    p = register(session, trial, users["investigator"], "SVC-1")
    response = call(client, "GET", f"/api/v1/participants/{p.id}", inv_token, key=None)
    assert response.json["status"] == "eligible"
