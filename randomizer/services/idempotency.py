"""Idempotency-Key records (IETF draft "The Idempotency-Key HTTP Header Field"), stored durably.

A key is scoped to the user who sent it. It is recorded in the same transaction as the work
it guards: ``claim`` inserts the record first, the work runs, ``complete`` stores the answer,
and all of it commits together or not at all. So the answer exists exactly when the work's
effect does; a request that is refused, fails, or dies with its worker or database leaves
nothing behind, and a retry is carried out at once. No marker can go stale.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from randomizer.errors import N_, Conflict, IdempotencyError
from randomizer.models import IdempotencyRecord

MAX_KEY_LENGTH = 255


class KeyReused(IdempotencyError):
    """The key was already used for a different request."""

    status, slug, title = 422, "idempotency-key-reused", "Idempotency-Key reused"


class KeyInFlight(Conflict):
    """The key's first request committed after this transaction's snapshot was taken."""

    slug, title = "idempotency-key-in-flight", "Request still in progress"


@dataclass(frozen=True)
class Claim:
    """The caller's hold on a key: either the work is theirs to do, or ``answer`` replays."""

    record_id: int
    #: (status, body) stored by the first request when the key was already answered.
    answer: tuple[int, dict[str, Any]] | None = None


def check_key(raw: str | None) -> str:
    """The key from the header (a bare or quoted string), or IdempotencyError (400)."""
    key = (raw or "").strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise IdempotencyError(
            N_(
                "Send an Idempotency-Key header (for example a new UUID) with this request, and "
                "the same key again when you retry it."
            ),
            field="Idempotency-Key",
        )
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise IdempotencyError(
            N_("The Idempotency-Key must be 1 to %(max_key_length)s printable ASCII characters."),
            field="Idempotency-Key",
            max_key_length=MAX_KEY_LENGTH,
        )
    return key


def request_fingerprint(secret: bytes, method: str, path: str, body: bytes) -> str:
    """A keyed digest of the request, so that a retry can be told from a changed request.

    JSON bodies are compared in canonical form (key order and spacing do not matter). The
    digest is keyed because bodies carry passwords: a plain hash in the database would
    invite guessing them offline.
    """
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    except (ValueError, RecursionError):
        canonical = body
    message = b"\x1e".join([method.upper().encode(), path.encode("utf-8"), canonical])
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def claim(session: Session, *, user_id: int, key: str, endpoint: str, request_hash: str) -> Claim:
    """Take the key inside the work's own transaction, or return the answer stored for it.

    A concurrent first request with the same key holds it uncommitted: the insert here waits
    (on the unique index in PostgreSQL, on the write lock in SQLite) until that request
    commits, and its answer is replayed, or rolls back, and this request does the work.
    Raises KeyReused (422) for a different request under the same key.
    """
    record = _find(session, user_id, key)
    if record is None:
        record = IdempotencyRecord(
            user_id=user_id, key=key, endpoint=endpoint, request_hash=request_hash
        )
        try:
            with session.begin_nested():
                session.add(record)
            return Claim(record.id)
        except IntegrityError:
            record = _find(session, user_id, key)  # committed meanwhile by the first request
    if record is None or record.response_status is None:
        # Only a snapshot that predates the first request's commit: a retry sees its answer.
        raise KeyInFlight(
            N_(
                "A request with this Idempotency-Key has just been answered; retry with the same "
                "key to get its answer."
            ),
            field="Idempotency-Key",
        )
    if record.endpoint != endpoint or not hmac.compare_digest(record.request_hash, request_hash):
        raise KeyReused(
            N_(
                "This Idempotency-Key was already used for a different request; use a new "
                "key for a new request."
            ),
            field="Idempotency-Key",
        )
    return Claim(record.id, (record.response_status, record.response_body or {}))


def complete(session: Session, held: Claim, status: int, body: dict[str, Any]) -> None:
    """Store the answer in the transaction that claimed the key (and did the work)."""
    record = session.get_one(IdempotencyRecord, held.record_id)
    record.response_status = status
    record.response_body = body
    session.flush()


def _find(session: Session, user_id: int, key: str) -> IdempotencyRecord | None:
    return session.scalar(
        select(IdempotencyRecord)
        .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
        .execution_options(populate_existing=True)
    )
