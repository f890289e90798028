"""Pocock–Simon minimization, replayable from a seed (SPEC §4.4).

Pure: no Flask, no database, no sealing. Versioned as :data:`ALGORITHM_VERSION`; any change
to what it produces for given inputs needs a new version string.

Algorithm ``minimization-chacha20-v1``
--------------------------------------

Inputs: a 32-byte seed ``S``; the arms ``(code, ratio)`` in file order; the minimization
factors ``(weight, number of levels)``; the measure (``range`` or ``variance``); ``p_best``
(a multiple of 1/1,000,000); and, for each randomization in order (step 1, 2, …), the
participant's level index in every factor.

1. **Margins.** ``n[f][l][a]``: participants already randomized with level ``l`` of factor
   ``f`` and arm ``a``.
2. **Imbalance** of giving the new participant (levels ``l_f``) arm ``k``: for each factor,
   the ratio-scaled totals ``x_a = (n[f][l_f][a] + [a = k]) / ratio_a`` (the
   weighted-imbalance form for unequal ratios: with 2:1, 4 and 2 are balanced), their
   ``range`` (max − min) or population ``variance``; ``G_k = Σ_f weight_f · D_f(k)``,
   computed exactly with fractions.
3. **Generator** of step ``t``: the ChaCha20 generator of ``sequence`` under the key
   ``HMAC-SHA256(S, b"randomizer/minimization/v1" || 0x00 || decimal t)``, so each step
   reads its own stream and a replay needs no state but the margins.
4. **Draw.** ``best`` = the arms of least ``G`` (file order); ``b = best[randbelow(|best|)]``
   (ties at random; no bytes when alone). ``u = randbelow(1,000,000)``. If ``u <
   p_best · 1,000,000`` the arm is ``b``; otherwise ``others[randbelow(|others|)]``, the
   other arms in file order (so each gets ``(1 − p_best) / (K − 1)``).

The recorded draw is ``(step, levels, u, arm)``; replaying the steps in order from the
seed and the recorded levels must give every recorded arm.

Guaranteed bound (tested): with ``p_best = 1`` and two arms 1:1, a factor whose weight is
larger than the sum of the other factors' weights has ``|n_A − n_B| ≤ 1`` at each of its
levels after every step, whatever the participants (with one factor, that factor). Proof:
at a level with difference ±1, the arm that lowers it changes that factor's term by
``−weight``, the other by ``+weight``; every other factor's term moves by at most its
weight, so the lowering arm has the strictly smaller ``G`` and is taken. The whole
study's difference is then at most the number of that factor's levels. Factors of
comparable weight have no such constant bound.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from randomizer.sequence import SEED_BYTES, ArmRatio, Generator
from randomizer.studydef_minimization import P_SCALE, Measure, MinimizationDef

ALGORITHM_VERSION = "minimization-chacha20-v1"
_STEP_LABEL = b"randomizer/minimization/v1\x00"


@dataclass(frozen=True, slots=True)
class Design:
    """What the algorithm needs: arms with ratios, factors (weight, levels), measure, p."""

    arms: tuple[ArmRatio, ...]
    weights: tuple[Fraction, ...]
    level_counts: tuple[int, ...]
    measure: Measure
    p_best: Fraction

    @classmethod
    def of(cls, definition: MinimizationDef, arms: Sequence[ArmRatio]) -> Design:
        """The design of a study's ``[randomization.minimization]`` table."""
        return cls(
            tuple(arms),
            tuple(f.weight for f in definition.factors),
            tuple(len(f.levels) for f in definition.factors),
            definition.measure,
            definition.p_best,
        )

    def check_levels(self, levels: Sequence[int]) -> None:
        """ValueError unless ``levels`` has one valid index per factor."""
        if len(levels) != len(self.level_counts) or any(
            not 0 <= level < n for level, n in zip(levels, self.level_counts, strict=True)
        ):
            raise ValueError(f"levels {list(levels)} do not fit factors of {self.level_counts}")


@dataclass(frozen=True, slots=True)
class Draw:
    """One randomization as recorded: step, the participant's levels, the draw, the arm."""

    step: int
    levels: tuple[int, ...]
    value: int
    arm: str


class Margins:
    """Marginal totals ``n[factor][level][arm]`` of the participants randomized so far."""

    def __init__(self, design: Design) -> None:
        self.design = design
        self.counts = [
            [dict.fromkeys((a.code for a in design.arms), 0) for _ in range(n)]
            for n in design.level_counts
        ]

    def add(self, levels: Sequence[int], arm: str) -> None:
        for factor, level in enumerate(levels):
            self.counts[factor][level][arm] += 1

    def difference(self, factor: int, level: int) -> int:
        """max − min of the raw counts at one level (the balance a report shows)."""
        values = self.counts[factor][level].values()
        return max(values) - min(values)


def imbalances(margins: Margins, levels: Sequence[int]) -> list[Fraction]:
    """``G_k`` for each arm ``k`` in file order (module docstring, step 2)."""
    design = margins.design
    out = []
    for candidate in design.arms:
        total = Fraction(0)
        for factor, level in enumerate(levels):
            row = margins.counts[factor][level]
            scaled = [
                Fraction(row[a.code] + (a.code == candidate.code), a.ratio) for a in design.arms
            ]
            total += design.weights[factor] * _spread(scaled, design.measure)
        out.append(total)
    return out


def _spread(values: list[Fraction], measure: Measure) -> Fraction:
    if measure == "range":
        return max(values) - min(values)
    mean = sum(values, Fraction(0)) / len(values)
    return sum(((v - mean) ** 2 for v in values), Fraction(0)) / len(values)


def minimizing_arms(margins: Margins, levels: Sequence[int]) -> list[str]:
    """The arms of least imbalance for this participant, in file order."""
    scores = imbalances(margins, levels)
    least = min(scores)
    return [a.code for a, g in zip(margins.design.arms, scores, strict=True) if g == least]


def step_generator(seed: bytes, step: int) -> Generator:
    """The independent generator of one step, keyed by HMAC-SHA256 of the seed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    key = hmac.digest(seed, _STEP_LABEL + str(step).encode("ascii"), hashlib.sha256)
    return Generator(key)


def draw(margins: Margins, seed: bytes, step: int, levels: Sequence[int]) -> Draw:
    """The arm for the participant randomized at ``step`` (module docstring, step 4)."""
    design = margins.design
    design.check_levels(levels)
    generator = step_generator(seed, step)
    best = minimizing_arms(margins, levels)
    chosen = best[generator.randbelow(len(best))]
    value = generator.randbelow(P_SCALE)
    if value >= design.p_best * P_SCALE:
        others = [a.code for a in design.arms if a.code != chosen]
        chosen = others[generator.randbelow(len(others))]
    return Draw(step, tuple(levels), value, chosen)


def replay(design: Design, seed: bytes, history: Iterable[Sequence[int]]) -> Iterator[Draw]:
    """The draws that the seed gives for these participants' levels, in order."""
    margins = Margins(design)
    for step, levels in enumerate(history, 1):
        made = draw(margins, seed, step, levels)
        margins.add(made.levels, made.arm)
        yield made


def guess_probability(margins: Margins, levels: Sequence[int]) -> Fraction:
    """Chance that a guesser who knows every earlier assignment and guesses a minimizing
    arm (one of the tied ones at random) is right about this participant."""
    design = margins.design
    best, k = len(minimizing_arms(margins, levels)), len(design.arms)
    p = design.p_best
    return Fraction(1, best) * p + (1 - Fraction(1, best)) * (1 - p) / (k - 1)
