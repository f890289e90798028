"""The audit chain: recording, verification, and an attacker with the database owner's rights.

The attacker can drop the append-only triggers and edit rows, but does not hold the audit
key (it lives outside the database), so every edit, deletion, insertion or reordering must
be named by ``randomizer audit verify``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.instance import secrets_of
from randomizer.models import AuditEvent, AuditHead, Role
from randomizer.services.users import create_token
from tests.conftest import Runner, make_user
from tests.engines import dispose_engines  # noqa: F401  (fixture)

KEY = b"k" * 32
ACTOR = audit.Actor("alice", "admin")

# --- the pure chain rules --------------------------------------------------------------


def _rows(count: int, key: bytes = KEY) -> list[tuple[Any, ...]]:
    rows, prev = [], audit.GENESIS
    for seq in range(1, count + 1):
        content = (seq, f"2026-01-01T00:00:0{seq}.000000Z", "alice", "admin", "x.do")
        content += (None, None, None, None, None, '{"n":1}', None)
        digest = audit.chain_digest(key, prev, audit.canonical(content))
        rows.append((*content, prev, digest))
        prev = digest
    return rows


def test_an_intact_chain_verifies_with_its_count_and_head():
    rows = _rows(4)
    result = audit.verify_rows(KEY, iter(rows))
    assert (result.ok, result.events, result.head) == (True, 4, rows[-1][-1])


def test_an_empty_chain_verifies_with_the_genesis_head():
    assert audit.verify_rows(KEY, iter([])) == audit.Verification(True, 0, audit.GENESIS)


def test_the_digest_is_an_hmac_over_the_previous_digest_and_the_content():
    content = audit.canonical((1, "t", "alice", None))
    expected = hmac.new(KEY, audit.GENESIS.encode() + content, hashlib.sha256).hexdigest()
    assert audit.chain_digest(KEY, audit.GENESIS, content) == expected
    assert content == b"1\x1et\x1ealice\x1e"


def test_a_chain_checked_with_another_key_fails_at_the_first_event():
    result = audit.verify_rows(b"x" * 32, iter(_rows(3)))
    assert (result.ok, result.bad_seq) == (False, 1)


@pytest.mark.parametrize("index", [0, 2, 4])
def test_changing_any_field_of_an_event_breaks_the_chain_at_that_event(index: int):
    rows = _rows(5)
    row = list(rows[index])
    row[4] = "x.undo"
    rows[index] = tuple(row)
    result = audit.verify_rows(KEY, iter(rows))
    assert (result.ok, result.bad_seq) == (False, index + 1)


# --- recording -------------------------------------------------------------------------


def _record_events(session: Session, count: int = 5) -> list[AuditEvent]:
    events = [
        audit.record(
            session,
            actor=ACTOR,
            action=f"thing.step{n}",
            object_type="thing",
            object_id=n,
            study_code="TST",
            participant_id=n,
            old={"n": n - 1},
            new={"n": n, "label": "ñandú"},
            reason=f"reason {n}",
        )
        for n in range(1, count + 1)
    ]
    session.commit()
    return events


def _key(session: Session) -> bytes:
    return secrets_of(session).audit_key


def test_recorded_events_form_a_chain_ending_at_the_head(session: Session):
    events = _record_events(session)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_digest == audit.GENESIS
    assert all(b.prev_digest == a.digest for a, b in itertools.pairwise(events))
    head = session.get(AuditHead, 1)
    assert head is not None and (head.seq, head.digest) == (5, events[-1].digest)
    result = audit.verify(session, _key(session))
    assert (result.ok, result.events, result.head) == (True, 5, events[-1].digest)


def test_an_event_is_part_of_the_callers_transaction(session: Session):
    _record_events(session, 2)
    audit.record(session, actor=ACTOR, action="thing.abandoned")
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 2
    assert audit.verify(session, _key(session)).ok


def test_values_are_stored_as_canonical_json_with_server_utc_time(session: Session):
    event = audit.record(session, actor=ACTOR, action="x", new={"b": 2, "a": "é"})
    assert event.new_values == '{"a":"é","b":2}'
    assert event.occurred_at.endswith("Z") and len(event.occurred_at) == 27


def test_the_field_separator_cannot_be_smuggled_into_a_field(session: Session):
    event = audit.record(session, actor=ACTOR, action="x", reason="a\x1eb")
    assert event.reason == "a\ufffdb"
    session.commit()
    assert audit.verify(session, _key(session)).ok


# --- the command line and the attacker -------------------------------------------------


def test_audit_verify_reports_the_count_and_head(runner: Runner, session: Session):
    events = _record_events(session)
    result = runner.invoke("audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: 5 events, head {events[-1].digest}"


def test_audit_verify_of_an_empty_trail_succeeds(runner: Runner, session: Session):
    result = runner.invoke("audit", "verify")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ok: 0 events, head {audit.GENESIS}"


def _restore_triggers(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON "
            "audit_event FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
        )
        return
    for verb in ("UPDATE", "DELETE"):
        conn.exec_driver_sql(
            f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
            f"BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: {verb} refused'); END"
        )


@contextmanager
def attacker(database_url: str) -> Iterator[sa.Connection]:
    """A connection with the owner's rights that drops the append-only triggers.

    The triggers come back in the same transaction, so the tampered rows stay and the next
    test (PostgreSQL shares one database) finds the schema as the migration made it.
    """
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("DROP TRIGGER audit_event_no_update_delete ON audit_event")
            else:
                conn.exec_driver_sql("DROP TRIGGER audit_event_no_update")
                conn.exec_driver_sql("DROP TRIGGER audit_event_no_delete")
            yield conn
            _restore_triggers(conn)
    finally:
        engine.dispose()


def _verify_fails(runner: Runner, seq: int, problem: str) -> None:
    result = runner.invoke("audit", "verify")
    assert result.exit_code == 1, result.output
    assert f"audit chain broken at event {seq}: {problem}" in result.stderr
    assert "Traceback" not in result.output


EDITS = {
    "occurred_at": "'2020-01-01T00:00:00.000000Z'",
    "actor": "'mallory'",
    "role": "'statistician'",
    "action": "'thing.other'",
    "object_type": "'other'",
    "object_id": "'99'",
    "study_code": "'XYZ'",
    "participant_id": "99",
    "old_values": "NULL",
    "new_values": """'{"n":3,"label":"x"}'""",
    "reason": "'no reason'",
}


@pytest.mark.usefixtures("dispose_engines")
@pytest.mark.parametrize(("column", "value"), EDITS.items(), ids=EDITS.keys())
def test_editing_one_column_of_an_event_is_named_by_audit_verify(
    column: str, value: str, runner: Runner, session: Session, database_url: str
):
    _record_events(session)
    with attacker(database_url) as conn:
        conn.exec_driver_sql(f"UPDATE audit_event SET {column} = {value} WHERE seq = 3")
    _verify_fails(runner, 3, "content does not match its digest")


@pytest.mark.usefixtures("dispose_engines")
def test_a_rewritten_link_is_named_by_audit_verify(
    runner: Runner, session: Session, database_url: str
):
    first = _record_events(session)[0].digest
    session.rollback()
    with attacker(database_url) as conn:
        conn.exec_driver_sql(f"UPDATE audit_event SET prev_digest = '{first}' WHERE seq = 4")
    _verify_fails(runner, 4, "does not link to the previous event")


@pytest.mark.usefixtures("dispose_engines")
def test_a_recomputed_digest_without_the_key_is_named_by_audit_verify(
    runner: Runner, session: Session, database_url: str
):
    # The attacker edits an event and recomputes the chain with a key of their own.
    _record_events(session)
    rows = list(audit.iter_rows(session))
    session.rollback()
    forged_key, prev = b"m" * 32, rows[1][audit.FIELD_COUNT + 1]
    with attacker(database_url) as conn:
        for row in rows[2:]:
            content = list(row[: audit.FIELD_COUNT])
            if content[0] == 3:
                content[4] = "thing.forged"
            digest = audit.chain_digest(forged_key, prev, audit.canonical(tuple(content)))
            conn.execute(
                sa.text(
                    "UPDATE audit_event SET action = :action, prev_digest = :prev, "
                    "digest = :digest WHERE seq = :seq"
                ),
                {"action": content[4], "prev": prev, "digest": digest, "seq": content[0]},
            )
            prev = digest
        conn.execute(sa.text("UPDATE audit_head SET digest = :d WHERE id = 1"), {"d": prev})
    _verify_fails(runner, 3, "content does not match its digest")


@pytest.mark.usefixtures("dispose_engines")
def test_a_deleted_event_is_named_by_audit_verify(
    runner: Runner, session: Session, database_url: str
):
    _record_events(session)
    with attacker(database_url) as conn:
        conn.exec_driver_sql("DELETE FROM audit_event WHERE seq = 2")
    _verify_fails(runner, 2, "event 2 is missing")


@pytest.mark.usefixtures("dispose_engines")
def test_a_deleted_and_renumbered_event_is_named_by_audit_verify(
    runner: Runner, session: Session, database_url: str
):
    _record_events(session)
    with attacker(database_url) as conn:
        conn.exec_driver_sql("DELETE FROM audit_event WHERE seq = 2")
        for seq in (3, 4, 5):
            conn.exec_driver_sql(f"UPDATE audit_event SET seq = {seq - 1} WHERE seq = {seq}")
        conn.exec_driver_sql("UPDATE audit_head SET seq = 4 WHERE id = 1")
    _verify_fails(runner, 2, "does not link to the previous event")


@pytest.mark.usefixtures("dispose_engines")
def test_an_inserted_forged_event_is_named_by_audit_verify(
    runner: Runner, session: Session, database_url: str
):
    second = _record_events(session)[1]
    occurred_at, digest = second.occurred_at, second.digest
    session.rollback()  # the attacker's lock would block even a read
    with attacker(database_url) as conn:
        for seq in (5, 4, 3):
            conn.exec_driver_sql(f"UPDATE audit_event SET seq = {seq + 1} WHERE seq = {seq}")
        conn.execute(
            sa.insert(AuditEvent).values(
                seq=3,
                occurred_at=occurred_at,
                actor="mallory",
                role="admin",
                action="user.create",
                prev_digest=digest,
                digest=hashlib.sha256(b"forged").hexdigest(),
            )
        )
        conn.exec_driver_sql("UPDATE audit_head SET seq = 6 WHERE id = 1")
    _verify_fails(runner, 3, "content does not match its digest")


@pytest.mark.usefixtures("dispose_engines")
def test_an_event_appended_without_the_key_is_named_by_audit_verify(
    runner: Runner, session: Session, database_url: str
):
    last = _record_events(session)[-1]
    occurred_at, digest = last.occurred_at, last.digest
    session.rollback()
    forged = audit.chain_digest(b"m" * 32, digest, b"whatever")
    with attacker(database_url) as conn:
        conn.execute(
            sa.insert(AuditEvent).values(
                seq=6,
                occurred_at=occurred_at,
                actor="mallory",
                role="admin",
                action="user.create",
                prev_digest=digest,
                digest=forged,
            )
        )
        conn.execute(sa.text("UPDATE audit_head SET seq = 6, digest = :d"), {"d": forged})
    _verify_fails(runner, 6, "content does not match its digest")


@pytest.mark.usefixtures("dispose_engines")
def test_two_swapped_events_are_named_by_audit_verify(
    runner: Runner, session: Session, database_url: str
):
    _record_events(session)
    with attacker(database_url) as conn:
        conn.exec_driver_sql("UPDATE audit_event SET seq = -2 WHERE seq = 2")
        conn.exec_driver_sql("UPDATE audit_event SET seq = 2 WHERE seq = 3")
        conn.exec_driver_sql("UPDATE audit_event SET seq = 3 WHERE seq = -2")
    _verify_fails(runner, 2, "does not link to the previous event")


@pytest.mark.usefixtures("dispose_engines")
def test_a_truncated_tail_is_caught_by_the_head_row(
    runner: Runner, session: Session, database_url: str
):
    _record_events(session)
    with attacker(database_url) as conn:
        conn.exec_driver_sql("DELETE FROM audit_event WHERE seq >= 4")
    _verify_fails(runner, 4, "the chain ends at event 3 but its head records event 5")


# --- the append-only triggers ----------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_event SET actor = 'mallory' WHERE seq = 1", "DELETE FROM audit_event"],
    ids=["update", "delete"],
)
def test_the_database_refuses_to_update_or_delete_an_event(
    statement: str, session: Session, database_url: str
):
    _record_events(session, 2)
    engine = sa.create_engine(database_url)
    try:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM audit_event")).scalar()
            actors = conn.execute(sa.text("SELECT DISTINCT actor FROM audit_event")).scalars()
            assert (count, list(actors)) == (2, ["alice"])
    finally:
        engine.dispose()
    assert audit.verify(session, _key(session)).ok


# --- GET /api/v1/audit/verify ----------------------------------------------------------


def _bearer(session: Session, username: str, role: Role, sites: tuple[str, ...] = ()) -> Any:
    user = make_user(session, username, role, sites)
    token = create_token(session, user)
    session.commit()
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("role", [Role.ADMIN, Role.STATISTICIAN])
def test_the_api_reports_the_chain_to_admins_and_statisticians(
    role: Role, client: FlaskClient, session: Session
):
    headers = _bearer(session, "auditor", role)
    head = session.get(AuditHead, 1)
    assert head is not None
    expected = {"ok": True, "events": head.seq, "head": head.digest}
    session.rollback()
    response = client.get("/api/v1/audit/verify", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == expected


@pytest.mark.usefixtures("dispose_engines")
def test_the_api_names_the_first_bad_event(
    client: FlaskClient, session: Session, database_url: str
):
    headers = _bearer(session, "auditor", Role.ADMIN)
    with attacker(database_url) as conn:
        conn.exec_driver_sql("UPDATE audit_event SET reason = 'x' WHERE seq = 1")
    body = client.get("/api/v1/audit/verify", headers=headers).get_json()
    assert body["ok"] is False
    assert body["first_bad_event"] == 1
    assert body["problem"] == "content does not match its digest"


@pytest.mark.parametrize(
    ("role", "sites"),
    [(Role.PHARMACIST, ("S1",)), (Role.INVESTIGATOR, ("S1",)), (Role.ASSESSOR, ())],
)
def test_the_api_refuses_the_chain_to_other_roles(
    role: Role, sites: tuple[str, ...], client: FlaskClient, session: Session, study: Any
):
    headers = _bearer(session, "someone", role, sites)
    response = client.get("/api/v1/audit/verify", headers=headers)
    assert response.status_code == 403
    _assert_problem(response.get_json(), 403)


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer rnd_not-a-real-token"]
)
def test_the_api_refuses_a_missing_or_unknown_token(
    header: str | None, client: FlaskClient, session: Session
):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/audit/verify", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    _assert_problem(response.get_json(), 401)


def _assert_problem(body: dict[str, Any], status: int) -> None:
    assert set(body) >= {"type", "title", "status", "detail"}
    assert body["status"] == status
    assert all(isinstance(body[k], str) and body[k] for k in ("type", "title", "detail"))


def test_events_of_a_rolled_back_savepoint_are_dropped(session: Session) -> None:
    audit.record(session, actor=ACTOR, action="kept")
    with pytest.raises(RuntimeError), session.begin_nested():
        audit.record(session, actor=ACTOR, action="dropped")
        raise RuntimeError("refused")
    session.commit()
    actions = session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert actions == ["kept"] and audit.verify(session, _key(session)).ok


def test_a_reader_in_the_same_transaction_sees_its_own_events(session: Session) -> None:
    audit.record(session, actor=ACTOR, action="a")
    audit.record(session, actor=ACTOR, action="b")
    seen = session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert seen == ["a", "b"]
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0


def test_the_chain_head_is_locked_only_at_commit(app: Any, session: Session, backend: str) -> None:
    """Recording an event does not take the head's row lock: another transaction can append
    meanwhile, and both land in the chain in commit order."""
    if backend != "postgresql":
        pytest.skip("SQLite holds the database write lock from BEGIN anyway")
    from randomizer.db import db

    audit.record(session, actor=ACTOR, action="first-recorded")
    other = sa.orm.Session(db.engine)
    try:
        with other.begin():
            other.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            other.execute(sa.select(AuditHead).with_for_update()).all()
    finally:
        other.close()
    session.commit()
    assert audit.verify(session, _key(session)).ok
