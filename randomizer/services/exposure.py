"""The blinding-exposure register (SPEC §4.4): who holds or held an unblinded role, and
every event that showed someone an arm, read from the audit trail.

Also the rule that keeps exposure visible: an unblinded user does not silently become
masked, and an outcome assessor is not silently unblinded (``check_role_change``).
The register names people, times and counts, never an arm, so admins may read it too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from randomizer.errors import N_, Conflict, Text
from randomizer.models import AuditEvent, Role, Study, User

#: Audit actions whose event showed its actor one or more arms.
ARM_SHOWN = (
    "pharmacy.view_products",
    "participant.unblind",
    "participant.unblind_redisplay",
    "list.export_unblinded",
    "kits.export_unblinded",
    "codebreak.envelopes",
    "list.release",
)
#: Arm-showing actions recorded without a study (they span every study the reader sees).
ARM_SHOWN_ANY_STUDY = ("unblinding.log_with_arms",)
ROLE_ACTIONS = ("user.create", "user.update")
UNBLINDED = frozenset(role.value for role in Role if role.unblinded)
CSV_COLUMNS = ("seq", "occurred_at", "username", "role", "event", "details", "reason")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

UNBLINDED_TO_MASKED = "unblinded-to-masked"
ASSESSOR_UNBLINDED = "assessor-to-unblinded"


@dataclass(frozen=True)
class ExposureEvent:
    """An audit event that showed an arm, or changed an unblinded (or assessor's) role."""

    seq: int
    occurred_at: str
    username: str
    role: str
    action: str
    details: dict[str, Any]
    reason: str | None

    @property
    def csv_row(self) -> tuple[object, ...]:
        """The event as a CSV row (CSV_COLUMNS); text that a spreadsheet would run as a
        formula is quoted."""
        details = json.dumps(self.details, sort_keys=True, ensure_ascii=False)
        cells = (self.username, self.role, self.action, details, self.reason or "")
        return (self.seq, self.occurred_at,
                *("'" + c if c.startswith(_FORMULA_START) else c for c in cells))  # fmt: skip


@dataclass
class ExposedPerson:
    username: str
    #: The role now ("" when the account no longer exists).
    role: str
    active: bool
    unblinded_roles: set[str] = field(default_factory=set)
    #: When they were first given an unblinded role, and last left one (if they did).
    unblinded_since: str | None = None
    masked_since: str | None = None
    arms_shown: int = 0


@dataclass(frozen=True)
class ExposureRegister:
    study: Study
    people: list[ExposedPerson]
    events: list[ExposureEvent]


def exposure_register(session: Session, study: Study) -> ExposureRegister:
    """Everyone who holds or held an unblinded role or was shown an arm, and those events."""
    events = [_event(e) for e in session.scalars(_register_query(study).order_by(AuditEvent.seq))]
    events = [e for e in events if e.action not in ROLE_ACTIONS or _touches_exposure(e)]
    users = {u.username: u for u in session.scalars(select(User))}
    people: dict[str, ExposedPerson] = {}
    for event in events:
        if event.action in ROLE_ACTIONS:
            _apply_role_event(people, users, event)
        else:
            _person(people, users, event.username).arms_shown += 1
    for user in users.values():
        if user.role.unblinded and user.username not in people:  # created outside the trail
            _person(people, users, user.username).unblinded_roles.add(user.role.value)
    return ExposureRegister(study, sorted(people.values(), key=lambda p: p.username), events)


def _register_query(study: Study) -> Any:
    return select(AuditEvent).where(
        or_(
            and_(AuditEvent.study_code == study.code, AuditEvent.action.in_(ARM_SHOWN)),
            and_(AuditEvent.study_code.is_(None), AuditEvent.action.in_(ARM_SHOWN_ANY_STUDY)),
            and_(AuditEvent.object_type == "user", AuditEvent.action.in_(ROLE_ACTIONS)),
        )
    )


def _event(row: AuditEvent) -> ExposureEvent:
    new = json.loads(row.new_values) if row.new_values else {}
    old = json.loads(row.old_values) if row.old_values else {}
    if row.action in ROLE_ACTIONS:
        new = {"user": row.object_id, "old_role": old.get("role"), **new}
    return ExposureEvent(row.seq, row.occurred_at, row.actor, row.role, row.action, new,
                         row.reason)  # fmt: skip


def _touches_exposure(event: ExposureEvent) -> bool:
    roles = {event.details.get("old_role"), event.details.get("role")}
    changed = event.details.get("old_role") != event.details.get("role")
    return changed and bool(roles & UNBLINDED)


def _person(people: dict[str, ExposedPerson], users: dict[str, User], name: str) -> ExposedPerson:
    if name not in people:
        user = users.get(name)
        people[name] = ExposedPerson(name, user.role.value if user else "", bool(user and
                                     user.active))  # fmt: skip
    return people[name]


def _apply_role_event(
    people: dict[str, ExposedPerson], users: dict[str, User], event: ExposureEvent
) -> None:
    person = _person(people, users, str(event.details["user"]))
    role, old_role = event.details.get("role"), event.details.get("old_role")
    if role in UNBLINDED:
        person.unblinded_roles.add(str(role))
        person.unblinded_since = person.unblinded_since or event.occurred_at
        person.masked_since = None
    elif old_role in UNBLINDED:
        person.masked_since = event.occurred_at


def roles_held(session: Session, username: str) -> set[str]:
    """Every role the audit trail shows the user was given (creation and updates)."""
    rows: Iterable[str | None] = session.scalars(
        select(AuditEvent.new_values).where(
            AuditEvent.object_type == "user",
            AuditEvent.object_id == username,
            AuditEvent.action.in_(ROLE_ACTIONS),
        )
    )
    return {str(json.loads(v)["role"]) for v in rows if v and "role" in json.loads(v)}


def check_role_change(
    session: Session, user: User, new_role: Role, *, acknowledged: bool
) -> str | None:
    """Refuse a role change that would hide exposure unless it is acknowledged.

    Returns what was acknowledged (for the audit event), or None when nothing needed it.
    """
    if new_role is user.role:
        return None
    if user.role.unblinded and not new_role.unblinded:
        kind = UNBLINDED_TO_MASKED
        message = Text(
            N_(
                "%(username)s has held the unblinded %(role)s role and may have seen arms: as "
                "%(new_role)s they would be a masked person who is not blind. Confirm with "
                "--acknowledge-exposure (recorded in the audit trail; see `randomizer report "
                "exposure`)."
            ),
            {"username": user.username, "role": user.role, "new_role": new_role},
        )
    elif new_role.unblinded and (
        user.role is Role.ASSESSOR or Role.ASSESSOR.value in roles_held(session, user.username)
    ):
        kind = ASSESSOR_UNBLINDED
        message = Text(
            N_(
                "%(username)s is or was an outcome assessor: the %(new_role)s role would "
                "unblind an assessor of this trial. Confirm with --acknowledge-exposure "
                "(recorded in the audit trail)."
            ),
            {"username": user.username, "new_role": new_role},
        )
    else:
        return None
    if not acknowledged:
        raise Conflict(message, field="role")
    return kind
