"""Which time zone a time is shown in (SPEC §4.3): the site's, the study's, the instance's.

Times are stored, exported and chained in UTC; pages show them in the zone of the site they
belong to. A study-wide time (a pause of the whole study, the lock, a list) is shown in the
zone of the study's first site, and a page spanning studies (the audit trail, the outbox,
the exposure register) in that of the first study loaded: one instance serves one trial's
sites in practice, and the zone is always named next to the time.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import studytext
from randomizer.models import Study
from randomizer.services.studies import definition_of


def study_zone(study: Study, site_code: str | None = None) -> str:
    """The zone of one of the study's sites, or the study's zone when ``site_code`` is None."""
    return studytext.site_zone(definition_of(study).sites, site_code)


def instance_zone(session: Session) -> str:
    """The zone of pages that span studies: the first loaded study's (UTC without one)."""
    study = session.scalars(select(Study).order_by(Study.id).limit(1)).first()
    return study_zone(study) if study is not None else studytext.DEFAULT_TIMEZONE
