"""What the unblinded site pharmacist sees: each kit's product, and the preparation queue.

Every function here that returns a product records the disclosure (``pharmacy.view_products``
with the site, the count and which view) in the caller's transaction, one event per site.
Callers limit ``sites`` to the pharmacist's own sites.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, NotFound
from randomizer.models import Dispensation, Kit, KitStatus, Participant, ParticipantStatus, Study
from randomizer.services.kit_lifecycle import change_status
from randomizer.services.kits import (
    NOT_TO_DISPENSE,
    dispensation_in_scope,
    list_kits,
    open_arms,
)
from randomizer.services.studies import definition_of
from randomizer.studytext import NO_TRANSLATIONS, Translations

VIEW_ACTION = "pharmacy.view_products"


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    #: The arm's names in the study's languages (shown through ``study_text``).
    translations: Translations = NO_TRANSLATIONS


@dataclass(frozen=True)
class ProductKit:
    """A kit with its product, for the pharmacist."""

    code: str
    status: KitStatus
    site: str
    lot: str | None
    expiry: dt.date | None
    is_test: bool
    product: Product


@dataclass(frozen=True)
class QueueItem:
    """A kit allocated to a participant's visit and waiting to be prepared and dispensed."""

    dispensation_id: int
    participant_id: int
    randomization_number: str | None
    visit: str
    kit_code: str
    site: str
    allocated_at: dt.datetime
    is_test: bool
    product: Product
    participant_status: ParticipantStatus
    #: The visit's target day and window (from the randomization date); None before it.
    due: dt.date | None
    opens: dt.date | None
    closes: dt.date | None
    #: The window has not opened yet (a month-6 kit asked for early).
    not_due: bool

    @property
    def may_dispense(self) -> bool:
        return self.participant_status not in NOT_TO_DISPENSE


def _products(study: Study) -> dict[str, Product]:
    return {a.code: Product(a.code, a.name, a.translations) for a in definition_of(study).arms}


def _record(
    session: Session, study: Study, actor: audit.Actor, counts: dict[str, int], view: str
) -> None:
    for site, count in sorted(counts.items()):
        audit.record(
            session, actor=actor, action=VIEW_ACTION, object_type="site", object_id=site,
            study_code=study.code, new={"site": site, "count": count, "view": view},
        )  # fmt: skip


def inventory(
    session: Session,
    study: Study,
    *,
    sites: Iterable[str],
    actor: audit.Actor,
    statuses: Iterable[KitStatus] | None = None,
    view: str = "inventory",
    offset: int = 0,
    limit: int | None = None,
) -> list[ProductKit]:
    """Kits at these sites with their products, in code order (one page of them with
    ``offset`` and ``limit``: only those kits are opened); audited per site."""
    wanted = sorted(set(sites))
    kits = list_kits(session, study, sites=wanted, statuses=statuses, offset=offset, limit=limit)
    arms = open_arms(session, study, kits)
    products = _products(study)
    _record(session, study, actor, {s: sum(k.site_code == s for k in kits) for s in wanted}, view)
    return [
        ProductKit(k.code, k.status, k.site_code or "", k.lot, k.expiry, k.is_test,
                   products[arms[k.id]])
        for k in kits
    ]  # fmt: skip


def preparation_queue(
    session: Session, study: Study, *, sites: Iterable[str], actor: audit.Actor
) -> list[QueueItem]:
    """Allocated kits waiting to be dispensed at these sites, oldest first; audited per site."""
    wanted = sorted(set(sites))
    rows = session.execute(
        select(Dispensation, Participant, Kit)
        .join(Participant, Participant.id == Dispensation.participant_id)
        .join(Kit, Kit.id == Dispensation.kit_id)
        .where(
            Participant.study_id == study.id,
            Participant.site_code.in_(wanted),
            Dispensation.status == "allocated",
        )
        .order_by(Dispensation.allocated_at, Dispensation.id)
    ).all()
    arms = open_arms(session, study, [r[2] for r in rows])
    products = _products(study)
    _record(session, study, actor, {s: sum(r[1].site_code == s for r in rows) for s in wanted},
            "queue")  # fmt: skip
    definition, today = definition_of(study), utcnow().date()
    items = []
    for d, p, k in ((r[0], r[1], r[2]) for r in rows):
        due = opens = closes = None
        if p.randomized_at is not None:
            visit = definition.visit(d.visit)
            due = p.randomized_at.date() + dt.timedelta(days=visit.day)
            opens = due - dt.timedelta(days=visit.window_days)
            closes = due + dt.timedelta(days=visit.window_days)
        items.append(QueueItem(
            d.id, p.id, p.randomization_number, d.visit, k.code, p.site_code, d.allocated_at,
            p.is_test, products[arms[k.id]], p.status, due, opens, closes,
            opens is not None and today < opens,
        ))  # fmt: skip
    return items


def set_aside(
    session: Session,
    study: Study,
    *,
    dispensation: Dispensation,
    actor: audit.Actor,
    sites: frozenset[str],
) -> Kit:
    """Quarantine the allocated kit of a withdrawn (or randomized-in-error) participant.

    A kit is allocated once only (one dispensation per kit), so it never goes back into the
    available stock: it is set aside, and its dispensation with it. An allocated kit counts
    in no stock pool, a quarantined one neither, so the sealed stock index and the blind
    supply bound (the kit stays counted as consumed, not lost) are unchanged; what masked
    roles see is the kit's new status, which follows the withdrawal whatever the arm.
    """
    kit, participant = dispensation_in_scope(session, study, dispensation, sites)
    if participant.status not in NOT_TO_DISPENSE:
        raise Conflict(
            N_("Kit %(code)s is for a participant who may receive it; dispense it instead."),
            field="dispensation", code=kit.code,
        )  # fmt: skip
    if dispensation.status != "allocated":
        raise Conflict(N_("Kit %(code)s is not waiting to be dispensed."), field="dispensation",
                       code=kit.code)  # fmt: skip
    status = participant.status.value.replace("_", " ")
    change_status(
        session, study, kit, KitStatus.QUARANTINED, actor=actor, action="kit.set_aside",
        reason=f"Not dispensed: the participant is {status}.", participant_id=participant.id,
    )  # fmt: skip
    dispensation.status = "set_aside"
    session.flush()
    return kit


def get_dispensation(
    session: Session, study: Study, dispensation_id: int, *, sites: Iterable[str]
) -> Dispensation:
    """A dispensation of this study at one of these sites, else NotFound."""
    row = session.execute(
        select(Dispensation, Participant)
        .join(Participant, Participant.id == Dispensation.participant_id)
        .where(Dispensation.id == dispensation_id, Participant.study_id == study.id)
    ).first()
    if row is None or row[1].site_code not in set(sites):
        raise NotFound(
            N_("No dispensation %(dispensation_id)s at your sites."),
            field="dispensation",
            dispensation_id=dispensation_id,
        )
    dispensation: Dispensation = row[0]
    return dispensation


def dispensation_for_kit(session: Session, study: Study, kit: Kit) -> Dispensation | None:
    """The active dispensation holding this kit, if any."""
    return session.scalar(
        select(Dispensation).where(
            Dispensation.kit_id == kit.id, Dispensation.status.in_(("allocated", "dispensed"))
        )
    )
