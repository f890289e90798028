"""Reading the audit trail: filtered pages, CSV export, the API feed, the unblinding log.

Events never hold a plaintext arm, so these views show them as stored. The one exception is
the unblinding log with arms, which opens the arms of unblinded participants for the
statistician and is itself an audited disclosure.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from randomizer import audit, studytext
from randomizer.errors import N_, InvalidInput, NotPermitted
from randomizer.inputs import whole_number
from randomizer.models import AuditEvent, AuditHead, Participant, Role, Study, Unblinding, User
from randomizer.services.studies import definition_of
from randomizer.services.unblinding import participant_arm
from randomizer.services.users import actor_of

PAGE_SIZE = 100
MAX_FEED_PAGE = 1000
CSV_COLUMNS = (
    "seq",
    "occurred_at",
    "actor",
    "role",
    "action",
    "object_type",
    "object_id",
    "study_code",
    "participant_id",
    "old_values",
    "new_values",
    "reason",
    "prev_digest",
    "digest",
)
#: Who may read the audit trail.
READERS = frozenset({Role.ADMIN, Role.STATISTICIAN})


@dataclass(frozen=True)
class EventFilter:
    """What the audit page filters by; empty fields do not filter."""

    actor: str | None = None
    action: str | None = None
    participant_id: int | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    #: The zone the dates are days of (the page's zone); events are stored in UTC.
    zone: str = studytext.DEFAULT_TIMEZONE

    @classmethod
    def parse(cls, args: dict[str, str], *, zone: str = studytext.DEFAULT_TIMEZONE) -> EventFilter:
        """From query-string text, dates read as days in ``zone``; InvalidInput naming the
        field that is not understood."""
        participant = (args.get("participant") or "").strip()
        return cls(
            zone=zone,
            actor=(args.get("actor") or "").strip() or None,
            action=(args.get("action") or "").strip() or None,
            participant_id=whole_number(participant, field="participant") if participant else None,
            date_from=_date(args.get("date_from"), "date_from"),
            date_to=_date(args.get("date_to"), "date_to"),
        )

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.actor:
            query = query.where(AuditEvent.actor == self.actor)
        if self.action:
            # "participant." finds every participant action; a full name finds one.
            if self.action.endswith("."):
                query = query.where(AuditEvent.action.startswith(self.action, autoescape=True))
            else:
                query = query.where(AuditEvent.action == self.action)
        if self.participant_id is not None:
            query = query.where(AuditEvent.participant_id == self.participant_id)
        if self.date_from:
            query = query.where(
                AuditEvent.occurred_at >= audit.timestamp(_midnight(self.date_from, self.zone))
            )
        if self.date_to:
            end = _midnight(self.date_to + dt.timedelta(days=1), self.zone)
            query = query.where(AuditEvent.occurred_at < audit.timestamp(end))
        return query

    def as_args(self) -> dict[str, str]:
        """The filter as query-string values (for links to the next page and the export)."""
        values = {
            "actor": self.actor,
            "action": self.action,
            "participant": None if self.participant_id is None else str(self.participant_id),
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
        }
        return {k: v for k, v in values.items() if v}


def _date(text: str | None, field: str) -> dt.date | None:
    if not text or not text.strip():
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(N_("Give the date as YYYY-MM-DD."), field=field) from None


def _midnight(day: dt.date, zone: str) -> dt.datetime:
    """The UTC instant at which ``day`` begins in ``zone`` (a DST change never falls at
    midnight and back again in the same day, so the first midnight is the start)."""
    local = dt.datetime(day.year, day.month, day.day, tzinfo=studytext.zone(zone))
    return local.astimezone(dt.UTC)


def check_reader(user: User) -> None:
    """Refuse roles that may not read the audit trail."""
    if user.role not in READERS:
        raise NotPermitted(N_("Only administrators and the statistician read the audit trail."))


def find_events(
    session: Session, flt: EventFilter, *, before: int | None = None, limit: int = PAGE_SIZE
) -> list[AuditEvent]:
    """One page of matching events, newest first; ``before`` continues after a page."""
    query = flt.apply(select(AuditEvent))
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    return list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit)))


def export_chunk(
    session: Session, flt: EventFilter, *, after: int, upto: int, limit: int
) -> list[tuple[Any, ...]]:
    """Matching events with ``after < seq <= upto`` as CSV rows (CSV_COLUMNS order, seq
    first), oldest first, at most ``limit``: one short read of a chunked export."""
    columns = [getattr(AuditEvent, name) for name in CSV_COLUMNS]
    query = flt.apply(select(*columns)).where(AuditEvent.seq > after, AuditEvent.seq <= upto)
    return [tuple(row) for row in session.execute(query.order_by(AuditEvent.seq).limit(limit))]


def head_seq(session: Session) -> int:
    """The sequence number of the newest event (0 when there is none)."""
    head = session.get(AuditHead, 1)
    return head.seq if head is not None else 0


def events_after(session: Session, after: int, limit: int) -> list[AuditEvent]:
    """Events with seq greater than ``after``, oldest first (the API feed)."""
    if after < 0:
        raise InvalidInput(N_("after must be 0 or more."), field="after")
    if not 1 <= limit <= MAX_FEED_PAGE:
        raise InvalidInput(
            N_("limit must be between 1 and %(max_feed_page)s."),
            field="limit",
            max_feed_page=MAX_FEED_PAGE,
        )
    query = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq)
    return list(session.scalars(query.limit(limit)))


def event_dict(event: AuditEvent) -> dict[str, Any]:
    """An event as JSON-ready values (stored JSON texts parsed back)."""
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at,
        "actor": event.actor,
        "role": event.role,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "study": event.study_code,
        "participant_id": event.participant_id,
        "old": _parsed(event.old_values),
        "new": _parsed(event.new_values),
        "reason": event.reason,
        "prev_digest": event.prev_digest,
        "digest": event.digest,
    }


def _parsed(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- the unblinding log ----------------------------------------------------------------


@dataclass(frozen=True)
class UnblindingEntry:
    unblinding_id: int
    at: dt.datetime
    actor: str
    role: str
    reason_category: str
    reason: str
    participant_id: int
    randomization_number: str | None
    site: str
    study_code: str
    is_test: bool
    arm_code: str | None = None
    arm_name: str | None = None


def unblinding_log(session: Session, user: User) -> list[UnblindingEntry]:
    """Who unblinded whom, when and why, newest first; never the arm."""
    check_reader(user)
    query = (
        select(Unblinding, Participant, Study.code)
        .join(Participant, Participant.id == Unblinding.participant_id)
        .join(Study, Study.id == Participant.study_id)
        .order_by(Unblinding.id.desc())
    )
    return [
        UnblindingEntry(
            u.id,
            u.at,
            u.actor,
            u.role,
            u.reason_category,
            u.reason,
            p.id,
            p.randomization_number,
            p.site_code,
            code,
            p.is_test,
        )
        for u, p, code in session.execute(query)
    ]


def unblinding_log_with_arms(session: Session, user: User) -> list[UnblindingEntry]:
    """The unblinding log with each participant's arm: the statistician only; audited."""
    if user.role is not Role.STATISTICIAN:
        raise NotPermitted(N_("Only the unblinded statistician may see the arms in this log."))
    entries = unblinding_log(session, user)
    studies: dict[str, Study] = {}
    shown = []
    for entry in entries:
        study = (
            studies.get(entry.study_code)
            or session.scalars(select(Study).where(Study.code == entry.study_code)).one()
        )
        studies[entry.study_code] = study
        arm = participant_arm(session, study, session.get_one(Participant, entry.participant_id))
        name = definition_of(study).arm(arm).name
        shown.append(_with_arm(entry, arm, name))
    audit.record(
        session,
        actor=actor_of(user),
        action="unblinding.log_with_arms",
        object_type="report",
        object_id="unblinding-log",
        new={
            "entries": len(shown),
            "participants": sorted({e.participant_id for e in shown}),
        },
    )
    return shown


def _with_arm(entry: UnblindingEntry, code: str, name: str) -> UnblindingEntry:
    return replace(entry, arm_code=code, arm_name=name)
