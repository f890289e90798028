"""Owning a transaction: run a unit of work, commit it, and re-run it on a transient conflict.

Services never commit; the view, command or test that calls them owns the transaction. Work
that takes locks (randomization, dispensing) can meet a deadlock or a serialization failure
on PostgreSQL, or a busy database on SQLite, none of which says anything about the request:
the whole transaction is rolled back and run again, a bounded number of times. No Flask.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

T = TypeVar("T")

#: SQLSTATEs of PostgreSQL failures that a re-run can cure: serialization failure,
#: deadlock detected, lock not available (lock_timeout).
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
DEFAULT_ATTEMPTS = 5


def is_retryable(exc: BaseException) -> bool:
    """Whether a database error is a transient conflict worth running the transaction again."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "database is locked" in text or "database is busy" in text
    return False


def run_in_transaction(
    session: Session, work: Callable[[], T], *, attempts: int = DEFAULT_ATTEMPTS
) -> T:
    """Run ``work`` and commit; on a transient conflict roll back and run it again.

    ``work`` must load what it needs itself (by id), because a rollback expires every
    object of the session. Any other exception rolls back and propagates; the last
    transient conflict propagates once the attempts are spent.
    """
    for attempt in range(1, attempts + 1):
        try:
            result = work()
            session.commit()
            return result
        except DBAPIError as exc:
            session.rollback()
            if attempt == attempts or not is_retryable(exc):
                raise
        except BaseException:
            session.rollback()
            raise
        # Back off a little, with jitter, so that the contenders do not collide again.
        time.sleep((2**attempt + secrets.randbelow(20)) / 1000)
    raise AssertionError("unreachable")  # pragma: no cover
