"""``randomizer kits …``: generate kits, export the kit list (unblinded for the labeller),
mark expired kits, run the resupply rule (both suit a daily scheduled job)."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import click
from flask.cli import with_appcontext

from randomizer.cli.common import console_actor as _operator
from randomizer.cli.common import read_signatures, run, signature_options, transaction
from randomizer.db import utcnow
from randomizer.services.bulk_unblinding import export_kits_unblinded
from randomizer.services.kit_lifecycle import expire_kits
from randomizer.services.kits import EXPORT_COLUMNS, export_rows, generate_kits
from randomizer.services.studies import get_study
from randomizer.services.supply.policy import check_all


@click.group("kits")
def kits_group() -> None:
    """Kits: generation and the kit list."""


@kits_group.command("generate")
@click.argument("study")
@click.option("--count", type=int, required=True, help="How many kits to create.")
@click.option("--site", help="Create them as already received at this site.")
@click.option("--lot", help="Lot number printed on the labels.")
@click.option("--expiry", type=click.DateTime(formats=["%Y-%m-%d"]), help="YYYY-MM-DD")
@click.option("--arm", help="All of this product (a released one-product batch).")
@with_appcontext
def generate_command(
    study: str,
    count: int,
    site: str | None,
    lot: str | None,
    expiry: dt.datetime | None,
    arm: str | None,
) -> None:
    """Create COUNT kits with random codes and sealed arms: whole units in the study's
    ratio, or all of one product with --arm. Never prints an arm."""
    kits = run(
        lambda s: generate_kits(
            s,
            get_study(s, study),
            count=count,
            actor=_operator(),
            site=site,
            lot=lot,
            expiry=expiry.date() if expiry else None,
            arm=arm,
        )
    )
    where = f"available at site {site}" if site else "at the depot"
    click.echo(f"created {len(kits)} kits for {study}, {where}: {kits[0].code} … {kits[-1].code}")


@kits_group.command("export")
@click.argument("study")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--unblinded", is_flag=True, help="Add each kit's arm (audited).")
@signature_options
@with_appcontext
def export_command(
    study: str, out: Path, unblinded: bool, statistician: str | None, second: str | None
) -> None:
    """Write the kit list as CSV: kit_code, status, site, lot, expiry (and arm).

    When the study sets bulk_export_signers = 2, the unblinded kit list of a live study
    needs --statistician NAME --second NAME, both passwords on stdin, one per line.
    """
    columns = [*EXPORT_COLUMNS, "arm"] if unblinded else list(EXPORT_COLUMNS)
    signatures = read_signatures(statistician, second)
    with transaction() as session:
        found = get_study(session, study)
        if unblinded:
            rows = export_kits_unblinded(session, found, signatures=signatures, actor=_operator())
        else:
            rows = export_rows(session, found, unblinded=False, actor=_operator())
        # Written before the commit: a failed write rolls the audit event back with it.
        try:
            with out.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            raise click.ClickException(f"{out}: cannot be written ({exc.strerror})") from None
    kind = "unblinded (audited)" if unblinded else "blinded"
    click.echo(f"wrote {len(rows)} kits to {out}, {kind}")


@kits_group.command("expire")
@click.argument("study")
@with_appcontext
def expire_command(study: str) -> None:
    """Mark kits past their expiry date as expired (each move audited)."""
    codes = run(
        lambda s: expire_kits(s, get_study(s, study), today=utcnow().date(), actor=_operator())
    )
    click.echo(f"{len(codes)} kit(s) marked expired" + (f": {', '.join(codes)}" if codes else ""))


@kits_group.command("resupply")
@click.argument("study")
@with_appcontext
def resupply_command(study: str) -> None:
    """Run the blinded resupply rule for every site; print the shipments proposed."""
    proposed = run(lambda s: check_all(s, get_study(s, study), actor=_operator()))
    for shipment in proposed:
        click.echo(f"shipment {shipment.id} proposed for site {shipment.site_code}")
    if not proposed:
        click.echo("no site needs a shipment")


COMMANDS = [kits_group]
