"""``[randomization] method`` and ``[randomization.minimization]`` of a study file (SPEC §4.4).

Pure, like ``studydef`` (which calls :func:`parse_method`): the reader passed in is
``studydef``'s table reader, so every refusal names the file, the field and the reason.

```toml
[randomization]
method = "minimization"            # or "permuted-blocks" (the default)

[randomization.minimization]
factors = ["site", "isn_class"]    # default: site (when stratify_by_site) and every factor
weights = { site = 1, isn_class = 2 }   # default 1 each
measure = "range"                  # or "variance": of the ratio-scaled marginal totals
p_best = 0.8                       # probability of the arm that minimizes imbalance
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol

Method = Literal["permuted-blocks", "minimization"]
Measure = Literal["range", "variance"]

METHODS: dict[str, Method] = {"permuted-blocks": "permuted-blocks", "minimization": "minimization"}
MEASURES: dict[str, Measure] = {"range": "range", "variance": "variance"}
#: The pseudo-factor that stands for the participant's site.
SITE = "site"
#: ``p_best`` is drawn against an integer out of this many (so at most 6 decimals).
P_SCALE = 1_000_000
#: The keys ``[randomization.minimization]`` accepts.
KEYS = ("factors", "weights", "measure", "p_best")
_MAX_WEIGHT = 1000
#: Bytes a minimization slot's sealed record may use (the padded plaintext holds 95).
RECORD_BUDGET = 95


class _Reader(Protocol):
    """What this module needs of ``studydef``'s table reader."""

    data: dict[str, Any]

    def error(self, key: str, reason: str) -> ValueError: ...

    def choice(self, key: str, options: Mapping[str, Any]) -> Any: ...

    def number(self, key: str) -> float | None: ...

    def table(self, key: str, kind: str) -> _Reader: ...


def read_method(randomization: _Reader) -> Method:
    """``[randomization] method`` (read first: block sizes are optional under minimization)."""
    if "method" not in randomization.data:
        return "permuted-blocks"
    method: Method = randomization.choice("method", METHODS)
    return method


@dataclass(frozen=True, slots=True)
class MinimizationFactor:
    """One margin minimization balances: ``site`` or a stratification factor, its weight."""

    code: str
    weight: Fraction
    levels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MinimizationDef:
    factors: tuple[MinimizationFactor, ...]
    measure: Measure
    #: Probability of the minimizing arm, exact (a decimal of at most 6 places).
    p_best: Fraction

    def levels_of(self, site: str, factors: Mapping[str, str]) -> tuple[int, ...]:
        """The participant's level index in each minimization factor (KeyError/ValueError
        when a level is unknown: the caller has validated the answers already)."""
        return tuple(
            f.levels.index(site if f.code == SITE else factors[f.code]) for f in self.factors
        )


def parse_minimization(
    randomization: _Reader,
    *,
    method: Method,
    arms: Sequence[tuple[str, int]],
    factors: Sequence[tuple[str, tuple[str, ...]]],
    sites: tuple[str, ...],
    stratify_by_site: bool,
) -> MinimizationDef | None:
    """Under minimization, its checked parameters (None for permuted blocks)."""
    minimization = None
    if "minimization" in randomization.data:
        minimization = randomization.table("minimization", "[randomization.minimization]")
    if method == "permuted-blocks":
        if minimization is not None:
            raise randomization.error("minimization", 'is read only with method = "minimization"')
        return None
    if minimization is None:
        raise randomization.error(
            "minimization", 'is required with method = "minimization" (add the table)'
        )
    known = dict(factors)
    used = _factor_codes(minimization, known, stratify_by_site)
    weights = _weights(minimization, used)
    levels = {**known, SITE: sites}
    chosen = tuple(MinimizationFactor(c, weights[c], levels[c]) for c in used)
    measure: Measure = "range"
    if "measure" in minimization.data:
        measure = minimization.choice("measure", MEASURES)
    definition = MinimizationDef(chosen, measure, _p_best(minimization, len(arms)))
    _check_record_fits(minimization, definition, arms)
    return definition


def _factor_codes(
    t: _Reader, known: Mapping[str, tuple[str, ...]], stratify_by_site: bool
) -> list[str]:
    default = ([SITE] if stratify_by_site else []) + list(known)
    raw = t.data.get("factors", default)
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        raise t.error("factors", "must be a non-empty array of factor codes")
    for i, code in enumerate(raw):
        if code == SITE and not stratify_by_site:
            raise t.error(f"factors[{i}]", '"site" is a factor only when stratify_by_site = true')
        if code != SITE and code not in known:
            choices = ", ".join([SITE] * stratify_by_site + list(known)) or "none"
            raise t.error(f"factors[{i}]", f"unknown factor {code!r} (choose from {choices})")
        if code in raw[:i]:
            raise t.error(f"factors[{i}]", f"duplicate factor {code!r}")
    return list(raw)


def _weights(t: _Reader, used: list[str]) -> dict[str, Fraction]:
    raw = t.data.get("weights", {})
    if not isinstance(raw, dict):
        raise t.error("weights", "must be a table of factor = weight")
    out = {code: Fraction(1) for code in used}
    for code, value in raw.items():
        key = f"weights.{code}"
        if code not in out:
            raise t.error(key, f"is not one of the factors used ({', '.join(used)})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise t.error(key, "must be a positive number")
        weight = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
        if not 0 < weight <= _MAX_WEIGHT:
            raise t.error(key, f"must be above 0 and at most {_MAX_WEIGHT} (got {value})")
        out[code] = weight
    return out


def _p_best(t: _Reader, arm_count: int) -> Fraction:
    if "p_best" not in t.data:
        raise t.error("p_best", "is required (the probability of the minimizing arm, e.g. 0.8)")
    value = t.number("p_best")
    assert value is not None
    p = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    floor = Fraction(1, arm_count)
    if not floor < p <= 1:
        raise t.error("p_best", f"must be above 1/{arm_count} (pure chance) and at most 1 "
                                f"(got {value})")  # fmt: skip
    if (p * P_SCALE).denominator != 1:
        raise t.error("p_best", f"must have at most 6 decimal places (got {value})")
    return p


def _check_record_fits(t: _Reader, d: MinimizationDef, arms: Sequence[tuple[str, int]]) -> None:
    # arm, step, block size 0, draw, then one level index per factor (see minimization.py)
    longest = max(len(code) for code, _ in arms) + len("\x1f9999999\x1f0\x1f999999\x1f")
    longest += sum(len(str(len(f.levels) - 1)) + 1 for f in d.factors)
    if longest > RECORD_BUDGET:
        raise t.error("factors", "too many factors to record with each assignment (at most "
                                 f"{RECORD_BUDGET} bytes; use fewer factors)")  # fmt: skip
