"""Study texts in several languages and site time zones in the study file (SPEC §4.3)."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from randomizer import studytext
from randomizer.studydef import DEMO_STUDY_FILE, StudyDefinitionError, load_demo_study, parse_study
from randomizer.studytext import localized, site_zone
from tests.conftest import SMALL_STUDY

BILINGUAL = SMALL_STUDY.replace(
    'title = "Test study"\n', 'languages = ["es", "en"]\ntitle = "Test study"\n'
)


def _with(text: str, after: str, added: str) -> str:
    assert after in text, after
    return text.replace(after, after + added, 1)


def _refusal(text: str) -> StudyDefinitionError:
    with pytest.raises(StudyDefinitionError) as caught:
        parse_study(text, "trial.toml")
    return caught.value


def test_translations_are_read_for_every_text_field() -> None:
    text = _with(BILINGUAL, 'title = "Test study"\n', 'title_es = "Estudio de prueba"\n')
    text = _with(text, 'name = "Active product X"\n', 'name_es = "Producto activo X"\n')
    text = _with(text, 'name = "Grade"\n', 'name_es = "Grado"\n')
    text = _with(text, 'levels = ["low", "high"]\n', 'levels_es = ["bajo", "alto"]\n')
    text = _with(text, 'name = "Site one"\n', 'name_es = "Centro uno"\n')
    text = _with(text, 'code = "month_6"\n', 'name = "Month 6"\nname_es = "Mes 6"\n')
    text = _with(text, 'text = "Age in years"\n', 'text_es = "Edad en años"\n')
    study = parse_study(text)
    assert study.languages == ("es", "en")
    assert localized(study, "title", "es") == "Estudio de prueba"
    assert localized(study.arm("ACTIVEX"), "name", "es") == "Producto activo X"
    assert localized(study.factor("grade"), "name", "es") == "Grado"
    assert localized(study.factor("grade"), "levels.high", "es") == "alto"
    assert localized(study.factor("grade"), "levels.high", "en") == "high"
    assert localized(study.site("S1"), "name", "es") == "Centro uno"
    assert localized(study.visit("month_6"), "name", "es") == "Mes 6"
    assert localized(study.criterion("age"), "text", "es") == "Edad en años"
    # the stored base fields (exports, API) stay as written
    assert (study.title, study.arm("ACTIVEX").name) == ("Test study", "Active product X")


def test_a_listed_language_without_translation_reads_the_base_field() -> None:
    study = parse_study(_with(BILINGUAL, 'title = "Test study"\n', 'title_es = "Estudio"\n'))
    assert localized(study, "title", "en") == "Test study"
    assert localized(study.arm("PLACEBOX"), "name", "es") == "Placebo product X"


def test_an_unlisted_language_falls_back_to_the_default_language_then_the_base() -> None:
    study = parse_study(_with(BILINGUAL, 'title = "Test study"\n', 'title_es = "Estudio"\n'))
    assert localized(study, "title", "fr") == "Estudio"  # es is the default
    assert localized(study.arm("ACTIVEX"), "name", "fr") == "Active product X"


def test_a_visit_without_a_name_is_named_by_its_code() -> None:
    study = parse_study(SMALL_STUDY)
    assert study.visit("baseline").name == "baseline"
    assert localized(study.visit("baseline"), "name", "es") == "baseline"


@pytest.mark.parametrize(
    ("name", "text", "field", "reason"),
    [
        ("unlisted language", _with(BILINGUAL, 'title = "Test study"\n', 'title_fr = "É"\n'),
         "study.title_fr", 'language "fr" is not in [study] languages'),
        ("no languages at all", _with(SMALL_STUDY, 'name = "Grade"\n', 'name_es = "Grado"\n'),
         "factors[0].name_es", "listed: none"),
        ("unknown suffix", _with(BILINGUAL, 'name = "Site one"\n', 'name_spanish = "Uno"\n'),
         "sites[0].name_spanish", 'unknown language suffix "spanish"'),
        ("upper-case suffix", _with(BILINGUAL, 'text = "Age in years"\n', 'text_ES = "Edad"\n'),
         "eligibility[1].text_ES", "unknown language suffix"),
        ("wrong type", _with(BILINGUAL, 'name = "Active product X"\n', "name_es = 3\n"),
         "arms[0].name_es", "must be a non-empty string (got 3)"),
        ("empty text", _with(BILINGUAL, 'text = "Age in years"\n', 'text_es = " "\n'),
         "eligibility[1].text_es", "must be a non-empty string"),
        ("levels of another length",
         _with(BILINGUAL, 'levels = ["low", "high"]\n', 'levels_es = ["bajo"]\n'),
         "factors[0].levels_es", "must be an array of 2 labels"),
        ("untranslatable field", _with(BILINGUAL, 'code = "S1"\n', 'code_es = "C1"\n'),
         "sites[0].code_es", "unknown key"),
        ("unknown language code", BILINGUAL.replace('["es", "en"]', '["es", "xx"]'),
         "study.languages[1]", "ISO 639 language code"),
        ("duplicate language", BILINGUAL.replace('["es", "en"]', '["es", "es"]'),
         "study.languages[1]", 'duplicate language "es"'),
        ("languages not an array", BILINGUAL.replace('["es", "en"]', '"es"'),
         "study.languages", "non-empty array of language codes"),
        ("unknown zone", _with(SMALL_STUDY, 'name = "Site one"\n', 'timezone = "Mars/Olympus"\n'),
         "sites[0].timezone", 'unknown time zone "Mars/Olympus"'),
        ("zone path", _with(SMALL_STUDY, 'name = "Site one"\n', 'timezone = "../etc/passwd"\n'),
         "sites[0].timezone", "IANA time zone name"),
        ("zone not text", _with(SMALL_STUDY, 'name = "Site two"\n', "timezone = -3\n"),
         "sites[1].timezone", "IANA time zone name"),
    ],
)  # fmt: skip
def test_bad_translations_and_zones_are_refused_with_file_field_and_reason(
    name: str, text: str, field: str, reason: str
) -> None:
    error = _refusal(text)
    assert (error.filename, error.field) == ("trial.toml", field), name
    assert reason in error.reason, (name, error.reason)


def test_site_time_zones_default_to_utc_and_study_times_use_the_first_site() -> None:
    text = _with(SMALL_STUDY, 'name = "Site two"\n', 'timezone = "America/Santiago"\n')
    study = parse_study(text)
    assert [s.timezone for s in study.sites] == ["UTC", "America/Santiago"]
    assert site_zone(study.sites, "S2") == "America/Santiago"
    assert site_zone(study.sites, None) == "UTC"
    assert site_zone(study.sites, "gone") == "UTC"
    assert studytext.zone("UTC").utcoffset(None).total_seconds() == 0


def test_the_demo_study_is_bilingual_with_named_visits_in_santiago() -> None:
    demo, _text = load_demo_study()
    assert demo.languages == ("es", "en")
    assert [localized(v, "name", "es") for v in demo.visits] == ["Basal", "Mes 6"]
    assert [localized(v, "name", "en") for v in demo.visits] == ["Baseline", "Month 6"]
    assert {s.timezone for s in demo.sites} == {"America/Santiago"}
    assert localized(demo.criterion("age"), "unit", "es") == "años"
    assert localized(demo.criterion("egfr"), "text", "es").startswith("VFG estimada")
    # every text but the sites' proper names carries its Spanish form
    raw = tomllib.loads(
        resources.files("randomizer").joinpath("studies", DEMO_STUDY_FILE).read_text("utf-8")
    )
    assert "title_es" in raw["study"]
    for table, field in (("arms", "name"), ("factors", "name"), ("visits", "name"),
                         ("eligibility", "text")):  # fmt: skip
        missing = [t["code"] for t in raw[table] if f"{field}_es" not in t]
        assert not missing, (table, missing)
    for criterion in demo.eligibility:
        assert localized(criterion, "text", "es") != criterion.text, criterion.code
