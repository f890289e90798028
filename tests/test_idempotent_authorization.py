"""An idempotent replay answers only a caller who may still make the request (SPEC §4.2).

Randomize, dispense and unblind are answered once; then the caller loses the role or the
site the first call needed, and the same request under the same key must get the refusal a
first call would get (403 or 404), never the stored kit code or arm.
"""

from __future__ import annotations

from typing import Any

import pytest

from randomizer import audit
from randomizer.models import Role
from randomizer.services.users import update_user
from tests.conftest import PASSWORD
from tests.enrollment_support import call, prepare_supply, register, token_for
from tests.unblinding_support import randomized

SIGNATURE = {"signature": {"password": PASSWORD}}
UNBLIND = {"reason_category": "medical_emergency", "reason": "Acute kidney injury.", **SIGNATURE}
DISPENSE = {"visit": "month_6", "override_reason": "Early infusion", **SIGNATURE}
#: How the caller loses the right, and what a first call would answer then.
LOSSES = [
    pytest.param({"role": Role.ASSESSOR, "sites": ()}, 403, id="became-assessor"),
    pytest.param({"sites": ("S2",)}, 404, id="moved-to-other-site"),
]


def _first_call(session, study, users, action: str) -> tuple[str, dict[str, Any]]:
    """The path and body of one answered request of this kind, its participant prepared."""
    prepare_supply(session, study)
    investigator = users["investigator"]
    if action == "randomize":
        participant = register(session, study, investigator, "SCR-1")
        return f"/api/v1/participants/{participant.id}/randomize", SIGNATURE
    participant = randomized(session, study, investigator, "SCR-1")
    body = DISPENSE if action == "dispense" else UNBLIND
    return f"/api/v1/participants/{participant.id}/{action}", body


@pytest.mark.parametrize("action", ["randomize", "dispense", "unblind"])
@pytest.mark.parametrize(("loss", "status"), LOSSES)
def test_replay_is_refused_once_the_caller_lost_role_or_site(
    client, session, study, users, action, loss, status
):
    path, body = _first_call(session, study, users, action)
    token = token_for(session, users["investigator"])
    first = call(client, "POST", path, token, body, key="same-key")
    assert first.status_code in (200, 201), first.json
    update_user(session, users["investigator"], actor=audit.SYSTEM, **loss)
    session.commit()
    replay = call(client, "POST", path, token, body, key="same-key")
    assert replay.status_code == status
    assert replay.mimetype == "application/problem+json"
    assert "kit_code" not in replay.json and "arm" not in replay.json


@pytest.mark.parametrize("action", ["randomize", "dispense", "unblind"])
def test_replay_still_answers_while_role_and_site_are_held(client, session, study, users, action):
    path, body = _first_call(session, study, users, action)
    token = token_for(session, users["investigator"])
    first = call(client, "POST", path, token, body, key="same-key")
    update_user(session, users["investigator"], actor=audit.SYSTEM, sites=("S1", "S2"))
    session.commit()
    replay = call(client, "POST", path, token, body, key="same-key")
    assert replay.status_code == first.status_code
    assert replay.json == first.json
