"""Enrollment: screening, corrections, signed randomization and dispensing, status changes.

Plain functions that take the session first, flush, audit and never commit. A refusal
raises before anything is written or after flushes the caller's rollback undoes, so a
refused attempt leaves no trace in the list, the kits or the audit trail.

Allocation locks only what it shares, always in this order (``SELECT … FOR UPDATE``,
waiting rather than skipping, which would leave gaps): the participant, the stratum's row
(``lock_stratum``: two randomizations never take the same slot), the site's stock row
(``supply.stock``: never the same kit), the kit drawn, the depot's stock row when a
shipment is proposed, and last the audit chain's head. Sites and strata do not wait on
each other. On SQLite every transaction already holds the write lock from BEGIN.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from randomizer import audit, kitcodes, studytext
from randomizer.db import utcnow
from randomizer.errors import (
    N_,
    AlreadyRandomized,
    Conflict,
    InvalidInput,
    NotEligible,
    NotFound,
    StratumExhausted,
)
from randomizer.models import (
    AllocationList,
    AllocationSlot,
    AllocationStratum,
    Dispensation,
    Kit,
    ListKind,
    Participant,
    ParticipantStatus,
    SlotStatus,
    Study,
    StudyMode,
    User,
)
from randomizer.services import kits as kit_service
from randomizer.services import lists, minimization
from randomizer.services.database_lock import refuse_if_locked
from randomizer.services.keyring import sealer_by_key_id
from randomizer.services.pausing import refuse_if_paused
from randomizer.services.studies import definition_of
from randomizer.services.supply import allocation
from randomizer.services.users import actor_of, check_signature, signature_record
from randomizer.studydef import InvalidAnswer, StudyDefinition, VisitDef
from randomizer.wording import Text, Translate, english

#: The meaning the investigator signs when randomizing (21 CFR 11.50).
RANDOMIZE_MEANING = N_("I confirm this participant is eligible and request randomization")
#: The meaning signed for a later dispensing visit (``%(visit)s`` is the visit code).
DISPENSE_MEANING = N_("I confirm this participant attends visit %(visit)s and request its kit")
MAX_SCREENING_NUMBER = 64
MAX_REASON = 2000
#: Largest id the integer columns hold; larger ids in URLs are simply unknown.
MAX_ID = 2**31 - 1

P = ParticipantStatus
SCREENING = frozenset({P.ELIGIBLE, P.SCREEN_FAILED})


@dataclass(frozen=True)
class Randomization:
    """What the investigator receives: number and kit, never the arm."""

    participant_id: int
    randomization_number: str
    kit_code: str
    randomized_at: dt.datetime


@dataclass(frozen=True)
class KitForVisit:
    """A kit allocated for a later dispensing visit."""

    participant_id: int
    visit: str
    kit_code: str
    allocated_at: dt.datetime
    override_reason: str | None = None


@dataclass(frozen=True)
class VisitWindow:
    """When a visit is due: ``day`` after randomization, ± ``window_days``."""

    visit: str
    due: dt.date
    opens: dt.date
    closes: dt.date

    def contains(self, day: dt.date) -> bool:
        return self.opens <= day <= self.closes


# --- reading ---------------------------------------------------------------------------


def get_participant(session: Session, participant_id: int) -> Participant:
    """The participant with this id, or NotFound."""
    participant = None
    if 0 < participant_id <= MAX_ID:
        participant = session.get(Participant, participant_id)
    if participant is None:
        raise participant_not_found(participant_id)
    return participant


def participant_not_found(participant_id: int) -> NotFound:
    """The one answer for an unknown participant and for one outside the caller's sites."""
    return NotFound(
        N_("No participant %(participant_id)s at your sites."),
        field="participant_id",
        participant_id=participant_id,
    )


def list_participants(
    session: Session,
    study: Study,
    *,
    sites: frozenset[str] | None = None,
    screening_number: str | None = None,
) -> list[Participant]:
    """The study's current participants (test data of a live study excluded), newest first."""
    query = select(Participant).where(
        Participant.study_id == study.id, Participant.archived.is_(False)
    )
    if sites is not None:
        query = query.where(Participant.site_code.in_(sites))
    if screening_number is not None:
        query = query.where(Participant.screening_number == screening_number)
    return list(session.scalars(query.order_by(Participant.created_at.desc(), Participant.id)))


def kits_of(session: Session, participant: Participant) -> list[tuple[str, str]]:
    """(visit, kit code) of the participant's current kits, in allocation order."""
    rows = session.execute(
        select(Dispensation.visit, Kit.code)
        .join(Kit, Kit.id == Dispensation.kit_id)
        .where(
            Dispensation.participant_id == participant.id,
            Dispensation.status.in_(kit_service.ACTIVE_DISPENSATION),
        )
        .order_by(Dispensation.id)
    )
    return [(visit, code) for visit, code in rows]


def dispensing_visits(definition: StudyDefinition) -> list[VisitDef]:
    """Visits that hand out a kit, in the order of their day."""
    return sorted((v for v in definition.visits if v.dispense), key=lambda v: v.day)


def baseline_visit(definition: StudyDefinition) -> VisitDef:
    """The first dispensing visit: its kit is allocated at randomization."""
    return dispensing_visits(definition)[0]


def visit_window(definition: StudyDefinition, participant: Participant, visit: str) -> VisitWindow:
    """The visit's window counted from the randomization date (the day at the site)."""
    if participant.randomized_at is None:
        raise Conflict(N_("The participant is not randomized yet."), field="visit")
    v = definition.visit(visit)
    day0 = studytext.local_date(participant.randomized_at, site_zone_of(definition, participant))
    due = day0 + dt.timedelta(days=v.day)
    spread = dt.timedelta(days=v.window_days)
    return VisitWindow(v.code, due, due - spread, due + spread)


def site_zone_of(definition: StudyDefinition, participant: Participant) -> str:
    """The time zone of the participant's site, whose days visit windows count."""
    return studytext.site_zone(definition.sites, participant.site_code)


# --- screening -------------------------------------------------------------------------


def register_participant(
    session: Session,
    study: Study,
    *,
    site: str,
    screening_number: str,
    factors: Mapping[str, str],
    eligibility: Mapping[str, object],
    actor: audit.Actor,
) -> Participant:
    """Register a screened participant: eligible, or a screen failure naming the criteria."""
    refuse_if_locked(study)
    definition = definition_of(study)
    number = _screening_number(screening_number)
    stratum, failed = _judge(definition, site, factors, eligibility)
    is_test = study.mode is StudyMode.TESTING
    _refuse_duplicate(session, study, number, is_test)
    participant = Participant(
        study_id=study.id, site_code=site, screening_number=number, factors=dict(factors),
        eligibility=dict(eligibility), failed_criteria=failed, stratum=stratum,
        status=P.SCREEN_FAILED if failed else P.ELIGIBLE, is_test=is_test, archived=False,
        created_by=actor.username,
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(participant)
    except IntegrityError:  # registered concurrently under the same number
        raise _duplicate(number) from None
    audit.record(
        session, actor=actor, action="participant.register", object_type="participant",
        object_id=participant.id, study_code=study.code, participant_id=participant.id,
        new={"site": site, "screening_number": number, "factors": dict(factors),
             "eligibility": dict(eligibility), "status": participant.status.value,
             "failed_criteria": failed, "test": is_test},
    )  # fmt: skip
    return participant


def correct_screening(
    session: Session,
    participant: Participant,
    *,
    actor: audit.Actor,
    reason: str,
    site: str | None = None,
    screening_number: str | None = None,
    factors: Mapping[str, str] | None = None,
    eligibility: Mapping[str, object] | None = None,
) -> Participant:
    """Correct screening data before randomization; old and new values and the reason audited."""
    study = session.get_one(Study, participant.study_id)
    refuse_if_locked(study)
    if participant.status not in SCREENING:
        raise Conflict(
            N_("Screening data can be corrected only before randomization."), field="participant"
        )
    why = _reason(reason)
    old = _screening_values(participant)
    number = _screening_number(
        participant.screening_number if screening_number is None else screening_number
    )
    new_site = participant.site_code if site is None else site
    new_factors = dict(participant.factors if factors is None else factors)
    new_answers = dict(participant.eligibility if eligibility is None else eligibility)
    stratum, failed = _judge(definition_of(study), new_site, new_factors, new_answers)
    if number != participant.screening_number:
        _refuse_duplicate(session, study, number, participant.is_test)
    participant.site_code, participant.screening_number = new_site, number
    participant.factors, participant.eligibility = new_factors, new_answers
    participant.stratum, participant.failed_criteria = stratum, failed
    participant.status = P.SCREEN_FAILED if failed else P.ELIGIBLE
    new = _screening_values(participant)
    if new == old:
        raise InvalidInput(N_("Nothing was changed: edit a value to correct it."), field="reason")
    changed = [key for key in new if new[key] != old[key]]
    session.flush()
    audit.record(
        session, actor=actor, action="participant.correct", object_type="participant",
        object_id=participant.id, study_code=study.code, participant_id=participant.id,
        old={k: old[k] for k in changed}, new={k: new[k] for k in changed}, reason=why,
    )  # fmt: skip
    return participant


def _screening_values(p: Participant) -> dict[str, Any]:
    return {
        "site": p.site_code, "screening_number": p.screening_number, "factors": dict(p.factors),
        "eligibility": dict(p.eligibility), "status": p.status.value,
        "failed_criteria": list(p.failed_criteria),
    }  # fmt: skip


def _judge(
    definition: StudyDefinition,
    site: str,
    factors: Mapping[str, str],
    eligibility: Mapping[str, object],
) -> tuple[str, list[str]]:
    """(stratum key, failed criteria); InvalidInput naming the field for a bad answer."""
    try:
        return definition.stratum_key(site, factors), definition.evaluate_eligibility(eligibility)
    except InvalidAnswer as exc:
        raise InvalidInput(
            N_("%(name)s: %(reason)s."), field=exc.field, name=exc.field, reason=exc.reason
        ) from None


def _screening_number(value: object) -> str:
    number = value.strip() if isinstance(value, str) else ""
    if not number:
        raise InvalidInput(N_("screening_number: a screening number is required."),
                           field="screening_number")  # fmt: skip
    if len(number) > MAX_SCREENING_NUMBER or not number.isprintable():
        raise InvalidInput(
            N_("screening_number: must be at most %(max_screening_number)s printable characters."),
            field="screening_number",
            max_screening_number=MAX_SCREENING_NUMBER,
        )
    return number


def _refuse_duplicate(session: Session, study: Study, number: str, is_test: bool) -> None:
    taken = session.scalar(
        select(Participant.id).where(
            Participant.study_id == study.id,
            Participant.screening_number == number,
            Participant.is_test == is_test,
            Participant.archived.is_(False),
        )
    )
    if taken is not None:
        raise _duplicate(number)


def _duplicate(number: str) -> Conflict:
    return Conflict(
        N_("screening_number: '%(number)s' is already registered in this study."),
        field="screening_number",
        number=number,
    )


def _reason(reason: object) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InvalidInput(N_("reason: give the reason for this change."), field="reason")
    if len(text) > MAX_REASON:
        raise InvalidInput(
            N_("reason: at most %(max_reason)s characters."), field="reason", max_reason=MAX_REASON
        )
    return text


# --- allocation ------------------------------------------------------------------------


def lock_stratum(session: Session, allocation_list: AllocationList, stratum: str) -> None:
    """Lock a stratum of a list (its row is made on first use) until the transaction ends:
    the next free slot of that stratum is then ours alone."""
    query = (
        select(AllocationStratum.id)
        .where(AllocationStratum.list_id == allocation_list.id,
               AllocationStratum.stratum == stratum)
        .with_for_update()
    )  # fmt: skip
    if session.scalar(query) is not None:
        return
    try:
        with session.begin_nested():
            session.add(AllocationStratum(list_id=allocation_list.id, stratum=stratum))
    except IntegrityError:  # made concurrently: lock the one that won
        pass
    session.execute(query).scalar_one()


def _lock_participant(session: Session, participant_id: int) -> Participant:
    return session.execute(
        select(Participant)
        .where(Participant.id == participant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _refuse_unless_eligible(participant: Participant) -> None:
    if participant.randomization_number is not None:
        raise AlreadyRandomized(
            N_("This participant is already randomized; nothing was changed."), field="participant"
        )
    if participant.status is P.WITHDRAWN:
        raise Conflict(
            N_("This participant was withdrawn before randomization; nothing was changed."),
            field="participant",
        )
    if participant.status is P.SCREEN_FAILED:
        failed = ", ".join(participant.failed_criteria)
        raise NotEligible(
            N_(
                "This participant failed screening (%(failed)s) and cannot be "
                "randomized; nothing was changed."
            ),
            field="eligibility",
            failed=failed,
        )


def randomize(
    session: Session,
    participant: Participant,
    *,
    signer: User,
    password: object,
    translate: Translate = english,
) -> Randomization:
    """Signed randomization: the next free slot of the stratum, its arm's kit, no arm shown.

    Refusals (NotEligible, SignatureInvalid, AlreadyRandomized, StratumExhausted,
    SupplyUnavailable) happen before anything is written or are undone by the caller's
    rollback. Exactly one ``participant.randomize`` event records a success, with the
    signer's full name, the UTC time and the meaning of the signature as the signer read
    it (``translate``: the gettext of the page they signed on) with its English msgid.
    """
    _refuse_unless_eligible(participant)
    check_signature(session, signer, password, RANDOMIZE_MEANING)
    signed_at = utcnow()
    actor = actor_of(signer)
    participant = _lock_participant(session, participant.id)
    study = session.get_one(Study, participant.study_id)
    refuse_if_locked(study)
    refuse_if_paused(session, study, participant.site_code)
    _refuse_unless_eligible(participant)  # it may have changed while we waited
    if participant.is_test != (study.mode is StudyMode.TESTING):
        raise Conflict(
            N_(
                "This participant was registered as test data before the study went live and "
                "cannot be randomized in the live study."
            ),
            field="participant",
        )
    slot, arm = _next_slot(session, study, participant)
    visit = baseline_visit(definition_of(study)).code
    kit = allocation.allocate_kit(
        session, study, site=participant.site_code, arm=arm, participant_id=participant.id,
        visit=visit, actor=actor,
    )  # fmt: skip
    del arm
    lists.mark_used(slot, participant.id)
    participant.status = P.RANDOMIZED
    participant.randomization_number = slot.randomization_number
    participant.randomized_at = utcnow()
    participant.randomized_by = signer.username
    session.flush()
    audit.record(
        session, actor=actor, action="participant.randomize", object_type="participant",
        object_id=participant.id, study_code=study.code, participant_id=participant.id,
        old={"status": P.ELIGIBLE.value},
        new={"status": P.RANDOMIZED.value, "randomization_number": slot.randomization_number,
             "stratum": participant.stratum, "kit_code": kit.code, "visit": visit,
             "test": participant.is_test, "signature": signature_record(signer, signed_at,
                                                                 Text(RANDOMIZE_MEANING),
                                                                 translate)},
    )  # fmt: skip
    return Randomization(
        participant.id, slot.randomization_number, kit.code, participant.randomized_at
    )


def _next_slot(
    session: Session, study: Study, participant: Participant
) -> tuple[AllocationSlot, str]:
    """The lowest free slot of the participant's stratum and its opened arm (under
    minimization, the slot drawn for the participant now)."""
    kind = ListKind.DUMMY if study.mode is StudyMode.TESTING else ListKind.LIVE
    allocation_list = lists.find_list(session, study, kind)
    if allocation_list is None:
        raise StratumExhausted(
            N_(
                "Randomization is not open yet: the study has no allocation list. Nothing was "
                "changed; ask the study statistician."
            ),
            field="list",
        )
    if minimization.is_minimization(allocation_list):
        # Minimization reads the whole study's margins: its one row stands in for the stratum's.
        lock_stratum(session, allocation_list, minimization.LOCK_KEY)
        return minimization.assign(session, study, allocation_list, participant)
    lock_stratum(session, allocation_list, participant.stratum)
    slot = session.scalar(
        select(AllocationSlot)
        .where(
            AllocationSlot.list_id == allocation_list.id,
            AllocationSlot.stratum == participant.stratum,
            AllocationSlot.status == SlotStatus.AVAILABLE,
        )
        .order_by(AllocationSlot.sequence)
        .limit(1)
    )
    if slot is None:
        raise StratumExhausted(
            N_(
                "The allocation list has no free place left for this participant's stratum. "
                "Nothing was changed; ask the study statistician to extend the list."
            ),
            field="list",
        )
    sealer = sealer_by_key_id(session, study, allocation_list.data_key_id)
    return slot, lists.slot_arm(session, study, slot, sealer)


def dispense(
    session: Session,
    participant: Participant,
    *,
    visit: object,
    signer: User,
    password: object,
    override_reason: object = None,
    today: dt.date | None = None,
    translate: Translate = english,
) -> KitForVisit:
    """Signed allocation of the kit for a later dispensing visit, of the participant's arm.

    Outside the visit window (day ± window_days from randomization) it is refused unless an
    override reason is given; the override is audited with its reason.
    """
    study = session.get_one(Study, participant.study_id)
    definition = definition_of(study)
    today = today or studytext.local_date(utcnow(), site_zone_of(definition, participant))
    code = _dispensing_visit(definition, participant, visit)
    window = visit_window(definition, participant, code)
    reason = override_reason.strip() if isinstance(override_reason, str) else ""
    if not window.contains(today) and not reason:
        raise InvalidInput(
            N_(
                "Today (%(today)s) is outside the window of visit %(code)s (%(opens)s to "
                "%(closes)s, due %(due)s). Give an override reason to allocate the kit "
                "anyway."
            ),
            field="override_reason",
            today=today.isoformat(),
            code=code,
            opens=window.opens.isoformat(),
            closes=window.closes.isoformat(),
            due=window.due.isoformat(),
        )
    if reason and len(reason) > MAX_REASON:
        raise InvalidInput(N_("override_reason: at most %(max_reason)s characters."),
                           field="override_reason", max_reason=MAX_REASON)  # fmt: skip
    meaning = Text(DISPENSE_MEANING, {"visit": code})
    check_signature(session, signer, password, str(meaning))
    signed_at, actor = utcnow(), actor_of(signer)
    participant = _lock_participant(session, participant.id)
    refuse_if_locked(study)
    _dispensing_visit(definition, participant, code)  # re-check under the lock
    kit = allocation.allocate_kit(
        session, study, site=participant.site_code, arm=_arm_of(session, study, participant),
        participant_id=participant.id, visit=code, actor=actor, today=today,
    )  # fmt: skip
    outside = not window.contains(today)
    dispensation = session.scalars(select(Dispensation).where(Dispensation.kit_id == kit.id)).one()
    if outside:
        dispensation.override_reason = reason
    session.flush()
    audit.record(
        session, actor=actor, action="participant.dispense", object_type="participant",
        object_id=participant.id, study_code=study.code, participant_id=participant.id,
        new={"visit": code, "kit_code": kit.code, "due": window.due.isoformat(),
             "window": [window.opens.isoformat(), window.closes.isoformat()],
             "outside_window": outside,
             "signature": signature_record(signer, signed_at, meaning, translate)},
        reason=reason if outside else None,
    )  # fmt: skip
    return KitForVisit(
        participant.id, code, kit.code, dispensation.allocated_at, reason if outside else None
    )


def _dispensing_visit(definition: StudyDefinition, participant: Participant, visit: object) -> str:
    """The visit code, if it is a later dispensing visit this participant may get a kit for."""
    later = [v.code for v in dispensing_visits(definition)[1:]]
    if not isinstance(visit, str) or visit not in later:
        choices = ", ".join(later) or "none"
        raise InvalidInput(
            N_("visit: must be a later dispensing visit of the study (%(choices)s)."),
            field="visit",
            choices=choices,
        )
    if participant.status is not P.RANDOMIZED:
        raise Conflict(
            N_("Only randomized participants receive kits (this one is %(status)s)."),
            field="participant",
            status=participant.status,
        )
    return visit


def _arm_of(session: Session, study: Study, participant: Participant) -> str:
    """The arm of the slot bound to the participant (opened for allocation only)."""
    arm = lists.participant_arm(session, study, participant.id)
    if arm is None:
        raise Conflict(N_("This participant has no allocation slot."), field="participant")
    return arm


def replace_kit(
    session: Session,
    participant: Participant,
    *,
    kit_code: object,
    reason: object,
    lost: bool,
    actor: audit.Actor,
) -> str:
    """Replace a participant's damaged or lost kit by another of the same arm; the new code.

    Runs under the participant's and the site's locks like every other allocation. The
    reason is required and audited with both codes (never the arm).
    """
    why = _reason(reason)
    code = kitcodes.canonical(kit_code) if isinstance(kit_code, str) else ""
    participant = _lock_participant(session, participant.id)
    study = session.get_one(Study, participant.study_id)
    refuse_if_locked(study)
    if participant.status is not P.RANDOMIZED:
        raise Conflict(
            N_("Only kits of randomized participants are replaced here."), field="participant"
        )
    held = session.scalar(
        select(Dispensation)
        .join(Kit, Kit.id == Dispensation.kit_id)
        .where(
            Dispensation.participant_id == participant.id,
            Dispensation.status.in_(kit_service.ACTIVE_DISPENSATION),
            Kit.code == code,
        )
    )
    if held is None:
        raise InvalidInput(
            N_("kit_code: this participant holds no kit '%(code)s'."), field="kit_code", code=code
        )
    new = allocation.replace_kit(
        session, study, dispensation=held, reason=why, actor=actor, lost=lost,
        sites=frozenset({participant.site_code}),
    )  # fmt: skip
    return new.code


# --- after randomization ---------------------------------------------------------------


def withdraw(
    session: Session, participant: Participant, *, actor: audit.Actor, reason: object
) -> Participant:
    """Withdraw an eligible or randomized participant; the slot and kits stay bound."""
    return _change_status(
        session, participant, P.WITHDRAWN, {P.ELIGIBLE, P.RANDOMIZED}, actor, reason,
        "participant.withdraw",
    )  # fmt: skip


def mark_randomized_in_error(
    session: Session, participant: Participant, *, actor: audit.Actor, reason: object
) -> Participant:
    """Record that a participant was randomized in error; the slot stays bound, never reused."""
    return _change_status(
        session, participant, P.RANDOMIZED_IN_ERROR, {P.RANDOMIZED, P.WITHDRAWN}, actor,
        reason, "participant.randomized_in_error",
    )  # fmt: skip


def _change_status(
    session: Session,
    participant: Participant,
    to: ParticipantStatus,
    allowed_from: set[ParticipantStatus],
    actor: audit.Actor,
    reason: object,
    action: str,
) -> Participant:
    refuse_if_locked(session.get_one(Study, participant.study_id))
    why = _reason(reason)
    if participant.status not in allowed_from:
        raise Conflict(
            N_("A participant who is %(status)s cannot become %(to)s."),
            field="status",
            status=participant.status,
            to=to,
        )
    old = participant.status
    participant.status = to
    session.flush()
    study = session.get_one(Study, participant.study_id)
    audit.record(
        session, actor=actor, action=action, object_type="participant",
        object_id=participant.id, study_code=study.code, participant_id=participant.id,
        old={"status": old.value}, new={"status": to.value}, reason=why,
    )  # fmt: skip
    return participant
