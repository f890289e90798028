"""Blinded sponsor notifications: kept in the outbox, delivered to a real SMTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.models import Notification, Participant, Study, User
from randomizer.services import notifications
from tests.conftest import PASSWORD, login
from tests.unblinding_support import ARM_TEXTS, api, randomized, supply, token_for

BODY = {
    "reason_category": "adverse_event",
    "reason": "Severe infusion reaction.",
    "signature": {"password": PASSWORD},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """An SMTP handler that keeps what it receives."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


SMTP_PORT = _free_port()
CREDENTIALS = ("mailer", "mail-secret-123")


@pytest.fixture
def smtp() -> Iterator[Sink]:
    """A real SMTP server on the loopback interface (login required)."""

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            CREDENTIALS[0].encode(),
            CREDENTIALS[1].encode(),
        )
        return AuthResult(success=ok)

    sink = Sink()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=SMTP_PORT,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": SMTP_PORT,
        "MAIL_USERNAME": CREDENTIALS[0],
        "MAIL_PASSWORD": CREDENTIALS[1],
        "MAIL_FROM": "randomizer@trial.example.org",
        "MAIL_TIMEOUT": 5,
    }


@pytest.fixture
def participant(session: Session, study: Study, users: dict[str, User]) -> Participant:
    supply(session, study)
    return randomized(session, study, users["investigator"], "SCR-001")


def _delivered(sink: Sink) -> list[tuple[list[str], Any]]:
    return [
        (list(e.rcpt_tos), message_from_bytes(e.original_content or b"", policy=policy.default))
        for e in sink.envelopes
    ]


def test_the_sponsor_receives_a_blinded_email_from_the_outbox_worker_after_an_api_unblinding(
    client: FlaskClient,
    session: Session,
    users: dict[str, User],
    participant: Participant,
    smtp: Sink,
    runner: Any,
):
    token = token_for(session, users["investigator"])
    path = f"/api/v1/participants/{participant.id}/unblind"
    session.rollback()
    response = api(client, path, token, BODY)
    assert response.status_code == 200
    response.close()
    assert smtp.envelopes == []  # the web worker sends nothing: the outbox worker does
    session.rollback()
    assert runner.invoke("outbox", "work", "--once").exit_code == 0
    [(recipients, mail)] = _delivered(smtp)
    assert recipients == ["sponsor@example.org"]
    text = mail.get_body(("plain",)).get_content()
    assert participant.randomization_number in mail["Subject"]
    assert "inv1" in text and "S1" in text and str(participant.id) in text
    raw = (smtp.envelopes[0].original_content or b"").decode("utf-8", "replace")
    assert not [arm for arm in ARM_TEXTS if arm in raw or arm in text]
    [kept] = session.scalars(select(Notification)).all()
    assert kept.sent_at is not None and kept.attempts == 1 and kept.last_error is None


def test_the_sponsor_receives_the_email_from_the_outbox_worker_after_a_web_unblinding(
    client: FlaskClient, session: Session, participant: Participant, smtp: Sink, runner: Any
):
    participant_id, number = participant.id, participant.randomization_number
    session.rollback()  # end the test's read transaction (SQLite: one writer at a time)
    login(client, "inv1")
    response = client.post(
        f"/participants/{participant_id}/unblind",
        data={
            "reason_category": "adverse_event",
            "reason": "Severe infusion reaction.",
            "confirm_number": number,
            "password": PASSWORD,
        },
    )
    assert response.status_code == 200
    # The request shared the test's app context and session; a server ends it first.
    session.rollback()
    response.close()
    assert smtp.envelopes == []
    assert runner.invoke("outbox", "work", "--once").exit_code == 0
    assert len(smtp.envelopes) == 1


@pytest.mark.usefixtures("participant")
def test_a_message_that_cannot_be_sent_stays_in_the_outbox_and_is_sent_later(
    app: Flask, session: Session, users: dict[str, User], participant: Participant, smtp: Sink
):
    from randomizer.services import unblinding

    unblinding.unblind(
        session, participant, actor_user=users["investigator"], reason_category="overdose",
        reason="Took four doses.", password=PASSWORD,
        confirm_number=participant.randomization_number,
    )  # fmt: skip
    session.commit()
    down = {**app.config, "MAIL_PORT": _free_port()}
    assert notifications.deliver_pending(session, down) == notifications.Delivery(failed=1)
    [kept] = session.scalars(select(Notification)).all()
    assert (kept.sent_at, kept.attempts) == (None, 1)
    assert kept.last_error and "Error" in kept.last_error
    assert notifications.deliver_pending(session, app.config) == notifications.Delivery()
    kept.next_attempt_at = utcnow()  # the back-off has passed
    session.commit()
    assert notifications.deliver_pending(session, app.config) == notifications.Delivery(sent=1)
    session.refresh(kept)
    assert kept.sent_at is not None and kept.attempts == 2
    assert len(smtp.envelopes) == 1
    assert notifications.deliver_pending(session, app.config) == notifications.Delivery()


def test_a_failed_message_backs_off_before_its_next_attempt(
    app: Flask, session: Session, smtp: Sink
):
    notifications.queue(session, study_id=None, recipients=["a@example.org"], subject="s", body="b")
    session.commit()
    down = {**app.config, "MAIL_PORT": _free_port()}
    before = utcnow()
    assert notifications.deliver_pending(session, down) == notifications.Delivery(failed=1)
    [kept] = session.scalars(select(Notification)).all()
    assert kept.next_attempt_at is not None
    assert kept.next_attempt_at >= before + notifications.FIRST_BACKOFF
    assert notifications.deliver_pending(session, app.config) == notifications.Delivery()
    assert smtp.envelopes == []


def test_backoff_doubles_up_to_its_maximum():
    first = notifications.FIRST_BACKOFF
    assert [notifications.backoff(n) for n in (1, 2, 3)] == [first, first * 2, first * 4]
    assert notifications.backoff(50) == notifications.MAX_BACKOFF


def test_without_a_mail_server_messages_wait_in_the_outbox(app: Flask, session: Session):
    notifications.queue(session, study_id=None, recipients=["a@example.org"], subject="s", body="b")
    session.commit()
    config = {**app.config, "MAIL_SERVER": None}
    assert notifications.deliver_pending(session, config) == notifications.Delivery(waiting=1)
    [kept] = session.scalars(select(Notification)).all()
    assert (kept.sent_at, kept.attempts) == (None, 0)


def test_a_message_failing_too_often_waits_for_an_explicit_retry(
    app: Flask, session: Session, smtp: Sink
):
    message = notifications.queue(
        session, study_id=None, recipients=["a@example.org"], subject="s", body="b"
    )
    message.attempts = notifications.MAX_ATTEMPTS
    session.commit()
    assert notifications.deliver_pending(session, app.config) == notifications.Delivery()
    done = notifications.deliver_pending(session, app.config, retry_failed=True)
    assert done == notifications.Delivery(sent=1)


def test_a_wrong_smtp_login_is_kept_as_the_last_error(app: Flask, session: Session, smtp: Sink):
    notifications.queue(session, study_id=None, recipients=["a@example.org"], subject="s", body="b")
    session.commit()
    # aiosmtpd answers a refused login slowly; the timeout counts it as failed sooner.
    config = {**app.config, "MAIL_PASSWORD": "wrong", "MAIL_TIMEOUT": 1}
    assert notifications.deliver_pending(session, config) == notifications.Delivery(failed=1)
    [kept] = session.scalars(select(Notification)).all()
    assert kept.last_error and kept.last_error.startswith("SMTP")
    assert smtp.envelopes == []


def test_a_study_without_sponsor_contacts_keeps_the_notice_unsent(
    app: Flask, session: Session, smtp: Sink
):
    notifications.queue(session, study_id=None, recipients=[], subject="s", body="b")
    session.commit()
    assert notifications.deliver_pending(session, app.config) == notifications.Delivery(failed=1)
    [kept] = session.scalars(select(Notification)).all()
    assert kept.last_error and "no recipients" in kept.last_error


def test_the_admin_reads_the_outbox_and_can_send_it(
    client: FlaskClient, session: Session, users: dict[str, User], smtp: Sink
):
    notifications.queue(
        session, study_id=None, recipients=["a@example.org"], subject="Unblinding X", body="b"
    )
    session.commit()
    login(client, "admin1")
    page = client.get("/admin/outbox")
    assert page.status_code == 200 and b"Unblinding X" in page.data
    assert client.post("/admin/outbox/send").status_code == 302
    assert len(smtp.envelopes) == 1


@pytest.mark.parametrize("who", ["inv1", "stat1", "assess1", "pharm1"])
def test_only_the_admin_reads_the_outbox(
    client: FlaskClient, session: Session, users: dict[str, User], who: str
):
    login(client, who)
    assert client.get("/admin/outbox").status_code == 403
    assert client.post("/admin/outbox/send").status_code == 403
