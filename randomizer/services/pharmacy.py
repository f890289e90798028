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
from randomizer.errors import NotFound
from randomizer.models import Dispensation, Kit, KitStatus, Participant, Study
from randomizer.services.kits import list_kits, open_arms
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
    return [
        QueueItem(d.id, p.id, p.randomization_number, d.visit, k.code, p.site_code,
                  d.allocated_at, p.is_test, products[arms[k.id]])
        for d, p, k in ((r[0], r[1], r[2]) for r in rows)
    ]  # fmt: skip


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
        raise NotFound(f"No dispensation {dispensation_id} at your sites.", field="dispensation")
    dispensation: Dispensation = row[0]
    return dispensation


def dispensation_for_kit(session: Session, study: Study, kit: Kit) -> Dispensation | None:
    """The active dispensation holding this kit, if any."""
    return session.scalar(
        select(Dispensation).where(
            Dispensation.kit_id == kit.id, Dispensation.status.in_(("allocated", "dispensed"))
        )
    )
