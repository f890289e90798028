"""Wrong electronic signatures are throttled in the database, yet a refusal changes nothing
of the study: the failures are written outside the refused request's transaction."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.errors import SignatureInvalid
from randomizer.models import AuditEvent, SignatureFailure, User
from randomizer.services.users import check_signature
from randomizer.throttle import FailureThrottle
from tests.conftest import PASSWORD


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now


def _fail(session: Session, throttle: FailureThrottle, key: str, times: int = 1) -> None:
    for _ in range(times):
        throttle.fail(session, key)
        session.rollback()  # as a refused request does


def test_a_key_is_blocked_after_the_limit_inside_the_window(session: Session):
    clock = Clock()
    throttle = FailureThrottle(3, 60, clock)
    _fail(session, throttle, "a", 2)
    assert not throttle.blocked(session, "a")
    _fail(session, throttle, "a")
    assert throttle.blocked(session, "a") and not throttle.blocked(session, "b")
    clock.now += dt.timedelta(seconds=61)
    assert not throttle.blocked(session, "a")


def test_failures_survive_the_rollback_of_the_refused_request(session: Session):
    throttle = FailureThrottle(3, 60)
    _fail(session, throttle, "a")
    assert session.scalar(select(func.count()).select_from(SignatureFailure)) == 1


def test_clearing_forgets_the_failures(session: Session):
    throttle = FailureThrottle(2, 60)
    _fail(session, throttle, "a")
    throttle.clear(session, "a")
    session.commit()
    _fail(session, throttle, "a")
    assert not throttle.blocked(session, "a")


def test_a_throttle_reached_through_one_app_holds_on_another(app, session: Session):
    """Two workers or servers: each has its own throttle object, one database."""
    FailureThrottle(2, 60).fail(session, "a")
    session.rollback()
    FailureThrottle(2, 60).fail(session, "a")
    session.rollback()
    assert FailureThrottle(2, 60).blocked(session, "a")


def test_repeated_wrong_signatures_pause_signing_and_change_nothing(
    session: Session, users: dict[str, User]
):
    clock = Clock()
    session.info["signature_throttle"] = FailureThrottle(5, 900, clock)
    user = users["investigator"]
    events = session.scalar(select(func.count()).select_from(AuditEvent))
    for _ in range(5):
        with pytest.raises(SignatureInvalid, match="does not match"):
            check_signature(session, user, "wrong-password-guess", "test")
        session.rollback()
    with pytest.raises(SignatureInvalid, match="Too many wrong passwords"):
        check_signature(session, user, PASSWORD, "test")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == events
    clock.now += dt.timedelta(seconds=901)
    check_signature(session, user, PASSWORD, "test")


def test_the_app_gives_every_session_a_throttle(session: Session):
    assert isinstance(session.info["signature_throttle"], FailureThrottle)
