"""Predictability at list lock through ``list show`` and the statistician's list page."""

from __future__ import annotations

import csv
import itertools
from fractions import Fraction
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import AllocationSlot, ListKind, Study, User
from randomizer.predictability import decimals
from randomizer.services import lists
from tests.conftest import Runner, login, make_study
from tests.engines import dispose_engines  # noqa: F401  (fixture)
from tests.test_predictability import _reference_block

pytestmark = pytest.mark.usefixtures("dispose_engines")
SEED_HEX = "5a" * 32
STAT = audit.Actor("stat1", "statistician")


def _reference_from_export(path: Path) -> tuple[Fraction, int]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ratios = {"ACTIVEX": 1, "PLACEBOX": 1}
    blocks = itertools.groupby(rows, key=lambda r: (r["stratum"], r["block"]))
    total = sum(
        (_reference_block([r["arm"] for r in members], ratios) for _, members in blocks),
        Fraction(0),
    )
    return total, len(rows)


def test_list_show_prints_the_expected_correct_guesses_of_the_drawn_list(
    runner: Runner, study: Study, tmp_path: Path
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy", "--seed", SEED_HEX)
    out = tmp_path / "list.csv"
    runner.invoke("list", "export", "TST", "--dummy", "--unblinded", "--out", str(out))
    expected, slots = _reference_from_export(out)
    result = runner.invoke("list", "show", "TST", "--dummy")
    assert result.exit_code == 0, result.output
    share = decimals(expected / slots * 100, 1)
    line = f"predictability: expected correct guesses {decimals(expected, 2)} of {slots} ({share}%)"
    assert line in result.output.splitlines()
    assert "deterministic allocations: " in result.output
    assert "expected imbalance if enrolment stops mid-block: " in result.output


def test_list_show_warns_when_strata_are_small_for_their_blocks(
    runner: Runner, session: Session
) -> None:
    make_study(session, **{"stratify_by_site = true": "stratify_by_site = true\n"
                           "expected_enrolment = 39"})  # fmt: skip
    runner.invoke("list", "generate", "TST", "--dummy", "--seed", SEED_HEX)
    result = runner.invoke("list", "show", "TST", "--dummy")
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4
    assert "expects about 9.8 participants, small for blocks of 2 and 4" in warnings[0]


def test_list_show_without_expected_enrolment_says_small_strata_are_not_checked(
    runner: Runner, study: Study
) -> None:
    runner.invoke("list", "generate", "TST", "--dummy", "--seed", SEED_HEX)
    result = runner.invoke("list", "show", "TST", "--dummy")
    assert "small strata are not checked" in result.output
    assert "warning:" not in result.output


def _dummy(session: Session, study: Study) -> None:
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=bytes(32))
    session.commit()


def test_the_statistician_list_page_shows_the_predictability(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    _dummy(session, study)
    login(client, "stat1")
    page = client.get("/lists/TST/dummy").get_data(as_text=True)
    assert 'id="predictability"' in page


def test_the_admin_list_page_never_shows_the_predictability(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    _dummy(session, study)
    login(client, "admin1")
    page = client.get("/lists/TST/dummy")
    assert page.status_code == 200
    assert b'id="predictability"' not in page.data


def test_the_list_page_of_a_tampered_list_says_the_figures_cannot_be_computed(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    _dummy(session, study)
    a, b = session.scalars(sa.select(AllocationSlot).order_by(AllocationSlot.id).limit(2))
    a.arm_sealed, b.arm_sealed = b.arm_sealed, a.arm_sealed
    session.commit()
    login(client, "stat1")
    page = client.get("/lists/TST/dummy")
    assert page.status_code == 200
    assert b"failed its integrity check" in page.data
