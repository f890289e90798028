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

Guaranteed bounds (tested), with ``p_best = 1`` and two arms 1:1, whatever the
participants and the seed:

* one factor, either measure: ``|n_A − n_B| ≤ 1`` at each level after every step (at a
  level with difference ±1 the lowering arm scores 0, the other more);
* several factors, ``range``: a factor whose weight exceeds the sum of the others' weights
  keeps ``|n_A − n_B| ≤ 1`` at each of its levels. At difference ±1 the two arms' terms for
  it differ by ``2·weight``, every other factor's by at most ``2·its weight``, so the
  lowering arm has the strictly smaller ``G``. The whole study's difference is then at most
  that factor's number of levels.

Nothing bounds factors of comparable weight by a constant, nor any factor under
``variance`` with several factors (there a factor's pull grows with its imbalance), nor
anything when ``p_best < 1``; the simulation (``list simulate``) reports what to expect.
"""

from __future__ import annotations

import hashlib
import hmac
import math
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
    #: How many arms tied for least imbalance (not recorded: it follows from the margins).
    tied: int = 1


class Margins:
    """Marginal totals ``n[factor][level][arm]`` of the participants randomized so far."""

    def __init__(self, design: Design) -> None:
        self.design = design
        self.counts = [
            [dict.fromkeys((a.code for a in design.arms), 0) for _ in range(n)]
            for n in design.level_counts
        ]
        # Scores are kept in integers (exact and fast): totals scaled by the ratios' LCM,
        # weights by their denominators' LCM; ``imbalances`` divides the constant back out.
        scale = math.lcm(*(a.ratio for a in design.arms))
        self._arms = [(a.code, scale // a.ratio) for a in design.arms]
        denominator = math.lcm(*(w.denominator for w in design.weights))
        self._weights = [int(w * denominator) for w in design.weights]
        k = len(design.arms)
        unit = scale if design.measure == "range" else k * k * scale * scale
        self.unit = Fraction(1, denominator * unit)

    def add(self, levels: Sequence[int], arm: str) -> None:
        for factor, level in enumerate(levels):
            self.counts[factor][level][arm] += 1

    def difference(self, factor: int, level: int) -> int:
        """max − min of the raw counts at one level (the balance a report shows)."""
        values = self.counts[factor][level].values()
        return max(values) - min(values)

    def scores(self, levels: Sequence[int]) -> list[int]:
        """``G_k`` of each arm in units of ``unit`` (integers)."""
        variance = self.design.measure == "variance"
        k = len(self._arms)
        out = []
        for candidate, _ in self._arms:
            total = 0
            for factor, level in enumerate(levels):
                row = self.counts[factor][level]
                x = [(row[a] + (a == candidate)) * m for a, m in self._arms]
                # variance · k² = k·Σx² − (Σx)²
                spread = k * sum(v * v for v in x) - sum(x) ** 2 if variance else max(x) - min(x)
                total += self._weights[factor] * spread
            out.append(total)
        return out


def imbalances(margins: Margins, levels: Sequence[int]) -> list[Fraction]:
    """``G_k`` for each arm ``k`` in file order (module docstring, step 2)."""
    return [score * margins.unit for score in margins.scores(levels)]


def minimizing_arms(margins: Margins, levels: Sequence[int]) -> list[str]:
    """The arms of least imbalance for this participant, in file order."""
    scores = margins.scores(levels)
    least = min(scores)
    return [a.code for a, g in zip(margins.design.arms, scores, strict=True) if g == least]


def step_generator(seed: bytes, step: int) -> Generator:
    """The independent generator of one step, keyed by HMAC-SHA256 of the seed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    key = hmac.digest(seed, _STEP_LABEL + str(step).encode("ascii"), hashlib.sha256)
    return Generator(key, chunk=64)  # a step reads a few bytes; the stream is the same


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
    return Draw(step, tuple(levels), value, chosen, len(best))


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
    return guess_chance(margins.design, len(minimizing_arms(margins, levels)))


def guess_chance(design: Design, tied: int) -> Fraction:
    """``guess_probability`` when ``tied`` arms share the least imbalance."""
    p, k = design.p_best, len(design.arms)
    return Fraction(1, tied) * p + (1 - Fraction(1, tied)) * (1 - p) / (k - 1)
