"""`randomizer list …` and `randomizer study go-live`: the command-line contract of SPEC §4.1."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from randomizer import audit, sequence
from randomizer.models import (
    AllocationList,
    AllocationSlot,
    AuditEvent,
    Kit,
    KitStatus,
    ListKind,
    Participant,
    ParticipantStatus,
    Study,
    StudyMode,
    User,
)
from randomizer.services import lists
from randomizer.services.kits import generate_kits
from tests.conftest import PASSWORD, Runner
from tests.engines import dispose_engines  # noqa: F401  (fixture)

SEED_HEX = "ab" * 32
HEADER = ["stratum", "block", "block_size", "sequence", "randomization_number", "status"]
STRATA = ["S1|grade=low", "S1|grade=high", "S2|grade=low", "S2|grade=high"]
ARMS = [sequence.ArmRatio("ACTIVEX", 1), sequence.ArmRatio("PLACEBOX", 1)]


def _lists(session: Session) -> list[AllocationList]:
    session.rollback()
    return list(session.scalars(sa.select(AllocationList)))


def _events(session: Session, action: str) -> list[AuditEvent]:
    session.rollback()
    return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _made_elsewhere(per_stratum: int = 6, seed: bytes = b"\x07" * 32) -> list[dict[str, Any]]:
    """A valid list as another system would write it (own numbering, arm column)."""
    slots = sequence.generate(seed, STRATA, ARMS, [2, 4], per_stratum=per_stratum)
    return [
        {"stratum": s.stratum, "block": s.block, "block_size": s.block_size,
         "sequence": s.sequence, "randomization_number": f"X-{i:05d}", "status": "available",
         "arm": s.arm}
        for i, s in enumerate(slots, 1)
    ]  # fmt: skip


def _write(path: Path, rows: list[dict[str, Any]], header: list[str] | None = None) -> Path:
    header = header or [*HEADER, "arm"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- generate ----------------------------------------------------------------------------


def test_generate_prints_counts_and_fingerprint_never_arms(
    runner: Runner, session: Session, study: Study
) -> None:
    result = runner.invoke("list", "generate", "TST", "--dummy", "--per-stratum", "10")
    assert result.exit_code == 0, result.output
    (row,) = _lists(session)
    assert row.kind is ListKind.DUMMY
    assert row.fingerprint in result.stdout
    assert f"{sum(row.params['slots'].values())} slots in 4 strata" in result.stdout
    assert "ACTIVEX" not in result.output and "PLACEBOX" not in result.output


def test_generate_without_dummy_makes_the_live_list(
    runner: Runner, session: Session, study: Study
) -> None:
    assert runner.invoke("list", "generate", "TST").exit_code == 0
    (row,) = _lists(session)
    assert row.kind is ListKind.LIVE
    assert row.params["slots"]["S1|grade=low"] >= 20  # the study's per_stratum


def test_seed_makes_a_reproducible_dummy_list(
    runner: Runner, session: Session, study: Study
) -> None:
    result = runner.invoke("list", "generate", "TST", "--dummy", "--seed", SEED_HEX)
    assert result.exit_code == 0, result.output
    (row,) = _lists(session)
    assert row.fingerprint == sequence.fingerprint(
        sequence.generate(bytes.fromhex(SEED_HEX), STRATA, ARMS, [2, 4], per_stratum=20)
    )


def test_seed_without_dummy_is_refused_clearly(
    runner: Runner, session: Session, study: Study
) -> None:
    result = runner.invoke("list", "generate", "TST", "--seed", SEED_HEX)
    assert result.exit_code == 2
    assert "--seed may be given only with --dummy" in result.output
    assert _lists(session) == []


@pytest.mark.parametrize("seed", ["xyz", "ab" * 31, "ab" * 33])
def test_a_malformed_seed_is_refused(
    runner: Runner, session: Session, study: Study, seed: str
) -> None:
    result = runner.invoke("list", "generate", "TST", "--dummy", "--seed", seed)
    assert result.exit_code == 2
    assert "64 hexadecimal digits" in result.output


def test_generating_a_second_list_of_a_kind_fails_cleanly(
    runner: Runner, session: Session, study: Study
) -> None:
    assert runner.invoke("list", "generate", "TST", "--dummy").exit_code == 0
    result = runner.invoke("list", "generate", "TST", "--dummy")
    assert result.exit_code == 1
    assert "already has a dummy list" in result.output


def test_an_unknown_study_fails_cleanly(runner: Runner, session: Session, study: Study) -> None:
    result = runner.invoke("list", "generate", "NOPE", "--dummy")
    assert result.exit_code == 1
    assert "Traceback" not in result.output


# --- export ------------------------------------------------------------------------------


def test_blinded_export_has_exactly_the_contract_columns(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy", "--per-stratum", "6")
    out = tmp_path / "list.csv"
    result = runner.invoke("list", "export", "TST", "--dummy", "--out", str(out))
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == HEADER
    rows = _read(out)
    (row,) = _lists(session)
    assert len(rows) == sum(row.params["slots"].values())
    assert [r["stratum"] for r in rows] == sorted((r["stratum"] for r in rows), key=STRATA.index)
    assert rows[0]["sequence"] == "1" and rows[0]["status"] == "available"
    assert rows[0]["randomization_number"] == "T01-0001"
    text = out.read_text(encoding="utf-8")
    assert "ACTIVEX" not in text and "PLACEBOX" not in text
    assert [e.new_values for e in _events(session, "list.export_unblinded")] == []


def test_unblinded_export_adds_the_arm_and_is_audited(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy", "--seed", SEED_HEX)
    out = tmp_path / "list.csv"
    result = runner.invoke("list", "export", "TST", "--dummy", "--unblinded", "--out", str(out))
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == [*HEADER, "arm"]
    rows = _read(out)
    expected = sequence.generate(bytes.fromhex(SEED_HEX), STRATA, ARMS, [2, 4], per_stratum=20)
    assert [(r["stratum"], int(r["sequence"]), r["arm"]) for r in rows] == [
        (s.stratum, s.sequence, s.arm) for s in expected
    ]
    (event,) = _events(session, "list.export_unblinded")
    assert '"unblinded":true' in (event.new_values or "")
    assert "ACTIVEX" not in (event.new_values or "")


def test_export_of_a_missing_list_writes_no_file(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    result = runner.invoke("list", "export", "TST", "--unblinded", "--out", str(folder / "l.csv"))
    assert result.exit_code == 1
    assert "no live list" in result.output
    assert list(folder.iterdir()) == []


# --- import ------------------------------------------------------------------------------


def test_a_list_made_elsewhere_imports_with_its_own_numbers(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    rows = _made_elsewhere()
    result = runner.invoke("list", "import", "TST", str(_write(tmp_path / "in.csv", rows)))
    assert result.exit_code == 0, result.output
    (row,) = _lists(session)
    assert (row.kind, row.source, row.seed_sealed) == (ListKind.LIVE, "imported", None)
    numbers = set(session.scalars(sa.select(AllocationSlot.randomization_number)))
    assert numbers == {r["randomization_number"] for r in rows}
    out = tmp_path / "out.csv"
    runner.invoke("list", "export", "TST", "--unblinded", "--out", str(out))
    assert _read(out) == [{k: str(v) for k, v in r.items()} for r in rows]


def test_an_import_accepts_rows_in_any_order_and_without_status(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    rows = list(reversed(_made_elsewhere()))
    path = _write(tmp_path / "in.csv", rows, [*HEADER[:5], "arm"])
    result = runner.invoke("list", "import", "TST", str(path), "--dummy")
    assert result.exit_code == 0, result.output
    (row,) = _lists(session)
    assert row.fingerprint == sequence.fingerprint(
        sequence.generate(b"\x07" * 32, STRATA, ARMS, [2, 4], per_stratum=6)
    )


def _broken(rows: list[dict[str, Any]], change: str) -> tuple[list[dict[str, Any]], str]:
    """Apply a named fault to a valid list; return the rows and the message expected."""
    first = rows[0]
    if change == "unknown stratum":
        rows[3]["stratum"] = "S9|grade=low"
        return rows, "row 5: unknown stratum 'S9|grade=low'"
    if change == "unknown arm":
        rows[1]["arm"] = "VITAMINS"
        return rows, "row 3: stratum 'S1|grade=low': sequence 2 has unknown arm 'VITAMINS'"
    if change == "out of ratio":
        size = first["block_size"]
        for r in rows[:size]:
            r["arm"] = "ACTIVEX"
        return rows, "row 2: stratum 'S1|grade=low': block 1 (sequence 1): arms not in ratio"
    if change == "incomplete block":
        del rows[1]
        return rows, "sequence 2 is missing"
    if change == "duplicate sequence":
        rows[1]["sequence"] = 1
        return rows, "rows 2, 3: stratum 'S1|grade=low': sequence 1 appears 2 times"
    if change == "duplicate number":
        rows[5]["randomization_number"] = first["randomization_number"]
        return rows, "row 7: randomization_number 'X-00001' repeats row 2"
    if change == "empty number":
        rows[2]["randomization_number"] = ""
        return rows, "row 4: randomization_number is empty"
    if change == "formula number":
        rows[2]["randomization_number"] = "=HYPERLINK(1)"
        return rows, "row 4: randomization_number '=HYPERLINK(1)' must be printable"
    if change == "bad integer":
        rows[4]["block_size"] = "four"
        return rows, "row 6: block_size 'four' is not a positive whole number"
    if change == "block size not allowed":
        for r in rows:
            if r["stratum"] == "S2|grade=high" and r["block"] == 1:
                r["block_size"] = 3 if r["block_size"] == 2 else 6
        return rows, "block size"
    if change == "missing stratum":
        return [r for r in rows if r["stratum"] != "S2|grade=low"], "no rows for stratum"
    if change == "used status":
        rows[0]["status"] = "used"
        return rows, "row 2: status must be empty or 'available'"
    raise AssertionError(change)


@pytest.mark.parametrize(
    "change",
    ["unknown stratum", "unknown arm", "out of ratio", "incomplete block", "duplicate sequence",
     "duplicate number", "empty number", "formula number", "bad integer",
     "block size not allowed", "missing stratum", "used status"],
)  # fmt: skip
def test_an_invalid_import_names_the_row_and_stores_nothing(
    runner: Runner, session: Session, study: Study, tmp_path: Path, change: str
) -> None:
    rows, expected = _broken(_made_elsewhere(), change)
    result = runner.invoke("list", "import", "TST", str(_write(tmp_path / "in.csv", rows)))
    assert result.exit_code == 1
    assert expected in result.output
    assert "nothing was stored" in result.output
    assert _lists(session) == []
    assert session.scalar(sa.select(sa.func.count()).select_from(AllocationSlot)) == 0
    assert _events(session, "list.import") == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (HEADER, "row 1: missing column 'arm'"),
        ([*HEADER, "arm", "colour"], "row 1: unknown column 'colour'"),
        ([*HEADER, "arm", "arm"], "row 1: column 'arm' appears more than once"),
    ],
)
def test_an_import_with_wrong_columns_is_refused(
    runner: Runner,
    session: Session,
    study: Study,
    tmp_path: Path,
    header: list[str],
    expected: str,
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(",".join(header) + "\nS1|grade=low,1,2,1,X1,available,ACTIVEX\n")
    result = runner.invoke("list", "import", "TST", str(path))
    assert result.exit_code == 1
    assert expected in result.output
    assert _lists(session) == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "the file is empty"), (b"\xff\xfe\x00bad", "not a readable UTF-8 CSV")],
)
def test_an_unreadable_import_is_refused(
    runner: Runner, session: Session, study: Study, tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    result = runner.invoke("list", "import", "TST", str(path))
    assert result.exit_code == 1
    assert expected in result.output


def test_importing_the_dummy_list_as_the_live_list_is_refused(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy")
    out = tmp_path / "dummy.csv"
    runner.invoke("list", "export", "TST", "--dummy", "--unblinded", "--out", str(out))
    result = runner.invoke("list", "import", "TST", str(out))
    assert result.exit_code == 1
    # The dummy list's numbers are taken, and the list itself is identical.
    assert "already used by the study's other list" in result.output
    assert [r.kind for r in _lists(session)] == [ListKind.DUMMY]


def test_an_identical_list_with_fresh_numbers_is_still_refused(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy")
    out = tmp_path / "dummy.csv"
    runner.invoke("list", "export", "TST", "--dummy", "--unblinded", "--out", str(out))
    rows = _read(out)
    for r in rows:
        r["randomization_number"] = "L" + r["randomization_number"]
    result = runner.invoke("list", "import", "TST", str(_write(tmp_path / "in.csv", rows)))
    assert result.exit_code == 1
    assert "identical to the dummy list" in result.output


# --- verify ------------------------------------------------------------------------------


def test_verify_passes_on_an_untouched_list(runner: Runner, session: Session, study: Study) -> None:
    runner.invoke("list", "generate", "TST")
    result = runner.invoke("list", "verify", "TST")
    assert result.exit_code == 0, result.output
    (row,) = _lists(session)
    assert f"regenerated fingerprint: {row.fingerprint}" in result.output
    assert result.stdout.strip().endswith("ok: the stored list is exactly what was recorded")
    assert len(_events(session, "list.verify")) == 1


def _reseal(
    session: Session, study: Study, row: AllocationList, slot: AllocationSlot, **change: Any
):
    """Seal the slot again with some of its content changed (an attacker with the key)."""
    cipher = lists.SlotCipher(session, study, row)
    content = cipher.open_slot(slot.stratum, slot.sequence, slot.arm_sealed)
    slot.arm_sealed = cipher.seal(slot.stratum, slot.sequence, replace(content, **change))
    session.commit()


def test_verify_detects_a_slot_resealed_with_another_arm(
    runner: Runner, session: Session, study: Study
) -> None:
    """Even an attacker holding the data key cannot change an arm unnoticed."""
    runner.invoke("list", "generate", "TST", "--dummy", "--seed", SEED_HEX)
    (row,) = _lists(session)
    slot = session.scalars(
        sa.select(AllocationSlot).where(AllocationSlot.stratum == "S2|grade=low",
                                        AllocationSlot.sequence == 3)
    ).one()  # fmt: skip
    cipher = lists.SlotCipher(session, study, row)
    arm = cipher.open(slot.stratum, slot.sequence, slot.arm_sealed)
    _reseal(session, study, row, slot, arm="PLACEBOX" if arm == "ACTIVEX" else "ACTIVEX")
    result = runner.invoke("list", "verify", "TST", "--dummy")
    assert result.exit_code == 1
    assert "stratum 'S2|grade=low' sequence 3: stored slot differs" in result.output
    assert "stored slots fingerprint differs" in result.output or "FAILED" in result.output


def test_verify_detects_a_changed_block_size_and_a_deleted_slot(
    runner: Runner, session: Session, study: Study
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy")
    (row,) = _lists(session)
    slot = session.scalars(
        sa.select(AllocationSlot).where(AllocationSlot.stratum == "S1|grade=high",
                                        AllocationSlot.sequence == 1)
    ).one()  # fmt: skip
    _reseal(session, study, row, slot, block_size=99)
    session.execute(
        sa.delete(AllocationSlot).where(
            AllocationSlot.stratum == "S2|grade=high", AllocationSlot.sequence == 2
        )
    )
    session.commit()
    result = runner.invoke("list", "verify", "TST", "--dummy")
    assert result.exit_code == 1
    assert "stratum 'S1|grade=high' sequence 1: stored slot differs" in result.output
    assert "stratum 'S2|grade=high' sequence 2: produced by the seed but not stored" in (
        result.output
    )


def test_verify_detects_swapped_sealed_arms_as_integrity_failures(
    runner: Runner, session: Session, study: Study
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy")
    a, b = session.scalars(sa.select(AllocationSlot).order_by(AllocationSlot.id).limit(2))
    a.arm_sealed, b.arm_sealed = b.arm_sealed, a.arm_sealed
    session.commit()
    result = runner.invoke("list", "verify", "TST", "--dummy")
    assert result.exit_code == 1
    assert "the sealed slot fails its integrity check" in result.output


def test_verify_of_an_imported_list_checks_the_recorded_fingerprint(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("list", "import", "TST", str(_write(tmp_path / "in.csv", _made_elsewhere())))
    result = runner.invoke("list", "verify", "TST")
    assert result.exit_code == 0, result.output
    assert "imported list: no seed to regenerate from" in result.output
    slot = session.scalars(sa.select(AllocationSlot).order_by(AllocationSlot.id).limit(1)).one()
    (row,) = _lists(session)
    _reseal(session, study, row, slot, block=2)
    assert runner.invoke("list", "verify", "TST").exit_code == 1


# --- extend and show ---------------------------------------------------------------------


def test_extend_adds_whole_blocks_and_verify_still_passes(
    runner: Runner, session: Session, study: Study
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy", "--per-stratum", "4")
    result = runner.invoke(
        "list", "extend", "TST", "--dummy", "--stratum", "S2|grade=low", "--slots", "10"
    )
    assert result.exit_code == 0, result.output
    (row,) = _lists(session)
    assert row.params["slots"]["S2|grade=low"] >= 14
    assert runner.invoke("list", "verify", "TST", "--dummy").exit_code == 0


def test_extending_an_imported_list_is_refused(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("list", "import", "TST", str(_write(tmp_path / "in.csv", _made_elsewhere())))
    result = runner.invoke("list", "extend", "TST", "--stratum", "S1|grade=low", "--slots", "4")
    assert result.exit_code == 1
    assert "imported" in result.output


def test_show_prints_the_summary_without_arms(
    runner: Runner, session: Session, study: Study
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy")
    result = runner.invoke("list", "show", "TST", "--dummy")
    assert result.exit_code == 0, result.output
    assert "S2|grade=high\t" in result.output
    assert "ACTIVEX" not in result.output


# --- go-live -----------------------------------------------------------------------------


def _test_participant(session: Session, study: Study, number: str) -> Participant:
    participant = Participant(
        study_id=study.id, site_code="S1", screening_number=number, factors={"grade": "low"},
        eligibility={}, failed_criteria=[], stratum="S1|grade=low",
        status=ParticipantStatus.ELIGIBLE, is_test=True, archived=False, created_by="inv1",
    )  # fmt: skip
    session.add(participant)
    session.commit()
    return participant


def _go_live(runner: Runner, stat_password: str = PASSWORD, admin_password: str = PASSWORD):
    return runner.invoke(
        "study", "go-live", "TST", "--statistician", "stat1", "--admin", "admin1",
        input=f"{stat_password}\n{admin_password}\n",
    )  # fmt: skip


def test_go_live_needs_a_live_list(
    runner: Runner, session: Session, study: Study, users: dict[str, User]
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy")
    result = _go_live(runner)
    assert result.exit_code == 1
    assert "has no live list" in result.output
    session.rollback()
    assert session.get(Study, study.id).mode is StudyMode.TESTING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("stat_password", "admin_password", "expected"),
    [("wrong-password!", PASSWORD, "statistician stat1"), (PASSWORD, "", "admin admin1")],
)
def test_go_live_refuses_a_wrong_signature_and_changes_nothing(
    runner: Runner,
    session: Session,
    study: Study,
    users: dict[str, User],
    stat_password: str,
    admin_password: str,
    expected: str,
) -> None:
    runner.invoke("list", "generate", "TST")
    participant = _test_participant(session, study, "SCR-1")
    result = _go_live(runner, stat_password, admin_password)
    assert result.exit_code == 1
    assert expected in result.output
    session.rollback()
    assert session.get(Study, study.id).mode is StudyMode.TESTING  # type: ignore[union-attr]
    assert session.get(Participant, participant.id).archived is False  # type: ignore[union-attr]
    assert _events(session, "study.go_live") == []


def test_go_live_checks_the_signers_roles(
    runner: Runner, session: Session, study: Study, users: dict[str, User]
) -> None:
    runner.invoke("list", "generate", "TST")
    result = runner.invoke(
        "study", "go-live", "TST", "--statistician", "admin1", "--admin", "stat1",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "active statistician account" in result.output


def test_go_live_archives_test_data_and_is_one_way(
    runner: Runner, session: Session, study: Study, users: dict[str, User]
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy")
    runner.invoke("list", "generate", "TST")
    participant = _test_participant(session, study, "SCR-1")
    generate_kits(session, study, count=6, site="S1", actor=audit.SYSTEM)
    session.commit()
    result = _go_live(runner)
    assert result.exit_code == 0, result.output
    assert "1 participant(s), 6 kit(s) quarantined" in result.output
    session.rollback()
    refreshed = session.get(Study, study.id)
    assert refreshed is not None and refreshed.mode is StudyMode.LIVE
    assert refreshed.went_live_at is not None
    assert lists.active_kind(refreshed) is ListKind.LIVE
    assert session.get(Participant, participant.id).archived is True  # type: ignore[union-attr]
    assert set(session.scalars(sa.select(Kit.status))) == {KitStatus.QUARANTINED}
    (event,) = _events(session, "study.go_live")
    assert event.actor == "stat1" and '"admin":"admin1"' in (event.new_values or "")
    again = _go_live(runner)
    assert again.exit_code == 1 and "already live" in again.output


def test_after_go_live_the_lists_are_frozen_but_the_live_list_extends(
    runner: Runner, session: Session, study: Study, users: dict[str, User], tmp_path: Path
) -> None:
    runner.invoke("list", "generate", "TST")
    assert _go_live(runner).exit_code == 0
    refused = [
        runner.invoke("list", "generate", "TST", "--dummy"),
        runner.invoke("list", "extend", "TST", "--dummy", "--stratum", STRATA[0], "--slots", "2"),
        runner.invoke("list", "import", "TST", str(_write(tmp_path / "x.csv", _made_elsewhere())),
                      "--dummy"),
    ]  # fmt: skip
    assert [r.exit_code for r in refused] == [1, 1, 1]
    assert all("is live" in r.output for r in refused)
    result = runner.invoke("list", "extend", "TST", "--stratum", STRATA[0], "--slots", "2")
    assert result.exit_code == 0, result.output
    assert runner.invoke("list", "verify", "TST").exit_code == 0


def test_go_live_needs_both_passwords_on_stdin(
    runner: Runner, session: Session, study: Study, users: dict[str, User]
) -> None:
    runner.invoke("list", "generate", "TST")
    result = runner.invoke(
        "study", "go-live", "TST", "--statistician", "stat1", "--admin", "admin1",
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "expected 2 line(s)" in result.output


# --- demo --------------------------------------------------------------------------------


@pytest.mark.usefixtures("dispose_engines")
def test_demo_makes_a_dummy_list_and_kits_and_prints_no_arm(runner: Runner, app: Any) -> None:
    from randomizer.db import db
    from randomizer.services.demo import DEMO_KITS_PER_SITE
    from randomizer.services.studies import definition_of, get_study

    result = runner.invoke("demo")
    assert result.exit_code == 0, result.output
    with app.app_context():
        session = db.session()
        study = get_study(session, "MSC-LN-2B")
        fingerprint = lists.get_list(session, study, ListKind.DUMMY).fingerprint
        sites = {site: n for site, n in session.execute(
            sa.select(Kit.site_code, sa.func.count()).where(Kit.status == KitStatus.AVAILABLE)
            .group_by(Kit.site_code))}  # fmt: skip
        arms = [w for a in definition_of(study).arms for w in (a.code, a.name)]
        session.rollback()
    assert f"fingerprint {fingerprint}" in result.stdout
    per_site = DEMO_KITS_PER_SITE
    assert sites == {"CUA": per_site, "HBLT": per_site}
    shown = result.output.replace("MSC-LN-2B", "")  # the study code starts like an arm code
    assert not any(word in shown for word in arms)
    again = runner.invoke("demo")  # idempotent: nothing new
    assert again.exit_code == 0
    assert f"fingerprint {fingerprint}" in again.stdout
    assert f"kits at CUA: {per_site}" in again.stdout
