"""Kits: generation with sealed arms balanced in blocks, lifecycle, allocation, dispensing."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterable

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from randomizer import audit, kitcodes, sequence
from randomizer.db import utcnow
from randomizer.errors import Conflict, InvalidInput, NotFound, SupplyUnavailable
from randomizer.models import Dispensation, Kit, KitStatus, Participant, Study, StudyMode
from randomizer.services.keyring import RowSealer, sealer_by_key_id, sealer_for
from randomizer.services.kit_lifecycle import S, change_status, check_transition
from randomizer.services.studies import definition_of
from randomizer.studydef import StudyDefinition

KIT_PURPOSE = "kits"
MAX_KITS_PER_CALL = 100_000


def kit_arm_blocks(study: Study, count: int, generator: sequence.Generator) -> list[str]:
    """Arm codes for ``count`` kits, balanced in shuffled blocks of twice the ratio sum.

    A final partial block takes a random part of a full shuffled block, so no arm is ever
    more than one block ahead.
    """
    arms = definition_of(study).arms
    unit = [a.code for a in arms for _ in range(a.ratio)] * 2
    out: list[str] = []
    while len(out) < count:
        block = list(unit)
        generator.shuffle(block)
        out.extend(block[: count - len(out)])
    return out


def generate_kits(
    session: Session,
    study: Study,
    *,
    count: int,
    actor: audit.Actor,
    site: str | None = None,
    lot: str | None = None,
    expiry: dt.date | None = None,
) -> list[Kit]:
    """Create kits with fresh random codes and sealed arms; at the depot, or received at
    ``site``. Rows are inserted in code order. Audited with counts only (never arms)."""
    definition = definition_of(study)
    if not 1 <= count <= MAX_KITS_PER_CALL:
        raise InvalidInput(f"The count must be between 1 and {MAX_KITS_PER_CALL}.", field="count")
    if site is not None and site not in {s.code for s in definition.sites}:
        raise InvalidInput(f"Study {study.code} has no site {site!r}.", field="site")
    if lot is not None and not 1 <= len(lot.strip()) <= 64:
        raise InvalidInput("The lot must be 1–64 characters.", field="lot")
    sealer = sealer_for(session, study, KIT_PURPOSE)
    generator = sequence.Generator(secrets.token_bytes(32))
    arms = kit_arm_blocks(study, count, generator)
    # The blocks fix how many kits of each arm the batch holds; which code gets which arm is
    # a uniformly random pairing. Pairing block order with code order would make kits next
    # to each other in the list (and in row ids) block mates: one kit's arm, once known
    # (an emergency unblinding), would then shift the odds for its neighbours.
    generator.shuffle(arms)
    codes = _fresh_codes(session, count)
    status = KitStatus.AVAILABLE if site else KitStatus.AT_DEPOT
    kits = [
        Kit(study_id=study.id, code=code, data_key_id=sealer.key_id, status=status,
            site_code=site, lot=lot.strip() if lot else None, expiry=expiry,
            is_test=study.mode is StudyMode.TESTING,
            arm_sealed=sealer.seal("kit", code, arm))
        for code, arm in zip(codes, arms, strict=True)
    ]  # fmt: skip
    session.add_all(kits)
    session.flush()
    audit.record(
        session, actor=actor, action="kits.generate", object_type="kit_batch",
        object_id=f"{kits[0].code}..{kits[-1].code}", study_code=study.code,
        new={"count": count, "site": site, "status": status.value, "lot": lot,
             "expiry": expiry.isoformat() if expiry else None},
    )  # fmt: skip
    return kits


def _fresh_codes(session: Session, count: int) -> list[str]:
    codes: set[str] = set()
    while len(codes) < count:
        wanted = sorted({kitcodes.new_code() for _ in range(count - len(codes))} - codes)
        taken: set[str] = set()
        for i in range(0, len(wanted), _IN_CHUNK):
            part = wanted[i : i + _IN_CHUNK]
            taken.update(session.scalars(select(Kit.code).where(Kit.code.in_(part))))
        codes.update(set(wanted) - taken)
    return sorted(codes)


#: Bound parameters per IN query (PostgreSQL allows at most 65,535 in one statement).
_IN_CHUNK = 5000


def kit_sealer(session: Session, study: Study, kit: Kit) -> RowSealer:
    """The sealer that opens this kit's arm."""
    return sealer_by_key_id(session, study, kit.data_key_id)


def kit_arm(session: Session, study: Study, kit: Kit, sealer: RowSealer | None = None) -> str:
    """Open a kit's arm. Callers that disclose it to a person must audit the disclosure."""
    return (sealer or kit_sealer(session, study, kit)).open("kit", kit.code, kit.arm_sealed)


def kit_sealers(session: Session, study: Study) -> Callable[[Kit], RowSealer]:
    """A lookup of the sealer for each kit, unwrapping each data key once per session."""
    cache: dict[str, RowSealer] = session.info.setdefault("kit_sealers", {})

    def sealer(kit: Kit) -> RowSealer:
        key = f"{study.id}/{kit.data_key_id}"
        if key not in cache:
            cache[key] = kit_sealer(session, study, kit)
        return cache[key]

    return sealer


def open_arms(session: Session, study: Study, kits: Iterable[Kit]) -> dict[int, str]:
    """Arm codes of these kits by kit id (internal use: callers audit any disclosure)."""
    sealer = kit_sealers(session, study)
    return {kit.id: kit_arm(session, study, kit, sealer(kit)) for kit in kits}


def get_kit(session: Session, study: Study, code: str) -> Kit:
    """A kit of this study by (typed) code, or NotFound; a mistyped code is named as such."""
    if not kitcodes.is_valid(code):
        raise NotFound(
            f"{code!r} is not a valid kit code (check character does not match: mistyped?).",
            field="kit_code",
        )
    kit = session.scalar(
        select(Kit).where(Kit.study_id == study.id, Kit.code == kitcodes.canonical(code))
    )
    if kit is None:
        raise NotFound(f"No kit {kitcodes.canonical(code)} in study {study.code}.",
                       field="kit_code")  # fmt: skip
    return kit


# --- lifecycle (the transition table is in kit_lifecycle) ----------------------------


def set_status(
    session: Session,
    study: Study,
    *,
    code: str,
    to: KitStatus,
    actor: audit.Actor,
    reason: str | None,
    sites: frozenset[str] | None = None,
) -> Kit:
    """Change a kit's status by its (typed) code; ``sites`` limits it to a user's own sites.

    A kit outside ``sites`` is reported exactly like an unknown one.
    """
    kit = get_kit(session, study, code)
    if sites is not None and kit.site_code not in sites:
        raise NotFound(f"No kit {kit.code} at your sites.", field="kit_code")
    if kit.status is S.ALLOCATED and to in (S.DAMAGED, S.LOST):
        raise Conflict(
            f"Kit {kit.code} is allocated to a participant: report it through the "
            "replacement of that participant's kit.",
            field="kit_code",
        )
    change_status(session, study, kit, to, actor=actor, reason=reason)
    return kit


# --- allocation and dispensing ---------------------------------------------------------

#: The one answer when no kit can be allocated: it never depends on which arm is short.
NO_SUPPLY_MESSAGE = (
    "No kit can be allocated at this site right now. Nothing was changed; ask the study "
    "pharmacist or the depot about this site's supply."
)


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


def allocatable_kits(
    session: Session, study: Study, *, site: str, usable_until: dt.date, is_test: bool
) -> list[Kit]:
    """Available kits at a site that are still in date on ``usable_until`` (any arm)."""
    return list(
        session.scalars(
            select(Kit)
            .where(
                Kit.study_id == study.id,
                Kit.site_code == site,
                Kit.status == KitStatus.AVAILABLE,
                Kit.is_test == is_test,
                or_(Kit.expiry.is_(None), Kit.expiry >= usable_until),
            )
            .order_by(Kit.id)
        )
    )


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
    """Allocate a random in-date kit of ``arm`` at ``site`` to a participant's visit.

    Candidates: status available at the site, same test/live kind as the participant, and
    not expiring before the visit's dispensing window closes (``window_close``: the kit
    must still be in date on that day; quarantined and expired kits are never available).
    One is drawn uniformly with ``secrets`` (never the lowest code), marked allocated, its
    Dispensation created, the allocation audited (code, participant, visit; no arm) and
    the site's blinded resupply rule run. Every available kit at the site is opened, so
    the work done does not depend on the arm either. When none fits: SupplyUnavailable
    with one fixed message, and nothing changed. The caller holds the allocation lock and
    owns the transaction.
    """
    from randomizer.services import supply  # supply builds on this module

    today = today or utcnow().date()
    definition = definition_of(study)
    participant = session.get(Participant, participant_id)
    if participant is None or participant.study_id != study.id:
        raise NotFound(f"No participant {participant_id} in study {study.code}.",
                       field="participant_id")  # fmt: skip
    if participant.site_code != site:
        raise InvalidInput(f"Participant {participant_id} is not at site {site}.", field="site")
    try:
        visit_def = definition.visit(visit)
    except KeyError:
        raise InvalidInput(f"Study {study.code} has no visit {visit!r}.", field="visit") from None
    try:
        arm_def = definition.arm(arm)
    except KeyError:
        # Never name the arm: this message could reach a masked caller.
        raise InvalidInput("The allocation asked for an arm the study does not define.",
                           field="arm") from None  # fmt: skip
    if not visit_def.dispense:
        raise InvalidInput(f"Visit {visit} has no kit to dispense.", field="visit")
    _refuse_second_kit(session, participant_id, visit)
    start = participant.randomized_at.date() if participant.randomized_at else None
    until = window_close(definition, visit, start=start, today=today)
    kit = _draw(session, study, site=site, arm=arm_def.code, until=until,
                is_test=participant.is_test)  # fmt: skip
    check_transition(kit, KitStatus.ALLOCATED)
    kit.status = KitStatus.ALLOCATED
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
    supply.check_site(session, study, site=site, actor=audit.SYSTEM, today=today)
    return kit


def _draw(
    session: Session, study: Study, *, site: str, arm: str, until: dt.date, is_test: bool
) -> Kit:
    candidates = allocatable_kits(session, study, site=site, usable_until=until, is_test=is_test)
    arms = open_arms(session, study, candidates)
    matching = [k for k in candidates if arms[k.id] == arm]
    while matching:
        kit = matching.pop(secrets.randbelow(len(matching)))
        # The caller's allocation lock keeps other allocations out, but not a pharmacist
        # reporting this very kit damaged: lock the row and make sure it is still free.
        session.refresh(kit, with_for_update=True)
        if kit.status is KitStatus.AVAILABLE:
            return kit
    raise SupplyUnavailable(NO_SUPPLY_MESSAGE)


ACTIVE_DISPENSATION = ("allocated", "dispensed")


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
            f"Participant {participant_id} already has a kit for visit {visit}.", field="visit"
        )


def _dispensation_in_scope(
    session: Session, study: Study, dispensation: Dispensation, sites: frozenset[str] | None
) -> tuple[Kit, Participant]:
    kit = session.get(Kit, dispensation.kit_id)
    participant = session.get(Participant, dispensation.participant_id)
    if (
        kit is None
        or participant is None
        or kit.study_id != study.id
        or (sites is not None and participant.site_code not in sites)
    ):
        raise NotFound(f"No dispensation {dispensation.id} at your sites.", field="dispensation")
    return kit, participant


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

    The new kit is drawn as in ``allocate_kit`` (random, in date for the visit's window);
    when none exists: SupplyUnavailable with the same fixed message, and nothing changed.
    The old kit becomes damaged or lost, its dispensation ``replaced``; audited with the
    reason and both codes (no arm).
    """
    from randomizer.services import supply

    today = today or utcnow().date()
    if not reason or not reason.strip():
        raise InvalidInput("Give the reason the kit is replaced.", field="reason")
    old_kit, participant = _dispensation_in_scope(session, study, dispensation, sites)
    if dispensation.status not in ACTIVE_DISPENSATION:
        raise Conflict(f"Kit {old_kit.code} was already replaced.", field="dispensation")
    outcome = KitStatus.LOST if lost else KitStatus.DAMAGED
    check_transition(old_kit, outcome, reason)
    start = participant.randomized_at.date() if participant.randomized_at else None
    until = window_close(definition_of(study), dispensation.visit, start=start, today=today)
    arm = kit_arm(session, study, old_kit)
    site = participant.site_code
    new_kit = _draw(session, study, site=site, arm=arm, until=until,
                    is_test=participant.is_test)  # fmt: skip
    change_status(session, study, old_kit, outcome, actor=actor, reason=reason,
                  participant_id=participant.id)  # fmt: skip
    check_transition(new_kit, KitStatus.ALLOCATED)
    new_kit.status = KitStatus.ALLOCATED
    dispensation.status = "replaced"
    replacement = Dispensation(
        participant_id=participant.id, visit=dispensation.visit, kit_id=new_kit.id,
        status="allocated", allocated_by=actor.username, replaces_id=dispensation.id,
        override_reason=reason.strip(),
    )  # fmt: skip
    session.add(replacement)
    session.flush()
    audit.record(
        session, actor=actor, action="kit.replace", object_type="kit", object_id=new_kit.code,
        study_code=study.code, participant_id=participant.id,
        old={"kit_code": old_kit.code, "status": outcome.value},
        new={"kit_code": new_kit.code, "status": KitStatus.ALLOCATED.value,
             "visit": dispensation.visit, "site": site},
        reason=reason.strip(),
    )  # fmt: skip
    supply.check_site(session, study, site=site, actor=audit.SYSTEM, today=today)
    return new_kit


def confirm_dispensing(
    session: Session,
    study: Study,
    *,
    dispensation: Dispensation,
    actor: audit.Actor,
    kit_code: str | None = None,
    sites: frozenset[str] | None = None,
) -> Kit:
    """The pharmacist confirms an allocated kit was handed out (optionally scanning it)."""
    kit, participant = _dispensation_in_scope(session, study, dispensation, sites)
    if kit_code is not None:
        scanned = get_kit(session, study, kit_code)
        if scanned.id != kit.id:
            raise InvalidInput(
                f"Kit {scanned.code} is not the kit allocated here ({kit.code}); nothing "
                "was changed.",
                field="kit_code",
            )
    if dispensation.status != "allocated":
        raise Conflict(f"Kit {kit.code} is not waiting to be dispensed.", field="dispensation")
    check_transition(kit, KitStatus.DISPENSED)
    kit.status = KitStatus.DISPENSED
    dispensation.status = "dispensed"
    dispensation.dispensed_at = utcnow()
    dispensation.dispensed_by = actor.username
    session.flush()
    audit.record(
        session, actor=actor, action="kit.dispense", object_type="kit", object_id=kit.code,
        study_code=study.code, participant_id=participant.id,
        old={"status": KitStatus.ALLOCATED.value},
        new={"status": KitStatus.DISPENSED.value, "visit": dispensation.visit},
    )  # fmt: skip
    return kit


# --- listings and export ---------------------------------------------------------------

EXPORT_COLUMNS = ("kit_code", "status", "site", "lot", "expiry")


def list_kits(
    session: Session,
    study: Study,
    *,
    sites: Iterable[str] | None = None,
    statuses: Iterable[KitStatus] | None = None,
    depot: bool = False,
) -> list[Kit]:
    """Kits of a study in code order, optionally at these sites (``depot``: also the depot)."""
    query = select(Kit).where(Kit.study_id == study.id)
    if sites is not None:
        at = Kit.site_code.in_(list(sites))
        query = query.where(or_(at, Kit.site_code.is_(None)) if depot else at)
    if statuses is not None:
        query = query.where(Kit.status.in_(list(statuses)))
    return list(session.scalars(query.order_by(Kit.code)))


def status_totals(session: Session, study: Study) -> dict[str | None, dict[KitStatus, int]]:
    """Kit counts by location (site code, None for the depot) and status; never by arm."""
    out: dict[str | None, dict[KitStatus, int]] = {}
    rows = session.execute(
        select(Kit.site_code, Kit.status, func.count())
        .where(Kit.study_id == study.id)
        .group_by(Kit.site_code, Kit.status)
    )
    for site, status, count in rows:
        out.setdefault(site, {})[status] = count
    return out


def export_rows(
    session: Session, study: Study, *, unblinded: bool, actor: audit.Actor
) -> list[dict[str, str]]:
    """The kit list as CSV rows (EXPORT_COLUMNS, plus ``arm`` when unblinded: audited)."""
    kits = list_kits(session, study)
    arms = open_arms(session, study, kits) if unblinded else {}
    rows = []
    for kit in kits:
        row = {
            "kit_code": kit.code,
            "status": kit.status.value,
            "site": kit.site_code or "",
            "lot": kit.lot or "",
            "expiry": kit.expiry.isoformat() if kit.expiry else "",
        }
        if unblinded:
            row["arm"] = arms[kit.id]
        rows.append(row)
    if unblinded:
        audit.record(
            session, actor=actor, action="kits.export_unblinded", object_type="study",
            object_id=study.code, study_code=study.code, new={"count": len(rows)},
        )  # fmt: skip
    return rows
