"""Kits: generation with sealed arms balanced in blocks, lifecycle, allocation, dispensing."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterable

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from randomizer import audit, kitcodes, sequence
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, InvalidInput, NotFound
from randomizer.models import (
    Dispensation,
    Kit,
    KitStatus,
    Participant,
    ParticipantStatus,
    Study,
    StudyMode,
)
from randomizer.services.keyring import RowSealer, sealer_by_key_id, sealer_for
from randomizer.services.kit_lifecycle import S, change_status, check_transition
from randomizer.services.studies import definition_of
from randomizer.services.supply import stock

KIT_PURPOSE = "kits"
MAX_KITS_PER_CALL = 100_000


def batch_arms(study: Study, count: int, generator: sequence.Generator) -> list[str]:
    """Arm codes for ``count`` kits: whole units (one kit per ratio part) in the exact
    ratio, the remainder (depot batches only) a random part of one more unit."""
    unit = [a.code for a in definition_of(study).arms for _ in range(a.ratio)]
    whole, rest = divmod(count, len(unit))
    extra = list(unit)
    generator.shuffle(extra)
    return unit * whole + extra[:rest]


def generate_kits(
    session: Session,
    study: Study,
    *,
    count: int,
    actor: audit.Actor,
    site: str | None = None,
    lot: str | None = None,
    expiry: dt.date | None = None,
    arm: str | None = None,
) -> list[Kit]:
    """Create kits with fresh random codes and sealed arms; at the depot, or received at
    ``site``; all of one product with ``arm`` (a released manufacturing batch). Rows are
    inserted in code order. Audited with counts only (never arms).

    Kits made at a site without ``arm`` come in whole units, so the site's stock stays
    exactly balanced (the blind supply bound counts on it).
    """
    _check_batch(study, count=count, site=site, lot=lot, arm=arm)
    sealer = sealer_for(session, study, KIT_PURPOSE)
    generator = sequence.Generator(secrets.token_bytes(32))
    arms = [arm] * count if arm is not None else batch_arms(study, count, generator)
    # Which code gets which arm is a uniformly random pairing: kits next to each other in
    # the list (and in row ids) tell nothing about each other's arms.
    generator.shuffle(arms)
    codes = _fresh_codes(session, count)
    status = KitStatus.AVAILABLE if site else KitStatus.AT_DEPOT
    kits = [
        Kit(study_id=study.id, code=code, data_key_id=sealer.key_id, status=status,
            site_code=site, lot=lot.strip() if lot else None, expiry=expiry,
            is_test=study.mode is StudyMode.TESTING,
            arm_sealed=sealer.seal("kit", code, kit_arm_code))
        for code, kit_arm_code in zip(codes, arms, strict=True)
    ]  # fmt: skip
    session.add_all(kits)
    session.flush()
    if site is not None:
        stock.credit(session, study, site, kits)
    stock.moved(session, study, {}, kits)
    audit.record(
        session, actor=actor, action="kits.generate", object_type="kit_batch",
        object_id=f"{kits[0].code}..{kits[-1].code}", study_code=study.code,
        new={"count": count, "site": site, "status": status.value, "lot": lot,
             "expiry": expiry.isoformat() if expiry else None, "one_product": arm is not None},
    )  # fmt: skip
    return kits


def _check_batch(
    study: Study, *, count: int, site: str | None, lot: str | None, arm: str | None
) -> None:
    definition = definition_of(study)
    unit = sum(a.ratio for a in definition.arms)
    if not 1 <= count <= MAX_KITS_PER_CALL:
        raise InvalidInput(
            N_("The count must be between 1 and %(max_kits_per_call)s."),
            field="count",
            max_kits_per_call=MAX_KITS_PER_CALL,
        )
    if site is not None and site not in {s.code for s in definition.sites}:
        raise InvalidInput(
            N_("Study %(study)s has no site '%(site)s'."), field="site", study=study.code, site=site
        )
    if lot is not None and not 1 <= len(lot.strip()) <= 64:
        raise InvalidInput(N_("The lot must be 1–64 characters."), field="lot")
    if arm is not None and arm not in {a.code for a in definition.arms}:
        choices = ", ".join(a.code for a in definition.arms)
        raise InvalidInput(N_("Study %(study)s has no arm '%(arm)s' (its arms: %(choices)s)."),
                           field="arm", study=study.code, arm=arm, choices=choices)  # fmt: skip
    if site is not None and arm is None and count % unit:
        raise InvalidInput(
            N_(
                "Kits made at a site come in whole units: the count must be a multiple "
                "of %(unit)s (one kit per ratio part of every product)."
            ),
            field="count",
            unit=unit,
        )


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
            N_("'%(code)s' is not a valid kit code (check character does not match: mistyped?)."),
            field="kit_code",
            code=code,
        )
    kit = session.scalar(
        select(Kit).where(Kit.study_id == study.id, Kit.code == kitcodes.canonical(code))
    )
    if kit is None:
        raise NotFound(
            N_("No kit %(kit)s in study %(study)s."),
            field="kit_code",
            kit=kitcodes.canonical(code),
            study=study.code,
        )
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
    off_site_only: bool = False,
) -> Kit:
    """Change a kit's status by its (typed) code; ``sites`` limits it to a user's own sites.

    A kit outside ``sites`` is reported exactly like an unknown one. ``off_site_only``
    (masked callers) refuses every kit held at a site with one answer, whatever its
    status: which of a site's kits are still on the shelf is for its pharmacist to know.
    """
    kit = get_kit(session, study, code)
    if sites is not None and kit.site_code not in sites:
        raise NotFound(N_("No kit %(kit)s at your sites."), field="kit_code", kit=kit.code)
    if off_site_only and kit.site_code is not None and kit.status is not S.IN_TRANSIT:
        raise Conflict(
            N_(
                "Kit %(kit)s is at site %(site_code)s: its pharmacist records what "
                "happens to it there."
            ),
            field="kit_code",
            kit=kit.code,
            site_code=kit.site_code,
        )
    if kit.status is S.ALLOCATED and to in (S.DAMAGED, S.LOST):
        raise Conflict(
            N_(
                "Kit %(kit)s is allocated to a participant: report it through the "
                "replacement of that participant's kit."
            ),
            field="kit_code",
            kit=kit.code,
        )
    if to is S.EXPIRED and (kit.expiry is None or kit.expiry >= utcnow().date()):
        raise Conflict(
            N_(
                "Kit %(kit)s is still in date: kits expire by their date (the daily "
                "expiry run); quarantine it instead."
            ),
            field="status",
            kit=kit.code,
        )
    change_status(session, study, kit, to, actor=actor, reason=reason)
    return kit


# --- allocation and dispensing ---------------------------------------------------------

#: The one answer when no kit can be allocated: it never depends on which arm is short.
NO_SUPPLY_MESSAGE = N_(
    "No kit can be allocated at this site right now. Nothing was changed; ask the study "
    "pharmacist or the depot about this site's supply."
)


ACTIVE_DISPENSATION = ("allocated", "dispensed")
#: Participants whose allocated kits must never be handed out: they are set aside instead.
NOT_TO_DISPENSE = frozenset({ParticipantStatus.WITHDRAWN, ParticipantStatus.RANDOMIZED_IN_ERROR})


def dispensation_in_scope(
    session: Session, study: Study, dispensation: Dispensation, sites: frozenset[str] | None
) -> tuple[Kit, Participant]:
    """The dispensation's kit and participant, or NotFound outside ``sites``."""
    kit = session.get(Kit, dispensation.kit_id)
    participant = session.get(Participant, dispensation.participant_id)
    if (
        kit is None
        or participant is None
        or kit.study_id != study.id
        or (sites is not None and participant.site_code not in sites)
    ):
        raise NotFound(
            N_("No dispensation %(id)s at your sites."), field="dispensation", id=dispensation.id
        )
    return kit, participant


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
    kit, participant = dispensation_in_scope(session, study, dispensation, sites)
    if participant.status in NOT_TO_DISPENSE:
        raise Conflict(
            N_("Do not dispense kit %(code)s: the participant is %(status)s. Set the kit aside "
               "instead."),
            field="kit_code", code=kit.code, status=participant.status,
        )  # fmt: skip
    if kit_code is not None:
        scanned = get_kit(session, study, kit_code)
        if scanned.id != kit.id:
            raise InvalidInput(
                N_("Kit %(scanned)s is not the kit allocated here (%(kit)s); nothing was changed."),
                field="kit_code",
                scanned=scanned.code,
                kit=kit.code,
            )
    if dispensation.status != "allocated":
        raise Conflict(
            N_("Kit %(kit)s is not waiting to be dispensed."), field="dispensation", kit=kit.code
        )
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
    offset: int = 0,
    limit: int | None = None,
) -> list[Kit]:
    """Kits of a study in code order, optionally at these sites (``depot``: also the depot),
    optionally one page of them (``offset``, ``limit``)."""
    query = _kit_query(study, sites, statuses, depot).order_by(Kit.code).offset(offset)
    return list(session.scalars(query if limit is None else query.limit(limit)))


def count_kits(
    session: Session,
    study: Study,
    *,
    sites: Iterable[str] | None = None,
    statuses: Iterable[KitStatus] | None = None,
) -> int:
    """How many kits ``list_kits`` would list."""
    query = _kit_query(study, sites, statuses, depot=False).with_only_columns(func.count())
    return int(session.scalar(query.order_by(None)) or 0)


def _kit_query(
    study: Study,
    sites: Iterable[str] | None,
    statuses: Iterable[KitStatus] | None,
    depot: bool,
) -> Select[tuple[Kit]]:
    query = select(Kit).where(Kit.study_id == study.id)
    if sites is not None:
        at = Kit.site_code.in_(list(sites))
        query = query.where(or_(at, Kit.site_code.is_(None)) if depot else at)
    if statuses is not None:
        query = query.where(Kit.status.in_(list(statuses)))
    return query


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
