"""Code-break envelopes: the statistician's printable fallback, audited."""

from __future__ import annotations

import json
import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer.errors import InvalidInput, NotFound, NotPermitted
from randomizer.models import AllocationSlot, ListKind, Study, User
from randomizer.services import codebreak
from randomizer.services.keyring import sealer_by_key_id
from randomizer.services.lists import get_list, slot_arm
from tests.conftest import login
from tests.unblinding_support import events, supply


def _arms(session: Session, study: Study) -> dict[str, str]:
    allocation_list = get_list(session, study, ListKind.DUMMY)
    sealer = sealer_by_key_id(session, study, allocation_list.data_key_id)
    slots = session.scalars(
        select(AllocationSlot).where(AllocationSlot.list_id == allocation_list.id)
    )
    return {s.randomization_number: slot_arm(session, study, s, sealer) for s in slots}


def test_one_envelope_per_randomization_number_with_its_arm(
    session: Session, study: Study, users: dict[str, User]
):
    supply(session, study, per_stratum=4)
    run = codebreak.make_envelopes(
        session, study, kind=ListKind.DUMMY, actor_user=users["statistician"]
    )
    session.commit()
    expected = _arms(session, study)
    assert {e.randomization_number: e.arm_code for e in run.envelopes} == expected
    numbers = [e.randomization_number for e in run.envelopes]
    assert numbers == sorted(expected), "one sheet per number, in number order"
    assert {e.site for e in run.envelopes} == {"S1", "S2"}


def test_producing_envelopes_is_audited_without_arms(
    session: Session, study: Study, users: dict[str, User]
):
    supply(session, study, per_stratum=4)
    codebreak.make_envelopes(
        session, study, kind=ListKind.DUMMY, actor_user=users["statistician"], site="S1"
    )
    session.commit()
    [event] = events(session, "codebreak.envelopes")
    new = json.loads(event.new_values or "{}")
    assert (event.actor, event.role) == ("stat1", "statistician")
    s1 = [n for n in _arms(session, study) if n.startswith(("T01", "T02"))]
    assert (new["envelopes"], new["site"], new["kind"]) == (len(s1), "S1", "dummy")
    assert "ACTIVEX" not in (event.new_values or "") and "PLACEBOX" not in (event.new_values or "")


def test_one_site_only_gets_that_sites_numbers(
    session: Session, study: Study, users: dict[str, User]
):
    supply(session, study, per_stratum=4)
    run = codebreak.make_envelopes(
        session, study, kind=ListKind.DUMMY, actor_user=users["statistician"], site="S2"
    )
    s2 = [n for n in _arms(session, study) if n.startswith(("T03", "T04"))]
    assert {e.site for e in run.envelopes} == {"S2"}
    assert [e.randomization_number for e in run.envelopes] == sorted(s2)


@pytest.mark.parametrize("role", ["admin", "investigator", "pharmacist", "assessor"])
def test_only_the_statistician_produces_envelopes(
    session: Session, study: Study, users: dict[str, User], role: str
):
    supply(session, study, per_stratum=2)
    before = session.scalar(select(func.count()).select_from(AllocationSlot))
    with pytest.raises(NotPermitted):
        codebreak.make_envelopes(session, study, kind=ListKind.DUMMY, actor_user=users[role])
    session.rollback()
    assert events(session, "codebreak.envelopes") == []
    assert session.scalar(select(func.count()).select_from(AllocationSlot)) == before


def test_a_missing_list_or_unknown_site_is_refused(
    session: Session, study: Study, users: dict[str, User]
):
    with pytest.raises(NotFound):
        codebreak.make_envelopes(
            session, study, kind=ListKind.LIVE, actor_user=users["statistician"]
        )
    supply(session, study, per_stratum=2)
    with pytest.raises(InvalidInput):
        codebreak.make_envelopes(
            session, study, kind=ListKind.DUMMY, actor_user=users["statistician"], site="S9"
        )


def test_the_printable_page_has_one_sheet_per_number_and_keeps_arms_off_screen(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
):
    supply(session, study, per_stratum=2)
    login(client, "stat1")
    assert client.get("/codebreak").status_code == 200
    page = client.post("/codebreak", data={"study": "TST", "kind": "dummy", "site": ""})
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    total = len(_arms(session, study))
    assert len(re.findall(r'<section class="envelope"', html)) == total
    assert html.count('class="fold-line"') == total
    # The arm is only inside the folded part, which the screen style hides.
    for inside in re.findall(r'<div class="envelope-inside">(.*?)</div>', html, re.S):
        assert "ACTIVEX" in inside or "PLACEBOX" in inside
    outside = re.sub(r'<div class="envelope-inside">.*?</div>', "", html, flags=re.S)
    assert "ACTIVEX" not in outside and "PLACEBOX" not in outside
    assert len(events(session, "codebreak.envelopes")) == 1


@pytest.mark.parametrize("who", ["admin1", "inv1", "pharm1", "assess1"])
def test_other_roles_cannot_open_the_envelope_page(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User], who: str
):
    supply(session, study, per_stratum=2)
    login(client, who)
    assert client.get("/codebreak").status_code == 403
    response = client.post("/codebreak", data={"study": "TST", "kind": "dummy", "site": ""})
    assert response.status_code == 403
    assert events(session, "codebreak.envelopes") == []
