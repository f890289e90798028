"""Pausing randomization for a whole study or one site (a DSMB safety halt, a supply problem).

While a pause is open every randomization in its scope is refused with the same message,
whoever the participant and whatever the arm: ``refuse_if_paused`` runs before any slot or
arm is looked at. Pausing and resuming are audited; both take the study's allocation lock so
that they never race a randomization.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, InvalidInput, RandomizationPaused, Text
from randomizer.models import RandomizationPause, Study
from randomizer.services.studies import lock_study_row

MAX_REASON = 500


def open_pauses(session: Session, study: Study) -> list[RandomizationPause]:
    """The study's open pauses, the whole-study one first, then by site."""
    rows = session.scalars(
        select(RandomizationPause).where(
            RandomizationPause.study_id == study.id, RandomizationPause.resumed_at.is_(None)
        )
    )
    return sorted(rows, key=lambda p: (p.site_code is not None, p.site_code or ""))


def refuse_if_paused(session: Session, study: Study, site: str) -> None:
    """RandomizationPaused (409) while the study or this site is paused; nothing is changed."""
    for pause in open_pauses(session, study):
        if pause.site_code in (None, site):
            raise RandomizationPaused(_refusal(study, pause), field="study")


def _refusal(study: Study, pause: RandomizationPause) -> Text:
    if pause.site_code is None:
        return Text(
            N_("Randomization is paused for study %(study)s: %(reason)s Nothing was changed."),
            {"study": study.code, "reason": pause.reason},
        )
    return Text(
        N_(
            "Randomization is paused at site %(site)s of study %(study)s: %(reason)s Nothing "
            "was changed."
        ),
        {"site": pause.site_code, "study": study.code, "reason": pause.reason},
    )


def _scope(study: Study, site: str | None) -> str | None:
    if site is not None and site not in {s.code for s in study.sites}:
        raise InvalidInput(
            N_("site: study %(study)s has no site '%(site)s'."),
            field="site",
            study=study.code,
            site=site,
        )
    return site


def _reason(reason: object) -> str:
    text = " ".join(reason.split()) if isinstance(reason, str) else ""
    if not text:
        raise InvalidInput(N_("reason: give the reason for the pause."), field="reason")
    if len(text) > MAX_REASON:
        raise InvalidInput(
            N_("reason: at most %(max_reason)s characters."), field="reason", max_reason=MAX_REASON
        )
    return text if text.endswith((".", "!", "?")) else text + "."


def _open_pause(session: Session, study: Study, site: str | None) -> RandomizationPause | None:
    return next((p for p in open_pauses(session, study) if p.site_code == site), None)


def _where(site: str | None) -> Text:
    if site is None:
        return Text(N_("the whole study"))
    return Text(N_("site %(site)s"), {"site": site})


def pause(
    session: Session, study: Study, *, site: str | None, reason: object, actor: audit.Actor
) -> RandomizationPause:
    """Pause randomization for the study (``site`` None) or one site; audited."""
    site, why = _scope(study, site), _reason(reason)
    lock_study_row(session, study.id)
    if _open_pause(session, study, site) is not None:
        raise Conflict(
            N_("Randomization is already paused for %(where)s."), field="site", where=_where(site)
        )
    row = RandomizationPause(
        study_id=study.id, site_code=site, reason=why, paused_by=actor.username
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor=actor, action="randomization.pause", object_type="study",
        object_id=study.code, study_code=study.code, new={"site": site, "paused": True},
        reason=why,
    )  # fmt: skip
    return row


def resume(
    session: Session, study: Study, *, site: str | None, actor: audit.Actor
) -> RandomizationPause:
    """Resume randomization paused for the study (``site`` None) or one site; audited."""
    site = _scope(study, site)
    lock_study_row(session, study.id)
    row = _open_pause(session, study, site)
    if row is None:
        raise Conflict(
            N_("Randomization is not paused for %(where)s."), field="site", where=_where(site)
        )
    row.resumed_at, row.resumed_by = utcnow(), actor.username
    session.flush()
    audit.record(
        session, actor=actor, action="randomization.resume", object_type="study",
        object_id=study.code, study_code=study.code, old={"site": site, "paused": True},
        new={"site": site, "paused": False}, reason=row.reason,
    )  # fmt: skip
    return row
