"""Database lock: two signatures, one-way, and afterwards no change to participants."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.errors import Conflict, NotPermitted, StudyLocked
from randomizer.models import Dispensation, Kit, ListKind, Participant, Study, User
from randomizer.services import enrollment, unblinding
from randomizer.services.commitment import extend_list
from randomizer.services.database_lock import lock_study
from randomizer.services.users import actor_of
from tests.conftest import PASSWORD, Runner, login
from tests.enrollment_support import ELIGIBLE, actions, call, snapshot, token_for
from tests.live_support import SIGNERS, enrol, lock, make_live


@pytest.fixture
def live(session: Session, study: Study, users: dict[str, User]) -> Study:
    return make_live(session, study)


def _lock_cli(runner: Runner, stat: str = PASSWORD, admin: str = PASSWORD) -> Any:
    return runner.invoke(
        "study", "lock", "TST", "--statistician", "stat1", "--admin", "admin1",
        input=f"{stat}\n{admin}\n",
    )  # fmt: skip


def _locked_at(session: Session, study: Study) -> dt.datetime | None:
    session.expire_all()
    return session.get_one(Study, study.id).locked_at


def test_lock_needs_a_live_study(session: Session, study: Study, users: dict[str, User]) -> None:
    with pytest.raises(Conflict, match="not live"):
        lock_study(session, study, **SIGNERS)
    session.rollback()
    assert _locked_at(session, study) is None
    assert actions(session, "study.lock") == []


@pytest.mark.parametrize(
    ("stat", "admin", "expected"),
    [
        ("wrong-password!", PASSWORD, "statistician stat1"),
        (PASSWORD, "nope-nope-nope", "admin admin1"),
    ],
)
def test_a_wrong_signature_refuses_the_lock_and_changes_nothing(
    runner: Runner, session: Session, live: Study, stat: str, admin: str, expected: str
) -> None:
    result = _lock_cli(runner, stat, admin)
    assert result.exit_code == 1
    assert expected in result.output
    assert _locked_at(session, live) is None
    assert actions(session, "study.lock") == []


def test_the_lock_is_signed_by_a_statistician_and_an_admin(session: Session, live: Study) -> None:
    swapped = {**SIGNERS, "statistician": "admin1", "admin": "stat1"}
    with pytest.raises(NotPermitted, match="active statistician account"):
        lock_study(session, live, **swapped)
    with pytest.raises(NotPermitted, match="active admin account"):
        lock_study(session, live, **{**SIGNERS, "admin": "inv1"})


def test_the_lock_is_audited_with_both_signatures_and_is_one_way(
    runner: Runner, session: Session, live: Study
) -> None:
    result = _lock_cli(runner)
    assert result.exit_code == 0, result.output
    assert "TST database locked" in result.output
    assert _locked_at(session, live) is not None
    (event,) = actions(session, "study.lock")
    new = json.loads(event.new_values or "{}")
    assert (event.actor, new["statistician"], new["admin"]) == ("stat1", "stat1", "admin1")
    again = _lock_cli(runner)
    assert again.exit_code == 1 and "is locked" in again.output


def test_the_lock_reads_both_passwords_from_stdin(runner: Runner, live: Study) -> None:
    result = runner.invoke(
        "study", "lock", "TST", "--statistician", "stat1", "--admin", "admin1",
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 1 and "expected 2 line(s)" in result.output


# --- after the lock --------------------------------------------------------------------


def _register(session: Session, live: Study, users: dict[str, User]) -> Any:
    return enrollment.register_participant(
        session, live, site="S1", screening_number="NEW-1", factors={"grade": "low"},
        eligibility=ELIGIBLE, actor=actor_of(users["investigator"]),
    )  # fmt: skip


def _kit(session: Session, p: Participant) -> str:
    return enrollment.kits_of(session, p)[0][1]


OPERATIONS: dict[str, Callable[[Session, Study, dict[str, User], dict[str, Participant]], Any]] = {
    "register": lambda s, st, u, p: _register(s, st, u),
    "correct": lambda s, st, u, p: enrollment.correct_screening(
        s, p["eligible"], actor=actor_of(u["investigator"]), reason="typo",
        eligibility={**ELIGIBLE, "age": 41},
    ),
    "randomize": lambda s, st, u, p: enrollment.randomize(
        s, p["eligible"], signer=u["investigator"], password=PASSWORD
    ),
    "dispense": lambda s, st, u, p: enrollment.dispense(
        s, p["randomized"], visit="month_6", signer=u["investigator"], password=PASSWORD,
        override_reason="early visit",
    ),
    "replace kit": lambda s, st, u, p: enrollment.replace_kit(
        s, p["randomized"], kit_code=_kit(s, p["randomized"]), reason="dropped", lost=False,
        actor=actor_of(u["investigator"]),
    ),
    "withdraw": lambda s, st, u, p: enrollment.withdraw(
        s, p["randomized"], actor=actor_of(u["investigator"]), reason="moved away"
    ),
    "randomized in error": lambda s, st, u, p: enrollment.mark_randomized_in_error(
        s, p["randomized"], actor=actor_of(u["investigator"]), reason="wrong person"
    ),
    "extend the live list": lambda s, st, u, p: extend_list(
        s, st, kind=ListKind.LIVE, stratum=p["randomized"].stratum, slots=2,
        actor=actor_of(u["statistician"]),
    ),
}  # fmt: skip


@pytest.fixture
def locked(session: Session, live: Study, users: dict[str, User]) -> dict[str, Participant]:
    inv = users["investigator"]
    made = {
        "eligible": enrol(session, live, inv, "E-1", randomize=False),
        "randomized": enrol(session, live, inv, "R-1"),
    }
    lock(session, live)
    return made


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_after_the_lock_nothing_changes_participants_or_allocations(
    session: Session,
    live: Study,
    users: dict[str, User],
    locked: dict[str, Participant],
    operation: str,
) -> None:
    before = snapshot(session)
    with pytest.raises(StudyLocked, match="is locked"):
        OPERATIONS[operation](session, live, users, locked)
    session.rollback()
    assert snapshot(session) == before


def test_emergency_unblinding_stays_possible_after_the_lock(
    session: Session, live: Study, users: dict[str, User], locked: dict[str, Participant]
) -> None:
    participant = locked["randomized"]
    result = unblinding.unblind(
        session, participant, actor_user=users["investigator"], reason_category="adverse_event",
        reason="Anaphylaxis", password=PASSWORD, confirm_number=participant.randomization_number,
    )  # fmt: skip
    session.commit()
    assert result.arm_code in ("ACTIVEX", "PLACEBOX")


def test_the_api_refuses_a_randomization_after_the_lock_with_409(
    client: FlaskClient, session: Session, users: dict[str, User], locked: dict[str, Participant]
) -> None:
    token = token_for(session, users["investigator"])
    eligible = locked["eligible"].id
    response = call(
        client, "POST", f"/api/v1/participants/{eligible}/randomize", token,
        {"signature": {"password": PASSWORD}},
    )  # fmt: skip
    assert response.status_code == 409
    assert response.get_json()["type"] == "/api/v1/problems/study-locked"


def test_the_pharmacist_cannot_confirm_dispensing_after_the_lock(
    client: FlaskClient, session: Session, users: dict[str, User], locked: dict[str, Participant]
) -> None:
    held = session.scalars(
        select(Dispensation).where(Dispensation.participant_id == locked["randomized"].id)
    ).one()
    kit = session.get_one(Kit, held.kit_id)
    login(client, "pharm1")
    response = client.post(
        f"/pharmacy/TST/queue/{held.id}", data={f"d{held.id}-kit_code": kit.code}
    )
    assert response.status_code == 409
    session.expire_all()
    assert session.get_one(Dispensation, held.id).status == "allocated"


# --- the page --------------------------------------------------------------------------


def _sign_on_page(client: FlaskClient, **over: str) -> Any:
    form = {**SIGNERS, "confirm": "y", **over}
    return client.post("/studies/TST/lock", data=form)


def test_the_lock_page_takes_both_signatures(
    client: FlaskClient, session: Session, live: Study
) -> None:
    login(client, "admin1")
    page = client.get("/studies/TST/lock")
    assert page.status_code == 200 and 'name="statistician_password"' in page.text
    response = _sign_on_page(client)
    assert response.status_code == 302
    assert _locked_at(session, live) is not None
    assert "Base de datos cerrada" in client.get("/studies/").text


def test_the_lock_page_refuses_a_wrong_password_next_to_the_field(
    client: FlaskClient, session: Session, live: Study
) -> None:
    login(client, "stat1")
    response = _sign_on_page(client, admin_password="not-the-password")
    assert response.status_code == 401
    assert "administrador/a admin1" in response.text  # the page is in Spanish
    assert _locked_at(session, live) is None


def test_only_a_signer_may_fill_in_the_lock_page(
    client: FlaskClient, session: Session, live: Study, users: dict[str, User]
) -> None:
    from tests.conftest import make_user

    make_user(session, "admin2", "admin")
    login(client, "admin2")
    assert _sign_on_page(client).status_code == 403
    assert _locked_at(session, live) is None


def test_a_page_shows_the_lock_refusal_in_spanish(
    client: FlaskClient, session: Session, locked: dict[str, Participant]
) -> None:
    from tests.test_participant_pages import submission

    pid = locked["randomized"].id
    client.get("/lang/es")
    login(client, "inv1")
    page = client.get(f"/participants/{pid}/withdraw").text
    response = client.post(
        f"/participants/{pid}/withdraw", data={"reason": "se mudó", "submission": submission(page)}
    )
    assert response.status_code == 409
    assert "La base de datos del estudio TST está cerrada" in response.text
