"""The blind supply policy: when a site may allocate, when and what to ship, who is told.

Every decision a masked person can observe — whether an allocation at a site goes ahead,
when a shipment is proposed, its size, and every alert — is a function of the site's
guaranteed stock (``bound``): of shipment sizes, kit counts by status, how many kits each
participant holds, and depot stock; never of which arm any participant received.

* **Gate.** A kit is allocated at a site (randomization, later visit, replacement) only
  while the guaranteed stock of *every* arm, in date for that visit's window, is at least
  one. Then a kit of the arm needed exists, whichever arm it is; otherwise every
  participant of the site gets the same refusal.
* **Resupply.** Projected guaranteed stock counts shipments on their way as arrived and
  proposed ones as sent. When it falls to the site's trigger level for some arm, a
  shipment of whole *units* (one kit per ratio part: arm-balanced, fixed composition)
  brings every arm back to the resupply level. Its size depends on the projection only.
* **Depot.** A shipment takes the depot's kits unit by unit; when the depot cannot fill
  it, fewer units go (possibly none) and the statistician and the site's pharmacists are
  told which product is short. Depot stock is no participant's secret.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import N_, SupplyUnavailable, Text
from randomizer.models import (
    Dispensation,
    Kit,
    KitStatus,
    Role,
    Shipment,
    ShipmentLine,
    ShipmentStatus,
    Site,
    SiteStock,
    Study,
    User,
    UserSite,
)
from randomizer.services import notifications, shipments
from randomizer.services.kits import NO_SUPPLY_MESSAGE
from randomizer.services.studies import definition_of
from randomizer.services.supply import bound
from randomizer.services.supply.stock import LockedStock, lock_stock


def ratios(study: Study) -> dict[str, int]:
    """Arm code → ratio part, in the study's order."""
    return {a.code: a.ratio for a in definition_of(study).arms}


def bounded_blocks(study: Study) -> tuple[int, ...] | None:
    """The block sizes that bound a site's imbalance, or None when nothing bounds it: the
    site's strata are shared with other sites, or the study allocates by minimization (any
    of its participants may share an arm)."""
    definition = definition_of(study)
    if definition.method == "minimization":
        # Any participant may have any arm: the worst case is every one of the site's.
        return None
    return definition.block_sizes if definition.stratify_by_site else None


def site_facts(
    session: Session, study: Study, stock: LockedStock, *, until: dt.date
) -> bound.SiteFacts:
    """The figures the bound takes, for a locked site stock row and a date."""
    row = stock.row
    lost, transit, sizes = stock.figures.get(until) or _kit_figures(session, study, row, until)
    stock.figures[until] = (lost, transit, sizes)
    unit = sum(ratios(study).values())
    return bound.SiteFacts(
        received={arm: stock.index.received_in_date(arm, until) for arm in stock.index.arms},
        lost=int(lost), holdings=stock.holdings(),
        in_transit=[(n, sizes.get(sid, n) // unit if sid else 0) for sid, n in transit],
    )  # fmt: skip


def _kit_figures(
    session: Session, study: Study, row: SiteStock, until: dt.date
) -> tuple[int, list[tuple[int | None, int]], dict[int, int]]:
    """(in-date losses, kits in transit per shipment, shipment sizes) at a site."""
    at_site = (Kit.study_id == study.id, Kit.site_code == row.site_code,
               Kit.is_test == row.is_test)  # fmt: skip
    transit = session.execute(
        select(Kit.shipment_id, func.count())
        .where(*at_site, Kit.status == KitStatus.IN_TRANSIT)
        .group_by(Kit.shipment_id)
    ).all()
    consumed = select(Dispensation.id).where(Dispensation.kit_id == Kit.id).exists()
    lost = session.execute(
        select(func.count()).select_from(Kit).where(
            *at_site, Kit.status.in_(_LOST), ~consumed,
            or_(Kit.expiry.is_(None), Kit.expiry >= until),
        )
    ).scalar_one()  # fmt: skip
    sizes = _shipment_sizes(session, [sid for sid, _n in transit if sid is not None])
    return int(lost), [(sid, n) for sid, n in transit], sizes


#: Statuses of a site kit that are not a loss: usable, on its way, or with a participant;
#: and expired (only ever whole dates at once, which then stop counting as sent: how many
#: of them were left depends on the arms drawn, so it may not enter the bound).
_NOT_LOST = (KitStatus.AVAILABLE, KitStatus.IN_TRANSIT, KitStatus.ALLOCATED,
             KitStatus.DISPENSED, KitStatus.EXPIRED)  # fmt: skip
#: The rest, named so that the count walks the (study, site, status) index.
_LOST = tuple(s for s in KitStatus if s not in _NOT_LOST)


def _shipment_sizes(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(ShipmentLine.shipment_id, func.count())
        .where(ShipmentLine.shipment_id.in_(ids))
        .group_by(ShipmentLine.shipment_id)
    )
    return {sid: n for sid, n in rows}


def guaranteed_now(
    session: Session, study: Study, stock: LockedStock, *, until: dt.date
) -> dict[str, int]:
    """Per arm, the kits the site is sure to hold now that are in date on ``until``."""
    return bound.guaranteed_stock(
        site_facts(session, study, stock, until=until), ratios=ratios(study),
        block_sizes=bounded_blocks(study),
    )  # fmt: skip


def require_supply(session: Session, study: Study, stock: LockedStock, *, until: dt.date) -> None:
    """The gate: refuse alike, for every participant of the site, unless every arm is sure
    to have a kit in date on ``until``."""
    if min(guaranteed_now(session, study, stock, until=until).values()) < 1:
        raise SupplyUnavailable(NO_SUPPLY_MESSAGE)


@dataclass(frozen=True)
class Projection:
    """What the resupply rule saw at a site: guaranteed stock once shipments arrive."""

    guaranteed: dict[str, int]
    ratios: dict[str, int]
    trigger: int
    resupply: int

    @property
    def units_wanted(self) -> int:
        """Whole units to ship now: none above the trigger level."""
        if bound.margin(self.guaranteed, self.ratios) > self.trigger:
            return 0
        return max(1, bound.units_to_reach(self.guaranteed, self.ratios, self.resupply))


def project(
    session: Session,
    study: Study,
    stock: LockedStock,
    *,
    levels: Site,
    today: dt.date,
    facts: bound.SiteFacts | None = None,
) -> Projection:
    """The projected guaranteed stock of a site (in transit counted as arrived, proposed
    shipments as sent), in date for a new participant's first window (``facts``: the site's
    figures for that date, when the caller has them already)."""
    short_h, _long = shipments.shelf_horizons(study, today)
    facts = facts or site_facts(session, study, stock, until=short_h)
    arm_ratios = ratios(study)
    proposed = session.execute(
        select(func.count(ShipmentLine.id))
        .join(Shipment, Shipment.id == ShipmentLine.shipment_id)
        .where(Shipment.study_id == study.id, Shipment.site_code == levels.code,
               Shipment.status == ShipmentStatus.PROPOSED, Shipment.is_test == stock.row.is_test)
    ).scalar_one()  # fmt: skip
    guaranteed = bound.guaranteed_stock(
        facts, ratios=arm_ratios, block_sizes=bounded_blocks(study),
        extra_units=proposed // sum(arm_ratios.values()), transit_arrived=True,
    )  # fmt: skip
    return Projection(guaranteed, arm_ratios, levels.trigger_level, levels.resupply_level)


def check_site(
    session: Session,
    study: Study,
    *,
    site: str,
    actor: audit.Actor = audit.SYSTEM,
    today: dt.date | None = None,
) -> Shipment | None:
    """Run the resupply rule for one site; the shipment proposed, if any.

    Also alerts the unblinded roles when the site can no longer allocate (its guaranteed
    stock of some arm is below one) or the depot cannot fill what the rule asks for.
    """
    today = today or utcnow().date()
    levels = next((s for s in study.sites if s.code == site), None)
    if levels is None:
        return None
    is_test = shipments.current_is_test(study)
    stock = lock_stock(session, study, site, is_test=is_test)
    short_h, _long = shipments.shelf_horizons(study, today)
    # A proposal changes neither figure: one reading serves the rule and the closure check.
    facts = site_facts(session, study, stock, until=short_h)
    projection = project(session, study, stock, levels=levels, today=today, facts=facts)
    units = projection.units_wanted
    shipment = None
    if units:
        kits, short = shipments.pick_depot_units(session, study, units, today=today)
        if kits:
            shipment = shipments.create_shipment(
                session, study, site=site, kits=kits, actor=actor, origin="resupply",
                depot_short=bool(short),
            )  # fmt: skip
    # Each alert goes out once when its condition begins (both conditions are blind).
    if bool(units and short) != stock.row.depot_short:
        stock.row.depot_short = bool(units and short)
        if stock.row.depot_short:
            _alert_depot_short(session, study, site, units)
    now = bound.guaranteed_stock(facts, ratios=ratios(study), block_sizes=bounded_blocks(study))
    closed = min(now.values()) < 1
    if closed != stock.row.closed:
        stock.row.closed = closed
        if closed:
            _alert_closed(session, study, site)
    session.flush()
    return shipment


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


def finish_receipt(
    session: Session,
    study: Study,
    *,
    shipment: Shipment,
    actor: audit.Actor,
    remark: str | None = None,
    today: dt.date | None = None,
) -> list[str]:
    """Close a receipt (``shipments.finish_receipt``), then run the site's resupply rule:
    kits missing on receipt may leave it short."""
    missing = shipments.finish_receipt(session, study, shipment=shipment, actor=actor,
                                       remark=remark)  # fmt: skip
    check_site(session, study, site=shipment.site_code, today=today)
    return missing


# --- alerts to the unblinded roles -------------------------------------------------------


def unblinded_recipients(session: Session, site: str) -> list[str]:
    """E-mail addresses of the statisticians and of the site's pharmacists (active)."""
    pharmacists = select(UserSite.user_id).where(UserSite.site_code == site)
    rows = session.scalars(
        select(User.email).where(
            User.active.is_(True),
            User.email.is_not(None),
            (User.role == Role.STATISTICIAN)
            | ((User.role == Role.PHARMACIST) & User.id.in_(pharmacists)),
        )
    )
    return sorted({e for e in rows if e})


def _alert_depot_short(session: Session, study: Study, site: str, units: int) -> None:
    # The outbox is readable by the (masked) admin: which product is short is shown on the
    # unblinded supply page, never written here.
    values = {"study": study.code, "site": site, "units": units}
    _notify(
        session, study, site,
        subject=Text(N_("[%(study)s] Depot short for a shipment to site %(site)s"), values),
        body=Text(
            N_(
                "The supply rule asked for %(units)s units of kits for site %(site)s of study "
                "%(study)s; the depot could not fill them all. The supply page shows which "
                "product is short. Release more kits to the depot (randomizer kits generate "
                "--arm), then run the resupply check again."
            ),
            values,
        ),
    )  # fmt: skip


def _alert_closed(session: Session, study: Study, site: str) -> None:
    values = {"study": study.code, "site": site}
    _notify(
        session, study, site,
        subject=Text(N_("[%(study)s] Site %(site)s cannot allocate kits until stock arrives"),
                     values),
        body=Text(
            N_(
                "At site %(site)s of study %(study)s the stock that is guaranteed whatever "
                "the participants' arms has fallen below one kit of some product, so "
                "randomization and dispensing there are refused alike for every participant "
                "until a shipment is received. The supply page shows the figures."
            ),
            values,
        ),
    )  # fmt: skip


def _notify(session: Session, study: Study, site: str, *, subject: Text, body: Text) -> None:
    recipients = unblinded_recipients(session, site)
    if recipients:
        notifications.queue(
            session, study_id=study.id, recipients=recipients, subject=subject, body=body
        )
