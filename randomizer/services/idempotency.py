"""Idempotency-Key records (IETF draft "The Idempotency-Key HTTP Header Field"), stored durably.

A key is scoped to the user who sent it. Its life: ``claim`` records an in-flight marker
(the caller commits it in a transaction of its own, before the work starts); the work's own
transaction then calls ``complete`` to store the answer, so the answer exists exactly when
the work's effect does. A request that is refused or fails calls ``release`` (nothing
happened, so the key may be used again). A marker whose worker died is taken over after
``STALE_AFTER``: since the work commits together with its answer, a marker without an answer
means the work never committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.errors import Conflict, IdempotencyError
from randomizer.models import IdempotencyRecord

MAX_KEY_LENGTH = 255
#: An in-flight marker older than this belongs to a worker that died; it may be taken over.
STALE_AFTER = dt.timedelta(minutes=5)


class KeyReused(IdempotencyError):
    """The key was already used for a different request."""

    status, slug, title = 422, "idempotency-key-reused", "Idempotency-Key reused"


class KeyInFlight(Conflict):
    """A request with this key is still being processed."""

    slug, title = "idempotency-key-in-flight", "Request still in progress"


@dataclass(frozen=True)
class Claim:
    """The caller's hold on a key: either the work is theirs to do, or ``answer`` replays."""

    record_id: int
    claimed_at: dt.datetime
    #: (status, body) stored by the first request when the key was already answered.
    answer: tuple[int, dict[str, Any]] | None = None


def check_key(raw: str | None) -> str:
    """The key from the header (a bare or quoted string), or IdempotencyError (400)."""
    key = (raw or "").strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise IdempotencyError(
            "Send an Idempotency-Key header (for example a new UUID) with this request, and "
            "the same key again when you retry it.",
            field="Idempotency-Key",
        )
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise IdempotencyError(
            f"The Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            field="Idempotency-Key",
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
    """Take the key for this request, or say what happened to it before.

    Raises KeyReused (422) for a different request under the same key and KeyInFlight (409)
    while the first request is still running. The caller commits right after.
    """
    for _ in range(2):
        record = _find(session, user_id, key)
        if record is None:
            record = IdempotencyRecord(
                user_id=user_id, key=key, endpoint=endpoint, request_hash=request_hash
            )
            try:
                with session.begin_nested():
                    session.add(record)
            except IntegrityError:
                # A concurrent first request inserted the same key and committed: read it.
                continue
            return Claim(record.id, record.created_at)
        if record.endpoint != endpoint or not hmac.compare_digest(
            record.request_hash, request_hash
        ):
            raise KeyReused(
                "This Idempotency-Key was already used for a different request; use a new "
                "key for a new request.",
                field="Idempotency-Key",
            )
        if record.response_status is not None:
            return Claim(
                record.id, record.created_at, (record.response_status, record.response_body or {})
            )
        if record.created_at > utcnow() - STALE_AFTER:
            raise KeyInFlight(
                "A request with this Idempotency-Key is still being processed; retry shortly "
                "with the same key to get its answer.",
                field="Idempotency-Key",
            )
        record.created_at = utcnow()  # take over a marker whose worker died
        session.flush()
        return Claim(record.id, record.created_at)
    raise KeyInFlight(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        field="Idempotency-Key",
    )


def complete(session: Session, held: Claim, status: int, body: dict[str, Any]) -> None:
    """Store the answer in the work's own transaction, if the key is still held by this claim.

    Refuses (KeyInFlight) when another worker took the marker over meanwhile, so that the
    work is rolled back rather than done twice.
    """
    record = session.execute(
        select(IdempotencyRecord)
        .where(IdempotencyRecord.id == held.record_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if record is None or record.response_status is not None or record.created_at != held.claimed_at:
        raise KeyInFlight(
            "Another request with this Idempotency-Key took over; retry with the same key to "
            "get its answer.",
            field="Idempotency-Key",
        )
    record.response_status = status
    record.response_body = body


def release(session: Session, held: Claim) -> None:
    """Forget an unanswered claim after a refusal or failure (nothing was done)."""
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.id == held.record_id,
            IdempotencyRecord.response_status.is_(None),
            IdempotencyRecord.created_at == held.claimed_at,
        )
    )


def _find(session: Session, user_id: int, key: str) -> IdempotencyRecord | None:
    return session.scalar(
        select(IdempotencyRecord)
        .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
        .execution_options(populate_existing=True)
    )
