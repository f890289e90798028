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
import secrets
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, LargeBinary, Select, Text, cast, event, func, literal, select
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

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
    return _canonical_text(row).encode("utf-8")


def chain_digest(key: bytes, prev_digest: str, content: bytes) -> str:
    """The event digest: HMAC-SHA256 over the previous digest and the canonical content."""
    return hmac.digest(key, prev_digest.encode("ascii") + content, hashlib.sha256).hex()


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
    """Append one event to the chain inside the caller's transaction (never commits).

    The event is linked into the chain, and written, when the transaction commits (or when
    anything reads the trail first): the chain head is the one row every transaction
    shares, so it is locked for the commit alone, not for the whole transaction. A
    rollback (of the transaction, or of the savepoint the event was recorded in) drops
    the event with everything else.
    """
    event = AuditEvent(
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
    )
    event.occurred_at = timestamp()
    _pending(session).append(event)
    return event


def write_pending(session: Session) -> None:
    """Link the transaction's recorded events into the chain and write them (under the
    head's row lock, held from here to the commit)."""
    pending = _pending(session)
    if not pending or session.info.get(_WRITING):
        return
    session.info[_WRITING] = True
    try:
        key = secrets_of(session).audit_key
        head = session.execute(
            select(AuditHead).where(AuditHead.id == 1).with_for_update()
        ).scalar_one_or_none()
        if head is None:
            head = AuditHead(id=1, seq=0, digest=GENESIS)
            session.add(head)
        now = timestamp()
        while pending:
            draft = pending.pop(0)
            draft.seq, draft.prev_digest = head.seq + 1, head.digest
            draft.occurred_at = now  # the time it joins the chain: seq and time agree
            draft.digest = chain_digest(key, head.digest, canonical(_content(draft)))
            head.seq, head.digest = draft.seq, draft.digest
            session.add(draft)
        session.flush()
    finally:
        session.info.pop(_WRITING, None)


_PENDING, _WRITING, _MARKS = "audit_pending", "audit_writing", "audit_savepoints"


def _pending(session: Session) -> list[AuditEvent]:
    found: list[AuditEvent] = session.info.setdefault(_PENDING, [])
    return found


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    write_pending(session)


@event.listens_for(Session, "do_orm_execute")
def _before_reading_the_trail(state: ORMExecuteState) -> None:
    # Whoever reads the trail in this transaction sees its own events, in chain order
    # (not inside a savepoint, whose rollback would take earlier events with it).
    session = state.session
    if (
        session.info.get(_PENDING)
        and not session.in_nested_transaction()
        and any(m.class_ in (AuditEvent, AuditHead) for m in state.all_mappers)
    ):
        write_pending(session)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        session.info.setdefault(_MARKS, {})[id(transaction)] = len(_pending(session))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous: SessionTransaction) -> None:
    marks = session.info.get(_MARKS, {})
    if previous.nested and id(previous) in marks:
        del _pending(session)[marks.pop(id(previous)) :]
    elif previous.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_MARKS, None)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    # (A savepoint's mark is used by after_soft_rollback, which comes after this.)
    if not transaction.nested and transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_MARKS, None)


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
    for rows in _batches(session, select(*_COLUMNS).order_by(AuditEvent.seq), batch):
        yield from rows


def verify_rows(key: bytes, rows: Iterable[tuple[Any, ...]]) -> Verification:
    """Check a stream of event rows (as ``iter_rows`` yields) against the chain rules."""
    messages = (
        (
            r[0],
            (r[FIELD_COUNT] or "").encode("utf-8") + canonical(r[:FIELD_COUNT]),
            r[FIELD_COUNT],
            r[FIELD_COUNT + 1],
        )
        for r in rows
    )
    return _check_links(key, [messages])


def verify(session: Session, key: bytes) -> Verification:
    """Verify the chain up to its head row, and that no event lies beyond the head.

    The head is read first and only events up to it are checked, so events appended while
    a long chain is being checked (PostgreSQL reads each statement's own snapshot) are
    left for the next run instead of being reported as a broken chain.
    """
    head = session.execute(select(AuditHead.seq, AuditHead.digest).where(AuditHead.id == 1)).first()
    head_seq, head_digest = (head.seq, head.digest) if head else (0, GENESIS)
    query = _message_query(session.get_bind().dialect.name).where(AuditEvent.seq <= head_seq)
    batches = _batches(session, query, VERIFY_BATCH)
    try:
        result = _check_links(key, batches)
    finally:
        batches.close()  # a chain broken early leaves the cursor open otherwise
    if not result.ok:
        return result
    if (head_seq, head_digest) != (result.events, result.head):
        return Verification(
            False,
            result.events,
            result.head,
            result.events + 1,
            f"the chain ends at event {result.events} but its head records event {head_seq}",
        )
    beyond = session.scalar(
        select(func.min(AuditEvent.seq)).where(
            AuditEvent.seq > select(AuditHead.seq).where(AuditHead.id == 1).scalar_subquery()
        )
    )
    if beyond is not None:
        return Verification(
            False, result.events, result.head, beyond, "lies beyond the chain's head row"
        )
    return result


#: Rows fetched per round trip when verifying (memory stays flat in the chain length).
VERIFY_BATCH = 5000


def _canonical_text(row: tuple[Any, ...]) -> str:
    return SEPARATOR.join("" if v is None else str(v) for v in row)


def _message_query(dialect: str) -> Select[Any]:
    """(seq, HMAC input, prev_digest, digest) per event, the HMAC input built by the database.

    The input is ``prev_digest || canonical content`` as UTF-8 bytes — the same join as
    ``canonical``: each field as text, NULL as empty, separated by SEPARATOR — made by one
    ``printf`` (SQLite) or ``concat`` (PostgreSQL) call, which leaves Python one HMAC per
    event: verification then runs at a good fraction of the raw HMAC rate.
    ``tests/test_audit_anchor.py`` checks that both forms agree on both backends.
    """
    fields = [AuditEvent.prev_digest, *_COLUMNS[:FIELD_COUNT]]
    message: ColumnElement[Any]
    if dialect == "postgresql":
        parts: list[Any] = [AuditEvent.prev_digest]
        for n, column in enumerate(_COLUMNS[:FIELD_COUNT]):
            parts += [column] if n == 0 else [literal(SEPARATOR, Text), column]
        message = func.convert_to(func.concat(*parts), "UTF8")
    else:
        template = "%s%s" + (SEPARATOR + "%s") * (FIELD_COUNT - 1)
        message = cast(func.printf(template, *fields), LargeBinary)
    return select(AuditEvent.seq, message, AuditEvent.prev_digest, AuditEvent.digest).order_by(
        AuditEvent.seq
    )


def _batches(session: Session, statement: Select[Any], size: int) -> Generator[list[Any]]:
    """Plain DB-API rows of a query, in lists of ``size``, inside the session's transaction.

    The raw cursor skips per-row result processing; on PostgreSQL a named (server-side)
    cursor keeps memory flat however long the chain is.
    """
    connection = session.connection()
    sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor: Any
    if connection.dialect.name == "postgresql":
        cursor = dbapi.cursor(name=f"audit_stream_{secrets.token_hex(6)}")
        cursor.itersize = size
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(size):
            yield rows
    finally:
        cursor.close()


def _check_links(
    key: bytes, batches: Iterable[Iterable[tuple[int, bytes, str, str]]]
) -> Verification:
    """The chain rules over batches of (seq, prev_digest || content, prev_digest, digest)."""
    prev, expected = GENESIS, 1
    # Copying a keyed HMAC state skips re-deriving the padded keys for every event.
    keyed = hmac.new(key, digestmod=hashlib.sha256).copy
    for batch in batches:
        for seq, message, stored_prev, stored in batch:
            if seq != expected:
                what = "missing" if seq > expected else "duplicated or out of order"
                return Verification(
                    False, expected - 1, prev, expected, f"event {expected} is {what}"
                )
            if stored_prev != prev:
                return Verification(
                    False, expected - 1, prev, seq, "does not link to the previous event"
                )
            mac = keyed()
            mac.update(message)
            # A plain comparison is enough: nothing secret is compared against an attacker's
            # guesses here, and compare_digest refuses non-ASCII text a tampered row may hold.
            if mac.hexdigest() != stored:
                return Verification(
                    False, expected - 1, prev, seq, "content does not match its digest"
                )
            prev = stored
            expected += 1
    return Verification(True, expected - 1, prev)
