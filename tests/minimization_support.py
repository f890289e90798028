"""A minimization study for the tests: the small two-site study with Pocock–Simon."""

from __future__ import annotations

from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import ListKind, Study
from randomizer.services.kits import generate_kits
from randomizer.services.minimization import make_list
from tests.conftest import SMALL_STUDY, make_study

MINIMIZATION = """
method = "minimization"

[randomization.minimization]
factors = ["site", "grade"]
weights = { grade = 2 }
measure = "range"
p_best = 0.8
"""

MINIMIZATION_STUDY = SMALL_STUDY.replace(
    "stratify_by_site = true\n", "stratify_by_site = true\n" + MINIMIZATION, 1
)


def make_minimization_study(session: Session, **replace: str) -> Study:
    """Load the small study with minimization (``replace`` edits its text first)."""
    return make_study(session, MINIMIZATION_STUDY, **replace)


def prepare_minimization(
    session: Session, study: Study, *, kits: int = 20, sites: tuple[str, ...] = ("S1", "S2")
) -> None:
    """The dummy minimization record (fixed seed) and kits at the sites; committed."""
    make_list(session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM, seed=bytes(32))
    for site in sites:
        generate_kits(session, study, count=kits, site=site, actor=audit.SYSTEM)
    session.commit()
