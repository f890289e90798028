"""``randomizer list …``: generate, import, export, verify, extend and show allocation lists."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
from flask.cli import with_appcontext

from randomizer.cli.common import console_actor as _operator
from randomizer.cli.common import (
    file_after_commit,
    read_signatures,
    run,
    signature_options,
    transaction,
)
from randomizer.cli.simulate import simulate_command
from randomizer.models import ListKind
from randomizer.predictability import SMALL_STRATUM_BLOCKS, decimals
from randomizer.services.commitment import extend_list, published, release_list
from randomizer.services.list_files import export_list, import_list
from randomizer.services.list_predictability import ListPredictability, assess_list
from randomizer.services.list_summary import ListSummary, summarize
from randomizer.services.list_verify import verify_list
from randomizer.services.lists import get_list, recorded_counts
from randomizer.services.minimization import is_minimization, make_list, recorded_summary
from randomizer.services.studies import definition_of, get_study

dummy_option = click.option(
    "--dummy", is_flag=True, help="The dummy (training) list instead of the live list."
)


def _kind(dummy: bool) -> ListKind:
    return ListKind.DUMMY if dummy else ListKind.LIVE


@contextmanager
def _progress(label: str, length: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (stdout stays clean for scripts)."""
    with click.progressbar(length=max(length, 1), label=label, file=sys.stderr) as bar:
        yield bar.update


def _total(session: Any, study: Any, dummy: bool) -> int:
    return sum(recorded_counts(get_list(session, study, _kind(dummy))).values())


@click.group("list")
def list_group() -> None:
    """Allocation lists, or minimization records (statistician)."""


@list_group.command("generate")
@click.argument("study_code", metavar="STUDY")
@click.option("--per-stratum", type=click.IntRange(1, 1_000_000), help="Slots per stratum.")
@dummy_option
@click.option("--seed", metavar="HEX", help="64 hex digits (dummy lists only; tests, training).")
@with_appcontext
def generate_command(
    study_code: str, per_stratum: int | None, dummy: bool, seed: str | None
) -> None:
    """Generate the live list (or with --dummy the dummy list) for every stratum.

    Under method = "minimization": make the record instead (sealed seed, no slots; each
    assignment is drawn at randomization), without --per-stratum."""
    if seed is not None and not dummy:
        raise click.UsageError(
            "--seed may be given only with --dummy (a live list's seed "
            "always comes from the operating system)."
        )
    seed_bytes = _parse_seed(seed) if seed is not None else None

    def service(session: Any) -> tuple[Any, int]:
        study = get_study(session, study_code)
        definition = definition_of(study)
        estimate = (per_stratum or definition.per_stratum) * len(definition.strata())
        with _progress("Generating and sealing", estimate) as progress:
            row = make_list(
                session,
                study,
                kind=_kind(dummy),
                actor=_operator(),
                per_stratum=per_stratum,
                seed=seed_bytes,
                progress=progress,
            )
        return row, len(definition.strata())

    row, strata = run(service)
    counts = row.params["slots"]
    if is_minimization(row):
        click.echo(
            f"made the {row.kind.value} minimization record of {study_code}: no slots in "
            "advance, each assignment is drawn at randomization and recorded"
        )
        click.echo(f"fingerprint: {row.fingerprint}")
        click.echo(f"seed reference: {row.seed_ref} ({row.algorithm_version})")
        return
    click.echo(
        f"generated the {row.kind.value} list of {study_code}: {sum(counts.values())} "
        f"slots in {strata} strata"
    )
    for stratum, n in counts.items():
        click.echo(f"  {stratum}: {n}")
    click.echo(f"fingerprint: {row.fingerprint}")
    click.echo(f"seed reference: {row.seed_ref} ({row.algorithm_version})")


def _parse_seed(text: str) -> bytes:
    try:
        seed = bytes.fromhex(text.strip())
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise click.BadParameter("must be 64 hexadecimal digits (256 bits)", param_hint="--seed")
    return seed


@list_group.command("import")
@click.argument("study_code", metavar="STUDY")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@dummy_option
@with_appcontext
def import_command(study_code: str, file: Path, dummy: bool) -> None:
    """Import a list made elsewhere (columns of `list export --unblinded`), after validating it."""
    try:
        handle = file.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise click.ClickException(f"{file}: cannot be read ({exc.strerror})") from None
    with handle:
        row = run(
            lambda s: import_list(
                s,
                get_study(s, study_code),
                kind=_kind(dummy),
                source=handle,
                actor=_operator(),
                filename=file.name,
            )
        )
    counts = row.params["slots"]
    click.echo(
        f"imported the {row.kind.value} list of {study_code}: {sum(counts.values())} "
        f"slots in {len(counts)} strata"
    )
    click.echo(f"fingerprint: {row.fingerprint}")


@list_group.command("export")
@click.argument("study_code", metavar="STUDY")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@dummy_option
@click.option("--unblinded", is_flag=True, help="Add the arm column (audited).")
@signature_options
@with_appcontext
def export_command(
    study_code: str,
    out: Path,
    dummy: bool,
    unblinded: bool,
    statistician: str | None,
    second: str | None,
) -> None:
    """Write the live (or dummy) list as CSV; --unblinded adds the arm and is audited.

    Under minimization: the allocations made so far (block = step, block_size = 0).

    When the study sets bulk_export_signers = 2, the unblinded live list needs
    --statistician NAME --second NAME, both passwords on stdin, one per line.
    """
    signatures = read_signatures(statistician, second)
    with file_after_commit(out) as handle:

        def service(session: Any) -> int:
            study = get_study(session, study_code)
            with _progress("Exporting", _total(session, study, dummy)) as progress:
                return export_list(
                    session,
                    study,
                    kind=_kind(dummy),
                    out=handle,
                    unblinded=unblinded,
                    actor=_operator(),
                    progress=progress,
                    signatures=signatures,
                )

        count = run(service)
    what = "unblinded (arm column included; audited)" if unblinded else "blinded"
    click.echo(f"wrote {count} slots of the {_kind(dummy).value} list to {out}, {what}")


@list_group.command("verify")
@click.argument("study_code", metavar="STUDY")
@dummy_option
@with_appcontext
def verify_command(study_code: str, dummy: bool) -> None:
    """Regenerate from the sealed seed and parameters and compare; exit 0 or 1.

    Under minimization: replay every assignment from the sealed seed and recorded factors."""
    with transaction() as session:
        study = get_study(session, study_code)
        with _progress("Verifying", _total(session, study, dummy)) as progress:
            report = verify_list(
                session, study, kind=_kind(dummy), actor=_operator(), progress=progress
            )
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        click.echo(f"FAILED: {report.differences} difference(s)", err=True)
        sys.exit(1)
    click.echo("ok: the stored list is exactly what was recorded")


@list_group.command("extend")
@click.argument("study_code", metavar="STUDY")
@click.option("--stratum", required=True, help="Stratum key, e.g. 'CUA|isn_class=IV'.")
@click.option("--slots", required=True, type=click.IntRange(1), help="At least this many slots.")
@dummy_option
@with_appcontext
def extend_command(study_code: str, stratum: str, slots: int, dummy: bool) -> None:
    """Add whole blocks to one stratum, continuing its seeded sequence (audited).

    Refused under minimization (there is no list made in advance)."""

    def service(session: Any) -> int:
        study = get_study(session, study_code)
        with _progress("Extending", slots) as progress:
            return extend_list(
                session,
                study,
                kind=_kind(dummy),
                stratum=stratum,
                slots=slots,
                actor=_operator(),
                progress=progress,
            )

    added = run(service)
    click.echo(f"added {added} slots to stratum {stratum} of the {_kind(dummy).value} list")


@list_group.command("show")
@click.argument("study_code", metavar="STUDY")
@dummy_option
@with_appcontext
def show_command(study_code: str, dummy: bool) -> None:
    """Summary: slots and use per stratum, block-size counts, fingerprint, predictability.

    Under minimization: the allocations made so far per stratum and the design."""
    summary = run(lambda s: summarize(s, get_study(s, study_code), _kind(dummy), with_blocks=True))
    if is_minimization(summary.row):
        _echo_minimization(study_code, summary)
        return
    figures = run(lambda s: assess_list(s, get_study(s, study_code), _kind(dummy)))
    row = summary.row
    click.echo(
        f"{row.kind.value} list of {study_code} ({row.source}, {row.algorithm_version}), "
        f"made by {row.created_by} at {row.created_at:%Y-%m-%d %H:%M} UTC"
    )
    click.echo(f"fingerprint: {row.fingerprint}")
    if row.seed_ref:
        click.echo(f"seed reference: {row.seed_ref}")
    click.echo("stratum\tslots\tused\tavailable\tblocks by size")
    for s in summary.strata:
        blocks = ", ".join(f"{size}×{n}" for size, n in sorted(s.blocks.items()))
        click.echo(f"{s.stratum}\t{s.slots}\t{s.used}\t{s.available}\t{blocks}")
    if summary.blocks_problem:
        click.echo(f"blocks cannot be read: {summary.blocks_problem}", err=True)
    _echo_predictability(figures)


def _echo_minimization(study_code: str, summary: ListSummary) -> None:
    row = summary.row
    design = recorded_summary(row)
    click.echo(
        f"{row.kind.value} minimization record of {study_code} ({row.algorithm_version}), "
        f"made by {row.created_by} at {row.created_at:%Y-%m-%d %H:%M} UTC"
    )
    click.echo(f"fingerprint: {row.fingerprint}")
    click.echo(f"seed reference: {row.seed_ref}")
    click.echo(
        f"factors: {', '.join(design['factors'])}; measure: {design['measure']}; "
        f"p_best: {design['p_best']}"
    )
    click.echo(f"allocations made so far: {summary.used}")
    click.echo("stratum	allocated")
    for s in summary.strata:
        click.echo(f"{s.stratum}	{s.used}")
    click.echo(
        "predictability: no list is drawn in advance; compare designs with "
        f"`randomizer list simulate {study_code} --participants N`"
    )


def _echo_predictability(p: ListPredictability) -> None:
    """The predictability figures (SPEC §4.4): the guesser knows the blocks (worst case)."""
    total = p.total
    click.echo(p.line)
    click.echo(
        f"deterministic allocations: {total.deterministic} of {total.slots} "
        f"({decimals(total.deterministic_share * 100, 1)}%)"
    )
    click.echo(
        "expected imbalance if enrolment stops mid-block: "
        f"{decimals(total.mean_imbalance, 2)} participants"
    )
    click.echo("stratum\texpected correct guesses\tdeterministic\tmid-block imbalance")
    for s in p.strata:
        f = s.figures
        click.echo(
            f"{s.stratum}\t{decimals(f.correct, 2)} of {f.slots} "
            f"({decimals(f.correct_share * 100, 1)}%)\t{f.deterministic}\t"
            f"{decimals(f.mean_imbalance, 2)}"
        )
    sizes = " and ".join(str(size) for size in p.block_sizes)
    for s in p.small_strata:
        assert s.expected is not None  # small only when an enrolment is expected
        click.echo(
            f"warning: stratum {s.stratum} expects about {decimals(s.expected, 1)} participants, "
            f"small for blocks of {sizes} (fewer than {SMALL_STRATUM_BLOCKS} of the largest): "
            "the last, unfinished block weighs on its balance; consider fewer strata"
        )
    if p.expected_enrolment is None:
        click.echo(
            "expected enrolment: not stated ([randomization] expected_enrolment); "
            "small strata are not checked"
        )


@list_group.command("commitment")
@click.argument("study_code", metavar="STUDY")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write JSON.")
@with_appcontext
def commitment_command(study_code: str, out: Path | None) -> None:
    """The commitment to the live list made at go-live (and one per later extension)."""
    text = json.dumps(run(lambda s: published(s, get_study(s, study_code))), indent=2)
    if out is not None:
        try:
            out.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"{out}: cannot be written ({exc.strerror})") from None
    click.echo(text)


@list_group.command("release")
@click.argument("study_code", metavar="STUDY")
@click.option("--out", "folder", required=True, type=click.Path(file_okay=False, path_type=Path))
@with_appcontext
def release_command(study_code: str, folder: Path) -> None:
    """After the database lock: write DIR/list.csv and DIR/commitment.json (with the salt)."""
    partials: dict[str, Path] = {}

    def open_file(name: str) -> IO[bytes]:
        # Only once the release is allowed; renamed into place after the audit commits.
        folder.mkdir(parents=True, exist_ok=True)
        partials[name] = folder / f".{name}.partial"
        return os.fdopen(os.open(partials[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                         "wb")  # fmt: skip

    try:
        names = run(lambda s: release_list(s, get_study(s, study_code), actor=_operator(),
                                           open_file=open_file))  # fmt: skip
        for name in names:
            os.replace(partials[name], folder / name)
    except OSError as exc:
        raise click.ClickException(f"{folder}: cannot be written ({exc.strerror})") from None
    finally:
        for partial in partials.values():
            partial.unlink(missing_ok=True)
    click.echo(f"released the live list of {study_code} to {folder}: {', '.join(names)}")


list_group.add_command(simulate_command)

COMMANDS = [list_group]
