"""Predictability figures (pure): checked against independent exact computations."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from fractions import Fraction
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from randomizer import predictability, sequence
from randomizer.predictability import Figures, assess, assess_block, decimals, summary_line

ONE_TO_ONE = [sequence.ArmRatio("A", 1), sequence.ArmRatio("B", 1)]
TWO_TO_ONE = [sequence.ArmRatio("A", 2), sequence.ArmRatio("B", 1)]
DESIGNS = [
    (ONE_TO_ONE, [2]),
    (ONE_TO_ONE, [2, 4]),
    (ONE_TO_ONE, [4, 6, 8]),
    (TWO_TO_ONE, [3]),
    (TWO_TO_ONE, [3, 6]),
    (TWO_TO_ONE, [6, 9]),
]


def _ratios(arms: Sequence[sequence.ArmRatio]) -> dict[str, int]:
    return {a.code: a.ratio for a in arms}


def _reference_block(block: Sequence[str], ratios: dict[str, int]) -> Fraction:
    """DP over the block's remaining arm counts along the drawn block; ties guessed uniformly
    (the expectation is taken over each tied guess in turn)."""
    codes = sorted(ratios)
    quota = tuple(ratios[c] * len(block) // sum(ratios.values()) for c in codes)

    @cache
    def expected(position: int, remaining: tuple[int, ...]) -> Fraction:
        if position == len(block):
            return Fraction(0)
        most = max(remaining)
        guesses = [codes[i] for i, left in enumerate(remaining) if left == most]
        actual = codes.index(block[position])
        after = tuple(left - (i == actual) for i, left in enumerate(remaining))
        hits = Fraction(sum(g == block[position] for g in guesses), len(guesses))
        return hits + expected(position + 1, after)

    return expected(0, quota)


def _reference_design(size: int, ratios: dict[str, int]) -> Fraction:
    """Classical DP: expected correct guesses over every ordering of a block of this size."""
    quota = tuple(ratios[c] * size // sum(ratios.values()) for c in sorted(ratios))

    @cache
    def value(remaining: tuple[int, ...]) -> Fraction:
        left = sum(remaining)
        if left == 0:
            return Fraction(0)
        ties = [i for i, r in enumerate(remaining) if r == max(remaining)]
        total = Fraction(0)
        for i, r in enumerate(remaining):
            if r:
                hit = Fraction(1, len(ties)) if i in ties else Fraction(0)
                after = tuple(x - (j == i) for j, x in enumerate(remaining))
                total += Fraction(r, left) * (hit + value(after))
        return total

    return value(quota)


def _blocks(slots: list[sequence.Slot]) -> list[list[str]]:
    grouped = itertools.groupby(slots, key=lambda s: (s.stratum, s.block))
    return [[s.arm for s in members] for _, members in grouped]


@pytest.mark.parametrize(("arms", "sizes"), DESIGNS)
@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), per_stratum=st.integers(1, 60))
def test_expected_correct_guesses_equal_an_independent_dp_on_drawn_lists(
    arms: list[sequence.ArmRatio], sizes: list[int], seed: bytes, per_stratum: int
) -> None:
    slots = list(sequence.generate(seed, ["s1", "s2"], arms, sizes, per_stratum=per_stratum))
    blocks, ratios = _blocks(slots), _ratios(arms)
    figures = assess(blocks, ratios)
    reference = sum((_reference_block(b, ratios) for b in blocks), Fraction(0))
    assert decimals(figures.correct, 2) == decimals(reference, 2)
    assert figures.correct == reference
    assert figures.slots == len(slots)


@pytest.mark.parametrize(("arms", "sizes"), DESIGNS)
def test_averaged_over_every_ordering_a_block_matches_the_classical_dp(
    arms: list[sequence.ArmRatio], sizes: list[int]
) -> None:
    ratios = _ratios(arms)
    for size in sizes:
        template = [a.code for a in arms for _ in range(a.ratio * size // sum(ratios.values()))]
        orderings = set(itertools.permutations(template))
        mean = sum((assess_block(o, ratios).correct for o in orderings), Fraction(0))
        assert mean / len(orderings) == _reference_design(size, ratios)


def test_a_block_of_two_is_half_guessed_then_forced() -> None:
    figures = assess_block(["B", "A"], {"A": 1, "B": 1})
    assert figures == Figures(2, Fraction(3, 2), 1, Fraction(1), 1)


def test_a_block_of_four_counts_forced_slots_and_mid_block_imbalance() -> None:
    figures = assess_block(["A", "A", "B", "B"], {"A": 1, "B": 1})
    assert figures.correct == Fraction(5, 2)
    assert figures.deterministic == 2
    assert figures.mean_imbalance == Fraction(4, 3)  # 1, 2, 1 after one, two, three slots


def test_with_two_to_one_the_guess_is_the_arm_with_most_slots_left() -> None:
    figures = assess_block(["B", "A", "A"], {"A": 2, "B": 1})
    assert figures.correct == 2  # A guessed first (wrong), then A is forced twice
    assert figures.deterministic == 2
    assert figures.imbalance_sum == Fraction(4, 3) + Fraction(2, 3)


def test_a_block_out_of_ratio_is_refused() -> None:
    with pytest.raises(ValueError, match="exact ratio"):
        assess_block(["A", "A"], {"A": 1, "B": 1})


def test_the_summary_line_has_the_contract_form() -> None:
    line = summary_line(assess([["A", "B"], ["B", "A", "A", "B"]], {"A": 1, "B": 1}))
    assert re.fullmatch(r"predictability: expected correct guesses \d+\.\d\d of \d+ \([\d.]+%\)",
                        line)  # fmt: skip
    assert line == "predictability: expected correct guesses 4.50 of 6 (75.0%)"


def test_decimals_round_half_up_exactly() -> None:
    assert decimals(Fraction(17, 8), 2) == "2.13"
    assert decimals(Fraction(1, 3), 2) == "0.33"


@pytest.mark.parametrize(
    ("expected", "sizes", "small"),
    [(Fraction(39, 4), [2, 4], True), (Fraction(16), [2, 4], False), (Fraction(8), [2], False)],
)
def test_a_stratum_is_small_below_four_of_its_largest_blocks(
    expected: Fraction, sizes: list[int], small: bool
) -> None:
    assert predictability.small_stratum(expected, sizes) is small
