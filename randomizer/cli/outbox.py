"""``randomizer outbox send`` (one pass) and ``randomizer outbox work`` (the worker process).

The worker runs as a service beside gunicorn (see the README): it sends the sponsor
notifications the web requests queue, so no web worker talks to a mail server. A failed
message is retried with back-off (``notifications.backoff``); a database outage makes the
worker wait and try again, never exit.
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from randomizer.db import db
from randomizer.services import notifications

#: The longest the worker waits after a database failure before trying again.
MAX_OUTAGE_WAIT = 60.0


@click.group("outbox")
def outbox_group() -> None:
    """Notifications waiting to be e-mailed."""


@outbox_group.command("send")
@click.option("--retry-failed", is_flag=True, help="Also retry messages that failed too often.")
@with_appcontext
def send_command(retry_failed: bool) -> None:
    """E-mail the waiting notifications once (the worker below does it continuously)."""
    done = notifications.deliver_pending(
        db.session(), current_app.config, retry_failed=retry_failed
    )
    click.echo(_summary(done))
    if done.failed:
        sys.exit(1)


@outbox_group.command("work")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
              help="Seconds between passes over the outbox.")  # fmt: skip
@click.option("--once", is_flag=True, help="One pass, then exit (for tests and cron).")
@with_appcontext
def work_command(interval: float, once: bool) -> None:
    """Deliver notifications continuously until SIGTERM or SIGINT (run it as a service)."""
    stopping: list[int] = []

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    wait = interval
    while not stopping:
        try:
            done = notifications.deliver_pending(db.session(), current_app.config)
        except SQLAlchemyError as exc:
            db.session.remove()
            wait = min(max(wait, interval) * 2, MAX_OUTAGE_WAIT)
            click.echo(f"database unavailable ({type(exc).__name__}); retry in {wait:.0f} s",
                       err=True)  # fmt: skip
        else:
            wait = interval
            if done.sent or done.failed or once:
                click.echo(_summary(done))
        if once:
            return
        _sleep(wait, stopping)


def _sleep(seconds: float, stopping: list[int]) -> None:
    deadline = time.monotonic() + seconds
    while not stopping and time.monotonic() < deadline:
        time.sleep(min(0.2, seconds))


def _summary(done: notifications.Delivery) -> str:
    return f"sent {done.sent}, failed {done.failed}, waiting (no MAIL_SERVER) {done.waiting}"


COMMANDS = [outbox_group]
