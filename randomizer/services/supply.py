"""Blinded resupply: per-site trigger and resupply levels, shipments that top up every arm.

A site's *stock* of an arm is its available kits of that arm still in date for a new
participant's first dispensing window, plus the kits of that arm already on their way
(proposed or in-transit shipments to the site). With trigger level T, resupply level R and
K arms, a shipment topping **every** arm up to R is proposed when

* the stock of any arm falls to T (the rule of the study definition), or
* the site's total stock falls to (K − 1)·R + T.

The second, arm-free condition is what keeps the rule blind. While no arm holds more than
R kits (resupply shipments never bring an arm above R), an arm at T implies a total of at
most T + (K − 1)·R, so the total condition has always fired first: the moment a shipment
is proposed depends only on the site's total stock, which masked site staff see anyway,
and never on which participants received which arm. How many kits of each arm a shipment
holds is visible only to the unblinded pharmacist; its size (K·R − total) again depends
only on the total.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.models import Kit, KitStatus, Shipment, ShipmentStatus, Site, Study
from randomizer.services import shipments
from randomizer.services.kits import open_arms
from randomizer.services.studies import definition_of

OPEN_SHIPMENTS = (ShipmentStatus.PROPOSED, ShipmentStatus.IN_TRANSIT)


def stock_kits(session: Session, study: Study, *, site: str, today: dt.date) -> list[Kit]:
    """The kits counted as a site's stock (see the module docstring), of the current mode."""
    short_h, _long = shipments.shelf_horizons(study, today)
    open_ids = select(Shipment.id).where(
        Shipment.study_id == study.id,
        Shipment.site_code == site,
        Shipment.status.in_(OPEN_SHIPMENTS),
    )
    return list(
        session.scalars(
            select(Kit).where(
                Kit.study_id == study.id,
                Kit.is_test == shipments.current_is_test(study),
                or_(Kit.expiry.is_(None), Kit.expiry >= short_h),
                or_(
                    (Kit.site_code == site) & (Kit.status == KitStatus.AVAILABLE),
                    Kit.shipment_id.in_(open_ids)
                    & Kit.status.in_([KitStatus.AT_DEPOT, KitStatus.IN_TRANSIT]),
                ),
            )
        )
    )


def site_stock(session: Session, study: Study, *, site: str, today: dt.date) -> dict[str, int]:
    """Stock per arm at a site. Unblinded: for the resupply rule and unblinded roles only."""
    kits = stock_kits(session, study, site=site, today=today)
    arms = open_arms(session, study, kits)
    stock = {a.code: 0 for a in definition_of(study).arms}
    for arm in arms.values():
        stock[arm] += 1
    return stock


def needs_resupply(stock: dict[str, int], *, trigger: int, resupply: int) -> bool:
    """The blinded trigger (module docstring): any arm at T, or the total at (K − 1)·R + T."""
    total = sum(stock.values())
    return min(stock.values()) <= trigger or total <= (len(stock) - 1) * resupply + trigger


def top_up(stock: dict[str, int], *, resupply: int) -> dict[str, int]:
    """Kits of each arm that bring every arm up to the resupply level."""
    return {arm: max(0, resupply - n) for arm, n in stock.items()}


def check_site(
    session: Session,
    study: Study,
    *,
    site: str,
    actor: audit.Actor = audit.SYSTEM,
    today: dt.date | None = None,
) -> Shipment | None:
    """Propose a top-up shipment for the site when the blinded rule asks for one."""
    today = today or utcnow().date()
    levels = session.scalar(select(Site).where(Site.study_id == study.id, Site.code == site))
    if levels is None:
        return None
    stock = site_stock(session, study, site=site, today=today)
    if not needs_resupply(stock, trigger=levels.trigger_level, resupply=levels.resupply_level):
        return None
    wanted = top_up(stock, resupply=levels.resupply_level)
    if sum(wanted.values()) == 0:
        return None
    kits, short = shipments.pick_depot_kits(session, study, wanted, today=today)
    if not kits:
        return None
    return shipments.create_shipment(
        session, study, site=site, kits=kits, actor=actor, origin="resupply", depot_short=short
    )


def check_all(
    session: Session,
    study: Study,
    *,
    actor: audit.Actor = audit.SYSTEM,
    today: dt.date | None = None,
    sites: Iterable[str] | None = None,
) -> list[Shipment]:
    """Run the resupply rule for every site (or these); returns the shipments proposed."""
    codes = list(sites) if sites is not None else [s.code for s in study.sites]
    proposed = [check_site(session, study, site=c, actor=actor, today=today) for c in codes]
    return [s for s in proposed if s is not None]
