"""``randomizer report …``: registers read from the audit trail."""

from __future__ import annotations

import csv
from pathlib import Path

import click
from flask.cli import with_appcontext

from randomizer.cli.common import run
from randomizer.services.exposure import CSV_COLUMNS, ExposureRegister, exposure_register
from randomizer.services.studies import get_study


@click.group("report")
def report_group() -> None:
    """Reports for the sponsor, the DSMB and inspectors."""


@report_group.command("exposure")
@click.argument("study_code", metavar="STUDY")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write CSV.")
@with_appcontext
def exposure_command(study_code: str, out: Path | None) -> None:
    """Blinding-exposure register: who holds or held an unblinded role, and every event
    that showed someone an arm (product views, unblindings, exports, envelopes, role
    changes)."""
    register = run(lambda s: exposure_register(s, get_study(s, study_code)))
    if out is not None:
        try:
            with out.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(CSV_COLUMNS)
                writer.writerows(e.csv_row for e in register.events)
        except OSError as exc:
            raise click.ClickException(f"{out}: cannot be written ({exc.strerror})") from None
    _echo(register)


def _echo(register: ExposureRegister) -> None:
    click.echo(f"blinding-exposure register of {register.study.code}")
    click.echo("people (who hold or held an unblinded role, or were shown an arm):")
    click.echo("username\trole now\tunblinded roles held\tunblinded since\tmasked since\t"
               "events showing an arm")  # fmt: skip
    for p in register.people:
        held = ",".join(sorted(p.unblinded_roles)) or "-"
        role = (p.role or "(removed)") + ("" if p.active else " (inactive)")
        click.echo(f"{p.username}\t{role}\t{held}\t{p.unblinded_since or '-'}\t"
                   f"{p.masked_since or '-'}\t{p.arms_shown}")  # fmt: skip
    click.echo("events (oldest first):")
    click.echo("\t".join(CSV_COLUMNS))
    for event in register.events:
        click.echo("\t".join(str(cell) for cell in event.csv_row))


COMMANDS = [report_group]
