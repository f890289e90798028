"""``randomizer study …``"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from flask.cli import with_appcontext

from randomizer.cli.common import read_stdin_lines, run
from randomizer.services.studies import get_study, load_study

T = TypeVar("T")


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


def _cosigned(command: Callable[..., None]) -> Callable[..., None]:
    """The signers' options of a two-person step (passwords on stdin, one per line)."""
    command = click.option("--admin", required=True, help="Username of the signing administrator.")(
        command
    )
    command = click.option(
        "--statistician", required=True, help="Username of the signing statistician."
    )(command)
    return click.argument("study_code", metavar="STUDY")(command)


def _run_cosigned(service: Callable[..., T], study_code: str, statistician: str, admin: str) -> T:
    """Read both passwords (the statistician's, then the admin's) and run the signed step."""
    stat_password, admin_password = read_stdin_lines(2)
    return run(
        lambda s: service(
            s,
            get_study(s, study_code),
            statistician=statistician,
            statistician_password=stat_password,
            admin=admin,
            admin_password=admin_password,
        )
    )


@study_group.command("go-live")
@_cosigned
@with_appcontext
def go_live_command(study_code: str, statistician: str, admin: str) -> None:
    """The one-way switch from testing to live, signed by both (passwords on stdin, one per
    line: the statistician's, then the admin's). Needs a live list."""
    from randomizer.services.golive import go_live

    result = _run_cosigned(go_live, study_code, statistician, admin)
    click.echo(f"{study_code} is live: randomizations now draw from the live list "
               f"({result.live_slots} slots, fingerprint {result.fingerprint})")  # fmt: skip
    click.echo(f"test data archived: {result.participants_archived} participant(s), "
               f"{result.kits_quarantined} kit(s) quarantined, "
               f"{result.shipments_cancelled} shipment(s) cancelled")  # fmt: skip


@study_group.command("lock")
@_cosigned
@with_appcontext
def lock_command(study_code: str, statistician: str, admin: str) -> None:
    """Database lock (one-way), signed by both (passwords on stdin, one per line: the
    statistician's, then the admin's). Needs a live study."""
    from randomizer.services.database_lock import lock_study

    locked_at = _run_cosigned(lock_study, study_code, statistician, admin)
    click.echo(f"{study_code} database locked at {locked_at.isoformat()}: participants and "
               "allocations can no longer be changed")  # fmt: skip


COMMANDS = [study_group]
