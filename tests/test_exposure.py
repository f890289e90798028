"""The blinding-exposure register and the refused silent re-roling (SPEC §4.4)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer.errors import Conflict
from randomizer.models import AuditEvent, ListKind, Role, Study, User
from randomizer.services import codebreak, pharmacy, unblinding
from randomizer.services.exposure import exposure_register
from randomizer.services.users import actor_of, get_user, update_user
from tests.conftest import PASSWORD, Runner, login
from tests.engines import dispose_engines  # noqa: F401  (fixture)
from tests.unblinding_support import randomized, supply

pytestmark = pytest.mark.usefixtures("dispose_engines")
ARM_TEXTS = (b"ACTIVEX", b"PLACEBOX")


@pytest.fixture
def scripted(session: Session, study: Study, users: dict[str, User], runner: Runner,
             tmp_path: Path) -> dict[str, int]:  # fmt: skip
    """A study where each kind of arm-showing event happened; how many of each."""
    supply(session, study)
    participant = randomized(session, study, users["investigator"], "SCR-001")
    pharmacist = actor_of(users["pharmacist"])
    pharmacy.inventory(session, study, sites=["S1"], actor=pharmacist)
    pharmacy.inventory(session, study, sites=["S1"], actor=pharmacist)
    unblinding.unblind(
        session, participant, actor_user=users["investigator"], reason_category="adverse_event",
        reason="Anaphylaxis after infusion.", password=PASSWORD,
        confirm_number=participant.randomization_number,
    )  # fmt: skip
    codebreak.make_envelopes(
        session, study, kind=ListKind.DUMMY, actor_user=users["statistician"], site="S1"
    )
    session.commit()
    out = str(tmp_path / "list.csv")
    runner.invoke("list", "export", "TST", "--dummy", "--unblinded", "--out", out)
    runner.invoke("kits", "export", "TST", "--unblinded", "--out", str(tmp_path / "kits.csv"))
    return {"pharmacy.view_products": 2, "participant.unblind": 1, "codebreak.envelopes": 1,
            "list.export_unblinded": 1, "kits.export_unblinded": 1}  # fmt: skip


def _all_events(session: Session, actions: set[str]) -> list[int]:
    session.rollback()
    query = sa.select(AuditEvent.seq).where(AuditEvent.action.in_(actions))
    return sorted(session.scalars(query))


def test_the_register_lists_every_event_that_showed_an_arm(
    session: Session, study: Study, scripted: dict[str, int]
) -> None:
    register = exposure_register(session, study)
    shown = [e for e in register.events if e.action in scripted]
    assert {a: sum(e.action == a for e in shown) for a in scripted} == scripted
    assert [e.seq for e in shown] == _all_events(session, set(scripted))


def test_the_register_lists_every_person_with_an_unblinded_role_or_shown_an_arm(
    session: Session, study: Study, scripted: dict[str, int]
) -> None:
    people = {p.username: p for p in exposure_register(session, study).people}
    # The console operator exported both lists: shown arms, though holding no role.
    operators = [name for name in people if name.startswith("cli:")]
    assert set(people) == {"stat1", "pharm1", "inv1", *operators} and len(operators) == 1
    assert people[operators[0]].arms_shown == 2
    assert people["pharm1"].unblinded_roles == {"pharmacist"}
    assert people["pharm1"].arms_shown == 2
    assert people["inv1"].unblinded_roles == set() and people["inv1"].arms_shown == 1


def test_report_exposure_prints_the_register_and_writes_its_csv(
    runner: Runner, session: Session, study: Study, scripted: dict[str, int], tmp_path: Path
) -> None:
    out = tmp_path / "exposure.csv"
    result = runner.invoke("report", "exposure", "TST", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "pharm1\tpharmacist\tpharmacist\t" in result.output
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(r["event"] == "pharmacy.view_products" for r in rows) == 2
    assert not any(arm.decode() in result.output for arm in ARM_TEXTS)


@pytest.mark.parametrize("username", ["admin1", "stat1"])
def test_admin_and_statistician_read_the_register_page_and_csv_without_arms(
    client: FlaskClient, scripted: dict[str, int], username: str
) -> None:
    login(client, username)
    page = client.get("/exposure/TST")
    assert page.status_code == 200 and b"participant.unblind" in page.data
    download = client.get("/exposure/TST/exposure.csv")
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert sum(r["event"] == "codebreak.envelopes" for r in rows) == 1
    assert not any(arm in page.data + download.data for arm in ARM_TEXTS)


@pytest.mark.parametrize("username", ["inv1", "pharm1", "assess1"])
def test_site_roles_are_refused_the_register(
    client: FlaskClient, users: dict[str, User], username: str
) -> None:
    login(client, username)
    assert client.get("/exposure/TST").status_code == 403
    assert client.get("/exposure/TST/exposure.csv").status_code == 403


def _role_events(session: Session) -> list[AuditEvent]:
    session.rollback()
    query = sa.select(AuditEvent).where(AuditEvent.action == "user.update")
    return list(session.scalars(query))


def test_an_unblinded_user_is_not_silently_made_masked(
    runner: Runner, session: Session, users: dict[str, User]
) -> None:
    result = runner.invoke("user", "update", "pharm1", "--role", "investigator")
    assert result.exit_code == 1 and "--acknowledge-exposure" in result.output
    session.rollback()
    assert get_user(session, "pharm1").role is Role.PHARMACIST
    assert _role_events(session) == []


def test_an_acknowledged_change_to_a_masked_role_is_audited_and_registered(
    runner: Runner, session: Session, study: Study, users: dict[str, User]
) -> None:
    result = runner.invoke(
        "user", "update", "pharm1", "--role", "investigator", "--acknowledge-exposure"
    )
    assert result.exit_code == 0, result.output
    (event,) = _role_events(session)
    assert json.loads(event.new_values or "{}")["exposure_acknowledged"] == "unblinded-to-masked"
    (person,) = [p for p in exposure_register(session, study).people if p.username == "pharm1"]
    assert person.role == "investigator" and person.masked_since == event.occurred_at


def test_an_assessor_is_never_given_an_unblinded_role_without_acknowledgement(
    session: Session, users: dict[str, User]
) -> None:
    assessor = users["assessor"]
    with pytest.raises(Conflict, match="outcome assessor"):
        update_user(session, assessor, actor=actor_of(users["admin"]), role=Role.STATISTICIAN)
    session.rollback()
    assert get_user(session, "assess1").role is Role.ASSESSOR


def test_a_former_assessor_is_still_refused_an_unblinded_role_without_acknowledgement(
    session: Session, users: dict[str, User]
) -> None:
    admin = actor_of(users["admin"])
    update_user(session, users["assessor"], actor=admin, role=Role.INVESTIGATOR, sites=["S1"])
    session.commit()
    with pytest.raises(Conflict, match="outcome assessor"):
        update_user(session, get_user(session, "assess1"), actor=admin, role=Role.PHARMACIST)
    session.rollback()
    update_user(session, get_user(session, "assess1"), actor=admin, role=Role.PHARMACIST,
                acknowledge_exposure=True)  # fmt: skip
    session.commit()
    assert get_user(session, "assess1").role is Role.PHARMACIST
