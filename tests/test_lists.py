"""Allocation list services: generation, extension, summary, sealing (with a database)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit, sequence
from randomizer.crypto import IntegrityFailure
from randomizer.errors import Conflict, InvalidInput, NotFound
from randomizer.models import AllocationList, AllocationSlot, AuditEvent, ListKind, Study
from randomizer.services import list_summary, lists
from randomizer.services.keyring import sealer_by_key_id, slot_object_id
from randomizer.services.studies import definition_of

SEED = bytes(range(32))
STAT = audit.Actor("stat1", "statistician")


def _slots(session: Session, row: AllocationList) -> list[AllocationSlot]:
    return list(
        session.scalars(
            select(AllocationSlot)
            .where(AllocationSlot.list_id == row.id)
            .order_by(AllocationSlot.stratum, AllocationSlot.sequence)
        )
    )


def _opened(session: Session, study: Study, row: AllocationList) -> list[sequence.Slot]:
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    out = []
    for stratum in row.params["strata"]:
        for slot in _slots(session, row):
            if slot.stratum == stratum:
                c = lists.slot_content(slot, sealer)
                out.append(sequence.Slot(stratum, c.block, c.block_size, slot.sequence, c.arm))
    return out


def test_generated_list_stores_what_the_seed_produces(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=SEED)
    definition = definition_of(study)
    expected = list(
        sequence.generate(
            SEED, definition.strata(), lists.arm_ratios(study), definition.block_sizes,
            per_stratum=definition.per_stratum,
        )
    )  # fmt: skip
    assert _opened(session, study, row) == expected
    assert row.fingerprint == sequence.fingerprint(expected)
    assert sum(row.params["slots"].values()) == len(expected)


def test_slot_cipher_binds_exactly_like_the_row_sealer(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=2)
    cipher = lists.SlotCipher(session, study, row)
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    for stratum in ["S1|grade=low", 'odd "quoted" \\ é|x=y']:
        assert cipher.aad(stratum, 12) == sealer.aad("slot", slot_object_id(row.id, stratum, 12))
    sealed = cipher.seal("S1|grade=low", 3, lists.SlotContent("ACTIVEX", 2, 4))
    opened = sealer.open("slot", slot_object_id(row.id, "S1|grade=low", 3), sealed)
    assert lists.parse_slot_content(opened) == lists.SlotContent("ACTIVEX", 2, 4)


def test_a_slot_row_holds_no_plaintext_block_structure(session: Session, study: Study) -> None:
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=8)
    columns = {c.name for c in AllocationSlot.__table__.columns}
    assert not columns & {"block", "block_size"}
    # Every sealed content has one length, whatever the arm and block.
    assert len({len(s) for s in session.scalars(select(AllocationSlot.arm_sealed))}) == 1
    # Masked summaries count no blocks.
    assert all(not s.blocks for s in list_summary.summarize(session, study, ListKind.DUMMY).strata)


def test_randomization_numbers_are_unique_and_carry_no_arm(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=30)
    slots = _slots(session, row)
    numbers = [s.randomization_number for s in slots]
    assert len(set(numbers)) == len(numbers)
    assert all(n.startswith("T") for n in numbers)
    for arm in ("ACTIVEX", "PLACEBOX", "A", "P"):
        assert not any(arm in n for n in numbers)


def test_live_and_dummy_numbers_differ(session: Session, study: Study) -> None:
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=4)
    live = lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT, per_stratum=4)
    assert all(s.randomization_number.startswith("R") for s in _slots(session, live))


def test_seed_is_refused_for_a_live_list(session: Session, study: Study) -> None:
    with pytest.raises(InvalidInput) as caught:
        lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT, seed=SEED)
    assert caught.value.field == "seed"


def test_a_second_list_of_the_same_kind_is_refused(session: Session, study: Study) -> None:
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=2)
    with pytest.raises(Conflict):
        lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=2)


def test_a_live_list_identical_to_the_dummy_list_is_refused(
    session: Session, study: Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=SEED)
    monkeypatch.setattr(sequence, "new_seed", lambda: SEED)
    with pytest.raises(Conflict, match="identical"):
        lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT)


def test_dummy_and_live_lists_use_separate_keys(session: Session, study: Study) -> None:
    dummy = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=2)
    live = lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT, per_stratum=2)
    assert dummy.data_key_id != live.data_key_id


def test_generation_is_audited_without_arms(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=10)
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "list.generate")).one()
    assert event.actor == "stat1"
    assert row.fingerprint in (event.new_values or "")
    assert "ACTIVEX" not in (event.new_values or "")
    assert SEED.hex() not in (event.new_values or "")


def test_seed_is_sealed_and_only_a_reference_is_kept(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=SEED)
    assert row.seed_sealed is not None and SEED.hex().encode() not in row.seed_sealed
    assert row.seed_ref == lists.seed_reference(SEED)
    assert lists.open_seed(session, study, row) == SEED


@pytest.mark.parametrize("per_stratum", [0, 1_000_001])
def test_slots_per_stratum_are_bounded(session: Session, study: Study, per_stratum: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        lists.generate_list(
            session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=per_stratum
        )
    assert caught.value.field == "per_stratum"


def test_progress_reports_every_stored_slot(session: Session, study: Study) -> None:
    seen: list[int] = []
    row = lists.generate_list(
        session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=3000, progress=seen.append
    )
    assert sum(seen) == sum(row.params["slots"].values())
    assert len(seen) > 1


def test_active_kind_follows_the_study_mode(session: Session, study: Study) -> None:
    from randomizer.models import StudyMode

    assert lists.active_kind(study) is ListKind.DUMMY
    study.mode = StudyMode.LIVE
    assert lists.active_kind(study) is ListKind.LIVE


# --- extension ---------------------------------------------------------------------------


def test_extension_continues_the_stratum_stream(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=SEED)
    stratum = row.params["strata"][1]
    before = row.params["slots"][stratum]
    added = lists.extend_stratum(
        session, study, kind=ListKind.DUMMY, stratum=stratum, slots=10, actor=STAT
    )
    assert added >= 10
    assert row.params["slots"][stratum] == before + added
    expected = list(
        sequence.generate_stratum(
            SEED, stratum, lists.arm_ratios(study), [2, 4], min_slots=before + 10
        )
    )
    stored = [s for s in _opened(session, study, row) if s.stratum == stratum]
    assert stored == expected
    assert row.fingerprint == sequence.fingerprint(lists.regenerate(SEED, row))


def test_extension_is_audited(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=4)
    stratum = row.params["strata"][0]
    lists.extend_stratum(session, study, kind=ListKind.DUMMY, stratum=stratum, slots=4, actor=STAT)
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "list.extend")).one()
    assert stratum in (event.new_values or "")
    assert row.params["extensions"][0]["stratum"] == stratum


@pytest.mark.parametrize(
    ("stratum", "slots", "field"),
    [("nowhere", 4, "stratum"), ("S1|grade=low", 0, "slots"), ("S1|grade=low", 10**6, "slots")],
)
def test_extension_refuses_bad_input(
    session: Session, study: Study, stratum: str, slots: int, field: str
) -> None:
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=4)
    with pytest.raises(InvalidInput) as caught:
        lists.extend_stratum(
            session, study, kind=ListKind.DUMMY, stratum=stratum, slots=slots, actor=STAT
        )
    assert caught.value.field == field


def test_extending_a_missing_list_is_not_found(session: Session, study: Study) -> None:
    with pytest.raises(NotFound):
        lists.extend_stratum(
            session, study, kind=ListKind.LIVE, stratum="S1|grade=low", slots=4, actor=STAT
        )


# --- summary -----------------------------------------------------------------------------


def test_summary_counts_slots_blocks_and_use(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=SEED)
    summary = list_summary.summarize(session, study, ListKind.DUMMY, with_blocks=True)
    assert [s.stratum for s in summary.strata] == row.params["strata"]
    assert summary.slots == sum(row.params["slots"].values())
    assert summary.used == 0
    assert set(summary.block_sizes) <= {2, 4}
    assert sum(size * n for size, n in summary.block_sizes.items()) == summary.slots


# --- sealing -----------------------------------------------------------------------------


def test_an_altered_sealed_arm_fails_to_open(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=2)
    slot = _slots(session, row)[0]
    slot.arm_sealed = slot.arm_sealed[:-1] + bytes([slot.arm_sealed[-1] ^ 1])
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    with pytest.raises(IntegrityFailure, match="integrity"):
        lists.slot_arm(session, study, slot, sealer)
