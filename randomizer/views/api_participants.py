"""API routes for participants (SPEC §4.2): register, read, randomize, dispense.

Bodies are checked here for shape (a JSON object, fields of the right type, named in every
error); the services judge the rest. Another site's participant answers 404, exactly as an
unknown one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Response, jsonify, request
from werkzeug.exceptions import BadRequest

from randomizer.auth import can_see_site, current, current_actor
from randomizer.db import db
from randomizer.errors import N_, InvalidInput, NotPermitted, RandomizerError
from randomizer.models import Participant, Role, Study
from randomizer.services import enrollment
from randomizer.services.studies import definition_of, get_study
from randomizer.services.unblinding import unblinding_visible
from randomizer.views.api import bp, require
from randomizer.views.idempotency import idempotent
from randomizer.views.input_layer import refuse_control_characters_in
from randomizer.views.participants import KIT_CODE_ROLES, visible_participant

Body = dict[str, Any]


class MalformedBody(RandomizerError):
    status, slug, title = 400, "malformed-body", "Malformed request body"


class UnsupportedMediaType(RandomizerError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


def read_json_object() -> Body:
    """The request body as a JSON object, or a problem naming what is wrong with it."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            N_("Send the body as JSON with the header 'Content-Type: application/json'."),
            field="Content-Type",
        )
    raw = request.get_data(cache=True)
    try:
        body = request.get_json(force=True, silent=False)
    except (BadRequest, RecursionError):  # werkzeug's message says nothing useful
        empty = not raw.strip()
        raise MalformedBody(
            N_("The request body is empty: send a JSON object.")
            if empty
            else N_("The request body is not valid JSON (UTF-8): send a JSON object.")
        ) from None
    if not isinstance(body, dict):
        raise InvalidInput(
            N_("The request body must be a JSON object, not %(type)s."),
            field="body",
            type=_json_type(body),
        )
    refuse_control_characters_in(body)
    return body


def text_field(body: Body, name: str, *, required: bool = True) -> str | None:
    """A string field; missing or wrongly typed fields are named in the error."""
    if name not in body or body[name] is None:
        if required:
            raise InvalidInput(N_("%(name)s: this field is required."), field=name, name=name)
        return None
    value = body[name]
    if not isinstance(value, str):
        raise InvalidInput(
            N_("%(name)s: must be a string, not %(type)s."),
            field=name,
            name=name,
            type=_json_type(value),
        )
    return value


def object_field(body: Body, name: str) -> Body:
    """An object field (required)."""
    if name not in body:
        raise InvalidInput(N_("%(name)s: this field is required."), field=name, name=name)
    value = body[name]
    if not isinstance(value, dict):
        raise InvalidInput(
            N_("%(name)s: must be an object, not %(type)s."),
            field=name,
            name=name,
            type=_json_type(value),
        )
    return value


def signature_password(body: Body) -> str:
    """``signature.password``, named precisely when missing or of the wrong type."""
    signature = object_field(body, "signature")
    password = text_field(signature, "password")
    if not password:
        raise InvalidInput(N_("signature.password: this field is required."),
                           field="signature.password")  # fmt: skip
    return password


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def iso(moment: dt.datetime | None) -> str | None:
    """UTC time as ISO 8601 with a Z."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def registration_site(study_code: str) -> str:
    """The body's site, when the caller is an investigator of it (else 403/404/422)."""
    require(Role.INVESTIGATOR)
    study = get_study(db.session(), study_code)
    site = text_field(read_json_object(), "site") or ""
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
@idempotent(authorize=registration_site, required=False)
def register_participant(study_code: str) -> tuple[Body, int]:
    site, body = registration_site(study_code), read_json_object()
    number = text_field(body, "screening_number") or ""
    factors, answers = object_field(body, "factors"), object_field(body, "eligibility")
    participant = enrollment.register_participant(
        db.session(), get_study(db.session(), study_code), site=site, screening_number=number,
        factors=factors, eligibility=answers, actor=current_actor(),
    )  # fmt: skip
    answer = {
        "participant_id": participant.id,
        "status": participant.status.value,
        "failed_criteria": list(participant.failed_criteria),
    }
    return answer, 201


@bp.get("/studies/<study_code>/participants")
def find_participants(study_code: str) -> Response:
    require(Role.INVESTIGATOR, Role.ASSESSOR, Role.ADMIN)
    study = get_study(db.session(), study_code)
    number = request.args.get("screening_number", "").strip()
    if not number:
        raise InvalidInput(N_("screening_number: give the screening number to look up."),
                           field="screening_number")  # fmt: skip
    found = enrollment.list_participants(db.session(), study, screening_number=number)
    return jsonify([participant_answer(p) for p in found if can_see_site(current(), p.site_code)])


@bp.get("/participants/<int:participant_id>")
def get_participant(participant_id: int) -> Response:
    return jsonify(participant_answer(visible_participant(participant_id)))


def participant_answer(participant: Participant) -> Body:
    """The participant as the current user's role may see it."""
    answer: Body = {
        "participant_id": participant.id,
        "study": participant_study_code(participant),
        "site": participant.site_code,
        "screening_number": participant.screening_number,
        "status": participant.status.value,
        "randomization_number": participant.randomization_number,
        "randomized_at": iso(participant.randomized_at),
        "test": participant.is_test,
    }
    study = db.session.get_one(Study, participant.study_id)
    if unblinding_visible(current().role, definition_of(study)):
        answer["unblinded"] = participant.unblinded_at is not None
        answer["unblinded_at"] = iso(participant.unblinded_at)
    if current().role in KIT_CODE_ROLES:
        kits = enrollment.kits_of(db.session(), participant)
        answer["kits"] = [{"visit": visit, "kit_code": code} for visit, code in kits]
    return answer


def participant_study_code(participant: Participant) -> str:
    return db.session.get_one(Study, participant.study_id).code


def investigator_of(participant_id: int) -> None:
    """Who may randomize or dispense: an investigator of the participant's site (else 403/404)."""
    require(Role.INVESTIGATOR)
    visible_participant(participant_id)


@bp.post("/participants/<int:participant_id>/randomize")
@idempotent(authorize=investigator_of)
def randomize(participant_id: int) -> tuple[Body, int]:
    password = signature_password(read_json_object())
    participant = visible_participant(participant_id)
    done = enrollment.randomize(db.session(), participant, signer=current(), password=password)
    return {
        "participant_id": done.participant_id,
        "randomization_number": done.randomization_number,
        "kit_code": done.kit_code,
        "randomized_at": iso(done.randomized_at),
    }, 201


@bp.post("/participants/<int:participant_id>/dispense")
@idempotent(authorize=investigator_of)
def dispense(participant_id: int) -> tuple[Body, int]:
    body = read_json_object()
    visit = text_field(body, "visit")
    override = text_field(body, "override_reason", required=False)
    password = signature_password(body)
    participant = visible_participant(participant_id)
    done = enrollment.dispense(
        db.session(), participant, visit=visit, signer=current(), password=password,
        override_reason=override,
    )  # fmt: skip
    return {"visit": done.visit, "kit_code": done.kit_code}, 201
