"""Notifications: kept in an outbox (the ``notification`` table), delivered by SMTP.

``queue`` adds a message in the caller's transaction, so a notification exists exactly when
the event it reports does. ``deliver_pending`` is run by the outbox worker (``randomizer
outbox work``, a process of its own beside the web workers: a mail server that is slow or
down never holds up a request or undoes its event). Every message stays in the outbox, sent
or not, with its attempts and last error for the administrator to read; a failed one is
tried again later, backing off.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.models import Notification
from randomizer.wording import Text, in_every_language

#: After this many failed attempts a message waits for an administrator's "retry".
MAX_ATTEMPTS = 10
#: Seconds to wait for the mail server before counting the attempt as failed.
DEFAULT_TIMEOUT = 10.0
MAX_ERROR_LENGTH = 500
#: Wait before the second attempt, doubled after each failure, up to MAX_BACKOFF.
FIRST_BACKOFF = dt.timedelta(seconds=30)
MAX_BACKOFF = dt.timedelta(hours=1)
#: Between the languages of a message's body.
BODY_SEPARATOR = "\n" + "-" * 60 + "\n\n"


@dataclass(frozen=True)
class MailSettings:
    """SMTP settings from the configuration (MAIL_*)."""

    server: str | None
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "randomizer@localhost"
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MailSettings:
        return cls(
            server=config.get("MAIL_SERVER") or None,
            port=int(config.get("MAIL_PORT") or 25),
            starttls=bool(config.get("MAIL_USE_STARTTLS")),
            username=config.get("MAIL_USERNAME") or None,
            password=config.get("MAIL_PASSWORD") or None,
            sender=config.get("MAIL_FROM") or "randomizer@localhost",
            timeout=float(config.get("MAIL_TIMEOUT") or DEFAULT_TIMEOUT),
        )


@dataclass(frozen=True)
class Delivery:
    """What one delivery run did."""

    sent: int = 0
    failed: int = 0
    #: Messages left waiting because no mail server is configured.
    waiting: int = 0


def queue(
    session: Session,
    *,
    study_id: int | None,
    recipients: Iterable[str],
    subject: str | Text,
    body: str | Text,
) -> Notification:
    """Put a message in the outbox, in the caller's transaction (flushes, never commits).

    A ``Text`` subject or body is written in every language of MAIL_LANGUAGES, Spanish
    first: the recipients (sponsor contacts, unblinded staff) have no language of record.
    """
    if isinstance(subject, Text):
        subject = " / ".join(in_every_language(subject))
    if isinstance(body, Text):
        body = BODY_SEPARATOR.join(words.rstrip("\n") + "\n" for words in in_every_language(body))
    message = Notification(
        study_id=study_id,
        recipients=sorted(set(recipients)),
        subject=subject,
        body=body,
        attempts=0,
    )
    session.add(message)
    session.flush()
    return message


def outbox(session: Session, *, limit: int = 200) -> list[Notification]:
    """The most recent messages, newest first, sent or not."""
    return list(session.scalars(select(Notification).order_by(Notification.id.desc()).limit(limit)))


def deliver_pending(
    session: Session, config: Mapping[str, Any], *, retry_failed: bool = False
) -> Delivery:
    """Send every unsent message; record each outcome at once. Commits (see below).

    Unlike the other services this one commits: an e-mail that left cannot be rolled
    back, so each attempt is claimed (its counter raised, committed) before sending and its
    outcome committed right after. Two workers therefore never send the same attempt, and
    no database lock is held while the mail server is talked to. Messages that failed
    ``MAX_ATTEMPTS`` times wait for ``retry_failed``, which also ignores the back-off.
    """
    settings = MailSettings.from_config(config)
    query = select(Notification.id, Notification.attempts).where(Notification.sent_at.is_(None))
    if not retry_failed:
        due = or_(Notification.next_attempt_at.is_(None), Notification.next_attempt_at <= utcnow())
        query = query.where(Notification.attempts < MAX_ATTEMPTS, due)
    pending = session.execute(query.order_by(Notification.id)).all()
    session.commit()
    if not settings.server:
        return Delivery(waiting=len(pending))
    sent = failed = 0
    for message_id, attempts in pending:
        message = _claim(session, message_id, attempts)
        if message is None:
            continue
        error = _send(settings, message)
        retry_at = None if error is None else utcnow() + backoff(attempts + 1)
        session.execute(
            update(Notification)
            .where(Notification.id == message_id)
            .values(
                sent_at=utcnow() if error is None else None,
                last_error=error,
                next_attempt_at=retry_at,
            )
        )
        session.commit()
        sent, failed = (sent + 1, failed) if error is None else (sent, failed + 1)
    return Delivery(sent=sent, failed=failed)


def backoff(attempts: int) -> dt.timedelta:
    """How long a message that failed ``attempts`` times waits before the next attempt."""
    return min(FIRST_BACKOFF * (1 << min(max(attempts - 1, 0), 16)), MAX_BACKOFF)


def _claim(session: Session, message_id: int, attempts: int) -> Notification | None:
    """Count an attempt unless another worker got there first; the message to send, or None."""
    claimed = session.execute(
        update(Notification)
        .where(
            Notification.id == message_id,
            Notification.sent_at.is_(None),
            Notification.attempts == attempts,
        )
        .values(attempts=attempts + 1)
    )
    session.commit()
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Notification, message_id, populate_existing=True)


def _send(settings: MailSettings, message: Notification) -> str | None:
    """Send one message; None on success, else a short description of the failure."""
    if not message.recipients:
        return "no recipients: the study definition names no sponsor contact"
    assert settings.server is not None
    email = EmailMessage()
    email["From"] = settings.sender
    email["To"] = ", ".join(message.recipients)
    email["Subject"] = message.subject
    email["Date"] = format_datetime(message.created_at.astimezone(dt.UTC))
    email["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    email.set_content(message.body)
    try:
        with smtplib.SMTP(settings.server, settings.port, timeout=settings.timeout) as smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password or "")
            smtp.send_message(email)
    except (smtplib.SMTPException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
    return None
