"""API routes for participants (SPEC §4.2): register, look up, read, randomize, dispense.

Bodies and queries are checked by the models of ``api_shapes`` (the field named in every
error); the services judge the rest. Another site's participant answers 404, exactly as an
unknown one.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from randomizer.auth import can_see_site, current, current_actor
from randomizer.db import db
from randomizer.errors import N_, InvalidInput, NotPermitted
from randomizer.models import Participant, Role, Study
from randomizer.services import enrollment
from randomizer.services.studies import definition_of, get_study
from randomizer.services.unblinding import unblinding_visible
from randomizer.views.api import bp
from randomizer.views.api_schema import body_of, operation, query_of, reply
from randomizer.views.api_shapes import (
    DispenseRequest,
    HeldKit,
    KitAllocated,
    ParticipantLookup,
    ParticipantView,
    Randomized,
    RandomizeRequest,
    Registered,
    Registration,
)
from randomizer.views.idempotency import idempotent
from randomizer.views.participants import KIT_CODE_ROLES, visible_participant

Body = dict[str, Any]
EVERY_ROLE = tuple(Role)
FINDERS = (Role.INVESTIGATOR, Role.ASSESSOR, Role.ADMIN)


def registration_site(study_code: str) -> str:
    """The body's site, when the caller is an investigator of it (else 403/404/422)."""
    study = get_study(db.session(), study_code)
    site = body_of(Registration).site
    if site not in {s.code for s in study.sites}:
        known = ", ".join(s.code for s in study.sites)
        raise InvalidInput(
            N_("site: '%(site)s' is not a site of this study (%(known)s)."),
            field="site",
            site=site,
            known=known,
        )
    if not can_see_site(current(), site):
        raise NotPermitted(N_("site: you may register participants only at your own sites."),
                           field="site")  # fmt: skip
    return site


@bp.post("/studies/<study_code>/participants")
@operation("Register and screen a participant", roles=(Role.INVESTIGATOR,), body=Registration,
           answer=Registered, status=201, notes="own sites")  # fmt: skip
@idempotent(authorize=registration_site, required=False)
def register_participant(study_code: str) -> tuple[Body, int]:
    site, body = registration_site(study_code), body_of(Registration)
    participant = enrollment.register_participant(
        db.session(), get_study(db.session(), study_code), site=site,
        screening_number=body.screening_number, factors=body.factors,
        eligibility=body.eligibility, actor=current_actor(),
    )  # fmt: skip
    answer = Registered(
        participant_id=participant.id,
        status=participant.status,
        failed_criteria=list(participant.failed_criteria),
    )
    return reply(answer), 201


@bp.get("/studies/<study_code>/participants")
@operation("Participants with this screening number, as your role may see them", roles=FINDERS,
           query=ParticipantLookup, answer=ParticipantView, many=True,
           notes="investigators see their own sites'")  # fmt: skip
def find_participants(study_code: str) -> Response:
    study = get_study(db.session(), study_code)
    number = query_of(ParticipantLookup).screening_number.strip()
    found = enrollment.list_participants(db.session(), study, screening_number=number)
    return jsonify(
        reply([participant_answer(p) for p in found if can_see_site(current(), p.site_code)])
    )


@bp.get("/participants/<int:participant_id>")
@operation("A participant as your role may see it", roles=EVERY_ROLE, answer=ParticipantView,
           notes="site users their own sites'")  # fmt: skip
def get_participant(participant_id: int) -> Response:
    return jsonify(reply(participant_answer(visible_participant(participant_id))))


def participant_answer(participant: Participant) -> ParticipantView:
    """The participant as the current user's role may see it."""
    study = db.session.get_one(Study, participant.study_id)
    answer = ParticipantView(
        participant_id=participant.id,
        study=study.code,
        site=participant.site_code,
        screening_number=participant.screening_number,
        status=participant.status,
        randomization_number=participant.randomization_number,
        randomized_at=participant.randomized_at,
        test=participant.is_test,
    )
    if unblinding_visible(current().role, definition_of(study)):
        answer.unblinded = participant.unblinded_at is not None
        answer.unblinded_at = participant.unblinded_at
    if current().role in KIT_CODE_ROLES:
        kits = enrollment.kits_of(db.session(), participant)
        answer.kits = [HeldKit(visit=visit, kit_code=code) for visit, code in kits]
    return answer


def investigator_of(participant_id: int) -> None:
    """Who may randomize or dispense: an investigator of the participant's site (else 404)."""
    visible_participant(participant_id)


@bp.post("/participants/<int:participant_id>/randomize")
@operation("Randomize (signed)", roles=(Role.INVESTIGATOR,), body=RandomizeRequest,
           answer=Randomized, status=201, notes="own sites")  # fmt: skip
@idempotent(authorize=investigator_of)
def randomize(participant_id: int) -> tuple[Body, int]:
    password = body_of(RandomizeRequest).signature.password
    participant = visible_participant(participant_id)
    done = enrollment.randomize(db.session(), participant, signer=current(), password=password)
    answer = Randomized(
        participant_id=done.participant_id,
        randomization_number=done.randomization_number,
        kit_code=done.kit_code,
        randomized_at=done.randomized_at,
    )
    return reply(answer), 201


@bp.post("/participants/<int:participant_id>/dispense")
@operation("Allocate the kit for a dispensing visit (signed)", roles=(Role.INVESTIGATOR,),
           body=DispenseRequest, answer=KitAllocated, status=201, notes="own sites")  # fmt: skip
@idempotent(authorize=investigator_of)
def dispense(participant_id: int) -> tuple[Body, int]:
    body = body_of(DispenseRequest)
    participant = visible_participant(participant_id)
    done = enrollment.dispense(
        db.session(), participant, visit=body.visit, signer=current(),
        password=body.signature.password, override_reason=body.override_reason,
    )  # fmt: skip
    return reply(KitAllocated(visit=done.visit, kit_code=done.kit_code)), 201
