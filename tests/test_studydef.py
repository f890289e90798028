"""Study definition files: what parses, what is refused (naming the field), strata, eligibility."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from randomizer.studydef import (
    DEFAULT_UNBLINDING_REASONS,
    ContactDef,
    InvalidAnswer,
    StudyDefinition,
    StudyDefinitionError,
    load_demo_study,
    load_study_file,
    parse_study,
)

DEMO_FILE = Path(__file__).parent.parent / "randomizer" / "studies" / "NCT03917797.toml"

# The example of SPEC.md §4.3, verbatim.
SPEC_EXAMPLE = """\
[study]
code = "MSC-LN-2B"                 # short code used in URLs and commands
title = "Umbilical cord MSC in severe renal SLE, Phase IIb"
registry_id = "NCT03917797"

[[arms]]
code = "MSC"
name = "Umbilical cord-derived mesenchymal stromal cells"
ratio = 1

[[arms]]
code = "PBO"
name = "Placebo (infusion vehicle)"
ratio = 1

[randomization]
block_sizes = [2, 4]               # each a multiple of the ratio sum
per_stratum = 40                   # default list length per stratum
stratify_by_site = true

[[factors]]                        # stratification factors besides site (zero or more)
code = "isn_class"
name = "ISN/RPS class on biopsy"
levels = ["III", "IV"]

[[sites]]
code = "CUA"
name = "Clínica Universidad de los Andes"

[[sites]]
code = "HBLT"
name = "Hospital Barros Luco Trudeau"

[[visits]]
code = "baseline"
day = 0
dispense = true

[[visits]]
code = "month_6"
day = 182
window_days = 14
dispense = true

[[eligibility]]                    # kind: inclusion | exclusion; type: boolean | number
code = "age"
text = "Age at screening (years), 18 to 75"
kind = "inclusion"
type = "number"
min = 18
max = 75
"""

# The study of the shared contract_check.py (variable STUDY), verbatim.
CONTRACT_CHECK_STUDY = """
[study]
code = "CHK"
title = "Contract check"
registry_id = "NCT00000000"

[[arms]]
code = "ACTV9Q"
name = "Active"
ratio = 1

[[arms]]
code = "PLCB9Q"
name = "Placebo"
ratio = 1

[randomization]
block_sizes = [2, 4]
per_stratum = 20
stratify_by_site = true

[[factors]]
code = "grade"
name = "Grade"
levels = ["low", "high"]

[[sites]]
code = "S1"
name = "Site one"

[[sites]]
code = "S2"
name = "Site two"

[[visits]]
code = "baseline"
day = 0
dispense = true

[[visits]]
code = "month_6"
day = 182
window_days = 14
dispense = true

[[eligibility]]
code = "consent"
text = "Signed informed consent"
kind = "inclusion"
type = "boolean"

[[eligibility]]
code = "age"
text = "Age in years"
kind = "inclusion"
type = "number"
min = 18
max = 75
"""

# Answers under which a demo participant is eligible.
DEMO_ELIGIBLE: dict[str, object] = {
    "age": 40,
    "sle_classification": True,
    "seropositive": True,
    "biopsy_class_iii_iv": True,
    "active_urinary_sediment": True,
    "upc_ratio": 2.5,
    "egfr": 75,
    "recent_therapy_3m": False,
    "cyclophosphamide_6m": False,
    "anti_b_cell_12m": False,
    "uncontrolled_morbidity": False,
    "pregnancy": False,
    "uncontrolled_infection": False,
    "neoplastic_disease": False,
    "pending_surgery": False,
}


@pytest.fixture(scope="module")
def demo() -> StudyDefinition:
    return load_study_file(DEMO_FILE)[0]


FIRST_SITE = '[[sites]]\ncode = "CUA"\nname = "Clínica Universidad de los Andes"\n\n'
SECOND_SITE = '[[sites]]\ncode = "HBLT"\nname = "Hospital Barros Luco Trudeau"\n'
FACTOR = SPEC_EXAMPLE[SPEC_EXAMPLE.index("[[factors]]") : SPEC_EXAMPLE.index("[[sites]]")]
RANDOMIZATION = SPEC_EXAMPLE[
    SPEC_EXAMPLE.index("[randomization]") : SPEC_EXAMPLE.index("[[factors]]")
]


def variant(old: str, new: str, base: str = SPEC_EXAMPLE) -> str:
    """The base file with the first occurrence of ``old`` replaced."""
    assert old in base, old
    return base.replace(old, new, 1)


def refusal(text: str) -> StudyDefinitionError:
    with pytest.raises(StudyDefinitionError) as caught:
        parse_study(text, "study.toml")
    return caught.value


# --- valid files ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [SPEC_EXAMPLE, CONTRACT_CHECK_STUDY], ids=["spec", "contract"])
def test_reference_examples_parse(text: str) -> None:
    study = parse_study(text)
    assert len(study.arms) == 2
    assert study.block_sizes == (2, 4)
    assert study.stratify_by_site is True


def test_demo_study_matches_the_registry_record(demo: StudyDefinition) -> None:
    assert (demo.code, demo.registry_id) == ("MSC-LN-2B", "NCT03917797")
    assert demo.title == "Umbilical cord MSC in severe renal SLE, Phase IIb"
    assert [(a.code, a.name, a.ratio) for a in demo.arms] == [
        ("MSC", "Umbilical cord-derived mesenchymal stromal cells", 1),
        ("PBO", "Placebo (infusion vehicle)", 1),
    ]
    assert (demo.block_sizes, demo.per_stratum, demo.ratio_sum) == ((2, 4), 40, 2)
    assert [(s.code, s.name, s.trigger_level, s.resupply_level) for s in demo.sites] == [
        ("CUA", "Clínica Universidad de los Andes", 2, 6),
        ("HBLT", "Hospital Barros Luco Trudeau", 2, 6),
    ]
    assert [(v.code, v.day, v.window_days, v.dispense) for v in demo.visits] == [
        ("baseline", 0, 0, True),
        ("month_6", 182, 14, True),
    ]
    assert demo.factor("isn_class").levels == ("III", "IV")
    assert ContactDef("Sponsor safety desk, Universidad de los Andes", "safety@example.org") in (
        demo.sponsor_contacts
    )
    assert demo.assessors_see_unblinding is False


def test_demo_study_carries_every_registry_criterion(demo: StudyDefinition) -> None:
    assert [(c.code, c.kind) for c in demo.eligibility] == [
        ("age", "inclusion"),
        ("sle_classification", "inclusion"),
        ("seropositive", "inclusion"),
        ("biopsy_class_iii_iv", "inclusion"),
        ("active_urinary_sediment", "inclusion"),
        ("upc_ratio", "inclusion"),
        ("egfr", "exclusion"),
        ("recent_therapy_3m", "exclusion"),
        ("cyclophosphamide_6m", "exclusion"),
        ("anti_b_cell_12m", "exclusion"),
        ("uncontrolled_morbidity", "exclusion"),
        ("pregnancy", "exclusion"),
        ("uncontrolled_infection", "exclusion"),
        ("neoplastic_disease", "exclusion"),
        ("pending_surgery", "exclusion"),
    ]


def test_load_study_file_returns_the_text_as_read() -> None:
    study, text = load_study_file(DEMO_FILE)
    assert text == DEMO_FILE.read_text(encoding="utf-8")
    assert parse_study(text) == study


def test_demo_study_loads_from_the_package(demo: StudyDefinition) -> None:
    study, text = load_demo_study()
    assert study == demo
    assert text == DEMO_FILE.read_text(encoding="utf-8")


def test_file_with_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + SPEC_EXAMPLE.encode())
    study, text = load_study_file(path)
    assert study.code == "MSC-LN-2B"
    assert text == SPEC_EXAMPLE


def test_optional_study_fields_take_their_defaults() -> None:
    study = parse_study(SPEC_EXAMPLE)
    assert study.sponsor_contacts == ()
    assert study.unblinding_reasons == DEFAULT_UNBLINDING_REASONS
    assert study.assessors_see_unblinding is False
    assert (study.site("CUA").trigger_level, study.site("CUA").resupply_level) == (2, 6)
    assert study.visit("baseline").window_days == 0
    assert (study.bulk_export_signers, study.expected_enrolment) == (1, None)


def test_the_demo_study_needs_two_signers_for_a_bulk_unblinding(demo: StudyDefinition) -> None:
    assert demo.bulk_export_signers == 2
    assert demo.expected_enrolment == 39


def test_eligibility_may_be_empty() -> None:
    text = SPEC_EXAMPLE[: SPEC_EXAMPLE.index("[[eligibility]]")]
    study = parse_study(text)
    assert study.eligibility == ()
    assert study.evaluate_eligibility({}) == []


def test_lookup_of_unknown_code_raises_key_error(demo: StudyDefinition) -> None:
    assert demo.arm("PBO").name == "Placebo (infusion vehicle)"
    with pytest.raises(KeyError):
        demo.arm("XYZ")
    with pytest.raises(KeyError):
        demo.visit("month_12")


# --- strata -----------------------------------------------------------------------------------


def test_demo_strata_are_sites_crossed_with_isn_class(demo: StudyDefinition) -> None:
    assert demo.strata() == [
        "CUA|isn_class=III",
        "CUA|isn_class=IV",
        "HBLT|isn_class=III",
        "HBLT|isn_class=IV",
    ]


@pytest.mark.parametrize(
    ("stratify_by_site", "with_factor", "strata", "key"),
    [
        (True, True, ["CUA|isn_class=III", "CUA|isn_class=IV"], "CUA|isn_class=IV"),
        (False, True, ["isn_class=III", "isn_class=IV"], "isn_class=IV"),
        (True, False, ["CUA"], "CUA"),
        (False, False, ["all"], "all"),
    ],
)
def test_stratum_key_format(
    stratify_by_site: bool, with_factor: bool, strata: list[str], key: str
) -> None:
    text = variant("stratify_by_site = true", f"stratify_by_site = {str(stratify_by_site).lower()}")
    text = variant(SECOND_SITE, "", text)
    if not with_factor:
        text = variant(FACTOR, "", text)
    study = parse_study(text)
    assert study.strata() == strata
    assert study.stratum_key("CUA", {"isn_class": "IV"} if with_factor else {}) == key


def test_every_stratum_key_is_one_of_the_strata(demo: StudyDefinition) -> None:
    sites, levels = ("CUA", "HBLT"), ("III", "IV")
    keys = [demo.stratum_key(site, {"isn_class": level}) for site in sites for level in levels]
    assert keys == demo.strata()


@pytest.mark.parametrize(
    ("site", "factors", "field"),
    [
        ("XYZ", {"isn_class": "IV"}, "site"),
        ("cua", {"isn_class": "IV"}, "site"),
        ("CUA", {"isn_class": "V"}, "factors.isn_class"),
        ("CUA", {"isn_class": "iv"}, "factors.isn_class"),
        ("CUA", {}, "factors.isn_class"),
        ("CUA", {"isn_class": "IV", "sex": "F"}, "factors.sex"),
    ],
)
def test_stratum_key_refuses_unknown_site_or_level(
    demo: StudyDefinition, site: str, factors: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidAnswer) as caught:
        demo.stratum_key(site, factors)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


# --- eligibility ------------------------------------------------------------------------------


def test_demo_participant_meeting_every_criterion_is_eligible(demo: StudyDefinition) -> None:
    assert demo.evaluate_eligibility(DEMO_ELIGIBLE) == []


@pytest.mark.parametrize(
    ("code", "answer", "eligible"),
    [
        ("age", 18, True),
        ("age", 75, True),
        ("age", 17, False),
        ("age", 76, False),
        ("age", 75.5, False),
        ("upc_ratio", 1, True),
        ("upc_ratio", 12.0, True),
        ("upc_ratio", 0.99, False),
        ("egfr", 40, True),
        ("egfr", 40.0, True),
        ("egfr", 120, True),
        ("egfr", 39, False),
        ("egfr", 39.9999, False),
        ("egfr", 0, False),
        ("seropositive", False, False),
        ("biopsy_class_iii_iv", False, False),
        ("pregnancy", True, False),
        ("pending_surgery", True, False),
    ],
)
def test_eligibility_numbers_and_booleans(
    demo: StudyDefinition, code: str, answer: object, eligible: bool
) -> None:
    failed = demo.evaluate_eligibility({**DEMO_ELIGIBLE, code: answer})
    assert failed == ([] if eligible else [code])


def test_failed_criteria_come_in_file_order(demo: StudyDefinition) -> None:
    answers = {**DEMO_ELIGIBLE, "pregnancy": True, "age": 80, "egfr": 20}
    assert demo.evaluate_eligibility(answers) == ["age", "egfr", "pregnancy"]


@pytest.mark.parametrize(
    ("kind", "answer", "failed"),
    [
        ("inclusion", 5, False),
        ("inclusion", 11, True),
        ("exclusion", 5, True),
        ("exclusion", 11, False),
        ("exclusion", 1, True),
    ],
)
def test_number_range_includes_inside_and_excludes_inside(
    kind: str, answer: int, failed: bool
) -> None:
    text = variant('kind = "inclusion"', f'kind = "{kind}"')
    study = parse_study(variant("min = 18\nmax = 75", "min = 1\nmax = 10", text))
    assert study.evaluate_eligibility({"age": answer}) == (["age"] if failed else [])


@pytest.mark.parametrize(
    ("answers", "field"),
    [
        ({k: v for k, v in DEMO_ELIGIBLE.items() if k != "egfr"}, "eligibility.egfr"),
        ({**DEMO_ELIGIBLE, "smoker": False}, "eligibility.smoker"),
        ({**DEMO_ELIGIBLE, "pregnancy": 0}, "eligibility.pregnancy"),
        ({**DEMO_ELIGIBLE, "pregnancy": "no"}, "eligibility.pregnancy"),
        ({**DEMO_ELIGIBLE, "pregnancy": None}, "eligibility.pregnancy"),
        ({**DEMO_ELIGIBLE, "age": True}, "eligibility.age"),
        ({**DEMO_ELIGIBLE, "age": "40"}, "eligibility.age"),
        ({**DEMO_ELIGIBLE, "age": float("nan")}, "eligibility.age"),
        ({**DEMO_ELIGIBLE, "egfr": float("inf")}, "eligibility.egfr"),
    ],
    ids=[
        "missing",
        "unknown",
        "int-bool",
        "str-bool",
        "null",
        "bool-number",
        "str-number",
        "nan",
        "inf",
    ],
)
def test_invalid_answers_are_refused_naming_the_criterion(
    demo: StudyDefinition, answers: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidAnswer) as caught:
        demo.evaluate_eligibility(answers)
    assert caught.value.field == field


# --- refused files ----------------------------------------------------------------------------

CONTACTS = 'registry_id = "NCT03917797"\nsponsor_contacts = [{name = "Desk", email = "%s"}]'
SECOND_ARM = '[[arms]]\ncode = "PBO"\nname = "Placebo (infusion vehicle)"\nratio = 1\n'
DUPLICATE_CRITERION = (
    '\n[[eligibility]]\ncode = "AGE"\ntext = "again"\nkind = "inclusion"\ntype = "boolean"\n'
)

MALFORMED = [
    # (id, old, new, field, words in the reason)
    ("study-code-missing", 'code = "MSC-LN-2B"', "", "study.code", "required"),
    ("study-code-slash", '"MSC-LN-2B"', '"MSC/LN"', "study.code", "letters"),
    ("study-code-newline", '"MSC-LN-2B"', '"MSC\\n"', "study.code", "letters"),
    ("study-code-too-long", '"MSC-LN-2B"', '"' + "A" * 33 + '"', "study.code", "32"),
    (
        "title-empty",
        '"Umbilical cord MSC in severe renal SLE, Phase IIb"',
        '" "',
        "study.title",
        "non-empty",
    ),
    ("no-study-table", "[study]", "[studies]", "studies", 'did you mean "study"'),
    ("ratio-string", "ratio = 1", 'ratio = "1"', "arms[0].ratio", "positive integer"),
    ("ratio-zero", "ratio = 1", "ratio = 0", "arms[0].ratio", "positive integer (got 0)"),
    ("ratio-bool", "ratio = 1", "ratio = true", "arms[0].ratio", "(got true)"),
    ("ratio-float", "ratio = 1", "ratio = 1.0", "arms[0].ratio", "(got 1.0)"),
    ("arm-name-missing", 'name = "Placebo (infusion vehicle)"\n', "", "arms[1].name", "required"),
    ("arm-code-space", 'code = "MSC"', 'code = "M SC"', "arms[0].code", "letters"),
    ("arm-duplicate", 'code = "PBO"', 'code = "MSC"', "arms[1].code", "duplicate"),
    ("arm-duplicate-case", 'code = "PBO"', 'code = "msc"', "arms[1].code", "arms[0].code"),
    ("one-arm", SECOND_ARM, "", "arms", "at least 2"),
    ("block-not-multiple", "[2, 4]", "[2, 3]", "randomization.block_sizes[1]", "multiple"),
    (
        "block-not-multiple-of-3",
        "ratio = 1\n\n[randomization]",
        "ratio = 2\n\n[randomization]",
        "randomization.block_sizes[0]",
        "ratio sum 3",
    ),
    ("block-duplicate", "[2, 4]", "[4, 4]", "randomization.block_sizes[1]", "duplicate"),
    ("block-empty", "[2, 4]", "[]", "randomization.block_sizes", "non-empty"),
    ("block-negative", "[2, 4]", "[-2]", "randomization.block_sizes[0]", "positive"),
    (
        "per-stratum-zero",
        "per_stratum = 40",
        "per_stratum = 0",
        "randomization.per_stratum",
        "positive",
    ),
    (
        "per-stratum-huge",
        "per_stratum = 40",
        "per_stratum = 40000000",
        "randomization.per_stratum",
        "at most",
    ),
    (
        "stratify-not-bool",
        "stratify_by_site = true",
        'stratify_by_site = "yes"',
        "randomization.stratify_by_site",
        "true or false",
    ),
    (
        "stratify-typo",
        "stratify_by_site",
        "stratify_by_sites",
        "randomization.stratify_by_sites",
        'did you mean "stratify_by_site"',
    ),
    ("table-typo", "[randomization]", "[randomisation]", "randomisation", "did you mean"),
    ("randomization-missing", RANDOMIZATION, "", "randomization", "[randomization]"),
    (
        "per-stratum-in-study",
        'registry_id = "NCT03917797"',
        'registry_id = "NCT03917797"\nper_stratum = 40',
        "study.per_stratum",
        "[randomization]",
    ),
    (
        "key-after-factors",
        'levels = ["III", "IV"]',
        'levels = ["III", "IV"]\nper_stratum = 2',
        "factors[0].per_stratum",
        "[randomization]",
    ),
    ("levels-empty", '["III", "IV"]', "[]", "factors[0].levels", "non-empty"),
    ("level-duplicate", '["III", "IV"]', '["III", "III"]', "factors[0].levels[1]", "duplicate"),
    ("level-pipe", '["III", "IV"]', '["III|IV"]', "factors[0].levels[0]", '"|"'),
    ("level-equals", '["III", "IV"]', '["III", "c=IV"]', "factors[0].levels[1]", '"="'),
    ("level-tab", '["III", "IV"]', '["III\\t", "IV"]', "factors[0].levels[0]", "control"),
    ("level-not-string", '["III", "IV"]', '["III", 4]', "factors[0].levels[1]", "(got 4)"),
    ("site-duplicate", 'code = "HBLT"', 'code = "CUA"', "sites[1].code", "duplicate"),
    ("no-sites", FIRST_SITE + SECOND_SITE, "", "sites", "required"),
    (
        "trigger-equals-resupply",
        'name = "Hospital Barros Luco Trudeau"',
        'name = "Hospital Barros Luco Trudeau"\ntrigger_level = 6',
        "sites[1].trigger_level",
        "lower than resupply_level 6",
    ),
    (
        "trigger-without-margin",
        'name = "Hospital Barros Luco Trudeau"',
        'name = "Hospital Barros Luco Trudeau"\ntrigger_level = 0',
        "sites[1].trigger_level",
        "no safety margin",
    ),
    (
        "trigger-negative",
        'name = "Hospital Barros Luco Trudeau"',
        'name = "Hospital Barros Luco Trudeau"\ntrigger_level = -1',
        "sites[1].trigger_level",
        "non-negative",
    ),
    ("visit-day-negative", "day = 0", "day = -1", "visits[0].day", "non-negative"),
    ("visit-duplicate", 'code = "month_6"', 'code = "baseline"', "visits[1].code", "duplicate"),
    (
        "visit-dispense-string",
        "dispense = true",
        'dispense = "true"',
        "visits[0].dispense",
        "true or false",
    ),
    (
        "criterion-min-above-max",
        "min = 18",
        "min = 80",
        "eligibility[0].min",
        "must not exceed max 75",
    ),
    ("criterion-no-bounds", "min = 18\nmax = 75", "", "eligibility[0].min", "min, max or both"),
    ("criterion-min-nan", "min = 18", "min = nan", "eligibility[0].min", "finite"),
    (
        "criterion-boolean-with-min",
        'type = "number"',
        'type = "boolean"',
        "eligibility[0].min",
        "only criteria of type",
    ),
    (
        "criterion-unknown-kind",
        'kind = "inclusion"',
        'kind = "inclusio"',
        "eligibility[0].kind",
        '"inclusion" or "exclusion"',
    ),
    (
        "criterion-unknown-type",
        'type = "number"',
        'type = "integer"',
        "eligibility[0].type",
        '"boolean" or "number"',
    ),
    (
        "criterion-text-missing",
        'text = "Age at screening (years), 18 to 75"\n',
        "",
        "eligibility[0].text",
        "required",
    ),
    (
        "criterion-duplicate",
        "max = 75\n",
        "max = 75\n" + DUPLICATE_CRITERION,
        "eligibility[1].code",
        "duplicate",
    ),
    (
        "email-bad",
        'registry_id = "NCT03917797"',
        CONTACTS % "safety at example.org",
        "study.sponsor_contacts[0].email",
        "e-mail",
    ),
    (
        "email-no-domain",
        'registry_id = "NCT03917797"',
        CONTACTS % "safety@example",
        "study.sponsor_contacts[0].email",
        "e-mail",
    ),
    (
        "reason-duplicate",
        'registry_id = "NCT03917797"',
        'registry_id = "NCT03917797"\nunblinding_reasons = ["other", "other"]',
        "study.unblinding_reasons[1]",
        "duplicate",
    ),
    (
        "reasons-empty",
        'registry_id = "NCT03917797"',
        'registry_id = "NCT03917797"\nunblinding_reasons = []',
        "study.unblinding_reasons",
        "non-empty",
    ),
    (
        "assessors-not-bool",
        'registry_id = "NCT03917797"',
        'registry_id = "NCT03917797"\nassessors_see_unblinding = 0',
        "study.assessors_see_unblinding",
        "true or false",
    ),
    (
        "signers-three",
        "stratify_by_site = true",
        "stratify_by_site = true\nbulk_export_signers = 3",
        "randomization.bulk_export_signers",
        "at most 2",
    ),
    (
        "signers-text",
        "stratify_by_site = true",
        'stratify_by_site = true\nbulk_export_signers = "two"',
        "randomization.bulk_export_signers",
        "positive integer",
    ),
    (
        "enrolment-zero",
        "stratify_by_site = true",
        "stratify_by_site = true\nexpected_enrolment = 0",
        "randomization.expected_enrolment",
        "positive integer",
    ),
    ("syntax-error", "ratio = 1", "ratio = ", "(syntax)", "line 9"),
    ("syntax-unterminated-string", '"MSC-LN-2B"', '"MSC-LN-2B', "(syntax)", "line 2"),
    ("syntax-huge-integer", "ratio = 1", "ratio = " + "9" * 5000, "(syntax)", "too many digits"),
    ("syntax-deep-nesting", "ratio = 1", "ratio = " + "[" * 100_000, "(syntax)", "nested"),
]


@pytest.mark.parametrize(
    ("old", "new", "field", "words"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_file_is_refused_naming_the_field(
    old: str, new: str, field: str, words: str
) -> None:
    error = refusal(variant(old, new))
    assert error.filename == "study.toml"
    assert error.field == field
    assert words in error.reason
    assert str(error).startswith(f"study.toml: {field}: ")


def test_study_without_a_dispensing_visit_is_refused() -> None:
    error = refusal(SPEC_EXAMPLE.replace("dispense = true", "dispense = false"))
    assert (error.field, error.reason) == ("visits", "at least one visit must have dispense = true")


def test_single_arms_table_is_refused() -> None:
    text = variant(SECOND_ARM, "").replace("[[arms]]", "[arms]")
    error = refusal(text)
    assert error.field == "arms"
    assert "array of tables ([[arms]])" in error.reason


def test_refusal_reads_file_field_and_reason() -> None:
    error = refusal(variant("ratio = 1", "ratio = 0"))
    assert str(error) == "study.toml: arms[0].ratio: must be a positive integer (got 0)"


def test_refusal_survives_pickling() -> None:
    error = refusal(variant("ratio = 1", "ratio = 0"))
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_too_many_strata_are_refused() -> None:
    levels = ", ".join(f'"L{i}"' for i in range(101))
    text = variant('["III", "IV"]', f"[{levels}]")
    text += '\n[[factors]]\ncode = "f2"\nname = "F2"\nlevels = [' + levels + "]\n"
    assert refusal(text).field == "factors"


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyDefinitionError) as caught:
        load_study_file(tmp_path / "absent.toml")
    assert caught.value.field == "(file)"


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(SPEC_EXAMPLE.encode("latin-1"))
    with pytest.raises(StudyDefinitionError) as caught:
        load_study_file(path)
    assert caught.value.field == "(encoding)"
    assert str(caught.value).startswith(f"{path}: (encoding): ")


@pytest.mark.parametrize(("age", "failed"), [(40, []), (12, ["age"])])
def test_contract_check_participants_are_judged_as_it_expects(age: int, failed: list[str]) -> None:
    study = parse_study(CONTRACT_CHECK_STUDY)
    assert study.stratum_key("S1", {"grade": "low"}) == "S1|grade=low"
    assert study.evaluate_eligibility({"consent": True, "age": age}) == failed
