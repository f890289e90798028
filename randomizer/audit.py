"""The audit trail: append an event in the caller's transaction; verify the chain.

Each event carries ``digest = HMAC-SHA256(key, prev_digest || canonical(event))`` where the
key lives outside the database (the instance's ``audit.key`` or RANDOMIZER_AUDIT_KEY). An
edited, deleted, inserted or reordered event breaks the chain at that event; truncation of
the tail is caught by the head row and, against an attacker who also rewrites the head, by
an exported anchor (see ``anchor``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.instance import secrets_of
from randomizer.models import AuditEvent, AuditHead

GENESIS = "0" * 64
SEPARATOR = "\x1e"
#: Fields joined into the canonical content, in this order.
FIELD_COUNT = 12
SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class Actor:
    """Who acts: a username and the role they acted in (``system`` for the service itself)."""

    username: str
    role: str


SYSTEM = Actor(SYSTEM_ACTOR, SYSTEM_ACTOR)


def timestamp(moment: dt.datetime | None = None) -> str:
    """Fixed-width ISO-8601 UTC text used for ``occurred_at``."""
    moment = (moment or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(values: Mapping[str, Any] | None) -> str | None:
    """Canonical JSON text (sorted keys, compact, no ASCII escaping) or None."""
    if values is None:
        return None
    return json.dumps(
        values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def _clean(value: str | None) -> str:
    # The separator must never occur inside a field, or content could shift between
    # fields without changing the canonical bytes.
    return "" if value is None else value.replace(SEPARATOR, "\ufffd")


def canonical(row: tuple[Any, ...]) -> bytes:
    """Canonical content of an event given as (seq, occurred_at, ..., reason)."""
    return SEPARATOR.join("" if v is None else str(v) for v in row).encode("utf-8")


def chain_digest(key: bytes, prev_digest: str, content: bytes) -> str:
    """The event digest: HMAC-SHA256 over the previous digest and the canonical content."""
    return hmac.new(key, prev_digest.encode("ascii") + content, hashlib.sha256).hexdigest()


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    object_type: str | None = None,
    object_id: object = None,
    study_code: str | None = None,
    participant_id: int | None = None,
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction (flushes, never commits)."""
    key = secrets_of(session).audit_key
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, seq=0, digest=GENESIS)
        session.add(head)
    event = AuditEvent(
        seq=head.seq + 1,
        occurred_at=timestamp(),
        actor=_clean(actor.username),
        role=_clean(actor.role),
        action=_clean(action),
        object_type=_clean(object_type) or None,
        object_id=_clean(None if object_id is None else str(object_id)) or None,
        study_code=_clean(study_code) or None,
        participant_id=participant_id,
        old_values=_clean(canonical_json(old)) or None,
        new_values=_clean(canonical_json(new)) or None,
        reason=_clean(reason) or None,
        prev_digest=head.digest,
    )
    event.digest = chain_digest(key, head.digest, canonical(_content(event)))
    head.seq, head.digest = event.seq, event.digest
    session.add(event)
    session.flush()
    return event


def _content(e: AuditEvent) -> tuple[Any, ...]:
    return (
        e.seq,
        e.occurred_at,
        e.actor,
        e.role,
        e.action,
        e.object_type,
        e.object_id,
        e.study_code,
        e.participant_id,
        e.old_values,
        e.new_values,
        e.reason,
    )


_COLUMNS = (
    AuditEvent.seq,
    AuditEvent.occurred_at,
    AuditEvent.actor,
    AuditEvent.role,
    AuditEvent.action,
    AuditEvent.object_type,
    AuditEvent.object_id,
    AuditEvent.study_code,
    AuditEvent.participant_id,
    AuditEvent.old_values,
    AuditEvent.new_values,
    AuditEvent.reason,
    AuditEvent.prev_digest,
    AuditEvent.digest,
)


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    head: str
    bad_seq: int | None = None
    problem: str | None = None

    def message(self) -> str:
        """One line saying what was found."""
        if self.ok:
            return f"audit chain intact: {self.events} events, head {self.head}"
        return f"audit chain broken at event {self.bad_seq}: {self.problem}"


def iter_rows(session: Session, batch: int = 5000) -> Iterator[tuple[Any, ...]]:
    """Stream every event's columns in chain order without holding them all."""
    result = session.execute(
        select(*_COLUMNS).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    )
    for part in result.partitions():
        yield from part  # type: ignore[misc]


def verify_rows(key: bytes, rows: Iterator[tuple[Any, ...]]) -> Verification:
    """Check a stream of event rows (as ``iter_rows`` yields) against the chain rules."""
    prev = GENESIS
    expected = 1
    count = 0
    for row in rows:
        seq = row[0]
        if seq != expected:
            what = "missing" if seq > expected else "duplicated or out of order"
            return Verification(False, count, prev, expected, f"event {expected} is {what}")
        content = canonical(row[:FIELD_COUNT])
        if row[FIELD_COUNT] != prev:
            return Verification(False, count, prev, seq, "does not link to the previous event")
        if not hmac.compare_digest(row[FIELD_COUNT + 1], chain_digest(key, prev, content)):
            return Verification(False, count, prev, seq, "content does not match its digest")
        prev, expected, count = row[FIELD_COUNT + 1], expected + 1, count + 1
    return Verification(True, count, prev)


def verify(session: Session, key: bytes) -> Verification:
    """Verify the whole chain and that the head row matches its last event."""
    result = verify_rows(key, iter_rows(session))
    if not result.ok:
        return result
    head = session.get(AuditHead, 1)
    head_seq, head_digest = (head.seq, head.digest) if head else (0, GENESIS)
    if (head_seq, head_digest) != (result.events, result.head):
        return Verification(
            False,
            result.events,
            result.head,
            result.events + 1,
            f"the chain ends at event {result.events} but its head records event {head_seq}",
        )
    return result
