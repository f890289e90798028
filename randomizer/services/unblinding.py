"""Emergency unblinding of one participant by an investigator of their site (SPEC §3).

No approval step and no second person: the investigator's own re-authentication (password,
and the one-time code where enrolled), a reason category from the study definition, a free
text reason and the typed randomization number are enough. Every disclosure writes exactly
one audit event in the caller's transaction and queues a blinded notification (who, when,
which participant and site — never the arm) for the sponsor contacts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, InvalidInput, NotFound, NotPermitted, SignatureInvalid
from randomizer.models import (
    Participant,
    Role,
    Study,
    Unblinding,
    User,
)
from randomizer.services import lists, notifications
from randomizer.services.studies import definition_of
from randomizer.services.users import (
    actor_of,
    check_signature,
    has_second_factor,
    signature_record,
    verify_totp,
)
from randomizer.studydef import StudyDefinition
from randomizer.wording import Text, Translate, english

#: What the investigator signs (21 CFR 11.50: the meaning of the signature).
UNBLIND_MEANING = N_("I request emergency unblinding of this participant for the reason given")
MAX_REASON = 2000
#: Largest id the integer columns hold; larger ids are simply unknown.
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class UnblindResult:
    """What the investigator sees: the participant's arm, at once."""

    participant_id: int
    arm_code: str
    arm_name: str
    unblinded_at: dt.datetime


def find_participant(session: Session, participant_id: int, user: User) -> Participant:
    """The participant an investigator may unblind, with one answer for "unknown" and
    "another site's" (NotFound), and NotPermitted for every other role."""
    if user.role is not Role.INVESTIGATOR:
        raise NotPermitted(
            N_("Only an investigator of the participant's site may unblind a participant.")
        )
    participant = session.get(Participant, participant_id) if 0 < participant_id <= MAX_ID else None
    if participant is None or participant.site_code not in user.site_codes:
        raise NotFound(
            N_("No participant %(participant_id)s at your sites."),
            field="participant_id",
            participant_id=participant_id,
        )
    return participant


def find_by_number(session: Session, number: str, user: User) -> list[Participant]:
    """Participants at the investigator's sites with this randomization number (any study)."""
    if user.role is not Role.INVESTIGATOR:
        raise NotPermitted(N_("Only investigators unblind participants."))
    wanted = _normalise(number)
    if not wanted:
        raise InvalidInput(N_("Type the randomization number."), field="randomization_number")
    return list(
        session.scalars(
            select(Participant)
            .where(
                Participant.randomization_number == wanted,
                Participant.site_code.in_(sorted(user.site_codes)),
                Participant.archived.is_(False),
            )
            .order_by(Participant.id)
        )
    )


def unblind(
    session: Session,
    participant: Participant,
    *,
    actor_user: User,
    reason_category: object,
    reason: object,
    password: object,
    totp_code: object = None,
    confirm_number: object,
    translate: Translate = english,
) -> UnblindResult:
    """Disclose one participant's arm to an investigator of their site; audited, notified.

    Every refusal raises before anything is written (or after flushes the caller's rollback
    undoes). A participant unblinded before is disclosed again, as a new audited event.
    The signature's meaning is stored as the investigator read it (``translate``).
    """
    participant = find_participant(session, participant.id, actor_user)
    if participant.randomization_number is None:
        raise _not_randomized()
    study = session.get_one(Study, participant.study_id)
    definition = definition_of(study)
    category, why = _check_reason(definition, reason_category, reason)
    _check_confirmation(participant, confirm_number)
    check_signature(session, actor_user, password, UNBLIND_MEANING)
    if has_second_factor(actor_user) and not verify_totp(session, actor_user, totp_code):
        raise SignatureInvalid(
            N_(
                "The one-time code is not valid: nothing was disclosed. Enter the current code "
                "from your authenticator app."
            ),
            field="totp_code",
        )
    arm_code = participant_arm(session, study, participant)
    # Lock the row (PostgreSQL) so that of two simultaneous unblindings one is the first.
    session.refresh(participant, with_for_update=True)
    now = utcnow()
    first = participant.unblinded_at is None
    if first:
        participant.unblinded_at, participant.unblinded_by = now, actor_user.username
    signature = signature_record(actor_user, now, Text(UNBLIND_MEANING), translate)
    _record(session, study, participant, actor_user, category, why, now, signature, first)
    _notify_sponsor(session, study, definition, participant, actor_user, category, now)
    return UnblindResult(participant.id, arm_code, definition.arm(arm_code).name, now)


def redisclose(
    session: Session, participant: Participant, *, actor_user: User, unblinded_at: str | None
) -> UnblindResult:
    """Show an earlier unblinding's arm again (an Idempotency-Key retry); a new audited event.

    The retry carried the same signed request, so it is not signed again; the caller's
    role and site are checked again, since they may have changed since.
    """
    participant = find_participant(session, participant.id, actor_user)
    if participant.unblinded_at is None:
        raise Conflict(N_("This participant has not been unblinded."), field="participant_id")
    study = session.get_one(Study, participant.study_id)
    arm_code = participant_arm(session, study, participant)
    audit.record(
        session,
        actor=actor_of(actor_user),
        action="participant.unblind_redisplay",
        object_type="participant",
        object_id=participant.id,
        study_code=study.code,
        participant_id=participant.id,
        new={"site": participant.site_code, "of_unblinding_at": unblinded_at},
        reason="retry of an answered unblinding request (same Idempotency-Key)",
    )
    at = dt.datetime.fromisoformat(unblinded_at) if unblinded_at else participant.unblinded_at
    return UnblindResult(participant.id, arm_code, definition_of(study).arm(arm_code).name, at)


def participant_arm(session: Session, study: Study, participant: Participant) -> str:
    """Open the arm of the slot bound to the participant (callers audit the disclosure)."""
    arm = lists.participant_arm(session, study, participant.id)
    if arm is None or participant.randomization_number is None:
        raise _not_randomized()
    return arm


def _not_randomized() -> Conflict:
    return Conflict(
        N_("This participant has not been randomized: there is no treatment to disclose."),
        field="participant_id",
    )


def unblinding_visible(role: Role, definition: StudyDefinition) -> bool:
    """Whether this role may learn that a participant was unblinded (never the arm).

    Admin, the unblinded roles and the investigators who may unblind see the flag;
    outcome assessors only when the study definition says so.
    """
    if role is Role.ASSESSOR:
        return definition.assessors_see_unblinding
    return True


def _check_reason(
    definition: StudyDefinition, reason_category: object, reason: object
) -> tuple[str, str]:
    allowed = definition.unblinding_reasons
    if not isinstance(reason_category, str) or reason_category not in allowed:
        raise InvalidInput(
            N_("Choose a reason category: one of %(choices)s."),
            field="reason_category",
            choices=", ".join(allowed),
        )
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InvalidInput(N_("State the reason for unblinding in your own words."), field="reason")
    if len(text) > MAX_REASON:
        raise InvalidInput(
            N_("The reason may have at most %(max_reason)s characters."),
            field="reason",
            max_reason=MAX_REASON,
        )
    return reason_category, text


def _normalise(number: object) -> str:
    return number.strip().upper() if isinstance(number, str) else ""


def _check_confirmation(participant: Participant, confirm_number: object) -> None:
    typed = _normalise(confirm_number)
    if not typed or typed != (participant.randomization_number or "").upper():
        raise InvalidInput(
            N_(
                "The randomization number you typed is not this participant's: check the "
                "participant and type the number again."
            ),
            field="confirm_number",
        )


def _record(
    session: Session,
    study: Study,
    participant: Participant,
    user: User,
    category: str,
    reason: str,
    at: dt.datetime,
    signature: dict[str, str],
    first: bool,
) -> None:
    """The Unblinding row and the one audit event (never the arm)."""
    row = Unblinding(
        participant_id=participant.id,
        actor=user.username,
        role=user.role.value,
        reason_category=category,
        reason=reason,
        at=at,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor_of(user),
        action="participant.unblind",
        object_type="participant",
        object_id=participant.id,
        study_code=study.code,
        participant_id=participant.id,
        old={"unblinded": not first},
        new={
            "unblinded": True,
            "first_unblinding": first,
            "unblinding_id": row.id,
            "site": participant.site_code,
            "randomization_number": participant.randomization_number,
            "reason_category": category,
            "test": participant.is_test,
            "signature": signature,
        },
        reason=reason,
    )


def _notify_sponsor(
    session: Session,
    study: Study,
    definition: StudyDefinition,
    participant: Participant,
    user: User,
    category: str,
    at: dt.datetime,
) -> None:
    """Queue the blinded notice: who, when, which participant and site. Never the arm."""
    site = next((s.name for s in definition.sites if s.code == participant.site_code), "")
    values = {
        "study": study.code, "registry": study.registry_id, "title": study.title,
        "number": participant.randomization_number, "participant": participant.id,
        "site": participant.site_code, "site_name": site, "signer": user.full_name,
        "username": user.username, "category": category,
        "when": at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    subject = Text(
        N_(
            "[randomizer] Emergency unblinding in study %(study)s: participant %(number)s at "
            "site %(site)s"
        ),
        values,
    )
    body = Text(
        N_(
            "An investigator unblinded one participant in an emergency.\n"
            "\n"
            "Study: %(study)s (%(registry)s) %(title)s\n"
            "Participant: randomization number %(number)s (participant id %(participant)s)\n"
            "Site: %(site)s %(site_name)s\n"
            "Unblinded by: %(signer)s (%(username)s), investigator\n"
            "When (UTC): %(when)s\n"
            "Reason: %(category)s\n"
            "\n"
            "This message does not say which treatment the participant receives. The reason "
            "given and the investigator's signature are in the service's audit trail.\n"
        ),
        values,
    )
    if participant.is_test:
        subject = Text(N_("[TEST] %(subject)s"), {"subject": subject})
        body = Text(N_("[TEST] %(body)s"), {"body": body})
    notifications.queue(
        session,
        study_id=study.id,
        recipients=[c.email for c in definition.sponsor_contacts],
        subject=subject,
        body=body,
    )
