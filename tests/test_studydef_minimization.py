"""``[randomization] method`` and ``[randomization.minimization]``: what parses, what is refused."""

from __future__ import annotations

from fractions import Fraction

import pytest

from randomizer.studydef import StudyDefinitionError, parse_study
from tests.conftest import SMALL_STUDY
from tests.minimization_support import MINIMIZATION_STUDY

SITE_LINE = "stratify_by_site = true\n"


def _with(table: str, method: str = 'method = "minimization"\n', base: str = SMALL_STUDY) -> str:
    return base.replace(SITE_LINE, SITE_LINE + method + table, 1)


def test_permuted_blocks_is_the_default_method() -> None:
    definition = parse_study(SMALL_STUDY)
    assert definition.method == "permuted-blocks" and definition.minimization is None


def test_minimization_parameters_are_read_exactly() -> None:
    d = parse_study(MINIMIZATION_STUDY)
    assert d.method == "minimization" and d.minimization is not None
    assert [(f.code, f.weight, f.levels) for f in d.minimization.factors] == [
        ("site", Fraction(1), ("S1", "S2")), ("grade", Fraction(2), ("low", "high"))
    ]  # fmt: skip
    assert d.minimization.measure == "range" and d.minimization.p_best == Fraction(4, 5)


def test_minimization_defaults_site_and_every_factor_with_weight_one() -> None:
    d = parse_study(_with("\n[randomization.minimization]\np_best = 0.75\n"))
    assert d.minimization is not None
    assert [(f.code, f.weight) for f in d.minimization.factors] == [
        ("site", 1), ("grade", 1)
    ]  # fmt: skip
    assert d.minimization.measure == "range" and d.minimization.p_best == Fraction(3, 4)


def test_block_sizes_are_optional_under_minimization() -> None:
    text = _with("\n[randomization.minimization]\np_best = 1\n").replace(
        "block_sizes = [2, 4]\n", ""
    )
    assert parse_study(text).block_sizes == (2, 4)


def test_minimization_levels_of_a_participant() -> None:
    d = parse_study(MINIMIZATION_STUDY)
    assert d.minimization is not None
    assert d.minimization.levels_of("S2", {"grade": "low"}) == (1, 0)


@pytest.mark.parametrize(
    ("table", "method", "field", "reason"),
    [
        ("", 'method = "minimisation"\n', "randomization.method",
         'must be "permuted-blocks" or "minimization"'),
        ("", None, "randomization.minimization", "is required"),
        ("\n[randomization.minimization]\np_best = 0.8\n", 'method = "permuted-blocks"\n',
         "randomization.minimization", 'only with method = "minimization"'),
        ("\n[randomization.minimization]\n", None, "randomization.minimization.p_best",
         "is required"),
        ("\n[randomization.minimization]\np_best = 0.5\n", None,
         "randomization.minimization.p_best", "above 1/2"),
        ("\n[randomization.minimization]\np_best = 1.1\n", None,
         "randomization.minimization.p_best", "at most 1"),
        ("\n[randomization.minimization]\np_best = 0.1234567\n", None,
         "randomization.minimization.p_best", "above 1/2"),
        ("\n[randomization.minimization]\np_best = 0.8765432\n", None,
         "randomization.minimization.p_best", "6 decimal places"),
        ('\n[randomization.minimization]\np_best = "high"\n', None,
         "randomization.minimization.p_best", "must be a number"),
        ('\n[randomization.minimization]\np_best = 0.8\nmeasure = "max"\n', None,
         "randomization.minimization.measure", 'must be "range" or "variance"'),
        ('\n[randomization.minimization]\np_best = 0.8\nfactors = ["age"]\n', None,
         "randomization.minimization.factors[0]", "unknown factor 'age'"),
        ('\n[randomization.minimization]\np_best = 0.8\nfactors = ["grade", "grade"]\n', None,
         "randomization.minimization.factors[1]", "duplicate factor"),
        ("\n[randomization.minimization]\np_best = 0.8\nfactors = []\n", None,
         "randomization.minimization.factors", "non-empty array"),
        ('\n[randomization.minimization]\np_best = 0.8\nfactors = ["grade"]\n'
         "weights = { site = 2 }\n", None, "randomization.minimization.weights.site",
         "not one of the factors used"),
        ("\n[randomization.minimization]\np_best = 0.8\nweights = { grade = 0 }\n", None,
         "randomization.minimization.weights.grade", "above 0"),
        ('\n[randomization.minimization]\np_best = 0.8\nweights = { grade = "x" }\n', None,
         "randomization.minimization.weights.grade", "positive number"),
        ("\n[randomization.minimization]\np_best = 0.8\nseed = 4\n", None,
         "randomization.minimization.seed", "unknown key"),
    ],
)  # fmt: skip
def test_bad_minimization_settings_are_refused_naming_the_field(
    table: str, method: str | None, field: str, reason: str
) -> None:
    text = _with(table) if method is None else _with(table, method)
    with pytest.raises(StudyDefinitionError) as caught:
        parse_study(text, "trial.toml")
    assert caught.value.filename == "trial.toml"
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_site_is_a_factor_only_when_stratified_by_site() -> None:
    text = _with('\n[randomization.minimization]\np_best = 0.8\nfactors = ["site", "grade"]\n')
    text = text.replace(SITE_LINE, "stratify_by_site = false\n")
    with pytest.raises(StudyDefinitionError, match="only when stratify_by_site = true"):
        parse_study(text)
