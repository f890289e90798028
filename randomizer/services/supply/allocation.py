"""Allocating a kit to a participant's visit, and replacing one, through the blind gate.

Both run under the site's stock lock (``stock.lock_stock``): allocations at one site take
turns, other sites never wait. The gate (``policy.require_supply``) decides from masked
facts alone whether the site may allocate; only then is the participant's arm used, to
draw one kit from the sealed index — one opened value, whatever the number of kits.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, InvalidInput, NotFound, SupplyUnavailable
from randomizer.models import Dispensation, Kit, KitStatus, Participant, Study
from randomizer.services.kit_lifecycle import change_status, check_transition
from randomizer.services.kits import (
    ACTIVE_DISPENSATION,
    NO_SUPPLY_MESSAGE,
    dispensation_in_scope,
    kit_arm,
)
from randomizer.services.studies import definition_of
from randomizer.services.supply import policy
from randomizer.services.supply.stock import LockedStock, lock_stock, moved, pools
from randomizer.studydef import StudyDefinition

#: How many stale index entries one draw tolerates before it gives up (never expected).
_MAX_STALE = 8


def window_close(
    definition: StudyDefinition, visit: str, *, start: dt.date | None, today: dt.date
) -> dt.date:
    """Last day on which a kit for this visit may still be dispensed.

    The visit's window closes ``day + window_days`` after the participant's randomization
    date (``start``); before randomization (the baseline kit) the window is counted from
    today. Never earlier than today.
    """
    v = definition.visit(visit)
    close = (start or today) + dt.timedelta(days=v.day + v.window_days)
    return max(close, today)


def allocate_kit(
    session: Session,
    study: Study,
    *,
    site: str,
    arm: str,
    participant_id: int,
    visit: str,
    actor: audit.Actor,
    today: dt.date | None = None,
) -> Kit:
    """Allocate an in-date kit of ``arm`` at ``site`` to a participant's visit.

    The kit must still be in date when the visit's window closes (``window_close``);
    expired and quarantined kits are never available. Refused with one fixed message,
    nothing changed, whenever the gate is shut — for every participant of the site alike.
    The allocation is audited (code, participant, visit; no arm), then the site's resupply
    rule runs. The caller owns the transaction.
    """
    today = today or utcnow().date()
    definition = definition_of(study)
    participant = session.get(Participant, participant_id)
    if participant is None or participant.study_id != study.id:
        raise NotFound(
            N_("No participant %(participant_id)s in study %(study)s."),
            field="participant_id",
            participant_id=participant_id,
            study=study.code,
        )
    if participant.site_code != site:
        raise InvalidInput(
            N_("Participant %(participant_id)s is not at site %(site)s."),
            field="site",
            participant_id=participant_id,
            site=site,
        )
    try:
        visit_def = definition.visit(visit)
    except KeyError:
        raise InvalidInput(
            N_("Study %(study)s has no visit '%(visit)s'."),
            field="visit",
            study=study.code,
            visit=visit,
        ) from None
    if arm not in {a.code for a in definition.arms}:
        # Never name the arm: this message could reach a masked caller.
        raise InvalidInput(N_("The allocation asked for an arm the study does not define."),
                           field="arm")  # fmt: skip
    if not visit_def.dispense:
        raise InvalidInput(
            N_("Visit %(visit)s has no kit to dispense."), field="visit", visit=visit
        )
    _refuse_second_kit(session, participant_id, visit)
    start = participant.randomized_at.date() if participant.randomized_at else None
    until = window_close(definition, visit, start=start, today=today)
    stock = lock_stock(session, study, site, is_test=participant.is_test)
    policy.require_supply(session, study, stock, until=until)
    kit = _take(session, study, stock, participant, arm=arm, until=until)
    session.add(Dispensation(participant_id=participant_id, visit=visit, kit_id=kit.id,
                             status="allocated", allocated_by=actor.username))  # fmt: skip
    session.flush()
    audit.record(
        session, actor=actor, action="kit.allocate", object_type="kit", object_id=kit.code,
        study_code=study.code, participant_id=participant_id,
        old={"status": KitStatus.AVAILABLE.value},
        new={"status": KitStatus.ALLOCATED.value, "kit_code": kit.code, "visit": visit,
             "site": site},
    )  # fmt: skip
    policy.check_site(session, study, site=site, actor=audit.SYSTEM, today=today)
    return kit


def replace_kit(
    session: Session,
    study: Study,
    *,
    dispensation: Dispensation,
    reason: str,
    actor: audit.Actor,
    lost: bool = False,
    sites: frozenset[str] | None = None,
    today: dt.date | None = None,
) -> Kit:
    """Replace a damaged (or ``lost``) allocated or dispensed kit by another of the same arm.

    Drawn as in ``allocate_kit``, through the same gate: when the site may not allocate,
    SupplyUnavailable with the same fixed message, and nothing changed — so draining one
    participant's arm by repeated damage reports closes the site for everyone, never for
    that arm only. The old kit becomes damaged or lost, its dispensation ``replaced``;
    audited with the reason and both codes (no arm).
    """
    today = today or utcnow().date()
    if not reason or not reason.strip():
        raise InvalidInput(N_("Give the reason the kit is replaced."), field="reason")
    old_kit, participant = dispensation_in_scope(session, study, dispensation, sites)
    if dispensation.status not in ACTIVE_DISPENSATION:
        raise Conflict(
            N_("Kit %(old_kit)s was already replaced."), field="dispensation", old_kit=old_kit.code
        )
    outcome = KitStatus.LOST if lost else KitStatus.DAMAGED
    check_transition(old_kit, outcome, reason)
    start = participant.randomized_at.date() if participant.randomized_at else None
    until = window_close(definition_of(study), dispensation.visit, start=start, today=today)
    site = participant.site_code
    stock = lock_stock(session, study, site, is_test=participant.is_test)
    policy.require_supply(session, study, stock, until=until)
    arm = kit_arm(session, study, old_kit)
    new_kit = _take(session, study, stock, participant, arm=arm, until=until)
    change_status(session, study, old_kit, outcome, actor=actor, reason=reason,
                  participant_id=participant.id)  # fmt: skip
    dispensation.status = "replaced"
    session.add(Dispensation(
        participant_id=participant.id, visit=dispensation.visit, kit_id=new_kit.id,
        status="allocated", allocated_by=actor.username, replaces_id=dispensation.id,
        override_reason=reason.strip(),
    ))  # fmt: skip
    session.flush()
    audit.record(
        session, actor=actor, action="kit.replace", object_type="kit", object_id=new_kit.code,
        study_code=study.code, participant_id=participant.id,
        old={"kit_code": old_kit.code, "status": outcome.value},
        new={"kit_code": new_kit.code, "status": KitStatus.ALLOCATED.value,
             "visit": dispensation.visit, "site": site},
        reason=reason.strip(),
    )  # fmt: skip
    policy.check_site(session, study, site=site, actor=audit.SYSTEM, today=today)
    return new_kit


def _take(
    session: Session,
    study: Study,
    stock: LockedStock,
    participant: Participant,
    *,
    arm: str,
    until: dt.date,
) -> Kit:
    """Draw a kit of ``arm`` from the site's index, mark it allocated, count it consumed."""
    kit = _draw(session, study, stock, arm=arm, until=until)
    check_transition(kit, KitStatus.ALLOCATED)
    held = session.scalar(select(func.count()).where(Dispensation.participant_id == participant.id))
    before = pools([kit])
    kit.status = KitStatus.ALLOCATED
    moved(session, study, before, [kit], allocated=True)
    stock.row.consumed += 1
    stock.hold(participant.stratum, int(held or 0))
    return kit


def _draw(session: Session, study: Study, stock: LockedStock, *, arm: str, until: dt.date) -> Kit:
    stale: list[int] = []
    while len(stale) <= _MAX_STALE:
        kit_id = stock.index.pick(arm, until, skip=stale)
        if kit_id is None:
            break
        kit = session.execute(
            select(Kit).where(Kit.id == kit_id).with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()  # fmt: skip
        row = stock.row
        if (
            kit is not None
            and kit.status is KitStatus.AVAILABLE
            and kit.site_code == row.site_code
            and kit.is_test == row.is_test
            and kit_arm(session, study, kit) == arm
        ):
            return kit
        stale.append(kit_id)  # the index is repaired below; this never happens in order
    for kit_id in stale:
        for entries in stock.index.kits.values():
            entries.discard_kit(kit_id)
    stock.save()
    # The gate promised a kit: reaching here means the index was wrong. Refuse alike.
    raise SupplyUnavailable(NO_SUPPLY_MESSAGE)


def _refuse_second_kit(session: Session, participant_id: int, visit: str) -> None:
    held = session.scalar(
        select(Dispensation.id).where(
            Dispensation.participant_id == participant_id,
            Dispensation.visit == visit,
            Dispensation.status.in_(ACTIVE_DISPENSATION),
        )
    )
    if held is not None:
        raise Conflict(
            N_("Participant %(participant_id)s already has a kit for visit %(visit)s."),
            field="visit",
            participant_id=participant_id,
            visit=visit,
        )
