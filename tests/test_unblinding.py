"""Emergency unblinding through the service: who may, what it needs, what it writes."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
    RandomizerError,
    SignatureInvalid,
)
from randomizer.models import Notification, Participant, Role, Study, Unblinding, User
from randomizer.services import enrollment, unblinding
from randomizer.services.studies import definition_of
from randomizer.services.users import actor_of, enrol_totp
from tests.conftest import PASSWORD, make_study
from tests.unblinding_support import (
    ARM_TEXTS,
    ELIGIBLE,
    arm_of,
    counts,
    events,
    randomized,
    supply,
)

GOOD: dict[str, Any] = {
    "reason_category": "adverse_event",
    "reason": "Anaphylaxis after infusion; treating team must know the product.",
    "password": PASSWORD,
}


@pytest.fixture
def participant(session: Session, study: Study, users: dict[str, User]) -> Participant:
    supply(session, study)
    return randomized(session, study, users["investigator"], "SCR-001")


def _unblind(session: Session, participant: Participant, user: User, **over: Any) -> Any:
    args = {**GOOD, "confirm_number": participant.randomization_number, **over}
    return unblinding.unblind(session, participant, actor_user=user, **args)


def test_an_investigator_sees_the_arm_of_their_sites_participant_at_once(
    session: Session, study: Study, users: dict[str, User], participant: Participant
):
    expected = arm_of(session, study, participant)
    result = _unblind(session, participant, users["investigator"])
    session.commit()
    assert (result.participant_id, result.arm_code) == (participant.id, expected)
    assert result.arm_name == definition_of(study).arm(expected).name
    assert result.unblinded_at.tzinfo is not None
    session.expire_all()
    assert participant.unblinded_at == result.unblinded_at
    assert participant.unblinded_by == "inv1"


def test_a_successful_unblinding_writes_exactly_one_audit_event_with_the_required_fields(
    session: Session, users: dict[str, User], participant: Participant
):
    before = counts(session)["audit_events"]
    _unblind(session, participant, users["investigator"])
    session.commit()
    assert counts(session)["audit_events"] == before + 1
    [event] = events(session, "participant.unblind")
    new = json.loads(event.new_values or "{}")
    assert (event.actor, event.role) == ("inv1", "investigator")
    assert event.occurred_at.endswith("Z") and len(event.occurred_at) == 27
    assert event.participant_id == participant.id and event.study_code == "TST"
    assert event.reason == GOOD["reason"]
    assert new["reason_category"] == "adverse_event"
    assert new["signature"]["meaning"] == unblinding.UNBLIND_MEANING
    assert new["signature"]["username"] == "inv1"
    assert new["site"] == "S1" and new["first_unblinding"] is True


def test_the_audit_event_and_the_notification_never_hold_the_arm(
    session: Session, users: dict[str, User], participant: Participant
):
    _unblind(session, participant, users["investigator"])
    session.commit()
    [event] = events(session, "participant.unblind")
    [message] = session.scalars(select(Notification)).all()
    stored = " ".join(
        str(v)
        for v in (event.old_values, event.new_values, event.reason, message.subject, message.body)
    )
    assert not [text for text in ARM_TEXTS if text in stored]


def test_the_sponsor_notification_says_who_when_which_participant_and_site(
    session: Session, users: dict[str, User], participant: Participant
):
    result = _unblind(session, participant, users["investigator"])
    session.commit()
    [message] = session.scalars(select(Notification)).all()
    assert message.recipients == ["sponsor@example.org"]
    assert participant.randomization_number in message.subject
    assert "inv1" in message.body and "S1" in message.body
    assert result.unblinded_at.strftime("%Y-%m-%d %H:%M:%S") in message.body
    assert message.sent_at is None and message.attempts == 0


def test_notifications_of_either_arm_have_the_same_size(
    session: Session, study: Study, users: dict[str, User], participant: Participant
):
    inv = users["investigator"]
    others = [randomized(session, study, inv, f"SCR-{n:03d}") for n in range(2, 6)]
    by_arm: dict[str, set[int]] = {}
    for p in [participant, *others]:
        arm = arm_of(session, study, p)
        _unblind(session, p, inv)
        session.commit()
        message = session.scalars(select(Notification).order_by(Notification.id.desc())).first()
        assert message is not None
        by_arm.setdefault(arm, set()).add(len(message.subject + message.body))
    assert len(by_arm) == 2, "the fixed seed gives both arms among five participants"
    assert len(set.union(*by_arm.values())) == 1


REFUSALS = [
    ("no reason", {"reason": None}, InvalidInput, "reason"),
    ("empty reason", {"reason": ""}, InvalidInput, "reason"),
    ("whitespace reason", {"reason": " \t\n "}, InvalidInput, "reason"),
    ("unknown category", {"reason_category": "curiosity"}, InvalidInput, "reason_category"),
    ("no category", {"reason_category": None}, InvalidInput, "reason_category"),
    ("wrong password", {"password": "not-my-password"}, SignatureInvalid, "password"),
    ("no password", {"password": ""}, SignatureInvalid, "password"),
    ("wrong number typed", {"confirm_number": "T99-9999"}, InvalidInput, "confirm_number"),
    ("no number typed", {"confirm_number": ""}, InvalidInput, "confirm_number"),
]


@pytest.mark.parametrize(
    ("over", "error", "field"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_refused_unblinding_changes_nothing(
    session: Session,
    users: dict[str, User],
    participant: Participant,
    over: dict[str, Any],
    error: type[RandomizerError],
    field: str,
):
    before = counts(session)
    with pytest.raises(error) as raised:
        _unblind(session, participant, users["investigator"], **over)
    session.rollback()
    assert raised.value.field == field
    assert counts(session) == before


def test_another_sites_participant_is_not_found_and_nothing_changes(
    session: Session, users: dict[str, User], participant: Participant
):
    before = counts(session)
    with pytest.raises(NotFound) as raised:
        _unblind(session, participant, users["investigator2"])
    session.rollback()
    assert raised.value.message == f"No participant {participant.id} at your sites."
    assert counts(session) == before


@pytest.mark.parametrize("role", ["assessor", "pharmacist", "admin", "statistician"])
def test_other_roles_may_not_unblind_and_nothing_changes(
    session: Session, users: dict[str, User], participant: Participant, role: str
):
    before = counts(session)
    with pytest.raises(NotPermitted):
        _unblind(session, participant, users[role])
    session.rollback()
    assert counts(session) == before


def test_a_participant_not_yet_randomized_has_nothing_to_unblind(
    session: Session, study: Study, users: dict[str, User], participant: Participant
):
    eligible = enrollment.register_participant(
        session, study, site="S1", screening_number="SCR-900", factors={"grade": "low"},
        eligibility=ELIGIBLE, actor=actor_of(users["investigator"]),
    )  # fmt: skip
    session.commit()
    before = counts(session)
    with pytest.raises(Conflict):
        unblinding.unblind(
            session, eligible, actor_user=users["investigator"], confirm_number="", **GOOD
        )
    session.rollback()
    assert counts(session) == before


def test_showing_the_arm_again_is_a_new_audited_disclosure(
    session: Session, users: dict[str, User], participant: Participant
):
    first = _unblind(session, participant, users["investigator"])
    session.commit()
    again = _unblind(session, participant, users["investigator"], reason="Second look.")
    session.commit()
    assert again.arm_code == first.arm_code
    assert len(events(session, "participant.unblind")) == 2
    assert len(session.scalars(select(Unblinding)).all()) == 2
    later = json.loads(events(session, "participant.unblind")[1].new_values or "{}")
    assert later["first_unblinding"] is False
    session.expire_all()
    assert participant.unblinded_at == first.unblinded_at


def test_the_typed_number_is_compared_without_case_or_surrounding_spaces(
    session: Session, users: dict[str, User], participant: Participant
):
    typed = f"  {(participant.randomization_number or '').lower()} "
    assert _unblind(session, participant, users["investigator"], confirm_number=typed)


def test_an_enrolled_second_factor_is_required_too(
    session: Session, users: dict[str, User], participant: Participant
):
    inv = users["investigator"]
    enrol_totp(session, inv)
    session.commit()
    before = counts(session)
    for code in (None, "000000", "12345"):
        with pytest.raises(SignatureInvalid) as raised:
            _unblind(session, participant, inv, totp_code=code)
        session.rollback()
        assert raised.value.field == "totp_code"
    assert counts(session) == before


def test_a_valid_one_time_code_completes_the_signature(
    session: Session, users: dict[str, User], participant: Participant
):
    inv = users["investigator"]
    uri = enrol_totp(session, inv)
    session.commit()
    assert _unblind(session, participant, inv, totp_code=current_code(uri)).arm_code


def current_code(otpauth_uri: str) -> str:
    """The current one-time code of an otpauth:// URI, as an authenticator app shows it."""
    secret = parse_qs(urlsplit(otpauth_uri).query)["secret"][0]
    totp = TOTP(base64.b32decode(secret), 6, SHA1(), 30, enforce_key_length=False)
    return totp.generate(time.time()).decode()


@pytest.mark.parametrize(
    ("role", "assessors_see", "visible"),
    [
        (Role.ADMIN, False, True),
        (Role.STATISTICIAN, False, True),
        (Role.PHARMACIST, False, True),
        (Role.INVESTIGATOR, False, True),
        (Role.ASSESSOR, False, False),
        (Role.ASSESSOR, True, True),
    ],
)
def test_who_learns_that_a_participant_was_unblinded(
    session: Session, role: Role, assessors_see: bool, visible: bool
):
    extra = "assessors_see_unblinding = true\n" if assessors_see else ""
    study = make_study(
        session, **{'registry_id = "NCT00000001"\n': f'registry_id = "NCT00000001"\n{extra}'}
    )
    assert unblinding.unblinding_visible(role, definition_of(study)) is visible


def test_an_investigator_finds_their_participant_by_randomization_number(
    session: Session, users: dict[str, User], participant: Participant
):
    number = participant.randomization_number or ""
    assert unblinding.find_by_number(session, number.lower(), users["investigator"]) == [
        participant
    ]
    assert unblinding.find_by_number(session, number, users["investigator2"]) == []
