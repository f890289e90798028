"""Throttling of wrong electronic signatures, counted in the database (shared by every
worker process and every app server, and kept across restarts).

A wrong signature must change nothing (SPEC §4.2): its request's transaction is rolled
back. So a failure is only noted in the session, and written in a short transaction of its
own once the request's transaction has ended (``_write_noted``), when no lock of that
transaction is held any more. A key with ``limit`` failures inside the window is blocked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete, event, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.models import SignatureFailure

NOTED = "randomizer.signature_failures"


class FailureThrottle:
    """Counts failures per key in a sliding window; a key with ``limit`` failures is blocked."""

    def __init__(
        self, limit: int = 5, window_seconds: float = 900.0,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:  # fmt: skip
        self.limit, self.window, self._clock = limit, dt.timedelta(seconds=window_seconds), clock

    def blocked(self, session: Session, key: str) -> bool:
        """True while the key has ``limit`` failures inside the window (noted ones included)."""
        digest = _digest(key)
        stored = session.scalar(
            select(func.count()).where(
                SignatureFailure.key == digest,
                SignatureFailure.failed_at > self._clock() - self.window,
            )
        )
        noted = sum(1 for row in session.info.get(NOTED, []) if row["key"] == digest)
        return (stored or 0) + noted >= self.limit

    def fail(self, session: Session, key: str) -> None:
        """Note one failure; it is written when the session's transaction ends."""
        session.connection()  # within a transaction, whose end writes the note
        session.info.setdefault(NOTED, []).append({"key": _digest(key), "failed_at": self._clock()})

    def clear(self, session: Session, key: str) -> None:
        """Forget the key's failures (after a success), in the caller's transaction."""
        session.execute(delete(SignatureFailure).where(SignatureFailure.key == _digest(key)))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_soft_rollback")
def _write_noted(session: Session, *_: Any) -> None:
    rows = session.info.pop(NOTED, None)
    if not rows:
        return
    try:
        bind = session.get_bind()
        engine = bind if isinstance(bind, Engine) else bind.engine
        with engine.connect() as conn:
            conn.execute(insert(SignatureFailure), rows)
            conn.commit()
    except SQLAlchemyError:
        pass  # the database is unreachable: then nothing can be signed either
