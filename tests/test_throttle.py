"""Wrong electronic signatures are throttled without writing anything to the database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer.errors import SignatureInvalid
from randomizer.models import AuditEvent, User
from randomizer.services.users import check_signature
from randomizer.throttle import FailureThrottle
from tests.conftest import PASSWORD


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_blocked_after_the_limit_inside_the_window():
    clock = Clock()
    throttle = FailureThrottle(3, 60, clock)
    for _ in range(2):
        throttle.fail("a")
    assert not throttle.blocked("a")
    throttle.fail("a")
    assert throttle.blocked("a") and not throttle.blocked("b")
    clock.now += 61
    assert not throttle.blocked("a")


def test_clearing_forgets_the_failures():
    throttle = FailureThrottle(2, 60, Clock())
    throttle.fail("a")
    throttle.clear("a")
    throttle.fail("a")
    assert not throttle.blocked("a")


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
    with pytest.raises(SignatureInvalid, match="Too many wrong passwords"):
        check_signature(session, user, PASSWORD, "test")
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == events
    assert not session.dirty and not session.new
    clock.now += 901
    check_signature(session, user, PASSWORD, "test")


def test_the_app_gives_every_session_a_throttle(session: Session):
    assert isinstance(session.info["signature_throttle"], FailureThrottle)
