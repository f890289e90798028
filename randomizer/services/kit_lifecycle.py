"""The kit lifecycle: which status may follow which, checked and audited on every move.

Pure rules plus one audited move; no arms are involved. Statuses that only make sense at
a site (available, allocated, dispensed) or at the depot (at depot) are checked against
where the kit is.
"""

from __future__ import annotations

import base64
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import N_, Conflict, InvalidInput
from randomizer.models import Dispensation, Kit, KitStatus, Study
from randomizer.services.supply.stock import lock_stock, moved, pool_of, pools

S = KitStatus
#: Every status a kit may move to from each status; anything else is refused.
TRANSITIONS: dict[KitStatus, frozenset[KitStatus]] = {
    S.AT_DEPOT: frozenset({S.IN_TRANSIT, S.AVAILABLE, S.DAMAGED, S.LOST, S.EXPIRED,
                           S.QUARANTINED, S.DESTROYED}),
    S.IN_TRANSIT: frozenset({S.AVAILABLE, S.AT_DEPOT, S.DAMAGED, S.LOST, S.QUARANTINED}),
    S.AVAILABLE: frozenset({S.ALLOCATED, S.DAMAGED, S.LOST, S.EXPIRED, S.QUARANTINED,
                            S.RETURNED}),
    S.ALLOCATED: frozenset({S.DISPENSED, S.DAMAGED, S.LOST, S.QUARANTINED}),
    S.DISPENSED: frozenset({S.RETURNED}),
    S.DAMAGED: frozenset({S.RETURNED, S.DESTROYED}),
    S.LOST: frozenset({S.QUARANTINED}),
    S.EXPIRED: frozenset({S.RETURNED, S.DESTROYED}),
    S.QUARANTINED: frozenset({S.AVAILABLE, S.AT_DEPOT, S.DAMAGED, S.EXPIRED, S.RETURNED,
                              S.DESTROYED}),
    S.RETURNED: frozenset({S.QUARANTINED, S.DESTROYED}),
    S.DESTROYED: frozenset(),
}  # fmt: skip
#: Moves that need a stated reason (someone decided or observed something about the kit).
REASON_REQUIRED = frozenset({S.DAMAGED, S.LOST, S.QUARANTINED, S.RETURNED, S.DESTROYED})
#: Statuses a kit can only take at a site, and only at the depot.
AT_SITE = frozenset({S.AVAILABLE, S.ALLOCATED, S.DISPENSED})
AT_DEPOT_ONLY = frozenset({S.AT_DEPOT})


def check_transition(kit: Kit, to: KitStatus, reason: str | None = None) -> None:
    """Refuse an impossible move (or one missing its reason) with a clear message."""
    if to not in TRANSITIONS[kit.status]:
        raise Conflict(
            N_("Kit %(kit)s is %(status)s; it cannot become %(to)s."),
            field="status",
            kit=kit.code,
            status=kit.status,
            to=to,
        )
    if to in REASON_REQUIRED and not (reason and reason.strip()):
        raise InvalidInput(N_("Give the reason the kit is %(to)s."), field="reason", to=to)
    if to in AT_SITE and kit.site_code is None:
        raise Conflict(N_("Kit %(kit)s is not at a site; it cannot become %(to)s."),
                       field="status", kit=kit.code, to=to)  # fmt: skip
    if to in AT_DEPOT_ONLY and kit.site_code is not None:
        raise Conflict(N_("Kit %(kit)s is at site %(site_code)s, not at the depot."),
                       field="status", kit=kit.code, site_code=kit.site_code)  # fmt: skip


def change_status(
    session: Session,
    study: Study,
    kit: Kit,
    to: KitStatus,
    *,
    actor: audit.Actor,
    reason: str | None = None,
    action: str = "kit.status",
    participant_id: int | None = None,
) -> None:
    """Move one kit to another status (checked against TRANSITIONS) and audit the move.

    The kit's stock row (its site's or the depot's) and then the kit's row are locked and
    re-read first — the order every allocation takes them in — so a concurrent move is seen
    and checked, and the two never wait on each other in a circle.
    """
    pool = pool_of(kit)
    if pool is not None:
        lock_stock(session, study, pool, is_test=kit.is_test)
    session.refresh(kit, with_for_update=True)
    check_transition(kit, to, reason)
    _refuse_second_use(session, kit, to)
    old, before = kit.status, pools([kit])
    kit.status = to
    moved(session, study, before, [kit])
    session.flush()
    audit.record(
        session, actor=actor, action=action, object_type="kit", object_id=kit.code,
        study_code=study.code, participant_id=participant_id,
        old={"status": old.value}, new={"status": to.value, "site": kit.site_code},
        reason=reason.strip() if reason else None,
    )  # fmt: skip


def _refuse_second_use(session: Session, kit: Kit, to: KitStatus) -> None:
    # A kit is allocated once (one dispensation per kit): one that was ever allocated, and
    # set aside since, never goes back into the available stock the index draws from.
    if to is S.AVAILABLE and session.scalar(
        select(Dispensation.id).where(Dispensation.kit_id == kit.id).limit(1)
    ):
        raise Conflict(
            N_("Kit %(code)s was allocated to a participant once; it cannot become available "
               "again."),
            field="status", code=kit.code,
        )  # fmt: skip


#: Statuses from which a kit past its expiry date is marked expired.
EXPIRABLE = frozenset({S.AT_DEPOT, S.AVAILABLE, S.QUARANTINED})


def expire_kits(
    session: Session, study: Study, *, today: dt.date, actor: audit.Actor = audit.SYSTEM
) -> list[str]:
    """Mark kits whose expiry date has passed as expired; returns their codes.

    At the depot each move is audited on its own. At a site, how many kits of a batch are
    left to expire depends on which arms drew from it, so each site's batch (its expiry
    date) is one audited event whatever the count, with the codes sealed and padded to
    the number of kits of that date ever sent to the site: masked readers of the trail
    learn that the batch expired, not how much of it was left.
    """
    kits = session.scalars(
        select(Kit)
        .where(
            Kit.study_id == study.id,
            Kit.status.in_(list(EXPIRABLE)),
            Kit.shipment_id.is_(None) | (Kit.status != S.AT_DEPOT),
            Kit.expiry < today,
        )
        .order_by(Kit.code)
    ).all()
    batches: dict[tuple[str, dt.date, bool], list[Kit]] = {}
    for kit in kits:
        if kit.site_code is None:
            change_status(session, study, kit, S.EXPIRED, actor=actor,
                          reason=f"Expired on {kit.expiry}.")  # fmt: skip
        else:
            assert kit.expiry is not None
            batches.setdefault((kit.site_code, kit.expiry, kit.is_test), []).append(kit)
    for (site, expiry, is_test), group in sorted(batches.items()):
        _expire_site_batch(session, study, site, expiry, is_test, group, actor)
    return [k.code for k in kits]


def _expire_site_batch(
    session: Session,
    study: Study,
    site: str,
    expiry: dt.date,
    is_test: bool,
    kits: list[Kit],
    actor: audit.Actor,
) -> None:
    stock = lock_stock(session, study, site, is_test=is_test)
    before = pools(kits)
    for kit in kits:
        session.refresh(kit, with_for_update=True)
        check_transition(kit, S.EXPIRED)
        kit.status = S.EXPIRED
    moved(session, study, before, kits)
    sent = stock.index.retire(expiry)
    stock.save()
    codes = ",".join(k.code for k in kits).ljust(max(sent, len(kits)) * 10)
    sealed = stock.seal_note(f"expired/{expiry.isoformat()}", codes.encode())
    session.flush()
    audit.record(
        session, actor=actor, action="kits.expire", object_type="site_batch",
        object_id=f"{site}/{expiry.isoformat()}", study_code=study.code,
        new={"status": S.EXPIRED.value, "site": site, "expiry": expiry.isoformat(),
             "kit_codes_sealed": base64.b64encode(sealed).decode("ascii")},
        reason=f"Expired on {expiry.isoformat()}.",
    )  # fmt: skip
