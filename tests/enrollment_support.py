"""Helpers shared by the enrollment, randomization and participant tests."""

from __future__ import annotations

import uuid
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import (
    AllocationSlot,
    AuditEvent,
    Dispensation,
    Kit,
    KitStatus,
    ListKind,
    Participant,
    SlotStatus,
    Study,
    User,
)
from randomizer.services import enrollment
from randomizer.services.kits import generate_kits
from randomizer.services.lists import generate_list
from randomizer.services.users import actor_of, create_token

ELIGIBLE = {"consent": True, "age": 40, "pregnant": False}


def prepare_supply(
    session: Session, study: Study, *, per_stratum: int = 8, kits: int = 20, sites=("S1", "S2")
) -> None:
    """A dummy list and kits received at the sites; committed."""
    generate_list(
        session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM, per_stratum=per_stratum,
        seed=bytes(32),
    )  # fmt: skip
    for site in sites:
        generate_kits(session, study, count=kits, site=site, actor=audit.SYSTEM)
    session.commit()


def register(
    session: Session,
    study: Study,
    user: User,
    number: str,
    *,
    site: str = "S1",
    grade: str = "low",
    answers: dict[str, Any] | None = None,
) -> Participant:
    """Register (and commit) a participant through the service."""
    participant = enrollment.register_participant(
        session, study, site=site, screening_number=number, factors={"grade": grade},
        eligibility=answers or ELIGIBLE, actor=actor_of(user),
    )  # fmt: skip
    session.commit()
    return participant


def token_for(session: Session, user: User) -> str:
    token = create_token(session, user)
    session.commit()
    return token


def call(
    client: FlaskClient,
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
    *,
    key: str | bool | None = True,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    """An API request; ``key=True`` sends a fresh Idempotency-Key, a string sends that one."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key is True:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    elif isinstance(key, str):
        headers["Idempotency-Key"] = key
    kwargs: dict[str, Any] = {"headers": headers}
    if raw is not None:
        kwargs.update(data=raw, content_type=content_type)
    elif body is not None:
        kwargs["json"] = body
    return client.open(path, method=method, **kwargs)


def snapshot(session: Session) -> dict[str, Any]:
    """What a refusal must leave unchanged: slots, kits, dispensations, audit, participants."""
    session.expire_all()
    return {
        "used_slots": session.scalar(
            select(func.count()).where(AllocationSlot.status == SlotStatus.USED)
        ),
        "available_kits": session.scalar(
            select(func.count()).where(Kit.status == KitStatus.AVAILABLE)
        ),
        "dispensations": session.scalar(select(func.count()).select_from(Dispensation)),
        "audit_events": session.scalar(select(func.count()).select_from(AuditEvent)),
        "statuses": sorted(
            (p.id, p.status.value, p.randomization_number)
            for p in session.scalars(select(Participant))
        ),
    }


def actions(session: Session, action: str) -> list[AuditEvent]:
    session.expire_all()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
