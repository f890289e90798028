"""Simulated trials: minimization against permuted blocks for a study's factors.

Pure: no Flask, no database. For a study definition and a number of participants, each run
draws the participants' sites and factor levels uniformly and independently (the study file
states no prevalence), allocates them once by minimization and once by stratified permuted
blocks of each design, and measures, on the same participants:

* **marginal imbalance** — at each level of each balancing factor (site when
  ``stratify_by_site``, and every factor) the spread of the ratio-scaled arm totals
  ``max(n_a / r_a) − min(n_a / r_a)`` (with 1:1, ``|n_A − n_B|``): its mean over the levels,
  its largest value, and the whole study's spread;
* **predictability** — the expected share of correct guesses of a guesser who knows every
  earlier assignment. Under minimization they guess a minimizing arm (ties at random), under
  permuted blocks they follow the convergence strategy with the blocks' starts and sizes
  known, as ``predictability`` assumes for ``list show`` (the worst case for both).

Every draw comes from the seeded ChaCha20 generator of ``sequence``, so a seed repeats a
simulation exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from randomizer import minimization as pocock
from randomizer import sequence
from randomizer.studydef import StudyDefinition
from randomizer.studydef_minimization import SITE, MinimizationDef, MinimizationFactor


@dataclass
class Outcome:
    """Sums over the runs of one design's figures (means are taken by ``mean``)."""

    label: str
    runs: int = 0
    mean_level_imbalance: Fraction = Fraction(0)
    largest_level_imbalance: Fraction = Fraction(0)
    total_imbalance: Fraction = Fraction(0)
    correct: Fraction = Fraction(0)
    participants: int = 0
    worst_level_imbalance: Fraction = Fraction(0)

    def add(self, counts: list[list[dict[str, int]]], totals: dict[str, int],
            ratios: dict[str, int], correct: Fraction, n: int) -> None:  # fmt: skip
        spreads = [_spread(row, ratios) for factor in counts for row in factor]
        self.runs += 1
        self.mean_level_imbalance += sum(spreads, Fraction(0)) / len(spreads)
        self.largest_level_imbalance += max(spreads)
        self.worst_level_imbalance = max(self.worst_level_imbalance, max(spreads))
        self.total_imbalance += _spread(totals, ratios)
        self.correct += correct
        self.participants += n

    def mean(self, value: Fraction) -> Fraction:
        return value / self.runs if self.runs else Fraction(0)

    @property
    def correct_share(self) -> Fraction:
        return self.correct / self.participants if self.participants else Fraction(0)


@dataclass
class Simulation:
    participants: int
    runs: int
    factors: list[str]
    outcomes: list[Outcome] = field(default_factory=list)


def _spread(row: dict[str, int], ratios: dict[str, int]) -> Fraction:
    scaled = [Fraction(row[a], r) for a, r in ratios.items()]
    return max(scaled) - min(scaled)


def default_minimization(definition: StudyDefinition, p_best: Fraction) -> MinimizationDef:
    """The study's minimization parameters, or for a block study the usual ones: site (when
    stratified by site) and every factor, weight 1, range."""
    if definition.minimization is not None:
        m = definition.minimization
        return MinimizationDef(m.factors, m.measure, p_best)
    factors = [MinimizationFactor(SITE, Fraction(1), tuple(s.code for s in definition.sites))]
    factors = factors if definition.stratify_by_site else []
    factors += [MinimizationFactor(f.code, Fraction(1), f.levels) for f in definition.factors]
    return MinimizationDef(tuple(factors), "range", p_best)


def simulate(
    definition: StudyDefinition,
    *,
    participants: int,
    runs: int,
    p_best: Fraction,
    block_designs: Sequence[Sequence[int]],
    seed: bytes,
    progress: Callable[[int], None] | None = None,
) -> Simulation:
    """Run the comparison (module docstring); ``block_designs`` lists block-size sets."""
    chosen = default_minimization(definition, p_best)
    arms = [sequence.ArmRatio(a.code, a.ratio) for a in definition.arms]
    ratios = {a.code: a.ratio for a in arms}
    design = pocock.Design.of(chosen, arms)
    result = Simulation(participants, runs, [f.code for f in chosen.factors])
    minimizing = Outcome(f"minimization (p_best {float(p_best):g}, {chosen.measure})")
    by_blocks = [Outcome("permuted blocks of " + " and ".join(map(str, sorted(sizes))))
                 for sizes in block_designs]  # fmt: skip
    for run in range(runs):
        run_seed = hashlib.sha256(seed + run.to_bytes(8, "big")).digest()
        people = _participants(definition, chosen, participants, run_seed)
        _minimize(design, people, run_seed, minimizing, ratios)
        for sizes, outcome in zip(block_designs, by_blocks, strict=True):
            _blocks(definition, chosen, people, sizes, arms, run_seed, outcome, ratios)
        if progress:
            progress(1)
    result.outcomes = [minimizing, *by_blocks]
    return result


@dataclass(frozen=True)
class _Person:
    site: str
    factors: dict[str, str]
    levels: tuple[int, ...]


def _participants(
    definition: StudyDefinition, chosen: MinimizationDef, n: int, seed: bytes
) -> list[_Person]:
    g = sequence.Generator(hashlib.sha256(b"participants" + seed).digest())
    out = []
    for _ in range(n):
        site = definition.sites[g.randbelow(len(definition.sites))].code
        factors = {f.code: f.levels[g.randbelow(len(f.levels))] for f in definition.factors}
        out.append(_Person(site, factors, chosen.levels_of(site, factors)))
    return out


def _minimize(
    design: pocock.Design,
    people: list[_Person],
    seed: bytes,
    outcome: Outcome,
    ratios: dict[str, int],
) -> None:
    margins = pocock.Margins(design)
    totals = dict.fromkeys(ratios, 0)
    ties: dict[int, int] = {}
    for step, person in enumerate(people, 1):
        made = pocock.draw(margins, seed, step, person.levels)
        ties[made.tied] = ties.get(made.tied, 0) + 1
        margins.add(person.levels, made.arm)
        totals[made.arm] += 1
    correct = sum((pocock.guess_chance(design, t) * n for t, n in ties.items()), Fraction(0))
    outcome.add(margins.counts, totals, ratios, correct, len(people))


def _blocks(
    definition: StudyDefinition,
    chosen: MinimizationDef,
    people: list[_Person],
    sizes: Sequence[int],
    arms: list[sequence.ArmRatio],
    seed: bytes,
    outcome: Outcome,
    ratios: dict[str, int],
) -> None:
    design = pocock.Design.of(chosen, arms)
    margins = pocock.Margins(design)
    totals = dict.fromkeys(ratios, 0)
    per_stratum: dict[str, list[_Person]] = {}
    for person in people:
        per_stratum.setdefault(definition.stratum_key(person.site, person.factors), []).append(
            person
        )
    correct = Fraction(0)
    for stratum, members in per_stratum.items():
        slots = list(sequence.generate_stratum(seed, stratum, arms, sizes, min_slots=len(members)))[
            : len(members)
        ]
        correct += _convergence_correct(slots, ratios)
        for person, slot in zip(members, slots, strict=True):
            margins.add(person.levels, slot.arm)
            totals[slot.arm] += 1
    outcome.add(margins.counts, totals, ratios, correct, len(people))


def _convergence_correct(slots: list[sequence.Slot], ratios: dict[str, int]) -> Fraction:
    """Expected correct guesses: the arm with most slots left in the current block."""
    ratio_sum = sum(ratios.values())
    hits: dict[int, int] = {}  # right guesses by the number of tied arms
    block, remaining = 0, dict.fromkeys(ratios, 0)
    for slot in slots:
        if slot.block != block:
            block = slot.block
            remaining = {a: r * slot.block_size // ratio_sum for a, r in ratios.items()}
        most = max(remaining.values())
        ties = [a for a, left in remaining.items() if left == most]
        if slot.arm in ties:
            hits[len(ties)] = hits.get(len(ties), 0) + 1
        remaining[slot.arm] -= 1
    return sum((Fraction(n, t) for t, n in hits.items()), Fraction(0))
