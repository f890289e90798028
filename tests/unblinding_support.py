"""Helpers for the unblinding, notification, code-break and audit page tests."""

from __future__ import annotations

import uuid
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import (
    AuditEvent,
    ListKind,
    Notification,
    Participant,
    Study,
    Unblinding,
    User,
)
from randomizer.services import enrollment
from randomizer.services.kits import generate_kits
from randomizer.services.lists import generate_list
from randomizer.services.unblinding import participant_arm
from randomizer.services.users import actor_of, create_token
from tests.conftest import PASSWORD

ELIGIBLE = {"consent": True, "age": 40, "pregnant": False}
ARM_TEXTS = ("ACTIVEX", "PLACEBOX", "Active product X", "Placebo product X")


def supply(session: Session, study: Study, *, per_stratum: int = 8, kits: int = 12) -> None:
    """A dummy list and kits received at both sites; committed."""
    generate_list(
        session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM, per_stratum=per_stratum,
        seed=bytes(32),
    )  # fmt: skip
    for site in ("S1", "S2"):
        generate_kits(session, study, count=kits, site=site, actor=audit.SYSTEM)
    session.commit()


def randomized(
    session: Session, study: Study, investigator: User, number: str, *, site: str = "S1"
) -> Participant:
    """Register and randomize a participant through the services; committed."""
    participant = enrollment.register_participant(
        session, study, site=site, screening_number=number, factors={"grade": "low"},
        eligibility=ELIGIBLE, actor=actor_of(investigator),
    )  # fmt: skip
    enrollment.randomize(session, participant, signer=investigator, password=PASSWORD)
    session.commit()
    return participant


def arm_of(session: Session, study: Study, participant: Participant) -> str:
    code = participant_arm(session, study, participant)
    session.rollback()
    return code


def counts(session: Session) -> dict[str, Any]:
    """What a refused unblinding must leave unchanged."""
    session.expire_all()
    return {
        "audit_events": session.scalar(select(func.count()).select_from(AuditEvent)),
        "unblindings": session.scalar(select(func.count()).select_from(Unblinding)),
        "notifications": session.scalar(select(func.count()).select_from(Notification)),
        "unblinded": sorted(
            (p.id, p.unblinded_at is not None, p.unblinded_by)
            for p in session.scalars(select(Participant))
        ),
    }


def events(session: Session, action: str) -> list[AuditEvent]:
    session.expire_all()
    query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
    return list(session.scalars(query))


def token_for(session: Session, user: User) -> str:
    token = create_token(session, user)
    session.commit()
    return token


def api(
    client: FlaskClient,
    path: str,
    token: str,
    body: Any = None,
    *,
    key: str | None = None,
    method: str = "POST",
) -> Any:
    """An API call with a bearer token and (for POST) an Idempotency-Key."""
    headers = {"Authorization": f"Bearer {token}"}
    if method == "POST":
        headers["Idempotency-Key"] = key or str(uuid.uuid4())
    return client.open(path, method=method, headers=headers, json=body)
