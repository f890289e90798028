"""The audit trail: append an event in the caller's transaction; verify the chain.

Each event carries ``digest = HMAC-SHA256(key, prev_digest || canonical(event))`` where the
key lives outside the database (the instance's ``audit.key`` or RANDOMIZER_AUDIT_KEY). An
edited, deleted, inserted or reordered event breaks the chain at that event; truncation of
the tail is caught by the head row and, against an attacker who also rewrites the head, by
an exported anchor (see ``anchor``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import ColumnElement, LargeBinary, Select, Text, cast, func, literal, select
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


# --- external anchors ------------------------------------------------------------------

ANCHOR_FORMAT = "randomizer-audit-anchor/1"
_ANCHOR_FIELDS = ("format", "events", "head", "created_at", "public_key")


class AnchorError(ValueError):
    """An anchor file that is malformed, or not signed by this instance's anchor key."""


def make_anchor(session: Session, key: bytes, signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A signed statement of the verified chain's length and head digest, kept off-site.

    Refuses (AnchorError) to anchor a chain that does not verify: that would bless it.
    """
    result = verify(session, key)
    if not result.ok:
        raise AnchorError(f"not anchoring a broken chain: {result.message()}")
    public = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    payload = {
        "format": ANCHOR_FORMAT,
        "events": result.events,
        "head": result.head,
        "created_at": timestamp(),
        "public_key": base64.b64encode(public).decode("ascii"),
    }
    signature = signing_key.sign(_anchor_message(payload))
    return {**payload, "signature": base64.b64encode(signature).decode("ascii")}


def check_anchor(
    session: Session, key: bytes, anchor: Mapping[str, Any], public_key: Ed25519PublicKey
) -> Verification:
    """Verify the chain, then that it still holds the anchored event unchanged.

    Catches what the chain alone cannot: the tail cut off (fewer events than anchored) or
    rewritten with the audit key (the anchored event's digest differs). AnchorError for an
    anchor that is malformed or signed by another key.
    """
    events, head, created = _parse_anchor(anchor, public_key)
    result = verify(session, key)
    if not result.ok:
        return result
    if result.events < events:
        return Verification(
            False,
            result.events,
            result.head,
            result.events + 1,
            f"the chain has {result.events} events but the anchor of {created} records "
            f"{events}: events {result.events + 1} to {events} were removed",
        )
    stored = session.scalar(select(AuditEvent.digest).where(AuditEvent.seq == events))
    if events and stored != head:
        return Verification(
            False,
            result.events,
            result.head,
            events,
            f"event {events} differs from the anchor of {created}: the chain was rewritten "
            f"at or before event {events}",
        )
    return result


def _anchor_message(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {name: payload[name] for name in _ANCHOR_FIELDS}, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


def _parse_anchor(anchor: Mapping[str, Any], public_key: Ed25519PublicKey) -> tuple[int, str, str]:
    if not isinstance(anchor, Mapping) or anchor.get("format") != ANCHOR_FORMAT:
        raise AnchorError(f"not an audit anchor (expected format {ANCHOR_FORMAT!r})")
    events, head = anchor.get("events"), anchor.get("head")
    created, signature = anchor.get("created_at"), anchor.get("signature")
    if (
        not isinstance(events, int)
        or isinstance(events, bool)
        or events < 0
        or not isinstance(head, str)
        or len(head) != 64
        or not isinstance(created, str)
        or not isinstance(signature, str)
        or not isinstance(anchor.get("public_key"), str)
    ):
        raise AnchorError("the anchor lacks a field or has one of the wrong type")
    try:
        public_key.verify(base64.b64decode(signature, validate=True), _anchor_message(anchor))
    except (InvalidSignature, ValueError):
        raise AnchorError(
            "the anchor's signature does not verify with this instance's anchor key "
            "(altered, or made by another instance)"
        ) from None
    return events, head, created
