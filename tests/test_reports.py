"""Reports on a scripted study: figures, CSV files, site scope, the audited DSMB report, and
blinded reports that are identical whatever the arms."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import ListKind, Study, User
from randomizer.services import enrollment
from randomizer.services.kits import generate_kits
from randomizer.services.lists import generate_list
from randomizer.services.users import actor_of
from tests.conftest import PASSWORD, login, make_study
from tests.enrollment_support import ELIGIBLE, actions, register


def _history(session: Session, study: Study, users: dict[str, User], seed: bytes) -> None:
    """The same masked history on any list: S1 three randomized (one withdrawn, one in
    error), one eligible, one screen failure, one withdrawn before randomization; S2 one."""
    generate_list(session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM, per_stratum=8, seed=seed)
    for site in ("S1", "S2"):
        generate_kits(session, study, count=12, site=site, actor=audit.SYSTEM)
    session.commit()
    inv, inv2 = users["investigator"], users["investigator2"]
    done = [
        register(session, study, inv, f"A-{i}", grade=g)
        for i, g in enumerate(("low", "high", "low"))
    ]
    done.append(register(session, study, inv2, "B-1", site="S2"))
    for p in done:
        enrollment.randomize(
            session, p, signer=inv2 if p.site_code == "S2" else inv, password=PASSWORD
        )
    enrollment.withdraw(session, done[0], actor=actor_of(inv), reason="moved away")
    enrollment.mark_randomized_in_error(
        session, done[1], actor=actor_of(inv), reason="wrong person"
    )
    register(session, study, inv, "A-eligible")
    register(session, study, inv, "A-failed", answers={**ELIGIBLE, "pregnant": True})
    gone = register(session, study, inv, "A-gone")
    enrollment.withdraw(session, gone, actor=actor_of(inv), reason="consent withdrawn")
    session.commit()


@pytest.fixture
def scripted(session: Session, study: Study, users: dict[str, User]) -> Study:
    _history(session, study, users, bytes(32))
    return study


def _csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


@pytest.fixture
def admin(client: FlaskClient, scripted: Study) -> FlaskClient:
    client.get("/lang/en")
    login(client, "admin1")
    return client


def test_enrolment_counts_by_site_and_stratum(admin: FlaskClient) -> None:
    rows = _csv(admin.get("/reports/TST/enrolment.csv"))
    assert rows == [
        ["site", "stratum", "screened", "randomized"],
        ["S1", "S1|grade=high", "1", "1"],
        ["S1", "S1|grade=low", "5", "2"],
        ["S2", "S2|grade=low", "1", "1"],
    ]


def test_the_enrolment_page_draws_a_server_side_svg_chart(admin: FlaskClient) -> None:
    page = admin.get("/reports/TST/enrolment.html").text
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in page
    assert page.count('class="bar"') == 1 and "<script" not in page


def test_the_screening_log_counts_every_step(admin: FlaskClient) -> None:
    rows = {r[0]: r[2] for r in _csv(admin.get("/reports/TST/screening.csv"))[1:]}
    assert rows == {
        "screened": "7", "screen_failed": "1", "failed:pregnant": "1", "eligible": "1",
        "withdrawn_before_randomization": "1", "randomized": "4", "withdrawn": "1",
        "randomized_in_error": "1",
    }  # fmt: skip


def test_csv_labels_are_utf_8_in_the_users_language(client: FlaskClient, scripted: Study) -> None:
    client.get("/lang/es")
    login(client, "admin1")
    response = client.get("/reports/TST/screening.csv")
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "Retirados después de la aleatorización".encode() in response.data


def test_kit_accountability_counts_kits_by_location_and_status(admin: FlaskClient) -> None:
    rows = _csv(admin.get("/reports/TST/kits.csv"))
    assert rows[0] == ["location", "status", "kits"]
    s1 = {r[1]: int(r[2]) for r in rows[1:] if r[0] == "S1"}
    # A site's kits no participant holds show only as "at site" to masked roles.
    assert s1 == {"allocated": 3, "at_site": 9}
    assert not any(r[1] in ("available", "expired") for r in rows[1:] if r[0] != "depot")


def test_unblinded_roles_see_kit_accountability_by_product(
    client: FlaskClient, session: Session, scripted: Study
) -> None:
    login(client, "stat1")
    rows = _csv(client.get("/reports/TST/kits.csv"))
    assert rows[0] == ["location", "status", "product", "kits"]
    s1 = [r for r in rows[1:] if r[0] == "S1"]
    assert {r[2] for r in s1} == {"ACTIVEX", "PLACEBOX"}
    assert sum(int(r[3]) for r in s1) == 12


def test_site_users_see_their_own_sites_only(client: FlaskClient, scripted: Study) -> None:
    login(client, "inv2")
    rows = _csv(client.get("/reports/TST/enrolment.csv"))
    assert [r[0] for r in rows[1:]] == ["S2"]


# --- DSMB ----------------------------------------------------------------------------------


def test_the_dsmb_report_counts_by_arm_and_site_and_is_audited(
    client: FlaskClient, session: Session, scripted: Study
) -> None:
    login(client, "stat1")
    rows = _csv(client.get("/reports/TST/dsmb.csv"))
    assert rows[0] == ["arm", "site", "randomized", "withdrawn", "unblinded"]
    assert {r[0] for r in rows[1:]} <= {"ACTIVEX", "PLACEBOX"}
    assert sum(int(r[2]) for r in rows[1:]) == 4 and sum(int(r[3]) for r in rows[1:]) == 1
    assert client.get("/reports/TST/dsmb.html").status_code == 200
    assert [e.actor for e in actions(session, "report.dsmb")] == ["stat1", "stat1"]


@pytest.mark.parametrize("username", ["admin1", "inv1", "pharm1", "assess1"])
def test_masked_and_site_roles_never_get_the_dsmb_report(
    client: FlaskClient, session: Session, scripted: Study, username: str
) -> None:
    login(client, username)
    assert client.get("/reports/TST/dsmb.csv").status_code == 403
    assert actions(session, "report.dsmb") == []


# --- blinding --------------------------------------------------------------------------------

MASKED_PATHS = ["enrolment.csv", "enrolment.html", "screening.csv", "screening.html", "kits.csv",
                "kits.html"]  # fmt: skip


def test_masked_reports_are_identical_whatever_the_arms(
    app: Any, session: Session, scripted: Study, users: dict[str, User]
) -> None:
    other = make_study(session, **{'code = "TST"': 'code = "TS2"'})
    _history(session, other, users, b"\x5a" * 32)
    for username in ("admin1", "inv1", "assess1"):
        client = app.test_client()
        client.get("/lang/en")
        login(client, username)
        for path in MASKED_PATHS:
            if path.startswith("kits") and username != "admin1":
                continue
            first = client.get(f"/reports/TST/{path}").get_data(as_text=True)
            second = client.get(f"/reports/TS2/{path}").get_data(as_text=True)
            assert first == second.replace("TS2", "TST"), (username, path)


def test_the_two_lists_of_the_blinding_test_really_differ(
    session: Session, scripted: Study, users: dict[str, User]
) -> None:
    from randomizer.services.lists import participant_arm

    other = make_study(session, **{'code = "TST"': 'code = "TS2"'})
    _history(session, other, users, b"\x5a" * 32)
    arms = [
        [participant_arm(session, s, p.id) for p in enrollment.list_participants(session, s)]
        for s in (scripted, other)
    ]
    assert arms[0] != arms[1]


# --- participants --------------------------------------------------------------------------


def test_participants_are_searched_by_screening_or_randomization_number(
    admin: FlaskClient, session: Session, scripted: Study
) -> None:
    rows = _csv(admin.get("/reports/TST/participants.csv?q=a-ELIG"))
    assert rows[0] == ["screening_number", "site", "status", "randomization_number",
                       "randomized_at_utc"]  # fmt: skip
    assert [r[0] for r in rows[1:]] == ["A-eligible"]
    number = next(p.randomization_number for p in enrollment.list_participants(session, scripted)
                  if p.screening_number == "B-1")  # fmt: skip
    assert [r[0] for r in _csv(admin.get(f"/reports/TST/participants.csv?q={number}"))[1:]] == [
        "B-1"
    ]
    assert _csv(admin.get("/reports/TST/participants.csv?q=%25"))[1:] == []


def test_participants_are_paged(
    admin: FlaskClient, session: Session, scripted: Study, users: dict[str, User],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from randomizer.services import reports

    monkeypatch.setattr(reports, "PAGE_SIZE", 3)
    first = admin.get("/reports/TST/participants.html").text
    assert "7 participants · page 1 of 3" in first and "A-0" in first and "A-eligible" not in first
    last = admin.get("/reports/TST/participants.html?page=99").text
    assert "page 3 of 3" in last and "A-gone" in last
    assert admin.get("/reports/TST/participants.html?page=x").status_code == 200
