"""Minimization studies through the services: assignment, replay, tampering, list operations."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select, update

from randomizer import audit
from randomizer import minimization as pocock
from randomizer.errors import Conflict, InvalidInput
from randomizer.models import (
    AllocationList,
    AllocationSlot,
    AuditEvent,
    Kit,
    ListKind,
    Participant,
)
from randomizer.services import enrollment, lists
from randomizer.services.keyring import sealer_by_key_id, slot_object_id
from randomizer.services.kits import kit_arm
from randomizer.services.list_files import export_list, import_list
from randomizer.services.list_verify import verify_list
from randomizer.services.minimization import make_list, recorded_design
from randomizer.services.supply import policy
from tests.conftest import PASSWORD
from tests.enrollment_support import register
from tests.minimization_support import make_minimization_study, prepare_minimization

STAT = audit.Actor("stat1", "statistician")
#: (site, grade) of the participants randomized in these tests, in order.
PEOPLE = [("S1", "low"), ("S1", "high"), ("S2", "low"), ("S1", "low"), ("S2", "high"),
          ("S2", "low")]  # fmt: skip


@pytest.fixture
def study(session):
    return make_minimization_study(session)


@pytest.fixture
def randomized(session, study, users):
    prepare_minimization(session, study)
    people = []
    for i, (site, grade) in enumerate(PEOPLE):
        signer = users["investigator" if site == "S1" else "investigator2"]
        p = register(session, study, signer, f"M{i:02d}", site=site, grade=grade)
        enrollment.randomize(session, p, signer=signer, password=PASSWORD)
        session.commit()
        people.append(p)
    return people


def _row(session, study):
    return lists.get_list(session, study, ListKind.DUMMY)


def _verify(session, study):
    report = verify_list(session, study, kind=ListKind.DUMMY, actor=STAT)
    session.commit()
    return report


def _slots(session, row):
    return list(session.scalars(select(AllocationSlot).where(AllocationSlot.list_id == row.id)))


def test_minimization_record_has_no_slots_in_advance_and_a_sealed_seed(session, study):
    row = make_list(session, study, kind=ListKind.DUMMY, actor=STAT)
    session.commit()
    assert row.source == "minimization" and row.algorithm_version == pocock.ALGORITHM_VERSION
    assert _slots(session, row) == []
    assert row.seed_sealed and bytes(32).hex() not in str(row.params)
    assert _verify(session, study).ok


def test_each_randomization_appends_one_sealed_assignment_that_verify_replays(
    session, study, randomized
):
    row = _row(session, study)
    slots = _slots(session, row)
    assert len(slots) == len(PEOPLE)
    assert sorted(s.participant_id for s in slots) == sorted(p.id for p in randomized)
    report = _verify(session, study)
    assert report.ok, report.problems
    assert report.slots == len(PEOPLE)
    # The replay from the seed alone gives the arms stored, and the kits follow them.
    design = recorded_design(row)
    levels = [(["S1", "S2"].index(s), ["low", "high"].index(g)) for s, g in PEOPLE]
    replayed = [d.arm for d in pocock.replay(design, bytes(32), levels)]
    for p, arm in zip(randomized, replayed, strict=True):
        assert lists.participant_arm(session, study, p.id) == arm
        (_visit, code), = enrollment.kits_of(session, p)  # fmt: skip
        kit = session.scalars(select(Kit).where(Kit.code == code)).one()
        assert kit_arm(session, study, kit) == arm


def test_randomization_numbers_count_per_stratum_and_carry_no_arm(session, study, randomized):
    numbers = [session.get(Participant, p.id).randomization_number for p in randomized]
    assert numbers[0] == "T01-0001" and numbers[3] == "T01-0002"  # S1|grade=low twice
    assert len(set(numbers)) == len(numbers)


def test_verify_detects_an_altered_recorded_factor(session, study, randomized):
    target = randomized[2]
    session.execute(
        update(Participant).where(Participant.id == target.id).values(factors={"grade": "high"})
    )
    session.commit()
    report = _verify(session, study)
    assert not report.ok
    assert any("factors differ" in p for p in report.problems)


def test_verify_detects_an_altered_assignment(session, study, randomized):
    row = _row(session, study)
    slot = session.scalars(
        select(AllocationSlot).where(AllocationSlot.participant_id == randomized[4].id)
    ).one()
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    content = lists.slot_content(slot, sealer)
    other = next(a for a in ("ACTIVEX", "PLACEBOX") if a != content.arm)
    text = lists.minimization_content(other, content.block, content.draw or 0,
                                      content.levels or ())  # fmt: skip
    slot.arm_sealed = sealer.seal("slot", slot_object_id(row.id, slot.stratum, slot.sequence),
                                  text)  # fmt: skip
    session.commit()
    report = _verify(session, study)
    assert not report.ok
    assert any("not what the seed gives" in p for p in report.problems)


@pytest.mark.parametrize("numbers_too", [False, True])
def test_verify_detects_assignments_swapped_between_participants(
    session, study, randomized, numbers_too
):
    # Two participants of the same stratum and factors: only the binding tells them apart.
    a, b = (session.get(Participant, p.id) for p in (randomized[0], randomized[3]))
    first, second = (
        session.scalars(select(AllocationSlot).where(AllocationSlot.participant_id == p.id)).one()
        for p in (a, b)
    )
    first.participant_id, second.participant_id = None, None
    session.flush()
    first.participant_id, second.participant_id = b.id, a.id
    if numbers_too:
        a.randomization_number, b.randomization_number = None, None
        session.flush()
        a.randomization_number, b.randomization_number = (
            second.randomization_number,
            (first.randomization_number),
        )
    session.commit()
    report = _verify(session, study)
    assert not report.ok
    assert any("audit trail" in p for p in report.problems)


def test_verify_detects_a_deleted_assignment(session, study, randomized):
    row = _row(session, study)
    slot = max(_slots(session, row), key=lambda s: s.id)
    participant = session.get(Participant, slot.participant_id)
    participant.randomization_number = None
    session.flush()
    from randomizer.models import Dispensation

    session.execute(
        Dispensation.__table__.delete().where(Dispensation.participant_id == participant.id)
    )
    session.delete(slot)
    session.commit()
    assert not _verify(session, study).ok


def test_list_export_describes_the_allocations_made_so_far(session, study, randomized):
    out = io.StringIO()
    count = export_list(session, study, kind=ListKind.DUMMY, out=out, unblinded=False, actor=STAT)
    session.commit()
    lines = out.getvalue().splitlines()
    assert count == len(PEOPLE) and len(lines) == len(PEOPLE) + 1
    assert lines[0] == "stratum,block,block_size,sequence,randomization_number,status"
    assert "ACTIVEX" not in out.getvalue() and "PLACEBOX" not in out.getvalue()
    assert lines[1].startswith("S1|grade=low,1,0,1,T01-0001,used")


@pytest.mark.parametrize("action", ["extend", "import"])
def test_list_operations_without_meaning_are_refused_clearly(session, study, action):
    make_list(session, study, kind=ListKind.DUMMY, actor=STAT)
    session.commit()
    with pytest.raises(Conflict, match="minimization"):
        if action == "extend":
            lists.extend_stratum(session, study, kind=ListKind.DUMMY, stratum="S1|grade=low",
                                 slots=4, actor=STAT)  # fmt: skip
        else:
            import_list(session, study, kind=ListKind.LIVE, source=io.StringIO(""), actor=STAT)


def test_slots_per_stratum_are_refused_for_a_minimization_record(session, study):
    with pytest.raises(InvalidInput, match="no slots made in advance"):
        make_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=4)
    assert session.scalar(select(AllocationList)) is None


def test_supply_bound_assumes_any_participant_may_have_any_arm(session, study):
    assert policy.bounded_blocks(study) is None


def test_go_live_switches_to_the_live_record_and_commitment_is_refused_clearly(
    session, study, users, runner, tmp_path
):
    from randomizer.services.golive import go_live
    from randomizer.services.kits import generate_kits
    from tests.live_support import SIGNERS, enrol, lock

    make_list(session, study, kind=ListKind.DUMMY, actor=STAT)
    make_list(session, study, kind=ListKind.LIVE, actor=STAT)
    go_live(session, study, **SIGNERS)
    generate_kits(session, study, count=8, site="S1", actor=audit.SYSTEM)
    session.commit()
    p = enrol(session, study, users["investigator"], "L1")
    assert p.randomization_number == "R01-0001"
    assert lists.participant_arm(session, study, p.id) in ("ACTIVEX", "PLACEBOX")
    report = verify_list(session, study, kind=ListKind.LIVE, actor=STAT)
    assert report.ok and report.slots == 1
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "study.go_live")).one()
    assert '"commitment":null' in (event.new_values or "")
    shown = runner.invoke("list", "commitment", "TST")
    assert shown.exit_code == 1 and "allocates by minimization" in shown.output
    lock(session, study)
    released = runner.invoke("list", "release", "TST", "--out", str(tmp_path / "r"))
    assert released.exit_code == 1 and "allocates by minimization" in released.output
    assert not (tmp_path / "r" / "list.csv").exists()


def test_a_refused_randomization_leaves_no_trace_in_the_record(session, study, users):
    from randomizer.errors import SupplyUnavailable

    prepare_minimization(session, study, sites=("S1",))
    row = _row(session, study)
    before = row.fingerprint
    p = register(session, study, users["investigator2"], "NO-KIT", site="S2")
    with pytest.raises(SupplyUnavailable):
        enrollment.randomize(session, p, signer=users["investigator2"], password=PASSWORD)
    session.rollback()
    session.expire_all()
    assert _slots(session, _row(session, study)) == []
    assert _row(session, study).fingerprint == before
    q = register(session, study, users["investigator"], "KIT", site="S1")
    enrollment.randomize(session, q, signer=users["investigator"], password=PASSWORD)
    session.commit()
    report = _verify(session, study)
    assert report.ok and report.slots == 1
