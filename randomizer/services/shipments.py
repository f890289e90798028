"""Shipments from the depot to a site: kit codes only; receipt kit by kit at the site.

A shipment is proposed (its kits reserved at the depot), dispatched by an admin (kits in
transit), then received by the site pharmacist one code at a time, typed or scanned: each
code is checked (check character, then membership of this shipment) before anything is
recorded, so a batch with one bad code changes nothing. Finishing the receipt reports the
kits never scanned as missing. Nothing here ever opens an arm except to pick depot kits
(``pick_depot_kits``), and no answer depends on one.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, object_session

from randomizer import audit, kitcodes
from randomizer.db import utcnow
from randomizer.errors import Conflict, InvalidInput, NotFound
from randomizer.models import (
    Kit,
    KitStatus,
    Shipment,
    ShipmentLine,
    ShipmentStatus,
    Study,
    StudyMode,
)
from randomizer.services.keyring import RowSealer, sealer_by_key_id
from randomizer.services.kit_lifecycle import check_transition
from randomizer.services.studies import definition_of

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
        raise NotFound(f"No shipment {shipment_id}.", field="shipment")
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


def pick_depot_kits(
    session: Session, study: Study, wanted: Mapping[str, int], *, today: dt.date
) -> tuple[list[Kit], bool]:
    """Unreserved, in-date depot kits: ``wanted[arm]`` of each arm, chosen at random among
    those with the longest useful shelf life. Returns (kits, short) where ``short`` says the
    depot could not supply them all."""
    short_h, long_h = shelf_horizons(study, today)
    # Plain rows, not ORM objects: a depot can hold tens of thousands of kits.
    pool = list(
        session.execute(
            select(Kit.id, Kit.code, Kit.data_key_id, Kit.arm_sealed, Kit.expiry).where(
                Kit.study_id == study.id,
                Kit.status == KitStatus.AT_DEPOT,
                Kit.shipment_id.is_(None),
                Kit.is_test == current_is_test(study),
                or_(Kit.expiry.is_(None), Kit.expiry >= short_h),
            )
        )
    )
    _SHUFFLE.shuffle(pool)
    pool.sort(key=lambda row: row.expiry is not None and row.expiry < long_h)
    # Open arms in that random order only until every arm has what it needs.
    needed = {arm: n for arm, n in wanted.items() if n > 0}
    sealers: dict[str, RowSealer] = {}
    chosen: list[int] = []
    for row in pool:
        if not needed:
            break
        if row.data_key_id not in sealers:
            sealers[row.data_key_id] = sealer_by_key_id(session, study, row.data_key_id)
        arm = sealers[row.data_key_id].open("kit", row.code, row.arm_sealed)
        if needed.get(arm, 0) > 0:
            chosen.append(row.id)
            needed[arm] -= 1
            if not needed[arm]:
                del needed[arm]
    kits = session.scalars(select(Kit).where(Kit.id.in_(chosen)).order_by(Kit.code)).all()
    return list(kits), bool(needed)


def balanced_counts(study: Study, count: int) -> dict[str, int]:
    """Split ``count`` kits between the arms in the study's ratio (remainder at random)."""
    arms = definition_of(study).arms
    unit = [a.code for a in arms for _ in range(a.ratio)]
    out = {a.code: 0 for a in arms}
    full, rest = divmod(count, len(unit))
    for code in unit:
        out[code] += full
    for code in _SHUFFLE.sample(unit, rest):
        out[code] += 1
    return out


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
        raise InvalidInput(f"Study {study.code} has no site {site!r}.", field="site")
    if not kits:
        raise Conflict("The depot has no kit that can be shipped.", field="count")
    for kit in kits:
        if kit.status is not KitStatus.AT_DEPOT or kit.shipment_id is not None:
            raise Conflict(f"Kit {kit.code} is not free at the depot.", field="kits")
    shipment = Shipment(
        study_id=study.id, site_code=site, status=ShipmentStatus.PROPOSED, origin=origin,
        is_test=current_is_test(study), created_by=actor.username, depot_short=depot_short,
    )  # fmt: skip
    session.add(shipment)
    session.flush()
    for kit in kits:
        kit.shipment_id = shipment.id
        session.add(ShipmentLine(shipment_id=shipment.id, kit_id=kit.id, outcome="pending"))
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
    """An admin's shipment of ``count`` kits, split between the arms in the study's ratio."""
    if not 1 <= count <= MAX_SHIPMENT_KITS:
        raise InvalidInput(f"The count must be between 1 and {MAX_SHIPMENT_KITS}.", field="count")
    kits, short = pick_depot_kits(
        session, study, balanced_counts(study, count), today=today or utcnow().date()
    )
    return create_shipment(session, study, site=site, kits=kits, actor=actor, origin="manual",
                           depot_short=short)  # fmt: skip


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
            f"Shipment {shipment.id} is {shipment.status.value.replace('_', ' ')}.",
            field="shipment",
        )


def dispatch(session: Session, study: Study, *, shipment: Shipment, actor: audit.Actor) -> None:
    """Approve and send a proposed shipment: its kits leave the depot, in transit to the site."""
    _require_status(shipment, ShipmentStatus.PROPOSED)
    kits = _kits_of(session, shipment)
    for kit in kits:
        check_transition(kit, KitStatus.IN_TRANSIT)
    for kit in kits:
        kit.status, kit.site_code = KitStatus.IN_TRANSIT, shipment.site_code
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
        raise InvalidInput("Give the reason the shipment is cancelled.", field="reason")
    for kit in _kits_of(session, shipment):
        kit.shipment_id = None
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
        raise InvalidInput("Scan or type at least one kit code.", field="codes")
    found: list[tuple[ShipmentLine, Kit]] = []
    seen: set[str] = set()
    for typed in codes:
        if not kitcodes.is_valid(typed):
            raise InvalidInput(
                f"{typed!r} is not a valid kit code: its check character does not match "
                "(mistyped?). Nothing was recorded; check the label and scan or type it again.",
                field="codes",
            )
        code = kitcodes.canonical(typed)
        if code in seen:
            raise InvalidInput(f"Kit {code} is listed twice. Nothing was recorded.",
                               field="codes")  # fmt: skip
        seen.add(code)
        row = session.execute(
            select(ShipmentLine, Kit)
            .join(Kit, Kit.id == ShipmentLine.kit_id)
            .where(ShipmentLine.shipment_id == shipment.id, Kit.code == code)
        ).first()
        if row is None:
            raise InvalidInput(
                f"Kit {code} is not part of shipment {shipment.id}. Nothing was recorded; "
                "set that kit aside and check its label.",
                field="codes",
            )
        line, kit = row[0], row[1]
        if line.outcome != "pending":
            raise InvalidInput(f"Kit {code} was already checked in as {line.outcome}. "
                               "Nothing was recorded.", field="codes")  # fmt: skip
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
        raise InvalidInput("Choose received or damaged.", field="outcome")
    remark = (remark or "").strip() or None
    if outcome == "damaged" and remark is None:
        raise InvalidInput("Describe the damage.", field="remark")
    pairs = _lines_for_codes(session, shipment, codes)
    to = KitStatus.AVAILABLE if outcome == "received" else KitStatus.DAMAGED
    for _line, kit in pairs:
        check_transition(kit, to, remark)
    now = utcnow()
    for line, kit in pairs:
        kit.status, kit.site_code = to, shipment.site_code
        line.outcome, line.checked_by, line.checked_at, line.remark = (
            outcome, actor.username, now, remark
        )  # fmt: skip
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
    today: dt.date | None = None,
) -> list[str]:
    """Close the receipt: kits never checked in are reported missing (lost). Returns their
    codes. Then runs the site's resupply rule (lost kits may leave it short)."""
    from randomizer.services import supply

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
    supply.check_site(session, study, site=shipment.site_code, actor=audit.SYSTEM,
                      today=today or utcnow().date())  # fmt: skip
    return missing
