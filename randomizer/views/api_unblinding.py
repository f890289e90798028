"""``POST /api/v1/participants/{id}/unblind`` (SPEC §4.2), under Idempotency-Key.

The URL names the one participant, and is the confirmation the web form asks to type. The
stored idempotent answer never holds the arm: a retry with the same key discloses it again,
as a new audited event.
"""

from __future__ import annotations

from typing import Any

from randomizer.auth import current
from randomizer.db import db
from randomizer.errors import N_, InvalidInput
from randomizer.services import unblinding
from randomizer.views.api import bp
from randomizer.views.api_participants import iso, object_field, read_json_object, text_field
from randomizer.views.idempotency import idempotent

Body = dict[str, Any]
FIELDS = frozenset({"reason_category", "reason", "signature", "participant_id"})
SIGNATURE_FIELDS = frozenset({"password", "totp"})


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
@idempotent(authorize=_may_unblind, sanitize=_without_arm, replay=_redisclose)
def unblind(participant_id: int) -> tuple[Body, int]:
    body = read_json_object()
    _one_participant(body, participant_id)
    signature = object_field(body, "signature")
    if unknown := sorted(set(signature) - SIGNATURE_FIELDS):
        raise InvalidInput(
            N_("signature.%(unknown)s: unknown field."), field="signature", unknown=unknown[0]
        )
    session = db.session()
    participant = unblinding.find_participant(session, participant_id, current())
    result = unblinding.unblind(
        session, participant, actor_user=current(),
        reason_category=text_field(body, "reason_category"),
        reason=text_field(body, "reason"),
        password=text_field(signature, "password"),
        totp_code=text_field(signature, "totp", required=False),
        confirm_number=participant.randomization_number,
    )  # fmt: skip
    return _answer(result, iso(result.unblinded_at)), 200


def _one_participant(body: Body, participant_id: int) -> None:
    """Exactly one participant per request: the URL's. A body naming others is refused."""
    if unknown := sorted(set(body) - FIELDS):
        raise InvalidInput(
            N_("%(unknown)s: unknown field. One participant per request, named in the URL."),
            field=unknown[0],
            unknown=unknown[0],
        )
    named = body.get("participant_id", participant_id)
    if isinstance(named, bool) or named != participant_id:
        raise InvalidInput(
            N_("participant_id: one participant per request, and it must be the URL's."),
            field="participant_id",
        )


def _answer(result: unblinding.UnblindResult, unblinded_at: str | None) -> Body:
    return {
        "participant_id": result.participant_id,
        "arm": {"code": result.arm_code, "name": result.arm_name},
        "unblinded_at": unblinded_at,
    }
