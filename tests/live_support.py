"""Helpers for the end-of-study tests: a live study with participants, and its lock."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import ListKind, Participant, Study, User
from randomizer.services import enrollment
from randomizer.services.database_lock import lock_study
from randomizer.services.golive import go_live
from randomizer.services.kits import generate_kits
from randomizer.services.lists import generate_list
from tests.conftest import PASSWORD
from tests.enrollment_support import register

SIGNERS = {
    "statistician": "stat1",
    "statistician_password": PASSWORD,
    "admin": "admin1",
    "admin_password": PASSWORD,
}


def make_live(session: Session, study: Study, *, per_stratum: int = 8, kits: int = 12) -> Study:
    """Generate the live list, go live, and receive kits at both sites; committed."""
    generate_list(session, study, kind=ListKind.LIVE, actor=audit.SYSTEM, per_stratum=per_stratum)
    go_live(session, study, **SIGNERS)
    for site in ("S1", "S2"):
        generate_kits(session, study, count=kits, site=site, actor=audit.SYSTEM)
    session.commit()
    return study


def lock(session: Session, study: Study) -> None:
    lock_study(session, study, **SIGNERS)
    session.commit()


def enrol(
    session: Session,
    study: Study,
    investigator: User,
    number: str,
    *,
    site: str = "S1",
    grade: str = "low",
    answers: dict[str, Any] | None = None,
    randomize: bool = True,
) -> Participant:
    """Register (and by default randomize) a participant; committed."""
    participant = register(session, study, investigator, number, site=site, grade=grade,
                           answers=answers)  # fmt: skip
    if randomize:
        enrollment.randomize(session, participant, signer=investigator, password=PASSWORD)
    session.commit()
    return participant
