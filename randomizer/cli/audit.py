"""``randomizer audit …``"""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from randomizer import audit
from randomizer.db import db
from randomizer.instance import secrets_of


@click.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("verify")
@with_appcontext
def verify_command() -> None:
    """Check the whole chain: exit 0 with count and head, or 1 naming the first bad event."""
    result = audit.verify(db.session(), secrets_of(db.session()).audit_key)
    db.session.rollback()
    if result.ok:
        click.echo(f"ok: {result.events} events, head {result.head}")
        return
    click.echo(f"FAILED: {result.message()}", err=True)
    sys.exit(1)


COMMANDS = [audit_group]
