"""`randomizer study load`: a bad file is refused by field and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from randomizer.models import AuditEvent, Site, Study
from tests.conftest import SMALL_STUDY, Runner
from tests.engines import dispose_engines  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("dispose_engines")

DEMO_FILE = Path(__file__).parents[1] / "randomizer" / "studies" / "NCT03917797.toml"


def _edit(old: str, new: str) -> str:
    assert old in SMALL_STUDY, old
    return SMALL_STUDY.replace(old, new, 1)


#: id: (file text, the field the message must name, a word of the reason)
MALFORMED = {
    "missing-study-code": (_edit('code = "TST"\n', ""), "study.code", "is required"),
    "missing-title": (_edit('title = "Test study"\n', ""), "study.title", "is required"),
    "missing-randomization-table": (
        _edit("[randomization]", "[randomisation]"),
        "randomisation",
        "unknown key",
    ),
    "ratio-of-wrong-type": (
        _edit("ratio = 1", 'ratio = "one"'),
        "arms[0].ratio",
        "must be a positive integer",
    ),
    "ratio-zero": (_edit("ratio = 1", "ratio = 0"), "arms[0].ratio", "must be a positive integer"),
    "block-not-multiple-of-ratio-sum": (
        _edit("ratio = 1", "ratio = 2"),
        "randomization.block_sizes[0]",
        "multiple of the ratio sum 3",
    ),
    "block-sizes-not-an-array": (
        _edit("block_sizes = [2, 4]", "block_sizes = 4"),
        "randomization.block_sizes",
        "array of integers",
    ),
    "per-stratum-negative": (
        _edit("per_stratum = 20", "per_stratum = -5"),
        "randomization.per_stratum",
        "positive integer",
    ),
    "stratify-by-site-not-boolean": (
        _edit("stratify_by_site = true", 'stratify_by_site = "yes"'),
        "randomization.stratify_by_site",
        "true or false",
    ),
    "duplicate-factor-level": (
        _edit('levels = ["low", "high"]', 'levels = ["low", "low"]'),
        "factors[0].levels[1]",
        "duplicate level",
    ),
    "factor-level-with-separator": (
        _edit('levels = ["low", "high"]', 'levels = ["low|x", "high"]'),
        "factors[0].levels[0]",
        'must not contain "|"',
    ),
    "factor-without-levels": (
        _edit('levels = ["low", "high"]', "levels = []"),
        "factors[0].levels",
        "non-empty array",
    ),
    "duplicate-arm-code": (
        _edit('code = "PLACEBOX"', 'code = "ACTIVEX"'),
        "arms[1].code",
        "duplicate code",
    ),
    "one-arm-only": (
        _edit('[[arms]]\ncode = "PLACEBOX"\nname = "Placebo product X"\nratio = 1\n', ""),
        "arms",
        "at least 2",
    ),
    "misspelt-key": (_edit("ratio = 1", "ratoi = 1"), "arms[0].ratoi", 'did you mean "ratio"'),
    "toml-syntax-error": (_edit('title = "Test study"', 'title = "Test study'), "(syntax)", ""),
    "no-dispensing-visit": (
        SMALL_STUDY.replace("dispense = true", "dispense = false"),
        "visits",
        "dispense = true",
    ),
    "eligibility-kind-unknown": (
        _edit('kind = "exclusion"', 'kind = "maybe"'),
        "eligibility[2].kind",
        '"inclusion" or "exclusion"',
    ),
    "eligibility-min-above-max": (
        _edit("min = 18", "min = 80"),
        "eligibility[1].min",
        "must not exceed max",
    ),
    "sponsor-email-malformed": (
        _edit("sponsor@example.org", "sponsor-at-example"),
        "study.sponsor_contacts[0].email",
        "e-mail address",
    ),
    "site-code-with-space": (_edit('code = "S1"', 'code = "S 1"'), "sites[0].code", "letters"),
    "empty-file": ("", "study", "is required"),
}


def _counts(session: Session) -> tuple[int, int, int]:
    session.rollback()
    found = tuple(
        session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
        for model in (Study, Site, AuditEvent)
    )
    session.rollback()  # SQLite: release the lock the command needs
    return found  # type: ignore[return-value]


@pytest.mark.parametrize(("text", "field", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_study_file_is_refused_naming_the_field(
    text: str, field: str, reason: str, runner: Runner, session: Session, tmp_path: Path
):
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    before = _counts(session)
    result = runner.invoke("study", "load", str(path))
    assert result.exit_code != 0
    assert f"{path}: {field}: " in result.stderr
    assert reason in result.stderr.split(f"{field}: ")[-1]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert _counts(session) == before == (0, 0, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"\xff\xfe[study]\n", "cannot be read as UTF-8")],
    ids=["missing-file", "not-utf8"],
)
def test_an_unreadable_study_file_is_refused(
    content: bytes | None, message: str, runner: Runner, session: Session, tmp_path: Path
):
    path = tmp_path / "study.toml"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke("study", "load", str(path))
    assert result.exit_code != 0
    assert f"{path}: {message}" in result.stderr
    assert _counts(session) == (0, 0, 0)


def test_a_valid_file_prints_the_study_code_and_is_audited(
    runner: Runner, session: Session, tmp_path: Path
):
    path = tmp_path / "study.toml"
    path.write_text(SMALL_STUDY, encoding="utf-8")
    result = runner.invoke("study", "load", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "TST"
    session.rollback()
    study = session.scalars(sa.select(Study)).one()
    assert [s.code for s in study.sites] == ["S1", "S2"]
    event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "study.load")).one()
    assert (event.object_id, event.study_code) == ("TST", "TST")
    assert str(path) in (event.new_values or "")


def test_loading_the_same_file_twice_changes_nothing(
    runner: Runner, session: Session, tmp_path: Path
):
    path = tmp_path / "study.toml"
    path.write_text(SMALL_STUDY, encoding="utf-8")
    assert runner.invoke("study", "load", str(path)).exit_code == 0
    before = _counts(session)
    again = runner.invoke("study", "load", str(path))
    assert again.exit_code == 0
    assert again.stdout.splitlines()[-1] == "TST"
    assert "unchanged" in again.stderr
    assert _counts(session) == before


def test_a_changed_definition_of_a_study_in_testing_is_reloaded_and_audited(
    runner: Runner, session: Session, tmp_path: Path
):
    path = tmp_path / "study.toml"
    path.write_text(SMALL_STUDY, encoding="utf-8")
    assert runner.invoke("study", "load", str(path)).exit_code == 0
    path.write_text(_edit('name = "Site two"', 'name = "Site number two"'), encoding="utf-8")
    result = runner.invoke("study", "load", str(path))
    assert result.exit_code == 0, result.output
    session.rollback()
    names = session.scalars(sa.select(Site.name).order_by(Site.position)).all()
    assert names == ["Site one", "Site number two"]
    actions = session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert actions == ["study.load", "study.update"]


def test_the_demo_study_file_loads(runner: Runner, session: Session):
    result = runner.invoke("study", "load", str(DEMO_FILE))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "MSC-LN-2B"
