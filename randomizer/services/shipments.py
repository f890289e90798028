"""Shipments from the depot to a site: kit codes only; receipt kit by kit at the site.

A shipment is proposed (its kits reserved at the depot), dispatched by an admin (kits in
transit), then received by the site pharmacist one code at a time, typed or scanned: each
code is checked (check character, then membership of this shipment) before anything is
recorded, so a batch with one bad code changes nothing. Finishing the receipt reports the
kits never scanned as missing. Nothing here opens an arm but the stock indexes (``supply.
stock``), kept true in the same transaction; shipments are whole units, so no answer
depends on an arm.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from randomizer import audit, kitcodes
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, InvalidInput, NotFound, Text
from randomizer.models import (
    Kit,
    KitStatus,
    Shipment,
    ShipmentLine,
    ShipmentStatus,
    Study,
    StudyMode,
)
from randomizer.services.kit_lifecycle import check_transition
from randomizer.services.studies import definition_of
from randomizer.services.supply.stock import (
    DEPOT,
    credit,
    forget_figures,
    lock_stock,
    moved,
    pools,
)

_SHUFFLE = random.SystemRandom()
MAX_SHIPMENT_KITS = 1000
OUTCOMES = ("received", "damaged")


def current_is_test(study: Study) -> bool:
    """Kits and shipments made now are test data while the study is in testing mode."""
    return study.mode is StudyMode.TESTING


def get_shipment(
    session: Session, study: Study, shipment_id: int, *, sites: frozenset[str] | None = None
) -> Shipment:
    """A shipment of this study (limited to ``sites`` when given), else NotFound."""
    shipment = session.get(Shipment, shipment_id)
    if (
        shipment is None
        or shipment.study_id != study.id
        or (sites is not None and shipment.site_code not in sites)
    ):
        raise NotFound(
            N_("No shipment %(shipment_id)s."), field="shipment", shipment_id=shipment_id
        )
    return shipment


def list_shipments(
    session: Session,
    study: Study,
    *,
    sites: frozenset[str] | None = None,
    statuses: Iterable[ShipmentStatus] | None = None,
) -> list[Shipment]:
    """Shipments of the study, newest first, optionally by site and status."""
    query = select(Shipment).where(Shipment.study_id == study.id)
    if sites is not None:
        query = query.where(Shipment.site_code.in_(sites))
    if statuses is not None:
        query = query.where(Shipment.status.in_(list(statuses)))
    return list(session.scalars(query.order_by(Shipment.id.desc())))


@dataclass(frozen=True)
class LineView:
    """One line of a shipment as anyone may see it: kit code and receipt outcome."""

    kit_code: str
    kit_status: KitStatus
    outcome: str
    checked_by: str | None
    remark: str | None


def shipment_lines(session: Session, shipment: Shipment) -> list[LineView]:
    """The kits of a shipment, in code order (codes are random: the order means nothing)."""
    rows = session.execute(
        select(Kit.code, Kit.status, ShipmentLine.outcome, ShipmentLine.checked_by,
               ShipmentLine.remark)
        .join(Kit, Kit.id == ShipmentLine.kit_id)
        .where(ShipmentLine.shipment_id == shipment.id)
        .order_by(Kit.code)
    )  # fmt: skip
    return [LineView(*row) for row in rows]


def line_counts(session: Session, shipment_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per shipment, how many lines have each outcome."""
    out: dict[int, dict[str, int]] = {i: {} for i in shipment_ids}
    rows = session.execute(
        select(ShipmentLine.shipment_id, ShipmentLine.outcome, func.count())
        .where(ShipmentLine.shipment_id.in_(shipment_ids))
        .group_by(ShipmentLine.shipment_id, ShipmentLine.outcome)
    )
    for shipment_id, outcome, count in rows:
        out[shipment_id][outcome] = count
    return out


# --- choosing depot kits ---------------------------------------------------------------


def shelf_horizons(study: Study, today: dt.date) -> tuple[dt.date, dt.date]:
    """(short, long): a shipped kit must be in date for a new participant's first dispensing
    window (short); kits that also last to the close of the last dispensing window (long)
    are preferred."""
    visits = [v for v in definition_of(study).visits if v.dispense]
    first = min(visits, key=lambda v: v.day)
    last = max(v.day + v.window_days for v in visits)
    return today + dt.timedelta(days=first.day + first.window_days), today + dt.timedelta(days=last)


def pick_depot_units(
    session: Session, study: Study, units: int, *, today: dt.date
) -> tuple[list[Kit], dict[str, int]]:
    """Free, in-date depot kits for up to ``units`` whole units (one kit per ratio part).

    Returns (kits, short): as many whole units as the depot can fill, and per arm the kits
    missing for the rest. Per arm the kits that last to the close of the last dispensing
    window are taken first, earliest expiry first (then the longest-lasting of the
    others), at random among equal expiries. The depot's stock row is locked, so two
    proposals never take the same kit.
    """
    short_h, long_h = shelf_horizons(study, today)
    ratios = {a.code: a.ratio for a in definition_of(study).arms}
    depot = lock_stock(session, study, DEPOT, is_test=current_is_test(study))
    order = {arm: _depot_order(depot.index.kits[arm], short_h, long_h) for arm in ratios}
    filled = min([units, *(len(order[arm]) // r for arm, r in ratios.items())])
    short = {arm: units * r - len(order[arm]) for arm, r in ratios.items()
             if len(order[arm]) < units * r}  # fmt: skip
    chosen = [kit_id for arm, r in ratios.items() for kit_id in order[arm][: filled * r]]
    kits = session.scalars(select(Kit).where(Kit.id.in_(chosen)).order_by(Kit.code)).all()
    return list(kits), short


def _depot_order(
    entries: Iterable[tuple[int, int]], short_h: dt.date, long_h: dt.date
) -> list[int]:
    lasting = [e for e in entries if e[0] >= long_h.toordinal()]
    usable = [e for e in entries if short_h.toordinal() <= e[0] < long_h.toordinal()]
    _SHUFFLE.shuffle(lasting)
    _SHUFFLE.shuffle(usable)
    lasting.sort(key=lambda e: e[0])
    usable.sort(key=lambda e: -e[0])
    return [kit_id for _expiry, kit_id in lasting + usable]


def unit_size(study: Study) -> int:
    """Kits in one unit: one per ratio part of every arm."""
    return sum(a.ratio for a in definition_of(study).arms)


# --- proposing, dispatching, cancelling ------------------------------------------------


def create_shipment(
    session: Session,
    study: Study,
    *,
    site: str,
    kits: Sequence[Kit],
    actor: audit.Actor,
    origin: str,
    depot_short: bool = False,
) -> Shipment:
    """A proposed shipment of these depot kits to ``site`` (kits reserved; audited by code)."""
    if site not in {s.code for s in definition_of(study).sites}:
        raise InvalidInput(
            N_("Study %(study)s has no site '%(site)s'."), field="site", study=study.code, site=site
        )
    if not kits:
        raise Conflict(N_("The depot has no kit that can be shipped."), field="count")
    for kit in kits:
        if kit.status is not KitStatus.AT_DEPOT or kit.shipment_id is not None:
            raise Conflict(N_("Kit %(kit)s is not free at the depot."), field="kits", kit=kit.code)
    shipment = Shipment(
        study_id=study.id, site_code=site, status=ShipmentStatus.PROPOSED, origin=origin,
        is_test=current_is_test(study), created_by=actor.username, depot_short=depot_short,
    )  # fmt: skip
    session.add(shipment)
    session.flush()
    before = pools(kits)
    for kit in kits:
        kit.shipment_id = shipment.id
        session.add(ShipmentLine(shipment_id=shipment.id, kit_id=kit.id, outcome="pending"))
    moved(session, study, before, kits)
    session.flush()
    audit.record(
        session, actor=actor, action="shipment.propose", object_type="shipment",
        object_id=shipment.id, study_code=study.code,
        new={"site": site, "origin": origin, "count": len(kits), "depot_short": depot_short,
             "kit_codes": [k.code for k in kits]},
    )  # fmt: skip
    return shipment


def propose_manual(
    session: Session,
    study: Study,
    *,
    site: str,
    count: int,
    actor: audit.Actor,
    today: dt.date | None = None,
) -> Shipment:
    """An admin's shipment of ``count`` kits in whole units (the arms in the study's ratio):
    every arriving kit keeps the site's stock balanced, so the blind supply bound holds.
    Refused, with nothing changed, when the depot cannot fill it."""
    unit = unit_size(study)
    if not 1 <= count <= MAX_SHIPMENT_KITS:
        raise InvalidInput(
            N_("The count must be between 1 and %(max_shipment_kits)s."),
            field="count",
            max_shipment_kits=MAX_SHIPMENT_KITS,
        )
    if count % unit:
        raise InvalidInput(
            N_(
                "The count must be a multiple of %(unit)s (one kit per ratio part of "
                "every product), so that the shipment is balanced."
            ),
            field="count",
            unit=unit,
        )
    kits, short = pick_depot_units(session, study, count // unit, today=today or utcnow().date())
    if short:
        raise Conflict(
            N_(
                "The depot can fill %(available)s of these %(count)s kits; nothing was "
                "proposed. Ask for fewer, or release more kits to the depot."
            ),
            field="count",
            available=len(kits),
            count=count,
        )
    return create_shipment(session, study, site=site, kits=kits, actor=actor, origin="manual")


def _kits_of(session: Session, shipment: Shipment) -> list[Kit]:
    """The shipment's kits, locked and re-read (a kit may have been moved meanwhile)."""
    return list(
        session.scalars(
            select(Kit)
            .join(ShipmentLine, ShipmentLine.kit_id == Kit.id)
            .where(ShipmentLine.shipment_id == shipment.id)
            .order_by(Kit.code)
            .with_for_update(of=Kit)
            .execution_options(populate_existing=True)
        )
    )


def _require_status(shipment: Shipment, *allowed: ShipmentStatus) -> None:
    """Lock the shipment's row (one change at a time: two pharmacists scanning, an admin
    dispatching twice), re-read it, and check its status."""
    session = object_session(shipment)
    if session is not None:
        session.refresh(shipment, with_for_update=True)
    if shipment.status not in allowed:
        raise Conflict(
            N_("Shipment %(id)s is %(status)s."),
            field="shipment",
            id=shipment.id,
            status=shipment.status,
        )


def dispatch(session: Session, study: Study, *, shipment: Shipment, actor: audit.Actor) -> None:
    """Approve and send a proposed shipment: its kits leave the depot, in transit to the site."""
    _require_status(shipment, ShipmentStatus.PROPOSED)
    kits = _kits_of(session, shipment)
    for kit in kits:
        check_transition(kit, KitStatus.IN_TRANSIT)
    for kit in kits:
        kit.status, kit.site_code = KitStatus.IN_TRANSIT, shipment.site_code
    credit(session, study, shipment.site_code, kits)
    shipment.status = ShipmentStatus.IN_TRANSIT
    shipment.dispatched_by, shipment.dispatched_at = actor.username, utcnow()
    session.flush()
    audit.record(
        session, actor=actor, action="shipment.dispatch", object_type="shipment",
        object_id=shipment.id, study_code=study.code,
        old={"status": ShipmentStatus.PROPOSED.value, "kit_status": KitStatus.AT_DEPOT.value},
        new={"status": shipment.status.value, "kit_status": KitStatus.IN_TRANSIT.value,
             "site": shipment.site_code, "kit_codes": [k.code for k in kits]},
    )  # fmt: skip


def cancel(
    session: Session, study: Study, *, shipment: Shipment, actor: audit.Actor, reason: str
) -> None:
    """Cancel a proposed shipment; its kits are free at the depot again."""
    _require_status(shipment, ShipmentStatus.PROPOSED)
    if not reason or not reason.strip():
        raise InvalidInput(N_("Give the reason the shipment is cancelled."), field="reason")
    kits = _kits_of(session, shipment)
    before = pools(kits)
    for kit in kits:
        kit.shipment_id = None
    moved(session, study, before, kits)
    for line in session.scalars(
        select(ShipmentLine).where(ShipmentLine.shipment_id == shipment.id)
    ):
        line.outcome = "cancelled"
    shipment.status = ShipmentStatus.CANCELLED
    session.flush()
    audit.record(
        session, actor=actor, action="shipment.cancel", object_type="shipment",
        object_id=shipment.id, study_code=study.code,
        old={"status": ShipmentStatus.PROPOSED.value},
        new={"status": shipment.status.value}, reason=reason.strip(),
    )  # fmt: skip


# --- receipt at the site ---------------------------------------------------------------


def parse_codes(text: str) -> list[str]:
    """Codes typed or scanned one per line (or separated by commas or semicolons)."""
    parts = text.replace(",", "\n").replace(";", "\n").splitlines()
    return [p.strip() for p in parts if p.strip()]


def _lines_for_codes(
    session: Session, shipment: Shipment, codes: Sequence[str]
) -> list[tuple[ShipmentLine, Kit]]:
    """Check every code before anything is recorded; the first bad one refuses them all."""
    if not codes:
        raise InvalidInput(N_("Scan or type at least one kit code."), field="codes")
    found: list[tuple[ShipmentLine, Kit]] = []
    seen: set[str] = set()
    for typed in codes:
        if not kitcodes.is_valid(typed):
            raise InvalidInput(
                N_(
                    "'%(typed)s' is not a valid kit code: its check character does not match "
                    "(mistyped?). Nothing was recorded; check the label and scan or type it "
                    "again."
                ),
                field="codes",
                typed=typed,
            )
        code = kitcodes.canonical(typed)
        if code in seen:
            raise InvalidInput(N_("Kit %(code)s is listed twice. Nothing was recorded."),
                               field="codes", code=code)  # fmt: skip
        seen.add(code)
        row = session.execute(
            select(ShipmentLine, Kit)
            .join(Kit, Kit.id == ShipmentLine.kit_id)
            .where(ShipmentLine.shipment_id == shipment.id, Kit.code == code)
        ).first()
        if row is None:
            raise InvalidInput(
                N_(
                    "Kit %(code)s is not part of shipment %(id)s. Nothing was recorded; set "
                    "that kit aside and check its label."
                ),
                field="codes",
                code=code,
                id=shipment.id,
            )
        line, kit = row[0], row[1]
        if line.outcome != "pending":
            raise InvalidInput(
                N_("Kit %(code)s was already checked in as %(outcome)s. Nothing was recorded."),
                field="codes",
                code=code,
                outcome=Text(line.outcome),
            )
        found.append((line, kit))
    return found


def receive_kits(
    session: Session,
    study: Study,
    *,
    shipment: Shipment,
    codes: Sequence[str],
    outcome: str,
    actor: audit.Actor,
    remark: str | None = None,
) -> list[Kit]:
    """Check kits of an in-transit shipment in at the site, as ``received`` or ``damaged``.

    All-or-nothing: a mistyped code (check character), a code that is not in this
    shipment (unknown, another site's, another shipment's) or one already checked in
    refuses the whole batch with a message naming it, and nothing changes.
    """
    _require_status(shipment, ShipmentStatus.IN_TRANSIT)
    if outcome not in OUTCOMES:
        raise InvalidInput(N_("Choose received or damaged."), field="outcome")
    remark = (remark or "").strip() or None
    if outcome == "damaged" and remark is None:
        raise InvalidInput(N_("Describe the damage."), field="remark")
    pairs = _lines_for_codes(session, shipment, codes)
    to = KitStatus.AVAILABLE if outcome == "received" else KitStatus.DAMAGED
    for _line, kit in pairs:
        check_transition(kit, to, remark)
    now = utcnow()
    before = pools(k for _l, k in pairs)
    for line, kit in pairs:
        kit.status, kit.site_code = to, shipment.site_code
        line.outcome, line.checked_by, line.checked_at, line.remark = (
            outcome, actor.username, now, remark
        )  # fmt: skip
    moved(session, study, before, [k for _l, k in pairs])
    session.flush()
    audit.record(
        session, actor=actor, action=f"shipment.{outcome}", object_type="shipment",
        object_id=shipment.id, study_code=study.code,
        old={"kit_status": KitStatus.IN_TRANSIT.value},
        new={"kit_status": to.value, "site": shipment.site_code,
             "kit_codes": [k.code for _l, k in pairs]},
        reason=remark,
    )  # fmt: skip
    return [k for _l, k in pairs]


def finish_receipt(
    session: Session,
    study: Study,
    *,
    shipment: Shipment,
    actor: audit.Actor,
    remark: str | None = None,
) -> list[str]:
    """Close the receipt: kits never checked in are reported missing (lost). Returns their
    codes. (``supply.policy.finish_receipt`` then runs the site's resupply rule.)"""
    _require_status(shipment, ShipmentStatus.IN_TRANSIT)
    reason = (remark or "").strip() or f"Not found on receipt of shipment {shipment.id}."
    rows = session.execute(
        select(ShipmentLine, Kit)
        .join(Kit, Kit.id == ShipmentLine.kit_id)
        .where(ShipmentLine.shipment_id == shipment.id, ShipmentLine.outcome == "pending")
        .order_by(Kit.code)
    ).all()
    now = utcnow()
    for line, kit in ((r[0], r[1]) for r in rows):
        check_transition(kit, KitStatus.LOST, reason)
        kit.status = KitStatus.LOST
        line.outcome, line.checked_by, line.checked_at, line.remark = (
            "missing", actor.username, now, reason
        )  # fmt: skip
    missing = [r[1].code for r in rows]
    forget_figures(session)
    shipment.status = ShipmentStatus.RECEIVED
    shipment.received_by, shipment.received_at = actor.username, now
    session.flush()
    audit.record(
        session, actor=actor, action="shipment.receive", object_type="shipment",
        object_id=shipment.id, study_code=study.code,
        old={"status": ShipmentStatus.IN_TRANSIT.value},
        new={"status": shipment.status.value, "missing": missing},
        reason=reason if missing else None,
    )  # fmt: skip
    return missing
