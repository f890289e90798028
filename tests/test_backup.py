"""``randomizer backup`` / ``restore``: a consistent copy without keys, restored into an empty
database and then verified (lists and audit chain) on both backends."""

from __future__ import annotations

import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL
from tests.enrollment_support import prepare_supply
from tests.unblinding_support import randomized

ARMS = ("ACTIVEX", "PLACEBOX", "Active product X", "Placebo product X")


@pytest.fixture
def filled(session, study, users):
    prepare_supply(session, study, per_stratum=20)
    randomized(session, study, users["investigator"], "SCR-1")
    session.close()
    return study


@pytest.fixture
def empty_database(backend, tmp_path):
    """The URL of a new, empty database of the same backend (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    name = f"randomizer_restore_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def test_a_restored_backup_passes_list_and_audit_verification(
    runner, filled, empty_database, tmp_path, monkeypatch
):
    out = tmp_path / "randomizer.backup"
    made = runner.invoke("backup", "--out", str(out))
    assert made.exit_code == 0, made.output
    assert out.stat().st_mode & 0o077 == 0
    monkeypatch.setenv("RANDOMIZER_DATABASE_URL", empty_database)
    restored = _outside_the_test_app(runner.invoke, "restore", str(out))
    assert restored.exit_code == 0, restored.output
    assert "list verify TST dummy: ok" in restored.output
    assert "audit verify: ok" in restored.output


def test_restore_refuses_a_database_that_is_not_empty(runner, filled, tmp_path):
    out = tmp_path / "randomizer.backup"
    assert runner.invoke("backup", "--out", str(out)).exit_code == 0
    refused = runner.invoke("restore", str(out))
    assert refused.exit_code != 0
    assert "not empty" in refused.output


def test_backup_refuses_to_overwrite_a_file(runner, filled, tmp_path):
    out = tmp_path / "randomizer.backup"
    out.write_text("keep me")
    assert runner.invoke("backup", "--out", str(out)).exit_code != 0
    assert out.read_text() == "keep me"


def test_the_backup_holds_no_plaintext_arm_and_no_key(runner, filled, tmp_path, instance_path):
    out = tmp_path / "randomizer.backup"
    assert runner.invoke("backup", "--out", str(out)).exit_code == 0
    data = _plain_content(out)
    assert len(data) > 10_000  # the rows are really there
    for arm in ARMS:
        # Only where the study definition names the arms: never once per slot or kit
        # (80 slots and 40 kits here).
        assert data.count(arm.encode()) <= 4, arm
    for key_file in ("master.key", "audit.key", "secret_key"):
        secret = (instance_path / key_file).read_text().strip().splitlines()[-1]
        assert secret.encode() not in data


def _outside_the_test_app(invoke, *args: str):
    """Run a command in a thread of its own: the CLI then builds its app from the
    environment instead of reusing the test's app context (and database)."""
    results = []
    thread = threading.Thread(target=lambda: results.append(invoke(*args)))
    thread.start()
    thread.join(300)
    return results[0]


def _plain_content(backup_file: Path) -> bytes:
    """The backup's content, uncompressed (pg_dump's custom format compresses)."""
    if backup_file.read_bytes().startswith(b"PGDMP"):
        return subprocess.run(
            ["pg_restore", "--file=-", str(backup_file)], check=True, capture_output=True
        ).stdout
    return backup_file.read_bytes()
