"""Allocation concealment at rest (SPEC §2.1): a copy of the database reveals no assignment.

After thousands of slots and kits are stored, each arm's code and name occur in the
SQLite file and in a PostgreSQL dump only where the study definition itself keeps them
(the definition text and the lists' recorded parameters): a handful, never once per slot
or kit. Sealed arms are bound to their rows: moved, they no longer open.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import IntegrityFailure
from randomizer.models import AllocationList, AllocationSlot, AuditEvent, Kit, ListKind, Study
from randomizer.services import lists
from randomizer.services.keyring import sealer_by_key_id
from randomizer.services.kits import generate_kits, kit_arm

STAT = audit.Actor("stat1", "statistician")
PER_STRATUM = 1000
KITS_PER_SITE = 1000


@pytest.fixture
def filled(session: Session, study: Study) -> Study:
    """A study with a dummy and a live list (about 8,000 slots) and 2,000 kits."""
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=PER_STRATUM)
    lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT, per_stratum=PER_STRATUM)
    for site in ("S1", "S2"):
        generate_kits(session, study, count=KITS_PER_SITE, site=site, actor=audit.SYSTEM)
    session.commit()
    return study


def _arm_words(session: Session, study: Study) -> dict[str, int]:
    """Each arm code and name, with the number of places the definition keeps it."""
    from randomizer.services.studies import definition_of

    params = [json.dumps(p) for p in session.scalars(sa.select(AllocationList.params))]
    words = {}
    for arm in definition_of(study).arms:
        for word in (arm.code, arm.name):
            words[word] = study.definition_toml.count(word) + sum(p.count(word) for p in params)
    return words


def _slot_and_kit_counts(session: Session) -> tuple[int, int]:
    slots = session.scalar(sa.select(sa.func.count()).select_from(AllocationSlot)) or 0
    kits = session.scalar(sa.select(sa.func.count()).select_from(Kit)) or 0
    return slots, kits


def _database_bytes(session: Session, tmp_path: Path) -> bytes:
    """The database as a copy of it would be: the SQLite file(s), or a pg_dump."""
    url = session.get_bind().url
    if url.get_backend_name() == "sqlite":
        session.close()
        with sqlite3.connect(str(url.database)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        files = [Path(str(url.database)), Path(f"{url.database}-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    pg_dump = shutil.which("pg_dump") or "/usr/bin/pg_dump"
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    out = tmp_path / "dump.sql"
    subprocess.run(
        [pg_dump, "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
         "-U", url.username or "postgres", "-f", str(out), str(url.database)],
        check=True, env=env, timeout=120,
    )  # fmt: skip
    return out.read_bytes()


def test_no_allocation_can_be_read_from_a_copy_of_the_database(
    session: Session, filled: Study, tmp_path: Path
) -> None:
    slots, kits = _slot_and_kit_counts(session)
    assert slots >= 8000 and kits == 2 * KITS_PER_SITE
    words = _arm_words(session, filled)
    data = _database_bytes(session, tmp_path)
    assert len(data) > slots * 20  # the copy really holds the rows
    found = {word: data.count(word.encode("utf-8")) for word in words}
    for word, allowed in words.items():
        # Where the definition keeps it: a handful (SQLite may keep a stale copy of a
        # rewritten list row in free page space), never once per slot or kit.
        assert allowed <= 3
        assert found[word] <= 2 * allowed, (word, found[word], allowed)
    for word in words:
        assert data.lower().count(word.lower().encode("utf-8")) <= 2 * words[word] + 2


def test_the_audit_trail_holds_no_arm(session: Session, filled: Study) -> None:
    text = " ".join(
        f"{e.old_values} {e.new_values} {e.reason} {e.object_id}"
        for e in session.scalars(sa.select(AuditEvent))
    )
    for word in _arm_words(session, filled):
        assert word not in text


def _two_slots(session: Session) -> tuple[AllocationSlot, AllocationSlot]:
    first, second = session.scalars(
        sa.select(AllocationSlot).order_by(AllocationSlot.id).limit(2)
    ).all()
    return first, second


def test_swapped_sealed_arms_of_two_slots_fail_to_open(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=8)
    session.commit()
    a, b = _two_slots(session)
    ids, sealed = (a.id, b.id), (a.arm_sealed, b.arm_sealed)
    # As an attacker with database access would: straight SQL, no application code.
    for slot_id, value in zip(ids, reversed(sealed), strict=True):
        session.execute(
            sa.update(AllocationSlot).where(AllocationSlot.id == slot_id).values(arm_sealed=value)
        )
    session.commit()
    session.expire_all()
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    for slot in _two_slots(session):
        with pytest.raises(IntegrityFailure, match="failed its integrity check"):
            lists.slot_arm(session, study, slot, sealer)


def test_a_slot_arm_copied_between_lists_fails_to_open(session: Session, study: Study) -> None:
    dummy = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=2)
    live = lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT, per_stratum=2)
    slot_of = {
        row.id: session.scalars(
            sa.select(AllocationSlot).where(AllocationSlot.list_id == row.id).limit(1)
        ).one()
        for row in (dummy, live)
    }
    slot_of[live.id].arm_sealed = slot_of[dummy.id].arm_sealed
    with pytest.raises(IntegrityFailure):
        lists.slot_arm(
            session, study, slot_of[live.id], sealer_by_key_id(session, study, live.data_key_id)
        )


def test_swapped_sealed_arms_of_two_kits_fail_to_open(session: Session, study: Study) -> None:
    a, b = generate_kits(session, study, count=2, site="S1", actor=audit.SYSTEM)
    a.arm_sealed, b.arm_sealed = b.arm_sealed, a.arm_sealed
    for kit in (a, b):
        with pytest.raises(IntegrityFailure, match="integrity"):
            kit_arm(session, study, kit)


def test_a_kit_arm_moved_onto_a_slot_fails_to_open(session: Session, study: Study) -> None:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, per_stratum=2)
    kit = generate_kits(session, study, count=2, site="S1", actor=audit.SYSTEM)[0]
    slot = _two_slots(session)[0]
    slot.arm_sealed = kit.arm_sealed
    with pytest.raises(IntegrityFailure):
        lists.slot_arm(session, study, slot, sealer_by_key_id(session, study, row.data_key_id))


def test_sealed_arms_have_one_length_whatever_the_arm(session: Session, filled: Study) -> None:
    """AES-GCM keeps the plaintext's length: unpadded, "ACTIVEX" (7) and "PLACEBOX" (8)
    would be told apart by the size of every sealed slot and kit in a database copy."""
    slot_lengths = set(session.scalars(sa.select(sa.func.length(AllocationSlot.arm_sealed))))
    kit_lengths = set(session.scalars(sa.select(sa.func.length(Kit.arm_sealed))))
    assert len(slot_lengths) == 1 and len(kit_lengths) == 1
    assert slot_lengths == kit_lengths
