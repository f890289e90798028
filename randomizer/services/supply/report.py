"""The supply figures the unblinded roles see: per site and arm, what is really there,
what the bound guarantees, and the margin the levels and block sizes give.

Unblinded only (statistician; a site's pharmacist): the real stock per arm is shown here
and nowhere else. Nothing is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.models import Study
from randomizer.services import shipments
from randomizer.services.studies import definition_of
from randomizer.services.supply import bound, policy
from randomizer.services.supply.stock import DEPOT, peek_stock


@dataclass(frozen=True)
class ArmLine:
    code: str
    name: str
    available: int
    guaranteed: int
    projected: int
    depot: int


@dataclass(frozen=True)
class SiteSupply:
    site: str
    name: str
    trigger: int
    resupply: int
    #: Most kits of each arm beyond its share that the site's strata can take (blocks).
    block_excess: dict[str, int]
    arms: list[ArmLine]
    closed: bool
    depot_short: bool
    #: Guaranteed kits per ratio part of the shortest arm, now (the levels' unit).
    margin: int


def site_supply(
    session: Session, study: Study, *, sites: frozenset[str] | None = None,
    today: dt.date | None = None,
) -> list[SiteSupply]:  # fmt: skip
    """The figures of every site of the study (or of ``sites``)."""
    today = today or utcnow().date()
    definition = definition_of(study)
    is_test = shipments.current_is_test(study)
    short_h, _long = shipments.shelf_horizons(study, today)
    depot = peek_stock(session, study, DEPOT, is_test=is_test)
    strata = definition.strata()
    ratios = policy.ratios(study)
    out = []
    for site in study.sites:
        if sites is not None and site.code not in sites:
            continue
        stock = peek_stock(session, study, site.code, is_test=is_test)
        guaranteed = policy.guaranteed_now(session, study, stock, until=short_h)
        projection = policy.project(session, study, stock, levels=site, today=today)
        own = [s for s in strata if s.split("|", 1)[0] == site.code]
        blocks = None if definition.method == "minimization" else definition.block_sizes
        excess = bound.worst_imbalance(own or strata, ratios, blocks,
                                       definition.per_stratum)  # fmt: skip
        lines = [
            ArmLine(a.code, a.name, stock.index.in_date(a.code, short_h), guaranteed[a.code],
                    projection.guaranteed[a.code],
                    depot.index.in_date(a.code, short_h))
            for a in definition.arms
        ]  # fmt: skip
        out.append(SiteSupply(site.code, site.name, site.trigger_level, site.resupply_level,
                              excess, lines, stock.row.closed, stock.row.depot_short,
                              bound.margin(guaranteed, ratios)))  # fmt: skip
    return out
