"""`randomizer keys rotate`: a new master key, data keys re-wrapped, old ciphertexts open."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import KeyRing, read_secret_file
from randomizer.db import db
from randomizer.instance import MASTER_KEY_FILE, load_secrets, secrets_of
from randomizer.models import AllocationSlot, AuditEvent, DataKey, Kit, ListKind, Study, User
from randomizer.services import lists
from randomizer.services.keyring import open_key, sealer_by_key_id
from randomizer.services.kits import generate_kits, kit_arm
from randomizer.services.users import enrol_totp
from tests.conftest import Runner

ARMS = {"ACTIVEX", "PLACEBOX"}


def _ring(instance_path: Path) -> KeyRing:
    path = instance_path / MASTER_KEY_FILE
    return KeyRing.from_text(read_secret_file(path), str(path))


def _sealed_data(session: Session, study: Study) -> None:
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM, per_stratum=4)
    generate_kits(session, study, count=4, site="S1", actor=audit.SYSTEM)
    session.commit()


def _plain_keys(session: Session) -> dict[str, bytes]:
    return {k.id: open_key(session, k) for k in session.scalars(sa.select(DataKey))}


def _arms(session: Session, study: Study) -> list[str]:
    slot = session.scalars(sa.select(AllocationSlot).limit(1)).one()
    row = lists.get_list(session, study, ListKind.DUMMY)
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    kit = session.scalars(sa.select(Kit).limit(1)).one()
    return [lists.slot_arm(session, study, slot, sealer), kit_arm(session, study, kit)]


def test_rotation_rewraps_every_data_key_under_a_new_master_key(
    runner: Runner, session: Session, study: Study, instance_path: Path
) -> None:
    _sealed_data(session, study)
    old_ring, before = _ring(instance_path), _plain_keys(session)
    result = runner.invoke("keys", "rotate")
    assert result.exit_code == 0, result.output
    assert "2 data key(s) re-wrapped" in result.output  # the dummy list's and the kits'
    new_ring = _ring(instance_path)
    assert new_ring.keys[1:] == old_ring.keys  # new key first, old kept
    session.rollback()
    keys = list(session.scalars(sa.select(DataKey)))
    assert {k.master_key_id for k in keys} == {new_ring.current.key_id}
    assert _plain_keys(session) == before  # the same data keys, only re-wrapped


def test_old_ciphertexts_still_open_after_rotation(
    runner: Runner, session: Session, study: Study, instance_path: Path
) -> None:
    _sealed_data(session, study)
    arms_before = _arms(session, study)
    assert runner.invoke("keys", "rotate").exit_code == 0
    session.rollback()
    assert _arms(session, study) == arms_before
    assert set(arms_before) <= ARMS


def test_a_fresh_process_opens_the_data_with_the_key_file(
    runner: Runner, session: Session, study: Study, instance_path: Path
) -> None:
    _sealed_data(session, study)
    arms_before = _arms(session, study)
    assert runner.invoke("keys", "rotate").exit_code == 0
    session.rollback()
    # What a restarted server would load: only the key file on disk.
    session.info["secrets"] = load_secrets(instance_path)
    assert _arms(session, study) == arms_before


def test_rotation_is_audited(
    runner: Runner, session: Session, study: Study, instance_path: Path
) -> None:
    _sealed_data(session, study)
    old_id = _ring(instance_path).current.key_id
    runner.invoke("keys", "rotate")
    session.rollback()
    event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "keys.rotate")).one()
    assert old_id in (event.old_values or "")
    assert _ring(instance_path).current.key_id in (event.new_values or "")
    assert event.actor.startswith("cli:")


def test_rotation_reseals_second_factor_secrets(
    runner: Runner, session: Session, study: Study, users: dict[str, User], instance_path: Path
) -> None:
    enrol_totp(session, users["admin"])
    session.commit()
    result = runner.invoke("keys", "rotate")
    assert "1 second-factor secret(s) re-sealed" in result.output
    session.rollback()
    admin = session.get(User, users["admin"].id)
    assert admin is not None and admin.totp_sealed is not None
    assert admin.totp_sealed.startswith(_ring(instance_path).current.key_id.encode())


def test_a_failed_commit_leaves_data_readable_with_the_key_file(
    runner: Runner,
    session: Session,
    study: Study,
    instance_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key file is written first: if the commit then fails, both keys are on file."""
    _sealed_data(session, study)
    arms_before = _arms(session, study)
    old_ring = _ring(instance_path)

    def crash() -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(db.session(), "commit", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        runner.invoke("keys", "rotate")
    monkeypatch.undo()
    session.rollback()
    on_file = _ring(instance_path)
    assert on_file.keys[1:] == old_ring.keys
    assert {k.master_key_id for k in session.scalars(sa.select(DataKey))} == {
        old_ring.current.key_id
    }
    session.info["secrets"] = load_secrets(instance_path)
    assert _arms(session, study) == arms_before


def test_a_failed_key_file_write_changes_nothing(
    runner: Runner,
    session: Session,
    study: Study,
    instance_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _sealed_data(session, study)
    old_ring = _ring(instance_path)

    def disk_full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("randomizer.cli.keys.write_secret_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        runner.invoke("keys", "rotate")
    session.rollback()
    assert _ring(instance_path) == old_ring
    assert secrets_of(session).ring == old_ring
    assert {k.master_key_id for k in session.scalars(sa.select(DataKey))} == {
        old_ring.current.key_id
    }
    assert session.scalar(sa.select(sa.func.count()).where(AuditEvent.action == "keys.rotate")) == 0


def test_a_master_key_from_the_environment_is_not_rotated_here(
    runner: Runner, session: Session, study: Study, instance_path: Path
) -> None:
    _sealed_data(session, study)
    secrets_of(session).ring_from_env = True
    result = runner.invoke("keys", "rotate")
    assert result.exit_code == 1
    assert "RANDOMIZER_MASTER_KEY" in result.output
