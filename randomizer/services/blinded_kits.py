"""Kits as masked roles see them: what is held at a site shows only as "at site".

Which kits of a batch are still on a site's shelf, or expired there unused, depends on
which arms the site's participants drew (the earliest-expiring kit of the arm is taken
first). So masked roles see a site's kits that are bound to no participant as one
status, ``at_site``, without lot or expiry; kits at the depot or in transit, and kits
bound to a participant (whose existence every masked role knows), keep their status.
The unblinded pharmacist's pages show everything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.models import Dispensation, Kit, KitStatus, Study
from randomizer.services.kits import list_kits

AT_SITE = "at_site"
#: Statuses shown as they are: the depot's, the road's, and the participants'.
SHOWN = frozenset({KitStatus.AT_DEPOT, KitStatus.IN_TRANSIT})


@dataclass(frozen=True)
class BlindedKit:
    code: str
    status: str
    site_code: str | None
    lot: str | None
    expiry: dt.date | None
    is_test: bool


def _bound_ids(session: Session, study: Study) -> set[int]:
    return set(
        session.scalars(
            select(Dispensation.kit_id).join(Kit, Kit.id == Dispensation.kit_id)
            .where(Kit.study_id == study.id)
        )
    )  # fmt: skip


def blind(kit: Kit, bound: set[int]) -> BlindedKit:
    """One kit as a masked role sees it."""
    if kit.site_code is None or kit.status in SHOWN or kit.id in bound:
        return BlindedKit(kit.code, kit.status.value, kit.site_code, kit.lot, kit.expiry,
                          kit.is_test)  # fmt: skip
    return BlindedKit(kit.code, AT_SITE, kit.site_code, None, None, kit.is_test)


def blinded_kits(
    session: Session,
    study: Study,
    *,
    sites: Iterable[str] | None = None,
    status: str | None = None,
) -> list[BlindedKit]:
    """The study's kits in code order as masked roles see them, optionally filtered."""
    bound = _bound_ids(session, study)
    kits = [blind(k, bound) for k in list_kits(session, study, sites=sites)]
    return [k for k in kits if status is None or k.status == status]


def blinded_totals(session: Session, study: Study) -> dict[str | None, dict[str, int]]:
    """Kit counts by location and blinded status; never by arm."""
    bound = _bound_ids(session, study)
    out: dict[str | None, dict[str, int]] = {}
    rows = session.execute(
        select(Kit.id, Kit.site_code, Kit.status).where(Kit.study_id == study.id)
    )
    for kit_id, site, kit_status in rows:
        if site is None or kit_status in SHOWN or kit_id in bound:
            shown = kit_status.value
        else:
            shown = AT_SITE
        out.setdefault(site, {})
        out[site][shown] = out[site].get(shown, 0) + 1
    return out
