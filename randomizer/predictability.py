"""Predictability of a drawn permuted-block list: what a guesser gets right (SPEC §4.4).

Pure: no Flask, no database, no sealing. It takes the arms of each block in list order and
computes exact figures with :class:`fractions.Fraction`.

The guesser follows the convergence strategy of Blackwell and Hodges (1957), in its
worst case for permuted blocks: they know where each block starts and its size, and before
every allocation guess the arm with the most slots left in the current block (with 1:1 this
is the arm allocated least so far in the block); when several arms tie they pick one of them
uniformly at random. The expected number of correct guesses of the list actually drawn is
then the sum, over its slots, of ``1 / ties`` when the slot's arm is among the tied guesses
(and 0 otherwise). A slot is *deterministic* when only one arm has slots left in its block.

If enrolment in a stratum stops mid-block (after ``k`` of a block's ``b`` slots, ``0 < k <
b``), the stratum's imbalance is that of the unfinished block, since whole blocks are in
exact ratio: ``sum(|n_arm - k * ratio_arm / R|)`` over the arms (for two arms 1:1, ``|n_A -
n_B|``). The figure reported is its mean over every mid-block stopping point of the list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

#: A stratum expecting fewer participants than this many of its largest blocks is "small":
#: the unfinished last block then weighs on its balance, and the guesser's share is high.
SMALL_STRATUM_BLOCKS = 4


@dataclass(frozen=True)
class Figures:
    """Predictability figures of some slots (a block, a stratum or a whole list)."""

    slots: int = 0
    correct: Fraction = Fraction(0)
    deterministic: int = 0
    #: Sum of the imbalance over every mid-block stopping point, and how many there are.
    imbalance_sum: Fraction = Fraction(0)
    stops: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            self.slots + other.slots,
            self.correct + other.correct,
            self.deterministic + other.deterministic,
            self.imbalance_sum + other.imbalance_sum,
            self.stops + other.stops,
        )

    def times(self, n: int) -> Figures:
        """The figures of ``n`` copies of these slots."""
        return Figures(self.slots * n, self.correct * n, self.deterministic * n,
                       self.imbalance_sum * n, self.stops * n)  # fmt: skip

    @property
    def correct_share(self) -> Fraction:
        """Expected correct guesses as a share of the slots."""
        return self.correct / self.slots if self.slots else Fraction(0)

    @property
    def deterministic_share(self) -> Fraction:
        """Share of the slots whose arm is forced by its block."""
        return Fraction(self.deterministic, self.slots) if self.slots else Fraction(0)

    @property
    def mean_imbalance(self) -> Fraction:
        """Mean imbalance if enrolment stops mid-block (0 when no block has two slots)."""
        return self.imbalance_sum / self.stops if self.stops else Fraction(0)


def assess_block(arms: Sequence[str], ratios: Mapping[str, int]) -> Figures:
    """Figures of one block, given its arms in list order and the arms' ratios."""
    ratio_sum = sum(ratios.values())
    size = len(arms)
    remaining = {arm: ratio * size // ratio_sum for arm, ratio in ratios.items()}
    if size % ratio_sum or Counter(arms) != Counter({a: n for a, n in remaining.items() if n}):
        raise ValueError(f"block {list(arms)} is not in the exact ratio {dict(ratios)}")
    used = dict.fromkeys(ratios, 0)
    correct, forced, imbalance = Fraction(0), 0, Fraction(0)
    for k, arm in enumerate(arms, 1):
        most = max(remaining.values())
        ties = [a for a, left in remaining.items() if left == most]
        if arm in ties:
            correct += Fraction(1, len(ties))
        forced += int(sum(1 for left in remaining.values() if left) == 1)
        remaining[arm] -= 1
        used[arm] += 1
        if k < size:
            imbalance += sum(abs(used[a] - Fraction(k * r, ratio_sum)) for a, r in ratios.items())
    return Figures(size, correct, forced, imbalance, size - 1)


def assess(blocks: Iterable[Sequence[str]], ratios: Mapping[str, int]) -> Figures:
    """Figures of a sequence of blocks (a stratum, or any collection of blocks)."""
    # A list has few distinct blocks (orderings of a few sizes): each is assessed once.
    total = Figures()
    for block, times in Counter(tuple(b) for b in blocks).items():
        total += assess_block(block, ratios).times(times)
    return total


def small_stratum(expected: Fraction, block_sizes: Iterable[int]) -> bool:
    """Whether a stratum expecting ``expected`` participants is small for its block sizes."""
    return expected < SMALL_STRATUM_BLOCKS * max(block_sizes)


def summary_line(figures: Figures) -> str:
    """The contract line: ``predictability: expected correct guesses E of N (P%)``."""
    return (
        f"predictability: expected correct guesses {decimals(figures.correct, 2)} of "
        f"{figures.slots} ({decimals(figures.correct_share * 100, 1)}%)"
    )


def decimals(value: Fraction, places: int) -> str:
    """An exact fraction rounded half up to ``places`` decimals (2.125 gives "2.13")."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return str(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
