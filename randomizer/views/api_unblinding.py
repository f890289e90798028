"""``POST /api/v1/participants/{id}/unblind`` (SPEC §4.2), under Idempotency-Key.

The URL names the one participant, and is the confirmation the web form asks to type. The
body's model refuses unknown fields, so a body naming other participants is refused. The
stored idempotent answer never holds the arm: a retry with the same key discloses it again,
as a new audited event.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from randomizer.auth import current
from randomizer.db import db
from randomizer.errors import N_, InvalidInput
from randomizer.models import Role
from randomizer.services import unblinding
from randomizer.views.api import bp
from randomizer.views.api_schema import body_of, operation, reply
from randomizer.views.api_shapes import Arm, Unblinded, UnblindRequest
from randomizer.views.idempotency import idempotent

Body = dict[str, Any]


def _without_arm(body: Body) -> Body:
    return {k: v for k, v in body.items() if k != "arm"}


def _redisclose(stored: Body) -> tuple[Body, int]:
    session = db.session()
    participant = unblinding.find_participant(session, int(stored["participant_id"]), current())
    result = unblinding.redisclose(
        session, participant, actor_user=current(), unblinded_at=stored.get("unblinded_at")
    )
    return _answer(result, stored.get("unblinded_at")), 200


def _may_unblind(participant_id: int) -> None:
    unblinding.find_participant(db.session(), participant_id, current())


@bp.post("/participants/<int:participant_id>/unblind")
@operation("Emergency unblinding of one participant (signed, audited)",
           roles=(Role.INVESTIGATOR,), body=UnblindRequest, answer=Unblinded,
           notes="own sites; the answer is never cached")  # fmt: skip
@idempotent(authorize=_may_unblind, sanitize=_without_arm, replay=_redisclose)
def unblind(participant_id: int) -> tuple[Body, int]:
    body = body_of(UnblindRequest)
    if body.participant_id not in (None, participant_id):
        raise InvalidInput(
            N_("participant_id: one participant per request, and it must be the URL's."),
            field="participant_id",
        )
    session = db.session()
    participant = unblinding.find_participant(session, participant_id, current())
    result = unblinding.unblind(
        session, participant, actor_user=current(),
        reason_category=body.reason_category, reason=body.reason,
        password=body.signature.password, totp_code=body.signature.totp,
        confirm_number=participant.randomization_number,
    )  # fmt: skip
    return _answer(result, result.unblinded_at), 200


def _answer(result: unblinding.UnblindResult, unblinded_at: dt.datetime | str | None) -> Body:
    answer = Unblinded.model_validate(
        {
            "participant_id": result.participant_id,
            "arm": Arm(code=result.arm_code, name=result.arm_name),
            "unblinded_at": unblinded_at,
        }
    )
    return dict(reply(answer))
