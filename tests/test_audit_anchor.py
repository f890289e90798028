"""Signed anchors of the audit chain, and the SQL-built canonical content used by verify."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from randomizer import audit, audit_anchor
from randomizer.instance import secrets_of
from tests.conftest import Runner

ACTOR = audit.Actor("alice", "admin")


def _record(session: Session, count: int = 3, **values: Any) -> None:
    for n in range(count):
        audit.record(session, actor=ACTOR, action=f"thing.step{n}", **values)
    session.commit()


def _anchor(session: Session) -> dict[str, Any]:
    secrets = secrets_of(session)
    return audit_anchor.make_anchor(session, secrets.audit_key, secrets.anchor_key())


def _check(session: Session, anchor: dict[str, Any], key: Any = None) -> audit.Verification:
    secrets = secrets_of(session)
    public = (key or secrets.anchor_key()).public_key()
    return audit_anchor.check_anchor(session, secrets.audit_key, anchor, public)


def test_an_anchor_states_the_count_and_head_and_is_signed(session: Session):
    _record(session)
    anchor = _anchor(session)
    verified = audit.verify(session, secrets_of(session).audit_key)
    assert (anchor["events"], anchor["head"]) == (verified.events, verified.head)
    assert anchor["format"] == audit_anchor.ANCHOR_FORMAT
    assert anchor["created_at"].endswith("Z")
    public = secrets_of(session).anchor_key().public_key().public_bytes_raw()
    assert base64.b64decode(anchor["public_key"]) == public
    assert _check(session, anchor).ok


def test_an_anchor_of_an_empty_chain_holds(session: Session):
    anchor = _anchor(session)
    assert (anchor["events"], anchor["head"]) == (0, audit.GENESIS)
    assert _check(session, anchor).ok


@pytest.mark.parametrize(
    "change",
    [
        {"events": 1},
        {"head": "0" * 64},
        {"created_at": "2020-01-01T00:00:00.000000Z"},
        {"signature": base64.b64encode(b"x" * 64).decode()},
    ],
    ids=["events", "head", "time", "signature"],
)
def test_an_altered_anchor_is_refused(session: Session, change: dict[str, Any]):
    _record(session)
    anchor = {**_anchor(session), **change}
    with pytest.raises(audit_anchor.AnchorError, match="signature does not verify"):
        _check(session, anchor)


def test_an_anchor_signed_by_another_key_is_refused(session: Session):
    _record(session)
    foreign = Ed25519PrivateKey.generate()
    anchor = audit_anchor.make_anchor(session, secrets_of(session).audit_key, foreign)
    with pytest.raises(audit_anchor.AnchorError):
        _check(session, anchor)


@pytest.mark.parametrize(
    "anchor",
    [[], {"format": "something else"}, {"format": audit_anchor.ANCHOR_FORMAT, "events": "3"}],
    ids=["list", "format", "types"],
)
def test_a_malformed_anchor_is_refused(session: Session, anchor: Any):
    with pytest.raises(audit_anchor.AnchorError):
        _check(session, anchor)


def test_a_broken_chain_is_not_anchored(session: Session):
    _record(session)
    secrets = secrets_of(session)
    with pytest.raises(audit_anchor.AnchorError, match="broken chain"):
        audit_anchor.make_anchor(session, b"another key of 32 bytes.........", secrets.anchor_key())


def test_the_anchor_command_writes_a_file_that_verify_accepts(
    runner: Runner, session: Session, tmp_path: Path
):
    _record(session)
    out = tmp_path / "anchor.json"
    made = runner.invoke("audit", "anchor", "--out", str(out))
    assert made.exit_code == 0, made.output
    assert json.loads(out.read_text())["events"] == 3
    checked = runner.invoke("audit", "verify", "--anchor", str(out))
    assert checked.exit_code == 0, checked.output
    assert "ok: 3 events" in checked.stdout


def test_the_anchor_command_prints_to_stdout_by_default(runner: Runner, session: Session):
    _record(session)
    printed = runner.invoke("audit", "anchor")
    assert printed.exit_code == 0
    assert json.loads(printed.stdout)["events"] == 3


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"format": "x"}'])
def test_verify_with_an_unreadable_anchor_fails_cleanly(
    runner: Runner, session: Session, tmp_path: Path, text: str
):
    path = tmp_path / "anchor.json"
    path.write_text(text)
    result = runner.invoke("audit", "verify", "--anchor", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith("FAILED:") and "Traceback" not in result.output


# --- the canonical content built by the database ---------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"object_type": "kit", "object_id": 42, "study_code": "TST", "participant_id": 7},
        {"new": {"name": "ñandú 🐦", "n": [1, 2.5, None]}, "old": {"a": True}},
        {"reason": "line one\nline two\ttab 'quote' \"dq\" \\ back"},
        {"reason": "a\x1eb", "object_id": "x\x1ey"},
        {"participant_id": 0, "object_id": ""},
    ],
    ids=["nulls", "plain", "unicode-json", "quotes", "separator", "zero-empty"],
)
def test_the_database_builds_the_same_canonical_content_as_python(
    session: Session, values: dict[str, Any]
):
    _record(session, 1, **values)
    [row] = audit.iter_rows(session)
    query = audit._message_query(session.get_bind().dialect.name)
    [[(seq, message, prev, digest)]] = audit._batches(session, query, 10)
    session.rollback()
    assert seq == row[0] and (prev, digest) == row[audit.FIELD_COUNT :]
    assert bytes(message) == prev.encode("ascii") + audit.canonical(row[: audit.FIELD_COUNT])
    assert audit.verify(session, secrets_of(session).audit_key).ok
