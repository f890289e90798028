"""Pausing randomization for a study or one site: refused alike for everyone, audited."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import Conflict, InvalidInput, RandomizationPaused
from randomizer.models import Participant, ParticipantStatus, Study, User
from randomizer.services import enrollment, pausing
from tests.conftest import PASSWORD, Runner, login
from tests.enrollment_support import actions, call, prepare_supply, register, snapshot, token_for
from tests.test_participant_pages import submission

SUPPLY_HALT = "Depot shipment delayed"


@pytest.fixture
def trial(session: Session, study: Study, users: dict[str, User]) -> Study:
    prepare_supply(session, study)
    return study


def _pause(runner: Runner, *site: str, reason: str = SUPPLY_HALT) -> Any:
    args = ["--site", site[0]] if site else []
    return runner.invoke("study", "pause", "TST", *args, "--reason", reason)


def _try_randomize(session: Session, participant: Participant, signer: User) -> str:
    """The refusal's message (the test fails if the randomization goes through)."""
    with pytest.raises(RandomizationPaused) as refused:
        enrollment.randomize(session, participant, signer=signer, password=PASSWORD)
    session.rollback()
    return refused.value.message


def test_a_site_pause_refuses_every_randomization_there_alike_whatever_the_arm(
    runner: Runner, session: Session, trial: Study, users: dict[str, User]
) -> None:
    inv = users["investigator"]
    done = [register(session, trial, inv, f"D-{g}", grade=g) for g in ("low", "high")]
    for p in done:  # the next slots of both strata are now whatever the list holds
        enrollment.randomize(session, p, signer=inv, password=PASSWORD)
    session.commit()
    assert _pause(runner, "S1").exit_code == 0
    waiting = [register(session, trial, inv, f"W-{i}", grade=g)
               for i, g in enumerate(("low", "high", "low", "high"))]  # fmt: skip
    before = snapshot(session)
    messages = {_try_randomize(session, p, inv) for p in waiting}
    assert messages == {f"Randomization is paused at site S1 of study TST: {SUPPLY_HALT}. "
                        "Nothing was changed."}  # fmt: skip
    assert snapshot(session) == before


def test_a_site_pause_leaves_the_other_sites_open(
    runner: Runner, session: Session, trial: Study, users: dict[str, User]
) -> None:
    assert _pause(runner, "S1").exit_code == 0
    other = register(session, trial, users["investigator2"], "S2-1", site="S2")
    enrollment.randomize(session, other, signer=users["investigator2"], password=PASSWORD)
    session.commit()
    assert other.status is ParticipantStatus.RANDOMIZED


def test_a_study_pause_refuses_every_site(
    runner: Runner, session: Session, trial: Study, users: dict[str, User]
) -> None:
    assert _pause(runner).exit_code == 0
    for inv, site in ((users["investigator"], "S1"), (users["investigator2"], "S2")):
        p = register(session, trial, inv, f"{site}-1", site=site)
        assert "paused for study TST" in _try_randomize(session, p, inv)


def test_resume_opens_randomization_again_and_both_steps_are_audited(
    runner: Runner, session: Session, trial: Study, users: dict[str, User]
) -> None:
    inv = users["investigator"]
    assert _pause(runner, "S1").exit_code == 0
    result = runner.invoke("study", "resume", "TST", "--site", "S1")
    assert result.exit_code == 0, result.output
    p = register(session, trial, inv, "R-1")
    enrollment.randomize(session, p, signer=inv, password=PASSWORD)
    session.commit()
    (paused,) = actions(session, "randomization.pause")
    (resumed,) = actions(session, "randomization.resume")
    assert json.loads(paused.new_values or "{}") == {"site": "S1", "paused": True}
    assert paused.reason == f"{SUPPLY_HALT}."
    assert json.loads(resumed.new_values or "{}") == {"site": "S1", "paused": False}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pause", "TST", "--site", "S9", "--reason", "x"], "has no site 'S9'"),
        (["pause", "TST", "--reason", "   "], "give the reason"),
        (["resume", "TST"], "not paused for the whole study"),
        (["resume", "TST", "--site", "S2"], "not paused for site S2"),
    ],
)
def test_a_bad_pause_or_resume_is_refused_and_changes_nothing(
    runner: Runner, session: Session, trial: Study, args: list[str], expected: str
) -> None:
    result = runner.invoke("study", *args)
    assert result.exit_code == 1
    assert expected in result.output
    assert actions(session, "randomization.pause") == []


def test_a_second_pause_of_the_same_scope_is_refused(session: Session, trial: Study) -> None:
    pausing.pause(session, trial, site=None, reason="DSMB halt", actor=audit.SYSTEM)
    with pytest.raises(Conflict, match="already paused"):
        pausing.pause(session, trial, site=None, reason="again", actor=audit.SYSTEM)
    with pytest.raises(InvalidInput, match="at most"):
        pausing.pause(session, trial, site="S1", reason="x" * 501, actor=audit.SYSTEM)


# --- API and pages -----------------------------------------------------------------------


def test_the_api_refuses_a_paused_randomization_with_the_problem_type(
    runner: Runner, client: FlaskClient, session: Session, trial: Study, users: dict[str, User]
) -> None:
    p = register(session, trial, users["investigator"], "API-1")
    token = token_for(session, users["investigator"])
    assert _pause(runner, "S1").exit_code == 0
    body = {"signature": {"password": PASSWORD}}
    response = call(client, "POST", f"/api/v1/participants/{p.id}/randomize", token, body)
    assert response.status_code == 409
    assert response.get_json()["type"] == "/api/v1/problems/randomization-paused"
    runner.invoke("study", "resume", "TST", "--site", "S1")
    again = call(client, "POST", f"/api/v1/participants/{p.id}/randomize", token, body)
    assert again.status_code == 201


@pytest.mark.parametrize("username", ["admin1", "stat1"])
def test_admin_and_statistician_pause_and_resume_from_the_page(
    client: FlaskClient, session: Session, trial: Study, users: dict[str, User], username: str
) -> None:
    client.get("/lang/en")
    login(client, username)
    form = {"pause-TST-site": "S1", "pause-TST-reason": "DSMB safety review"}
    assert client.post("/studies/TST/pause", data=form).status_code == 302
    page = client.get("/studies/").text
    assert (
        "Randomization is paused at site S1 of study TST" in page and "DSMB safety review" in page
    )
    assert client.post("/studies/TST/resume", data={"site": "S1"}).status_code == 302
    assert "Randomization is paused" not in client.get("/studies/").text
    assert [e.actor for e in actions(session, "randomization.resume")] == [username]


def test_the_pause_page_names_a_missing_reason(
    client: FlaskClient, session: Session, trial: Study, users: dict[str, User]
) -> None:
    login(client, "admin1")
    response = client.post("/studies/TST/pause", data={"pause-TST-site": ""})
    assert response.status_code == 422
    assert 'id="pause-TST-reason-error"' in response.text
    assert actions(session, "randomization.pause") == []


def test_site_users_may_not_pause(
    client: FlaskClient, trial: Study, users: dict[str, User]
) -> None:
    login(client, "inv1")
    form = {"pause-TST-site": "", "pause-TST-reason": "no"}
    assert client.post("/studies/TST/pause", data=form).status_code == 403


def test_the_banner_shows_on_every_page_of_the_site_and_the_page_refuses_in_spanish(
    runner: Runner, client: FlaskClient, session: Session, trial: Study, users: dict[str, User]
) -> None:
    p = register(session, trial, users["investigator"], "WEB-1")
    assert _pause(runner, "S1", reason="Retraso del despacho").exit_code == 0
    client.get("/lang/es")
    login(client, "inv1")
    for path in ("/", "/studies/TST/participants", f"/participants/{p.id}"):
        assert "La aleatorización está en pausa en el centro S1" in client.get(path).text
    page = client.get(f"/participants/{p.id}/randomize").text
    response = client.post(
        f"/participants/{p.id}/randomize",
        data={"password": PASSWORD, "submission": submission(page)},
    )
    assert response.status_code == 409
    assert "Retraso del despacho. No se cambió nada." in response.text


def test_a_site_pause_is_not_shown_at_other_sites(
    runner: Runner, client: FlaskClient, trial: Study, users: dict[str, User]
) -> None:
    assert _pause(runner, "S1").exit_code == 0
    client.get("/lang/en")
    login(client, "inv2")
    assert "Randomization is paused" not in client.get("/").text
