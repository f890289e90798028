"""Statistician list pages: role checks, generate and import, summary, extend, verify,
unblinded export after re-signing, and the signed go-live."""

from __future__ import annotations

import csv
import io

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import AllocationList, AuditEvent, ListKind, Study, StudyMode, User
from randomizer.services import lists
from tests.conftest import PASSWORD, login

SEED = bytes(range(32))
STAT = audit.Actor("stat1", "statistician")

SITE_USERS = ["inv1", "pharm1", "assess1"]
PAGES = [
    ("get", "/lists/"),
    ("get", "/lists/TST/dummy"),
    ("get", "/lists/TST/dummy/export"),
    ("post", "/lists/TST/dummy/export"),
    ("post", "/lists/TST/generate"),
    ("post", "/lists/TST/import"),
    ("post", "/lists/TST/dummy/extend"),
    ("post", "/lists/TST/dummy/verify"),
    ("get", "/lists/TST/go-live"),
    ("post", "/lists/TST/go-live"),
]


@pytest.fixture
def dummy(session: Session, study: Study, users: dict[str, User]) -> AllocationList:
    row = lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=SEED)
    session.commit()
    return row


def _events(session: Session, action: str) -> list[AuditEvent]:
    session.rollback()
    return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def _lists(session: Session) -> list[AllocationList]:
    session.rollback()
    return list(session.scalars(sa.select(AllocationList)))


@pytest.mark.parametrize("username", SITE_USERS)
def test_site_users_are_refused_every_list_page(
    client: FlaskClient, dummy: AllocationList, username: str
) -> None:
    login(client, username)
    bodies = set()
    for method, url in PAGES:
        response = getattr(client, method)(url, data={"password": PASSWORD})
        assert response.status_code == 403, (method, url)
        bodies.add(response.data)
        assert b"grade=" not in response.data and b"block" not in response.data.lower()
    assert len(bodies) == 1  # the same refusal whatever the page


def test_admin_sees_summaries_but_cannot_change_or_export(
    client: FlaskClient, dummy: AllocationList
) -> None:
    login(client, "admin1")
    assert client.get("/lists/").status_code == 200
    page = client.get("/lists/TST/dummy")
    assert page.status_code == 200
    assert dummy.fingerprint.encode() in page.data
    assert b"/export" not in page.data and b"/extend" not in page.data
    for method, url in PAGES[3:8]:
        assert getattr(client, method)(url).status_code == 403, url
    assert client.get("/lists/TST/dummy/export").status_code == 403


def test_the_menu_offers_lists_to_statistician_and_admin_only(
    client: FlaskClient, users: dict[str, User]
) -> None:
    for username, shown in [("stat1", True), ("admin1", True), ("inv1", False)]:
        login(client, username)
        assert (b'href="/lists/"' in client.get("/").data) is shown, username
        client.post("/logout")


def test_statistician_generates_a_list_from_the_page(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    login(client, "stat1")
    response = client.post("/lists/TST/generate", data={"kind": "live", "per_stratum": "8"})
    assert response.status_code == 302
    (row,) = _lists(session)
    assert row.kind is ListKind.LIVE and row.created_by == "stat1"
    assert min(row.params["slots"].values()) >= 8


def test_generating_twice_shows_the_refusal_on_the_page(
    client: FlaskClient, session: Session, dummy: AllocationList
) -> None:
    login(client, "stat1")
    response = client.post("/lists/TST/generate", data={"kind": "dummy"})
    assert response.status_code == 409
    assert "ya tiene una lista de prueba" in response.text  # the page is in Spanish


def test_summary_shows_structure_and_seed_reference_never_seed_or_arms(
    client: FlaskClient, dummy: AllocationList
) -> None:
    login(client, "stat1")
    page = client.get("/lists/TST/dummy").data
    assert dummy.fingerprint.encode() in page and (dummy.seed_ref or "").encode() in page
    assert SEED.hex().encode() not in page
    assert (b"S2|grade=high" in page and b"Blocks by size" in page) or b"Bloques" in page
    assert b"ACTIVEX" not in page and b"PLACEBOX" not in page


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def test_an_invalid_upload_names_the_rows_and_stores_nothing(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    login(client, "stat1")
    header = ["stratum", "block", "block_size", "sequence", "randomization_number", "arm"]
    body = _csv([header, ["S1|grade=low", "1", "2", "1", "A1", "ACTIVEX"],
                 ["S9|grade=low", "1", "2", "2", "A2", "PLACEBOX"]])  # fmt: skip
    response = client.post(
        "/lists/TST/import",
        data={"kind": "dummy", "file": (io.BytesIO(body), "list.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert b"row 3: unknown stratum" in response.data
    assert _lists(session) == []


def test_a_valid_upload_is_imported(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    login(client, "stat1")
    rows = [["stratum", "block", "block_size", "sequence", "randomization_number", "arm"]]
    for n, stratum in enumerate(study_strata(session, study)):
        rows += [[stratum, "1", "2", "1", f"N{n}a", "ACTIVEX"],
                 [stratum, "1", "2", "2", f"N{n}b", "PLACEBOX"]]  # fmt: skip
    response = client.post(
        "/lists/TST/import",
        data={"kind": "live", "file": (io.BytesIO(_csv(rows)), "list.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302, response.data
    (row,) = _lists(session)
    assert (row.kind, row.source, sum(row.params["slots"].values())) == (
        ListKind.LIVE, "imported", 8,
    )  # fmt: skip


def study_strata(session: Session, study: Study) -> list[str]:
    from randomizer.services.studies import definition_of

    return definition_of(study).strata()


def test_extend_from_the_page(client: FlaskClient, session: Session, dummy: AllocationList) -> None:
    login(client, "stat1")
    before = dummy.params["slots"]["S1|grade=high"]
    response = client.post(
        "/lists/TST/dummy/extend", data={"stratum": "S1|grade=high", "slots": "6"}
    )
    assert response.status_code == 302
    (row,) = _lists(session)
    assert row.params["slots"]["S1|grade=high"] >= before + 6
    bad = client.post("/lists/TST/dummy/extend", data={"stratum": "nowhere", "slots": "6"})
    assert bad.status_code == 422


def test_verify_from_the_page(client: FlaskClient, dummy: AllocationList) -> None:
    login(client, "stat1")
    summary = client.get("/lists/TST/dummy").data.decode()
    for path in ("/lists/TST/dummy/verify", "/lists/TST/dummy/extend", "/lists/TST/dummy/export"):
        assert path in summary
    page = client.post("/lists/TST/dummy/verify")
    assert page.status_code == 200
    assert dummy.fingerprint.encode() in page.data
    assert b"flash success" in page.data


def test_unblinded_export_needs_the_password(
    client: FlaskClient, session: Session, dummy: AllocationList
) -> None:
    login(client, "stat1")
    refused = client.post("/lists/TST/dummy/export", data={"password": "not-my-password"})
    assert refused.status_code == 401
    assert "La contraseña no coincide" in refused.text
    assert b"ACTIVEX" not in refused.data
    assert _events(session, "list.export_unblinded") == []


def test_unblinded_export_downloads_the_arms_and_is_audited(
    client: FlaskClient, session: Session, dummy: AllocationList
) -> None:
    login(client, "stat1")
    response = client.post("/lists/TST/dummy/export", data={"password": PASSWORD})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(response.data.decode("utf-8"))))
    response.close()  # what the WSGI server does: closes the spooled file
    assert len(rows) == sum(dummy.params["slots"].values())
    assert {r["arm"] for r in rows} == {"ACTIVEX", "PLACEBOX"}
    (event,) = _events(session, "list.export_unblinded")
    assert (event.actor, event.role) == ("stat1", "statistician")


def _go_live_form(**over: str) -> dict[str, str]:
    form = {"statistician": "stat1", "statistician_password": PASSWORD, "admin": "admin1",
            "admin_password": PASSWORD, "confirm": "y"}  # fmt: skip
    return {**form, **over}


def test_go_live_from_the_page(
    client: FlaskClient, session: Session, study: Study, dummy: AllocationList
) -> None:
    lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT)
    session.commit()
    login(client, "admin1")
    assert b'value="admin1"' in client.get("/lists/TST/go-live").data
    response = client.post("/lists/TST/go-live", data=_go_live_form())
    assert response.status_code == 302
    session.rollback()
    assert session.get(Study, study.id).mode is StudyMode.LIVE  # type: ignore[union-attr]


def test_go_live_page_refuses_a_wrong_signature(
    client: FlaskClient, session: Session, study: Study, dummy: AllocationList
) -> None:
    lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT)
    session.commit()
    login(client, "stat1")
    response = client.post("/lists/TST/go-live", data=_go_live_form(admin_password="nope-nope"))
    assert response.status_code == 401
    assert "administrador/a admin1" in response.text
    session.rollback()
    assert session.get(Study, study.id).mode is StudyMode.TESTING  # type: ignore[union-attr]


def test_go_live_page_needs_the_user_among_the_signers(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    from randomizer.models import Role
    from tests.conftest import make_user

    make_user(session, "stat2", Role.STATISTICIAN)
    login(client, "stat2")
    client.get("/lang/en")
    response = client.post("/lists/TST/go-live", data=_go_live_form())
    assert response.status_code == 403
    assert b"one of the two signers" in response.data


def test_go_live_page_without_a_live_list_says_so(
    client: FlaskClient, session: Session, dummy: AllocationList
) -> None:
    login(client, "stat1")
    response = client.post("/lists/TST/go-live", data=_go_live_form())
    assert response.status_code == 409
    assert "no tiene lista real" in response.text


def test_unblinded_export_of_a_tampered_list_is_refused_cleanly(
    client: FlaskClient, session: Session, dummy: AllocationList
) -> None:
    from randomizer.models import AllocationSlot

    a, b = session.scalars(sa.select(AllocationSlot).order_by(AllocationSlot.id).limit(2))
    a.arm_sealed, b.arm_sealed = b.arm_sealed, a.arm_sealed
    session.commit()
    login(client, "stat1")
    response = client.post("/lists/TST/dummy/export", data={"password": PASSWORD})
    assert response.status_code == 409
    assert b"failed its integrity check" in response.data
    assert response.mimetype == "text/html"
    assert _events(session, "list.export_unblinded") == []
