"""Live figures for each role's home page. Masked roles' figures are counts that never
depend on arms; the statistician's list usage counts used slots per stratum (no arms)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import studytext
from randomizer.db import utcnow
from randomizer.models import (
    AuditEvent,
    Dispensation,
    Kit,
    KitStatus,
    ListKind,
    Participant,
    Role,
    Shipment,
    ShipmentStatus,
    Study,
    User,
)
from randomizer.services import enrollment
from randomizer.services.list_summary import summarize
from randomizer.services.lists import active_kind, find_list
from randomizer.services.reports import participants, screening_log
from randomizer.services.studies import definition_of
from randomizer.services.zones import study_zone

#: How far ahead the investigator is told about visit windows opening.
LOOKAHEAD_DAYS = 30


@dataclass(frozen=True)
class VisitDue:
    participant_id: int
    randomization_number: str
    visit: str
    opens: dt.date
    closes: dt.date


@dataclass
class Dashboard:
    """Figures per study; each role fills what its home page shows."""

    study: Study
    figures: list[tuple[str, int]] = field(default_factory=list)
    visits_due: list[VisitDue] = field(default_factory=list)
    by_site: list[tuple[str, int, int]] = field(default_factory=list)
    strata: list[tuple[str, int, int]] = field(default_factory=list)
    recent: list[AuditEvent] = field(default_factory=list)


def dashboards(session: Session, user: User, today: dt.date | None = None) -> list[Dashboard]:
    """The user's dashboard for every loaded study."""
    own = None if user.role in (Role.ADMIN, Role.STATISTICIAN) else user.site_codes
    out = []
    for study in session.scalars(select(Study).order_by(Study.code)):
        board = Dashboard(study)
        sites = None if own is None else sorted(own & {s.code for s in study.sites})
        people = participants(session, study, sites)
        if user.role in (Role.INVESTIGATOR, Role.ASSESSOR, Role.ADMIN):
            log = screening_log(people)
            board.figures = [("screened", log.screened), ("randomized", log.randomized),
                             ("eligible", log.eligible_waiting)]  # fmt: skip
        if user.role is Role.INVESTIGATOR:
            day = today or studytext.local_date(utcnow(), study_zone(study))
            board.visits_due = visits_due(session, study, people, day)
        if user.role is Role.PHARMACIST:
            board.figures = _pharmacy(session, study, sites or [])
        if user.role is Role.ADMIN:
            board.by_site = _by_site(study, people)
            board.figures.append(("in_transit", _in_transit(session, study)))
            board.recent = _recent(session, study)
        if user.role is Role.STATISTICIAN:
            board.strata = _strata(session, study)
        out.append(board)
    return out


def visits_due(
    session: Session, study: Study, people: list[Participant], today: dt.date
) -> list[VisitDue]:
    """Later dispensing visits whose window is open or opens within LOOKAHEAD_DAYS, not yet
    allocated, by opening date."""
    definition = definition_of(study)
    later = enrollment.dispensing_visits(definition)[1:]
    horizon = today + dt.timedelta(days=LOOKAHEAD_DAYS)
    due = []
    for p in people:
        if p.status.value != "randomized" or p.randomization_number is None:
            continue
        held = {visit for visit, _code in enrollment.kits_of(session, p)}
        for visit in later:
            window = enrollment.visit_window(definition, p, visit.code)
            if visit.code not in held and window.opens <= horizon and window.closes >= today:
                due.append(VisitDue(p.id, p.randomization_number, visit.code,
                                    window.opens, window.closes))  # fmt: skip
    return sorted(due, key=lambda d: (d.opens, d.randomization_number))


def _pharmacy(session: Session, study: Study, sites: list[str]) -> list[tuple[str, int]]:
    queue = session.scalar(
        select(func.count()).select_from(Dispensation)
        .join(Participant, Participant.id == Dispensation.participant_id)
        .where(Participant.study_id == study.id, Participant.site_code.in_(sites),
               Dispensation.status == "allocated")
    ) or 0  # fmt: skip
    figures = [("to_prepare", queue)]
    levels = {s.code: s.trigger_level for s in study.sites}
    for site in sites:
        available = session.scalar(
            select(func.count()).select_from(Kit).where(
                Kit.study_id == study.id, Kit.site_code == site, Kit.status == KitStatus.AVAILABLE
            )
        ) or 0  # fmt: skip
        figures.append((f"available:{site}", available))
        if available <= levels.get(site, 0):
            figures.append((f"low_stock:{site}", available))
    return figures


def _by_site(study: Study, people: list[Participant]) -> list[tuple[str, int, int]]:
    return [
        (s.code, sum(p.site_code == s.code for p in people),
         sum(p.site_code == s.code and p.randomization_number is not None for p in people))
        for s in study.sites
    ]  # fmt: skip


def _in_transit(session: Session, study: Study) -> int:
    return session.scalar(
        select(func.count()).select_from(Shipment).where(
            Shipment.study_id == study.id, Shipment.status == ShipmentStatus.IN_TRANSIT
        )
    ) or 0  # fmt: skip


def _recent(session: Session, study: Study) -> list[AuditEvent]:
    return list(session.scalars(
        select(AuditEvent).where(AuditEvent.study_code == study.code)
        .order_by(AuditEvent.seq.desc()).limit(8)
    ))  # fmt: skip


def _strata(session: Session, study: Study) -> list[tuple[str, int, int]]:
    kind: ListKind = active_kind(study)
    if find_list(session, study, kind) is None:
        return []
    return [(s.stratum, s.used, s.slots) for s in summarize(session, study, kind).strata]
