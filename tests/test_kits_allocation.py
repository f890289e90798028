"""Allocation of kits to participants' visits, replacement and dispensing (services)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import Conflict, InvalidInput, SupplyUnavailable
from randomizer.models import (
    AuditEvent,
    Dispensation,
    Kit,
    KitStatus,
    Participant,
    ParticipantStatus,
    Study,
)
from randomizer.services.kits import (
    NO_SUPPLY_MESSAGE,
    confirm_dispensing,
    generate_kits,
    kit_arm,
    set_status,
)
from randomizer.services.supply.allocation import allocate_kit, replace_kit

ADMIN = audit.Actor("admin1", "admin")
INV = audit.Actor("inv1", "investigator")
PHARM = audit.Actor("pharm1", "pharmacist")


def make_participant(session: Session, study: Study, site: str = "S1", n: int = 1) -> Participant:
    participant = Participant(
        study_id=study.id, site_code=site, screening_number=f"SCR-{site}-{n}",
        factors={"grade": "low"}, eligibility={}, failed_criteria=[], stratum=f"{site}|grade=low",
        status=ParticipantStatus.ELIGIBLE, is_test=True, created_by="inv1",
    )  # fmt: skip
    session.add(participant)
    session.flush()
    return participant


def arms_of(session: Session, study: Study, kits: list[Kit]) -> list[str]:
    return [kit_arm(session, study, k) for k in kits]


def events(session: Session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_allocate_kit_picks_an_available_kit_of_the_arm(session: Session, study: Study) -> None:
    generate_kits(session, study, count=8, actor=ADMIN, site="S1")
    participant = make_participant(session, study)
    kit = allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                       visit="baseline", actor=INV)  # fmt: skip
    assert kit.status is KitStatus.ALLOCATED
    assert kit_arm(session, study, kit) == "ACTIVEX"
    dispensation = session.scalar(select(Dispensation).where(Dispensation.kit_id == kit.id))
    assert dispensation is not None
    assert (dispensation.participant_id, dispensation.visit, dispensation.status) == (
        participant.id, "baseline", "allocated"
    )  # fmt: skip
    (event,) = events(session, "kit.allocate")
    assert event.object_id == kit.code and event.participant_id == participant.id
    assert "ACTIVEX" not in (event.new_values or "") + (event.old_values or "")


def test_allocate_kit_draws_at_random_not_the_lowest_code(session: Session, study: Study) -> None:
    kits = generate_kits(session, study, count=40, actor=ADMIN, site="S1")
    arms = arms_of(session, study, kits)
    active = sorted(k.code for k, a in zip(kits, arms, strict=True) if a == "ACTIVEX")
    chosen: Counter[str] = Counter()
    for n in range(12):
        participant = make_participant(session, study, n=n)
        kit = allocate_kit(session, study, site="S1", arm="ACTIVEX",
                           participant_id=participant.id, visit="baseline", actor=INV)  # fmt: skip
        chosen[kit.code] += 1
    # Lowest-first would take exactly the 12 lowest codes; chance of that at random is tiny.
    assert set(chosen) != set(active[:12])


@pytest.mark.parametrize("short_arm", ["ACTIVEX", "PLACEBOX"])
def test_no_supply_is_one_message_whichever_arm_is_short(
    session: Session, study: Study, short_arm: str
) -> None:
    kits = generate_kits(session, study, count=4, actor=ADMIN, site="S1")
    for kit, arm in zip(kits, arms_of(session, study, kits), strict=True):
        if arm == short_arm:
            set_status(session, study, code=kit.code, to=KitStatus.QUARANTINED, actor=PHARM,
                       reason="Temperature excursion")  # fmt: skip
    before = session.scalar(select(func.count()).select_from(AuditEvent))
    participant = make_participant(session, study)
    with pytest.raises(SupplyUnavailable) as refused:
        allocate_kit(session, study, site="S1", arm=short_arm, participant_id=participant.id,
                     visit="baseline", actor=INV)  # fmt: skip
    assert (refused.value.message, refused.value.field) == (NO_SUPPLY_MESSAGE, None)
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == before
    assert session.scalar(select(func.count()).select_from(Dispensation)) == 0


def test_kits_expiring_before_the_window_closes_are_not_allocated(
    session: Session, study: Study
) -> None:
    today = dt.date(2026, 3, 1)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    participant = make_participant(session, study)
    participant.randomized_at = start
    # month_6: day 182 + 14 days of window from 2026-01-01 closes on 2026-07-16.
    generate_kits(session, study, count=8, actor=ADMIN, site="S1", expiry=dt.date(2026, 7, 15))
    with pytest.raises(SupplyUnavailable):
        allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                     visit="month_6", actor=INV, today=today)  # fmt: skip
    generate_kits(session, study, count=8, actor=ADMIN, site="S1", expiry=dt.date(2026, 7, 16))
    kit = allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                       visit="month_6", actor=INV, today=today)  # fmt: skip
    assert kit.expiry == dt.date(2026, 7, 16)


def test_expired_kits_are_not_allocated_for_baseline(session: Session, study: Study) -> None:
    today = utcnow().date()
    generate_kits(session, study, count=8, actor=ADMIN, site="S1",
                  expiry=today - dt.timedelta(days=1))  # fmt: skip
    participant = make_participant(session, study)
    with pytest.raises(SupplyUnavailable):
        allocate_kit(session, study, site="S1", arm="PLACEBOX", participant_id=participant.id,
                     visit="baseline", actor=INV)  # fmt: skip


def test_a_second_kit_for_the_same_visit_is_refused(session: Session, study: Study) -> None:
    generate_kits(session, study, count=8, actor=ADMIN, site="S1")
    participant = make_participant(session, study)
    allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                 visit="baseline", actor=INV)  # fmt: skip
    with pytest.raises(Conflict):
        allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                     visit="baseline", actor=INV)  # fmt: skip


def test_allocation_is_limited_to_the_participants_site(session: Session, study: Study) -> None:
    generate_kits(session, study, count=8, actor=ADMIN, site="S2")
    participant = make_participant(session, study, site="S1")
    with pytest.raises(InvalidInput):
        allocate_kit(session, study, site="S2", arm="ACTIVEX", participant_id=participant.id,
                     visit="baseline", actor=INV)  # fmt: skip
    with pytest.raises(SupplyUnavailable):
        allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                     visit="baseline", actor=INV)  # fmt: skip


def test_replace_kit_gives_another_kit_of_the_same_arm(session: Session, study: Study) -> None:
    generate_kits(session, study, count=8, actor=ADMIN, site="S1")
    participant = make_participant(session, study)
    old = allocate_kit(session, study, site="S1", arm="PLACEBOX", participant_id=participant.id,
                       visit="baseline", actor=INV)  # fmt: skip
    dispensation = session.scalars(select(Dispensation)).one()
    with pytest.raises(InvalidInput):
        replace_kit(session, study, dispensation=dispensation, reason=" ", actor=PHARM)
    new = replace_kit(session, study, dispensation=dispensation, reason="Vial cracked",
                      actor=PHARM)  # fmt: skip
    assert new.id != old.id and kit_arm(session, study, new) == "PLACEBOX"
    assert old.status is KitStatus.DAMAGED and new.status is KitStatus.ALLOCATED
    assert dispensation.status == "replaced"
    (event,) = events(session, "kit.replace")
    assert event.reason == "Vial cracked" and "PLACEBOX" not in (event.new_values or "")


def test_confirm_dispensing_marks_kit_and_dispensation(session: Session, study: Study) -> None:
    generate_kits(session, study, count=8, actor=ADMIN, site="S1")
    participant = make_participant(session, study)
    kit = allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                       visit="baseline", actor=INV)  # fmt: skip
    dispensation = session.scalars(select(Dispensation)).one()
    confirm_dispensing(session, study, dispensation=dispensation, actor=PHARM, kit_code=kit.code)
    assert kit.status is KitStatus.DISPENSED and dispensation.status == "dispensed"
    assert dispensation.dispensed_by == "pharm1"
    with pytest.raises(Conflict):
        confirm_dispensing(session, study, dispensation=dispensation, actor=PHARM)


def test_unknown_visit_or_arm_is_refused_without_naming_the_arm(
    session: Session, study: Study
) -> None:
    generate_kits(session, study, count=4, actor=ADMIN, site="S1")
    participant = make_participant(session, study)
    with pytest.raises(InvalidInput) as visit:
        allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=participant.id,
                     visit="week_99", actor=INV)  # fmt: skip
    assert visit.value.field == "visit"
    with pytest.raises(InvalidInput) as arm:
        allocate_kit(session, study, site="S1", arm="SECRETARM", participant_id=participant.id,
                     visit="baseline", actor=INV)  # fmt: skip
    assert arm.value.field == "arm" and "SECRETARM" not in arm.value.message
