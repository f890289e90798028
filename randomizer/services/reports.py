"""Study reports: enrolment by site and stratum and over time, the CONSORT-style screening
log, kit accountability, and the statistician's DSMB report.

Every report but the DSMB one is blinded: counts of participants and kits only, never split
or ordered by arm, so masked roles see the same whatever the allocation. The DSMB report
opens arms (counts by arm) and is audited in the caller's transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from randomizer import audit, studytext
from randomizer.models import Participant, ParticipantStatus, Study
from randomizer.services.blinded_kits import blinded_totals
from randomizer.services.kits import list_kits, open_arms
from randomizer.services.lists import participant_arm

P = ParticipantStatus


def _randomized(p: Participant) -> bool:
    """Received a randomization number (whatever happened after)."""
    return p.randomization_number is not None


@dataclass(frozen=True)
class EnrolmentRow:
    site: str
    stratum: str
    screened: int
    randomized: int


@dataclass(frozen=True)
class ScreeningLog:
    """CONSORT-style flow: every participant counted once, by current status."""

    screened: int
    screen_failed: int
    failed_criteria: dict[str, int]
    eligible_waiting: int
    randomized: int
    withdrawn: int
    withdrawn_before_randomization: int
    randomized_in_error: int


@dataclass(frozen=True)
class DsmbRow:
    arm: str
    site: str
    randomized: int
    withdrawn: int
    unblinded: int


def participants(
    session: Session, study: Study, sites: Iterable[str] | None = None
) -> list[Participant]:
    """The study's current participants (archived test data excluded), in id order."""
    query = select(Participant).where(
        Participant.study_id == study.id, Participant.archived.is_(False)
    )
    if sites is not None:
        query = query.where(Participant.site_code.in_(sorted(sites)))
    return list(session.scalars(query.order_by(Participant.id)))


PAGE_SIZE = 50


@dataclass(frozen=True)
class ParticipantPage:
    rows: list[Participant]
    total: int
    page: int
    pages: int


def _like(search: str) -> str:
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def participant_page(
    session: Session,
    study: Study,
    *,
    sites: Iterable[str] | None,
    search: str,
    page: int,
    size: int | None = PAGE_SIZE,
) -> ParticipantPage:
    """One page (``size`` None: all) of the study's participants in registration order,
    optionally only those whose screening or randomization number contains ``search``."""
    where = [Participant.study_id == study.id, Participant.archived.is_(False)]
    if sites is not None:
        where.append(Participant.site_code.in_(sorted(sites)))
    if search:
        pattern = _like(search)
        where.append(or_(
            func.lower(Participant.screening_number).like(pattern, escape="\\"),
            func.lower(Participant.randomization_number).like(pattern, escape="\\"),
        ))  # fmt: skip
    total = session.scalar(select(func.count()).select_from(Participant).where(*where)) or 0
    per = size or max(total, 1)
    pages = max(1, -(-total // per))
    page = min(max(page, 1), pages)
    rows = session.scalars(
        select(Participant).where(*where).order_by(Participant.id)
        .offset((page - 1) * per).limit(per)
    ).all()  # fmt: skip
    return ParticipantPage(list(rows), total, page, pages)


def enrolment(people: list[Participant]) -> list[EnrolmentRow]:
    """Screened and randomized counts by site and stratum."""
    screened = Counter((p.site_code, p.stratum) for p in people)
    randomized = Counter((p.site_code, p.stratum) for p in people if _randomized(p))
    return [EnrolmentRow(site, stratum, n, randomized[(site, stratum)])
            for (site, stratum), n in sorted(screened.items())]  # fmt: skip


def enrolment_by_month(
    people: list[Participant], sites: Sequence[studytext.SiteZone] = ()
) -> list[tuple[str, int]]:
    """Randomizations per calendar month at each participant's site (UTC for a site of no
    zone), every month from the first to the last."""
    months = Counter(
        studytext.local_date(at, studytext.site_zone(sites, p.site_code)).strftime("%Y-%m")
        for p in people
        if (at := p.randomized_at) is not None
    )
    if not months:
        return []
    first, last = min(months), max(months)
    out, year, month = [], int(first[:4]), int(first[5:])
    while f"{year:04d}-{month:02d}" <= last:
        key = f"{year:04d}-{month:02d}"
        out.append((key, months[key]))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def screening_log(people: list[Participant]) -> ScreeningLog:
    """Screened, screen-failed (with the criteria), eligible, randomized, withdrawn, in error."""
    status = Counter(p.status for p in people)
    criteria = Counter(c for p in people if p.status is P.SCREEN_FAILED for c in p.failed_criteria)
    return ScreeningLog(
        screened=len(people),
        screen_failed=status[P.SCREEN_FAILED],
        failed_criteria=dict(sorted(criteria.items())),
        eligible_waiting=status[P.ELIGIBLE],
        randomized=sum(map(_randomized, people)),
        withdrawn=sum(1 for p in people if p.status is P.WITHDRAWN and _randomized(p)),
        withdrawn_before_randomization=sum(
            1 for p in people if p.status is P.WITHDRAWN and not _randomized(p)
        ),
        randomized_in_error=status[P.RANDOMIZED_IN_ERROR],
    )


def kit_accountability(
    session: Session, study: Study, sites: Iterable[str] | None = None
) -> list[tuple[str, str, int]]:
    """(location, status, count) of the study's kits as masked roles see them (a site's
    kits bound to no participant only as "at site"); the depot is "depot". Never by arm."""
    wanted = None if sites is None else set(sites)
    return [
        (site or "depot", status, count)
        for site, by_status in sorted(blinded_totals(session, study).items(), key=_location)
        if wanted is None or site in wanted
        for status, count in sorted(by_status.items())
    ]


def kit_accountability_by_product(
    session: Session, study: Study, sites: Iterable[str] | None = None
) -> list[tuple[str, str, str, int]]:
    """(location, status, product code, count): for the unblinded roles only."""
    wanted = None if sites is None else set(sites)
    kits = [k for k in list_kits(session, study) if wanted is None or k.site_code in wanted]
    arms = open_arms(session, study, kits)
    counts = Counter((k.site_code, k.status.value, arms[k.id]) for k in kits)
    return [
        (site or "depot", status, arm, n)
        for (site, status, arm), n in sorted(counts.items(), key=_product_order)
    ]


def _product_order(item: tuple[tuple[str | None, str, str], int]) -> tuple[bool, str, str, str]:
    (site, status, arm), _n = item
    return (site is not None, site or "", status, arm)


def _location(item: tuple[str | None, object]) -> tuple[bool, str]:
    return (item[0] is not None, item[0] or "")


def dsmb_report(session: Session, study: Study, *, actor: audit.Actor) -> list[DsmbRow]:
    """Randomized, withdrawn and unblinded participants by arm and site; audited."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for p in participants(session, study):
        if not _randomized(p):
            continue
        arm = participant_arm(session, study, p.id) or "?"
        found = counts.setdefault((arm, p.site_code), Counter())
        found["randomized"] += 1
        found["withdrawn"] += p.status is P.WITHDRAWN
        found["unblinded"] += p.unblinded_at is not None
    rows = [DsmbRow(arm, site, c["randomized"], c["withdrawn"], c["unblinded"])
            for (arm, site), c in sorted(counts.items())]  # fmt: skip
    audit.record(
        session, actor=actor, action="report.dsmb", object_type="study", object_id=study.code,
        study_code=study.code, new={"randomized": sum(r.randomized for r in rows)},
    )  # fmt: skip
    return rows
