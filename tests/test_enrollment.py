"""The enrollment services with a session: screening, corrections, slots, statuses, dispensing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from randomizer import audit
from randomizer.errors import (
    AlreadyRandomized,
    Conflict,
    InvalidInput,
    NotEligible,
    StratumExhausted,
    SupplyUnavailable,
)
from randomizer.models import (
    AllocationSlot,
    Dispensation,
    Kit,
    ListKind,
    ParticipantStatus,
    SlotStatus,
    StudyMode,
)
from randomizer.services import enrollment
from randomizer.services.kits import generate_kits, kit_arm
from randomizer.services.lists import generate_list
from randomizer.services.users import actor_of
from tests.conftest import PASSWORD
from tests.enrollment_support import ELIGIBLE, actions, prepare_supply, register, snapshot


@pytest.fixture
def trial(session, study, users):
    prepare_supply(session, study, per_stratum=6)
    return study


@pytest.fixture
def inv(users):
    return users["investigator"]


def randomize(session, participant, signer, password=PASSWORD):
    done = enrollment.randomize(session, participant, signer=signer, password=password)
    session.commit()
    return done


def slot_of(session, participant):
    return session.scalars(
        select(AllocationSlot).where(AllocationSlot.participant_id == participant.id)
    ).one()


def test_register_records_eligibility_stratum_and_test_marker(session, trial, inv):
    p = register(session, trial, inv, "SCR-1", grade="high")
    assert p.status is ParticipantStatus.ELIGIBLE
    assert p.stratum == "S1|grade=high"
    assert p.is_test  # the study is in testing mode
    event = actions(session, "participant.register")[0]
    assert event.participant_id == p.id
    assert json.loads(event.new_values or "{}")["screening_number"] == "SCR-1"


def test_screen_failure_names_failed_criteria(session, trial, inv):
    p = register(session, trial, inv, "SCR-2", answers={**ELIGIBLE, "pregnant": True})
    assert p.status is ParticipantStatus.SCREEN_FAILED
    assert p.failed_criteria == ["pregnant"]


def test_correction_is_audited_with_old_new_and_reason(session, trial, inv):
    p = register(session, trial, inv, "SCR-3")
    enrollment.correct_screening(
        session, p, actor=actor_of(inv), reason="Age transcribed wrongly",
        eligibility={**ELIGIBLE, "age": 80},
    )  # fmt: skip
    session.commit()
    assert p.status is ParticipantStatus.SCREEN_FAILED
    assert p.failed_criteria == ["age"]
    event = actions(session, "participant.correct")[0]
    assert event.reason == "Age transcribed wrongly"
    assert json.loads(event.old_values or "{}")["eligibility"]["age"] == 40
    assert json.loads(event.new_values or "{}")["eligibility"]["age"] == 80
    assert json.loads(event.new_values or "{}")["status"] == "screen_failed"


def test_correction_can_change_the_stratum(session, trial, inv):
    p = register(session, trial, inv, "SCR-4")
    enrollment.correct_screening(
        session, p, actor=actor_of(inv), reason="Biopsy re-read", factors={"grade": "high"}
    )
    assert p.stratum == "S1|grade=high"


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_correction_requires_a_reason(session, trial, inv, reason):
    p = register(session, trial, inv, "SCR-5")
    with pytest.raises(InvalidInput) as err:
        enrollment.correct_screening(
            session, p, actor=actor_of(inv), reason=reason, factors={"grade": "high"}
        )
    assert err.value.field == "reason"


def test_correction_without_change_is_refused(session, trial, inv):
    p = register(session, trial, inv, "SCR-6")
    with pytest.raises(InvalidInput):
        enrollment.correct_screening(session, p, actor=actor_of(inv), reason="nothing")


def test_no_correction_after_randomization(session, trial, inv):
    p = register(session, trial, inv, "SCR-7")
    randomize(session, p, inv)
    with pytest.raises(Conflict):
        enrollment.correct_screening(
            session, p, actor=actor_of(inv), reason="late", factors={"grade": "high"}
        )


def test_next_participant_gets_the_next_slot_of_its_stratum(session, trial, inv):
    first = register(session, trial, inv, "A")
    second = register(session, trial, inv, "B")
    other = register(session, trial, inv, "C", grade="high")
    randomize(session, first, inv)
    randomize(session, other, inv)
    randomize(session, second, inv)
    assert (slot_of(session, first).sequence, slot_of(session, second).sequence) == (1, 2)
    assert slot_of(session, other).sequence == 1
    assert slot_of(session, other).stratum == "S1|grade=high"
    assert first.randomization_number == slot_of(session, first).randomization_number


@pytest.mark.parametrize("change", ["withdraw", "mark_randomized_in_error"])
def test_status_change_keeps_the_slot_and_next_gets_next(session, trial, inv, change):
    first = register(session, trial, inv, "A")
    randomize(session, first, inv)
    getattr(enrollment, change)(session, first, actor=actor_of(inv), reason="Consent withdrawn")
    session.commit()
    slot = slot_of(session, first)
    assert slot.status is SlotStatus.USED and slot.participant_id == first.id
    assert first.randomization_number == slot.randomization_number
    second = register(session, trial, inv, "B")
    randomize(session, second, inv)
    assert slot_of(session, second).sequence == 2
    assert actions(session, f"participant.{change.removeprefix('mark_')}")[0].reason


def test_status_change_requires_a_reason(session, trial, inv):
    p = register(session, trial, inv, "A")
    randomize(session, p, inv)
    with pytest.raises(InvalidInput):
        enrollment.withdraw(session, p, actor=actor_of(inv), reason=" ")


def test_randomized_in_error_needs_a_randomized_participant(session, trial, inv):
    p = register(session, trial, inv, "A")
    with pytest.raises(Conflict):
        enrollment.mark_randomized_in_error(session, p, actor=actor_of(inv), reason="x")


def test_withdrawn_before_randomization_cannot_be_randomized(session, trial, inv):
    p = register(session, trial, inv, "A")
    enrollment.withdraw(session, p, actor=actor_of(inv), reason="Moved away")
    session.commit()
    with pytest.raises(Conflict):
        randomize(session, p, inv)


def test_randomized_participant_cannot_be_randomized_again(session, trial, inv):
    p = register(session, trial, inv, "A")
    randomize(session, p, inv)
    before = snapshot(session)
    with pytest.raises(AlreadyRandomized):
        randomize(session, p, inv)
    session.rollback()
    assert snapshot(session) == before


def test_screen_failure_is_not_randomized(session, trial, inv):
    p = register(session, trial, inv, "A", answers={**ELIGIBLE, "consent": False})
    with pytest.raises(NotEligible):
        randomize(session, p, inv)


def test_exhausted_stratum_is_refused_and_changes_nothing(session, study, inv):
    prepare_supply(session, study, per_stratum=2)
    for n in range(2):
        randomize(session, register(session, study, inv, f"E{n}"), inv)
    last = register(session, study, inv, "E2")
    before = snapshot(session)
    with pytest.raises(StratumExhausted) as err:
        randomize(session, last, inv)
    session.rollback()
    assert "extend the list" in err.value.message
    assert snapshot(session) == before


def test_without_a_list_randomization_is_not_open(session, study, inv):
    p = register(session, study, inv, "A")
    with pytest.raises(StratumExhausted) as err:
        randomize(session, p, inv)
    assert "no allocation list" in err.value.message


def test_no_supply_changes_nothing(session, study, inv):
    prepare_supply(session, study, sites=("S2",))
    p = register(session, study, inv, "A")
    before = snapshot(session)
    with pytest.raises(SupplyUnavailable):
        randomize(session, p, inv)
    session.rollback()
    assert snapshot(session) == before


def test_live_mode_draws_from_the_live_list_and_refuses_test_participants(session, study, inv):
    prepare_supply(session, study)
    test_participant = register(session, study, inv, "T-1")
    generate_list(session, study, kind=ListKind.LIVE, actor=audit.SYSTEM, per_stratum=4)
    study.mode = StudyMode.LIVE
    session.commit()
    generate_kits(session, study, count=8, site="S1", actor=audit.SYSTEM)
    session.commit()
    with pytest.raises(Conflict):
        randomize(session, test_participant, inv)
    session.rollback()
    live = register(session, study, inv, "L-1")
    assert not live.is_test
    done = randomize(session, live, inv)
    assert done.randomization_number.startswith("R")
    kit = session.scalars(select(Kit).where(Kit.code == done.kit_code)).one()
    assert not kit.is_test


# --- dispensing ------------------------------------------------------------------------


def _month6(randomized_at: dt.datetime, offset: int) -> dt.date:
    return randomized_at.date() + dt.timedelta(days=182 + offset)


def test_month_6_kit_within_window_is_of_the_same_arm(session, trial, inv):
    p = register(session, trial, inv, "A")
    done = randomize(session, p, inv)
    got = enrollment.dispense(
        session, p, visit="month_6", signer=inv, password=PASSWORD,
        today=_month6(done.randomized_at, 14),
    )  # fmt: skip
    session.commit()
    kits = {code: session.scalars(select(Kit).where(Kit.code == code)).one()
            for code in (done.kit_code, got.kit_code)}  # fmt: skip
    arms = {kit_arm(session, trial, kit) for kit in kits.values()}
    assert len(arms) == 1
    assert got.override_reason is None
    assert enrollment.kits_of(session, p) == [
        ("baseline", done.kit_code),
        ("month_6", got.kit_code),
    ]
    event = actions(session, "participant.dispense")[0]
    assert json.loads(event.new_values or "{}")["outside_window"] is False


@pytest.mark.parametrize("offset", [-15, 15, -182])
def test_outside_window_needs_an_override_reason(session, trial, inv, offset):
    p = register(session, trial, inv, "A")
    done = randomize(session, p, inv)
    today = _month6(done.randomized_at, offset)
    before = snapshot(session)
    with pytest.raises(InvalidInput) as err:
        enrollment.dispense(session, p, visit="month_6", signer=inv, password=PASSWORD,
                            today=today)  # fmt: skip
    session.rollback()
    assert err.value.field == "override_reason"
    assert snapshot(session) == before
    got = enrollment.dispense(
        session, p, visit="month_6", signer=inv, password=PASSWORD, today=today,
        override_reason="Infusion brought forward by the treating physician",
    )  # fmt: skip
    session.commit()
    row = session.scalars(select(Dispensation).where(Dispensation.visit == "month_6")).one()
    assert row.override_reason == got.override_reason
    assert actions(session, "participant.dispense")[0].reason == got.override_reason


def test_second_kit_for_the_same_visit_is_refused(session, trial, inv):
    p = register(session, trial, inv, "A")
    done = randomize(session, p, inv)
    today = _month6(done.randomized_at, 0)
    enrollment.dispense(session, p, visit="month_6", signer=inv, password=PASSWORD, today=today)
    session.commit()
    with pytest.raises(Conflict):
        enrollment.dispense(session, p, visit="month_6", signer=inv, password=PASSWORD,
                            today=today)  # fmt: skip


def test_withdrawn_participant_gets_no_further_kit(session, trial, inv):
    p = register(session, trial, inv, "A")
    done = randomize(session, p, inv)
    enrollment.withdraw(session, p, actor=actor_of(inv), reason="Withdrew consent")
    session.commit()
    with pytest.raises(Conflict):
        enrollment.dispense(session, p, visit="month_6", signer=inv, password=PASSWORD,
                            today=_month6(done.randomized_at, 0))  # fmt: skip


def test_visit_window_is_day_plus_minus_window(session, trial, inv):
    p = register(session, trial, inv, "A")
    done = randomize(session, p, inv)
    window = enrollment.visit_window(enrollment.definition_of(trial), p, "month_6")
    start = done.randomized_at.date()
    assert window.due == start + dt.timedelta(days=182)
    assert (window.opens, window.closes) == (
        start + dt.timedelta(days=168),
        start + dt.timedelta(days=196),
    )


@pytest.mark.parametrize(("lost", "outcome"), [(False, "damaged"), (True, "lost")])
def test_damaged_or_lost_kit_is_replaced_by_one_of_the_same_arm(session, trial, inv, lost, outcome):
    p = register(session, trial, inv, "A")
    done = randomize(session, p, inv)
    new_code = enrollment.replace_kit(
        session, p, kit_code=done.kit_code, reason="Vial cracked", lost=lost, actor=actor_of(inv)
    )
    session.commit()
    old = session.scalars(select(Kit).where(Kit.code == done.kit_code)).one()
    new = session.scalars(select(Kit).where(Kit.code == new_code)).one()
    assert old.status.value == outcome
    assert kit_arm(session, trial, old) == kit_arm(session, trial, new)
    assert enrollment.kits_of(session, p) == [("baseline", new_code)]
    assert actions(session, "kit.replace")[0].reason == "Vial cracked"


def test_replacement_needs_a_reason_and_a_kit_of_the_participant(session, trial, inv):
    p = register(session, trial, inv, "A")
    done = randomize(session, p, inv)
    with pytest.raises(InvalidInput) as err:
        enrollment.replace_kit(session, p, kit_code=done.kit_code, reason="", lost=False,
                               actor=actor_of(inv))  # fmt: skip
    assert err.value.field == "reason"
    with pytest.raises(InvalidInput) as err:
        enrollment.replace_kit(session, p, kit_code="AAAA-AAAA", reason="x", lost=False,
                               actor=actor_of(inv))  # fmt: skip
    assert err.value.field == "kit_code"
