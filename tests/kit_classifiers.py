"""Simple classifiers that try to predict a kit's arm from its code or its place in the list.

Used by the kit tests. Each classifier is trained on one part of a kit list (code, list
position, arm) and predicts the arms of the other part.

The bound: under the hypothesis that the pairing of codes with arms is uniformly random
(what ``generate_kits`` claims), the test part's arms, given everything a classifier was
trained on, are a uniformly random arrangement of a fixed multiset over the test kits. A
classifier's predictions are fixed by then, so its expected accuracy is at most the share
of the test part's most common arm, and the number of hits is a hypergeometric count.
Serfling's inequality for sampling without replacement bounds the chance of exceeding
that share by ``t``: ``P(acc - E[acc] >= t) <= exp(-2 * t**2 * n)`` for ``n`` test kits
(two arms; the worst case is half the kits predicted in each arm). With n = 5,000 and
t = 0.04 that is exp(-16) ≈ 1.1e-7 per classifier: a failure means a real leak, not bad luck.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from randomizer import kitcodes

MARGIN = 0.04


@dataclass(frozen=True)
class Row:
    position: int  #: index in the kit list as exported (code order)
    raw: str  #: the code without its dash
    arm: str


Classifier = Callable[[Sequence[Row], Sequence[Row]], list[str]]


def rows_of(codes_and_arms: Sequence[tuple[str, str]]) -> list[Row]:
    """Rows in list order, as the export writes them."""
    return [
        Row(i, kitcodes.normalise(code), arm)
        for i, (code, arm) in enumerate(sorted(codes_and_arms))
    ]


def split(rows: Sequence[Row], seed: int = 4) -> tuple[list[Row], list[Row]]:
    """A random half for training and the rest for testing."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    half = len(shuffled) // 2
    return shuffled[:half], shuffled[half:]


def _majority(rows: Sequence[Row]) -> str:
    return Counter(r.arm for r in rows).most_common(1)[0][0]


def positional_characters(train: Sequence[Row], test: Sequence[Row]) -> list[str]:
    """Naive Bayes on the character at each position (Laplace smoothing)."""
    arms = sorted({r.arm for r in train})
    prior = Counter(r.arm for r in train)
    counts = {a: [Counter[str]() for _ in range(8)] for a in arms}
    for r in train:
        for i, c in enumerate(r.raw):
            counts[r.arm][i][c] += 1

    def score(arm: str, raw: str) -> float:
        n = prior[arm]
        return math.log(n) + sum(
            math.log((counts[arm][i][c] + 1) / (n + 29)) for i, c in enumerate(raw)
        )

    return [max(arms, key=lambda a: score(a, r.raw)) for r in test]


def character_frequencies(train: Sequence[Row], test: Sequence[Row]) -> list[str]:
    """Multinomial naive Bayes on how often each character occurs in the code."""
    arms = sorted({r.arm for r in train})
    prior = Counter(r.arm for r in train)
    counts = {a: Counter[str]() for a in arms}
    for r in train:
        counts[r.arm].update(r.raw)
    totals = {a: sum(counts[a].values()) for a in arms}

    def score(arm: str, raw: str) -> float:
        return math.log(prior[arm]) + sum(
            math.log((counts[arm][c] + 1) / (totals[arm] + 29)) for c in raw
        )

    return [max(arms, key=lambda a: score(a, r.raw)) for r in test]


def _value(raw: str) -> int:
    return sum(kitcodes.ALPHABET.index(c) * 29**i for i, c in enumerate(reversed(raw[:7])))


def numeric_value(train: Sequence[Row], test: Sequence[Row], bins: int = 100) -> list[str]:
    """The majority arm of the training kits whose code, read as a number, is in the same bin."""
    top = 29**7
    by_bin: dict[int, Counter[str]] = {}
    for r in train:
        by_bin.setdefault(_value(r.raw) * bins // top, Counter())[r.arm] += 1
    fallback = _majority(train)
    out = []
    for r in test:
        found = by_bin.get(_value(r.raw) * bins // top)
        out.append(found.most_common(1)[0][0] if found else fallback)
    return out


def _known_neighbours(train: Sequence[Row], test: Sequence[Row], group: Callable[[int], object]):
    known: dict[object, Counter[str]] = {}
    for r in train:
        known.setdefault(group(r.position), Counter())[r.arm] += 1
    return [known.get(group(r.position), Counter()) for r in test]


def _least_seen(arms: list[str], seen: Counter[str], fallback: str) -> str:
    low = min(seen[a] for a in arms)
    choices = [a for a in arms if seen[a] == low]
    return choices[0] if len(choices) == 1 else fallback


def list_block_mates(train: Sequence[Row], test: Sequence[Row], block: int = 4) -> list[str]:
    """If arms were balanced in blocks along the list, a kit's arm would be the one its
    known block mates (same aligned group of ``block`` list positions) lack."""
    arms = sorted({r.arm for r in train})
    fallback = _majority(train)
    seen = _known_neighbours(train, test, lambda p: p // block)
    return [_least_seen(arms, s, fallback) for s in seen]


def list_neighbours(train: Sequence[Row], test: Sequence[Row]) -> list[str]:
    """The arm least seen among the known kits at the two list positions on either side."""
    arms = sorted({r.arm for r in train})
    fallback = _majority(train)
    by_position = {r.position: r.arm for r in train}
    out = []
    for r in test:
        seen = Counter(
            by_position[p] for p in (r.position - 2, r.position - 1, r.position + 1,
                                     r.position + 2) if p in by_position
        )  # fmt: skip
        out.append(_least_seen(arms, seen, fallback))
    return out


CLASSIFIERS: dict[str, Classifier] = {
    "positional characters": positional_characters,
    "character frequencies": character_frequencies,
    "numeric value": numeric_value,
    "list block mates": list_block_mates,
    "list neighbours": list_neighbours,
}


def accuracy(predicted: Sequence[str], test: Sequence[Row]) -> float:
    return sum(p == r.arm for p, r in zip(predicted, test, strict=True)) / len(test)


def chance(test: Sequence[Row]) -> float:
    """The share of the most common arm in the test part: the best a blind guess expects."""
    return Counter(r.arm for r in test).most_common(1)[0][1] / len(test)


def scores(rows: Sequence[Row]) -> dict[str, tuple[float, float]]:
    """Per classifier: (accuracy on the test half, chance level of that half)."""
    train, test = split(rows)
    return {
        name: (accuracy(fit(train, test), test), chance(test)) for name, fit in CLASSIFIERS.items()
    }
