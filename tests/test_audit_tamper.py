"""Tampering with a copy of the database, as its owner would: `audit verify` names the event.

The attacker drops the append-only triggers first (the owner can), then edits, deletes,
inserts or reorders events. Without the audit key every change is named at its first bad
event. With the key, the attacker can cut the tail and rebuild a consistent chain — which
only an anchor exported earlier catches (`audit verify --anchor`).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from randomizer import audit, create_app, migrate
from randomizer.db import db
from randomizer.instance import secrets_of
from randomizer.models import AuditEvent, AuditHead
from tests.conftest import PG_ADMIN_URL, Runner
from tests.engines import dispose_engines  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("dispose_engines")
EVENTS = 12
COLUMNS = [c.name for c in AuditEvent.__table__.columns]


def _record(session: Session, count: int = EVENTS) -> None:
    for n in range(1, count + 1):
        audit.record(
            session,
            actor=audit.Actor("alice", "admin"),
            action=f"thing.step{n}",
            object_type="thing",
            object_id=n,
            study_code="TST",
            participant_id=n,
            new={"n": n, "label": "ñandú"},
            reason=f"reason {n}",
        )
    session.commit()


@pytest.fixture
def copy_url(session: Session, database_url: str, tmp_path: Path) -> Iterator[str]:
    """A copy of the test database holding EVENTS events."""
    _record(session)
    if database_url.startswith("sqlite"):
        target = tmp_path / "copy.sqlite3"
        source = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        with sqlite3.connect(target) as dest:
            source.backup(dest)
        source.close()
        yield f"sqlite:///{target}"
        return
    name = f"randomizer_copy_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _copy_audit_tables(session, url)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _copy_audit_tables(session: Session, url: str) -> None:
    """A migrated database holding the same audit rows (all that `audit verify` reads)."""
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    rows = [dict(r._mapping) for r in session.execute(sa.select(AuditEvent.__table__))]
    head = session.get_one(AuditHead, 1)
    values = {"seq": head.seq, "digest": head.digest}
    session.rollback()
    with engine.begin() as conn:
        conn.execute(sa.insert(AuditEvent.__table__), rows)
        conn.execute(sa.update(AuditHead.__table__).where(AuditHead.id == 1).values(**values))
    engine.dispose()


def _as_owner(url: str, *statements: tuple[str, dict[str, Any]]) -> None:
    """Run statements as the database owner, with the append-only triggers dropped."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER audit_event_no_update_delete ON audit_event")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_event_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_event_no_delete")
        for sql, params in statements:
            conn.execute(sa.text(sql), params)
    engine.dispose()


def _rows(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(sa.text("SELECT * FROM audit_event ORDER BY seq"))
        ]
    engine.dispose()
    return rows


class CopyRunner:
    """Runs the CLI against the copy: commands use the current app, so push the copy's."""

    def __init__(self, runner: Runner, url: str) -> None:
        self.runner, self.url = runner, url

    def invoke(self, *args: str) -> Any:
        copy_app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": self.url})
        try:
            with copy_app.app_context():
                return self.runner.invoke(*args)
        finally:
            with copy_app.app_context():
                db.session.remove()
                db.engine.dispose()


@pytest.fixture
def on_copy(runner: Runner, copy_url: str) -> CopyRunner:
    return CopyRunner(runner, copy_url)


def _verify_names(runner: CopyRunner, seq: int, *args: str) -> str:
    result = runner.invoke("audit", "verify", *args)
    assert result.exit_code == 1, result.output
    assert f"audit chain broken at event {seq}:" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    return str(result.stderr)


def test_the_untouched_copy_verifies(on_copy: CopyRunner):
    result = on_copy.invoke("audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {EVENTS} events")


def test_the_database_refuses_edits_while_the_triggers_stand(copy_url: str):
    engine = sa.create_engine(copy_url)
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_event SET reason = 'x' WHERE seq = 3")
    engine.dispose()


def test_an_edited_event_is_named(on_copy: CopyRunner, copy_url: str):
    _as_owner(copy_url, ("UPDATE audit_event SET reason = 'nothing happened' WHERE seq = 5", {}))
    assert "content does not match its digest" in _verify_names(on_copy, 5)


def test_a_deleted_event_is_named(on_copy: CopyRunner, copy_url: str):
    _as_owner(copy_url, ("DELETE FROM audit_event WHERE seq = 7", {}))
    assert "event 7 is missing" in _verify_names(on_copy, 7)


def test_an_inserted_event_is_named(on_copy: CopyRunner, copy_url: str):
    # Make room at 4 (two steps, so the primary key never collides), then forge an event
    # that links to event 3; without the key its digest cannot be right.
    prev = _rows(copy_url)[2]["digest"]
    forged = audit.chain_digest(
        b"x" * 32, prev, audit.canonical((4, "2026-01-01T00:00:00.000000Z"))
    )
    _as_owner(
        copy_url,
        ("UPDATE audit_event SET seq = seq + 1000 WHERE seq >= 4", {}),
        ("UPDATE audit_event SET seq = seq - 999 WHERE seq >= 1000", {}),
        (
            "INSERT INTO audit_event (seq, occurred_at, actor, role, action, prev_digest, digest) "
            "VALUES (4, '2026-01-01T00:00:00.000000Z', 'mallory', 'admin', 'thing.forged', "
            ":prev, :digest)",
            {"prev": prev, "digest": forged},
        ),
        ("UPDATE audit_head SET seq = seq + 1", {}),
    )
    _verify_names(on_copy, 4)


def test_an_event_beyond_the_head_is_named(on_copy: CopyRunner, copy_url: str):
    # An extra row past the head row (the head left alone) is not part of the chain.
    _as_owner(
        copy_url,
        (
            "INSERT INTO audit_event (seq, occurred_at, actor, role, action, prev_digest, digest) "
            "VALUES (:seq, '2026-01-01T00:00:00.000000Z', 'mallory', 'admin', 'thing.extra', "
            ":d, :d)",
            {"seq": EVENTS + 5, "d": "0" * 64},
        ),
    )
    assert "lies beyond the chain's head row" in _verify_names(on_copy, EVENTS + 5)


def test_two_reordered_events_are_named(on_copy: CopyRunner, copy_url: str):
    _as_owner(
        copy_url,
        ("UPDATE audit_event SET seq = 1000 WHERE seq = 8", {}),
        ("UPDATE audit_event SET seq = 8 WHERE seq = 9", {}),
        ("UPDATE audit_event SET seq = 9 WHERE seq = 1000", {}),
    )
    _verify_names(on_copy, 8)


def test_tampering_with_the_copy_leaves_the_original_intact(
    runner: Runner, on_copy: CopyRunner, copy_url: str
):
    _as_owner(copy_url, ("DELETE FROM audit_event WHERE seq = 2", {}))
    _verify_names(on_copy, 2)
    assert runner.invoke("audit", "verify").exit_code == 0


# --- an attacker holding the audit key ---------------------------------------------------


def _rebuild(url: str, key: bytes, keep: int, append: int) -> None:
    """Cut the chain after ``keep`` events, append ``append`` forged ones, fix the head."""
    rows = _rows(url)
    prev = rows[keep - 1]["digest"]
    statements: list[tuple[str, dict[str, Any]]] = [
        ("DELETE FROM audit_event WHERE seq > :keep", {"keep": keep})
    ]
    for seq in range(keep + 1, keep + append + 1):
        content = (seq, audit.timestamp(), "mallory", "admin", "thing.quiet", *[None] * 7)
        digest = audit.chain_digest(key, prev, audit.canonical(content))
        statements.append(
            (
                "INSERT INTO audit_event (seq, occurred_at, actor, role, action, prev_digest, "
                "digest) VALUES (:seq, :at, 'mallory', 'admin', 'thing.quiet', :prev, :digest)",
                {"seq": seq, "at": content[1], "prev": prev, "digest": digest},
            )
        )
        prev = digest
    statements.append(
        (
            "UPDATE audit_head SET seq = :seq, digest = :digest",
            {"seq": keep + append, "digest": prev},
        )
    )
    _as_owner(url, *statements)


@pytest.mark.parametrize(
    ("keep", "append"), [(9, 0), (9, 2), (9, 6)], ids=["cut", "cut-refill-short", "cut-refill-long"]
)
def test_a_rebuilt_tail_passes_verify_but_fails_against_an_earlier_anchor(
    on_copy: CopyRunner,
    session: Session,
    copy_url: str,
    tmp_path: Path,
    keep: int,
    append: int,
):
    anchor = tmp_path / "anchor.json"
    made = on_copy.invoke("audit", "anchor", "--out", str(anchor))
    assert made.exit_code == 0, made.output
    assert json.loads(anchor.read_text())["events"] == EVENTS
    _rebuild(copy_url, secrets_of(session).audit_key, keep, append)
    plain = on_copy.invoke("audit", "verify")
    assert plain.exit_code == 0, "the attacker's rebuilt chain is consistent"
    result = on_copy.invoke("audit", "verify", "--anchor", str(anchor))
    assert result.exit_code == 1
    assert "audit chain broken at event" in result.stderr
    if keep + append < EVENTS:
        assert "the anchor of" in result.stderr and "were removed" in result.stderr
    else:
        assert f"event {EVENTS} differs from the anchor" in result.stderr


def test_an_intact_chain_holds_its_anchor_as_it_grows(
    on_copy: CopyRunner, session: Session, copy_url: str, tmp_path: Path
):
    anchor = tmp_path / "anchor.json"
    assert on_copy.invoke("audit", "anchor", "--out", str(anchor)).exit_code == 0
    rows = _rows(copy_url)
    key = secrets_of(session).audit_key
    content = (EVENTS + 1, audit.timestamp(), "bob", "admin", "thing.later", *[None] * 7)
    digest = audit.chain_digest(key, rows[-1]["digest"], audit.canonical(content))
    engine = sa.create_engine(copy_url)
    with engine.begin() as conn:  # a legitimate append: inserts pass the triggers
        conn.execute(
            sa.text(
                "INSERT INTO audit_event (seq, occurred_at, actor, role, action, prev_digest, "
                "digest) VALUES (:seq, :at, 'bob', 'admin', 'thing.later', :prev, :digest)"
            ),
            {"seq": EVENTS + 1, "at": content[1], "prev": rows[-1]["digest"], "digest": digest},
        )
        conn.execute(
            sa.text("UPDATE audit_head SET seq = :s, digest = :d"), {"s": EVENTS + 1, "d": digest}
        )
    engine.dispose()
    result = on_copy.invoke("audit", "verify", "--anchor", str(anchor))
    assert result.exit_code == 0, result.output
    assert f"event {EVENTS} unchanged" in result.stdout
