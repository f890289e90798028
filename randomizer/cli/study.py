"""``randomizer study …``"""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from randomizer.cli.common import run
from randomizer.services.studies import load_study


@click.group("study")
def study_group() -> None:
    """Study definitions."""


@study_group.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def load_command(file: Path) -> None:
    """Validate and load a study definition (TOML); prints the study code."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise click.ClickException(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{file}: cannot be read as UTF-8 text ({exc})") from None
    study, changed = run(lambda s: load_study(s, text=text, filename=str(file)))
    if not changed:
        click.echo(f"unchanged: {study.code} is already loaded with this definition", err=True)
    click.echo(study.code)


COMMANDS = [study_group]
