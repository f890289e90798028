"""``randomizer export …``: analysis datasets of a locked study."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from randomizer.cli.common import console_actor, file_after_commit, run
from randomizer.services.sdtm import export_dm
from randomizer.services.studies import get_study


@click.group("export")
def export_group() -> None:
    """Analysis datasets (after the database lock)."""


@export_group.command("sdtm-dm")
@click.argument("study_code", metavar="STUDY")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def sdtm_dm_command(study_code: str, out: Path) -> None:
    """Write the CDISC SDTM DM dataset (CSV); refused before the database lock; audited."""
    with file_after_commit(out) as handle:
        rows = run(
            lambda s: export_dm(s, get_study(s, study_code), out=handle, actor=console_actor())
        )
    click.echo(f"wrote {rows} participant(s) of {study_code} to {out} (SDTM DM; audited)")


COMMANDS = [export_group]
