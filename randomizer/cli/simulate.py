"""``randomizer list simulate``: minimization against permuted blocks, for the statistician."""

from __future__ import annotations

import sys
from fractions import Fraction

import click
from flask.cli import with_appcontext

from randomizer import sequence
from randomizer.allocation_simulation import Simulation, simulate
from randomizer.cli.common import run
from randomizer.predictability import decimals
from randomizer.services.studies import definition_of, get_study
from randomizer.studydef import StudyDefinition
from randomizer.studydef_minimization import P_SCALE


def _p_best(value: str | None) -> Fraction | None:
    if value is None:
        return None
    try:
        p = Fraction(value.strip().replace(",", "."))
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{value!r} is not a number", param_hint="--p-best") from None
    if not 0 < p <= 1 or (p * P_SCALE).denominator != 1:
        raise click.BadParameter(
            "must be above 0 and at most 1, with at most 6 decimals", param_hint="--p-best"
        )
    return p


def _blocks(values: tuple[str, ...], definition: StudyDefinition) -> list[list[int]]:
    if not values:
        sizes = sorted(definition.block_sizes)
        return [[s] for s in sizes] + ([sizes] if len(sizes) > 1 else [])
    designs = []
    for value in values:
        try:
            sizes = sorted({int(part) for part in value.split(",")})
            sequence.validate_parameters(
                [sequence.ArmRatio(a.code, a.ratio) for a in definition.arms], sizes
            )
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}", param_hint="--blocks") from None
        designs.append(sizes)
    return designs


@click.command("simulate")
@click.argument("study_code", metavar="STUDY")
@click.option("--participants", required=True, type=click.IntRange(1, 100_000),
              help="Participants per simulated trial.")  # fmt: skip
@click.option("--runs", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Simulated trials.")  # fmt: skip
@click.option(
    "--p-best",
    "p_best",
    metavar="P",
    help="Probability of the minimizing arm (default: the study's, else 0.8).",
)
@click.option("--blocks", multiple=True, metavar="SIZES",
              help="Block sizes to compare, e.g. 2,4 (repeatable; default: each of the "
                   "study's sizes alone and all together).")  # fmt: skip
@click.option("--seed", metavar="HEX", help="64 hex digits, to repeat a simulation.")
@with_appcontext
def simulate_command(
    study_code: str,
    participants: int,
    runs: int,
    p_best: str | None,
    blocks: tuple[str, ...],
    seed: str | None,
) -> None:
    """Expected marginal imbalance and predictability: minimization vs permuted blocks.

    Sites and factor levels are drawn uniformly; nothing of the study's data is read.
    """
    definition = run(lambda s: definition_of(get_study(s, study_code)))
    chosen = _p_best(p_best)
    if chosen is None:
        m = definition.minimization
        chosen = m.p_best if m is not None else Fraction(4, 5)
    if seed is not None:
        try:
            seed_bytes = bytes.fromhex(seed.strip())
        except ValueError:
            seed_bytes = b""
        if len(seed_bytes) != sequence.SEED_BYTES:
            raise click.BadParameter("must be 64 hexadecimal digits", param_hint="--seed")
    else:
        seed_bytes = sequence.new_seed()
    designs = _blocks(blocks, definition)
    with click.progressbar(length=runs, label="Simulating", file=sys.stderr) as bar:
        result = simulate(definition, participants=participants, runs=runs, p_best=chosen,
                          block_designs=designs, seed=seed_bytes, progress=bar.update)  # fmt: skip
    _echo(study_code, result, seed_bytes)


def _echo(study_code: str, result: Simulation, seed: bytes) -> None:
    click.echo(
        f"simulation of {study_code}: {result.participants} participants, {result.runs} runs; "
        f"balancing factors {' × '.join(result.factors)} (levels drawn uniformly)"
    )
    click.echo(f"seed: {seed.hex()}")
    click.echo("design\tmean marginal imbalance\tlargest marginal imbalance\t"
               "study imbalance\tcorrect guesses")  # fmt: skip
    for o in result.outcomes:
        click.echo(
            f"{o.label}\t{decimals(o.mean(o.mean_level_imbalance), 2)}\t"
            f"{decimals(o.mean(o.largest_level_imbalance), 2)} "
            f"(worst {decimals(o.worst_level_imbalance, 0)})\t"
            f"{decimals(o.mean(o.total_imbalance), 2)}\t"
            f"{decimals(o.correct_share * 100, 1)}%"
        )
    click.echo(
        "marginal imbalance: |n_A - n_B| (ratio-scaled) at a level of a balancing factor, "
        "mean over levels and largest, averaged over the runs; correct guesses: expected "
        "share for a guesser who knows every earlier assignment (minimization: guesses the "
        "minimizing arm; blocks: convergence strategy, block starts and sizes known)"
    )
