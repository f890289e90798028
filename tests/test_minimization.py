"""The pure Pocock–Simon algorithm: hand-computed choices, guaranteed bounds, ratios, replay."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from randomizer import minimization as pocock
from randomizer.sequence import ArmRatio, Generator

AB = (ArmRatio("A", 1), ArmRatio("B", 1))


def design(arms=AB, weights=(1, 1), levels=(2, 2), measure="range", p_best=Fraction(1)):
    return pocock.Design(
        tuple(arms), tuple(Fraction(w) for w in weights), tuple(levels), measure, p_best
    )


def margins_with(d, counts):
    """Margins set by hand: ``counts[factor][level] = {arm: n}``."""
    m = pocock.Margins(d)
    for f, per_level in enumerate(counts):
        for level, row in enumerate(per_level):
            m.counts[f][level].update(row)
    return m


# (arms, weights, measure, margins of the participant's levels (factor 0 level 0, factor 1
#  level 0), expected G per arm, expected arm) — worked out by hand below each row.
TABLE = [
    # S1: A2 B1; low: A1 B1.  A → |3-1| + |2-1| = 3;  B → |2-2| + |1-2| = 1.
    (AB, (1, 1), "range", [{"A": 2, "B": 1}, {"A": 1, "B": 1}], [3, 1], "B"),
    # S1: A1 B3; low: A2 B1, grade weighs 2.  A → 1 + 2·2 = 5;  B → 3 + 2·0 = 3.
    (AB, (1, 2), "range", [{"A": 1, "B": 3}, {"A": 2, "B": 1}], [5, 3], "B"),
    # S1: A1 B3; low: A2 B1, site weighs 3.  A → 3·1 + 2 = 5;  B → 3·3 + 0 = 9.
    (AB, (3, 1), "range", [{"A": 1, "B": 3}, {"A": 2, "B": 1}], [5, 9], "A"),
    # S1: A3 B0; low: A0 B1, variance ((x-y)/2)².  A → 4 + 0 = 4;  B → 1 + 1 = 2.
    (AB, (1, 1), "variance", [{"A": 3, "B": 0}, {"A": 0, "B": 1}], [4, 2], "B"),
    # 2:1, counts A2 B1 in both factors: x = n/ratio.  A → 2·|3/2-1| = 1;  B → 2·|1-2| = 2.
    ((ArmRatio("A", 2), ArmRatio("B", 1)), (1, 1), "range",
     [{"A": 2, "B": 1}, {"A": 2, "B": 1}], [1, 2], "A"),
    # 2:1, counts A2 B0 and A0 B0.  A → 3/2 + 1/2 = 2;  B → 0 + 1 = 1.
    ((ArmRatio("A", 2), ArmRatio("B", 1)), (1, 1), "range",
     [{"A": 2, "B": 0}, {"A": 0, "B": 0}], [2, 1], "B"),
    # three arms 1:1:1, S1: A0 B1 C1; low: A0 B1 C1.  A → 0 + 0 = 0; B → 2 + 2 = 4;
    # C → 2 + 2 = 4.
    ((ArmRatio("A", 1), ArmRatio("B", 1), ArmRatio("C", 1)), (1, 1), "range",
     [{"A": 0, "B": 1, "C": 1}, {"A": 0, "B": 1, "C": 1}], [0, 4, 4], "A"),
    # three arms, S1: A1 B1 C0; low: A0 B1 C1.  A → 1 + 1 = 2; B → 2 + 2 = 4; C → 0 + 2 = 2:
    # a tie between A and C, so only B is never drawn (checked below).
]  # fmt: skip


@pytest.mark.parametrize(("arms", "weights", "measure", "seen", "scores", "arm"), TABLE)
@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32))], ids=["zeros", "counting"])
def test_with_p_best_one_the_choice_is_the_hand_computed_minimizer(
    arms, weights, measure, seen, scores, arm, seed
):
    d = design(arms, weights, measure=measure)
    m = margins_with(d, [[seen[0], {}], [seen[1], {}]])
    assert pocock.imbalances(m, (0, 0)) == [Fraction(s) for s in scores]
    for step in (1, 2, 17):
        assert pocock.draw(m, seed, step, (0, 0)).arm == arm


def test_a_three_arm_tie_draws_only_the_tied_arms():
    arms = (ArmRatio("A", 1), ArmRatio("B", 1), ArmRatio("C", 1))
    d = design(arms)
    m = margins_with(d, [[{"A": 1, "B": 1, "C": 0}, {}], [{"A": 0, "B": 1, "C": 1}, {}]])
    assert pocock.imbalances(m, (0, 0)) == [2, 4, 2]
    assert {pocock.draw(m, bytes(32), step, (0, 0)).arm for step in range(1, 40)} == {"A", "C"}


def test_a_tie_is_broken_by_the_seed_and_both_arms_occur():
    d = design()
    m = pocock.Margins(d)
    drawn = {pocock.draw(m, bytes(32), step, (0, 1)).arm for step in range(1, 40)}
    assert drawn == {"A", "B"}


def test_p_best_is_the_share_of_minimizing_choices():
    d = design(p_best=Fraction(4, 5))
    m = margins_with(d, [[{"A": 1, "B": 0}, {}], [{}, {}]])  # B minimizes for level (0, 0)
    picks = [pocock.draw(m, bytes(32), step, (0, 0)).arm for step in range(1, 2001)]
    assert abs(picks.count("B") / len(picks) - 0.8) < 0.03


def _levels(data, counts, n):
    return [tuple(data.draw(st.integers(0, k - 1)) for k in counts) for _ in range(n)]


def _check_level_bound(d, seed, history, factor):
    m = pocock.Margins(d)
    for made in pocock.replay(d, seed, history):
        m.add(made.levels, made.arm)
        for level in range(d.level_counts[factor]):
            assert m.difference(factor, level) <= 1
    return m


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    levels=st.integers(1, 4),
    measure=st.sampled_from(["range", "variance"]),
    seed=st.binary(min_size=32, max_size=32),
    n=st.integers(1, 60),
)
def test_one_factor_stays_within_one_at_every_level(data, levels, measure, seed, n):
    d = design(weights=(1,), levels=(levels,), measure=measure)
    _check_level_bound(d, seed, _levels(data, (levels,), n), 0)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    counts=st.lists(st.integers(2, 3), min_size=2, max_size=3),
    others=st.lists(st.integers(1, 3), min_size=2, max_size=2),
    seed=st.binary(min_size=32, max_size=32),
    n=st.integers(1, 60),
)
def test_a_dominant_factor_stays_within_one_and_bounds_the_total(data, counts, others, seed, n):
    rest = others[: len(counts) - 1]
    d = design(weights=(sum(rest) + 1, *rest), levels=tuple(counts))
    m = _check_level_bound(d, seed, _levels(data, counts, n), 0)
    total = sum(m.counts[0][level]["A"] - m.counts[0][level]["B"] for level in range(counts[0]))
    assert abs(total) <= counts[0]


def _random_history(seed: bytes, counts: tuple[int, ...], n: int) -> list[tuple[int, ...]]:
    g = Generator(seed)
    return [tuple(g.randbelow(k) for k in counts) for _ in range(n)]


@pytest.mark.parametrize(
    "seed", [bytes(32), bytes([7]) * 32, bytes(range(32))], ids=["zeros", "sevens", "counting"]
)
def test_with_ratio_two_to_one_the_proportions_converge_to_the_ratio(seed):
    d = design(arms=(ArmRatio("A", 2), ArmRatio("B", 1)), levels=(2, 3), p_best=Fraction(4, 5))
    draws = list(pocock.replay(d, seed, _random_history(seed, (2, 3), 1500)))
    share = sum(made.arm == "A" for made in draws) / len(draws)
    assert abs(share - 2 / 3) < 0.01
    # Pearson's chi-square against 2:1 stays far below the 5% critical value (3.84, 1 df).
    observed_a = sum(made.arm == "A" for made in draws)
    expected_a, expected_b = len(draws) * 2 / 3, len(draws) / 3
    chi2 = (observed_a - expected_a) ** 2 / expected_a + (
        len(draws) - observed_a - expected_b
    ) ** 2 / expected_b
    assert chi2 < 3.84


def test_replay_is_deterministic_and_depends_on_the_seed():
    d = design(p_best=Fraction(4, 5))
    history = _random_history(bytes(32), (2, 2), 200)
    first = [m.arm for m in pocock.replay(d, bytes(32), history)]
    assert first == [m.arm for m in pocock.replay(d, bytes(32), history)]
    assert first != [m.arm for m in pocock.replay(d, bytes([1]) * 32, history)]


def test_levels_that_do_not_fit_the_factors_are_refused():
    d = design()
    with pytest.raises(ValueError, match="do not fit"):
        pocock.draw(pocock.Margins(d), bytes(32), 1, (0, 2))


def test_guess_probability_of_a_unique_minimizer_is_p_best():
    d = design(p_best=Fraction(4, 5))
    m = margins_with(d, [[{"A": 1, "B": 0}, {}], [{}, {}]])
    assert pocock.guess_probability(m, (0, 0)) == Fraction(4, 5)
    assert pocock.guess_probability(pocock.Margins(d), (0, 0)) == Fraction(1, 2)
