"""``randomizer backup --out FILE`` and ``randomizer restore FILE`` (SPEC §4.1).

A restore goes into an empty database only, and is then checked: every allocation list is
regenerated from its sealed seed (``list verify``) and the audit chain is verified
(``audit verify``), with the instance keys, which a backup never contains.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from randomizer import audit
from randomizer.cli.common import console_actor as _operator
from randomizer.cli.common import transaction
from randomizer.db import db
from randomizer.instance import secrets_of
from randomizer.models import ListKind, Study
from randomizer.services import backup as backups
from randomizer.services.list_verify import verify_list
from randomizer.services.lists import find_list


@click.command("backup")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The backup file to write (a new file; mode 0600).")  # fmt: skip
@with_appcontext
def backup_command(out: Path) -> None:
    """Write a consistent backup of the database (never of the key files)."""
    with transaction():
        size = backups.backup(db.engine, out)
    click.echo(f"backup written to {out} ({size} bytes); back up the key files separately")


@click.command("restore")
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def restore_command(backup_file: Path) -> None:
    """Restore a backup into an empty database, then verify every list and the audit chain."""
    with transaction():
        backups.restore(db.engine, backup_file)
    click.echo(f"restored {backup_file}")
    verified = _lists_verify() and _audit_verifies()
    db.session.remove()
    db.engine.dispose()  # leave no connection to the restored database behind
    if not verified:
        sys.exit(1)


def _lists_verify() -> bool:
    ok = True
    with transaction() as session:
        for study in session.scalars(select(Study).order_by(Study.code)):
            for kind in ListKind:
                if find_list(session, study, kind) is None:
                    continue
                report = verify_list(session, study, kind=kind, actor=_operator())
                state = "ok" if report.ok else f"FAILED ({report.differences} difference(s))"
                click.echo(f"list verify {study.code} {kind.value}: {state}")
                ok = ok and report.ok
    return ok


def _audit_verifies() -> bool:
    session = db.session()
    result = audit.verify(session, secrets_of(session).audit_key)
    session.rollback()
    if not result.ok:
        click.echo(f"audit verify FAILED: {result.message()}", err=True)
        return False
    click.echo(f"audit verify: ok, {result.events} events, head {result.head}")
    return True


COMMANDS = [backup_command, restore_command]
