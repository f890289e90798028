"""``randomizer audit …`` (verify, anchor)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from randomizer import audit, audit_anchor
from randomizer.db import db
from randomizer.instance import secrets_of
from randomizer.wording import N_


@click.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("verify")
@click.option(
    "--anchor",
    "anchor_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also check the chain against an anchor exported earlier.",
)
@with_appcontext
def verify_command(anchor_file: Path | None) -> None:
    """Check the whole chain: exit 0 with count and head, or 1 naming the first bad event."""
    session = db.session()
    secrets = secrets_of(session)
    try:
        if anchor_file is None:
            result = audit.verify(session, secrets.audit_key)
        else:
            document = _read_anchor(anchor_file)
            public = secrets.anchor_key().public_key()
            result = audit_anchor.check_anchor(session, secrets.audit_key, document, public)
    except audit_anchor.AnchorError as exc:
        click.echo(f"FAILED: {anchor_file}: {exc}", err=True)
        sys.exit(1)
    finally:
        session.rollback()
    if not result.ok:
        click.echo(f"FAILED: {result.message()}", err=True)
        sys.exit(1)
    click.echo(f"ok: {result.events} events, head {result.head}")
    if anchor_file is not None:
        click.echo(f"anchor {anchor_file} holds: event {document['events']} unchanged")


@audit_group.command("anchor")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the anchor to this file (default: standard output).",
)
@with_appcontext
def anchor_command(out: Path | None) -> None:
    """Verify the chain and print (or write) a signed anchor of its head; keep it off-site."""
    session = db.session()
    secrets = secrets_of(session)
    try:
        document = audit_anchor.make_anchor(session, secrets.audit_key, secrets.anchor_key())
    except audit_anchor.AnchorError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        session.rollback()
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"anchor of {document['events']} events, head {document['head']} written to {out}")


def _read_anchor(path: Path) -> dict[str, object]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise audit_anchor.AnchorError(
            N_("not a readable JSON anchor (%(problem)s)"), problem=str(exc)
        ) from None
    if not isinstance(document, dict):
        raise audit_anchor.AnchorError(N_("not an audit anchor (expected a JSON object)"))
    return document


COMMANDS = [audit_group]
