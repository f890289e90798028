"""``GET /api/v1/studies/{study}/kits``: pharmacist with products (own sites), admin codes only."""

from __future__ import annotations

from collections import Counter

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import AuditEvent, Study, User
from randomizer.services.kits import generate_kits, get_kit, kit_arm
from randomizer.services.users import create_token

ADMIN = audit.Actor("admin1", "admin")
ARM_TEXT = ("ACTIVEX", "PLACEBOX", "Active product", "Placebo product")


def _headers(session: Session, user: User) -> dict[str, str]:
    token = create_token(session, user)
    session.commit()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def stocked(session: Session, study: Study, users: dict[str, User]) -> Study:
    # Whole blocks of 4 (twice the ratio sum): exactly 4 kits of each arm.
    generate_kits(session, study, count=8, actor=ADMIN, site="S1", lot="L-1")
    generate_kits(session, study, count=4, actor=ADMIN, site="S2")
    generate_kits(session, study, count=8, actor=ADMIN)
    session.commit()
    return study


def test_pharmacist_gets_own_site_kits_with_products_and_it_is_audited(
    client: FlaskClient, session: Session, stocked: Study, users: dict[str, User]
) -> None:
    response = client.get("/api/v1/studies/TST/kits?site=S1",
                          headers=_headers(session, users["pharmacist"]))  # fmt: skip
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 8 and {k["site"] for k in body["kits"]} == {"S1"}
    assert Counter(k["arm"]["code"] for k in body["kits"]) == {"ACTIVEX": 4, "PLACEBOX": 4}
    for item in body["kits"]:
        kit = get_kit(session, stocked, item["kit_code"])
        assert item["arm"]["code"] == kit_arm(session, stocked, kit)
    assert {k["arm"]["name"] for k in body["kits"]} == {"Active product X", "Placebo product X"}
    assert {k["lot"] for k in body["kits"]} == {"L-1"}
    session.expire_all()
    (event,) = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "pharmacy.view_products")
    ).all()
    assert event.actor == "pharm1" and event.object_id == "S1"
    assert '"count":8' in (event.new_values or "") and "ACTIVEX" not in (event.new_values or "")


def test_pharmacist_without_site_gets_all_own_sites(
    client: FlaskClient, session: Session, stocked: Study, users: dict[str, User]
) -> None:
    response = client.get(
        "/api/v1/studies/TST/kits", headers=_headers(session, users["pharmacist"])
    )
    assert response.status_code == 200
    assert {k["site"] for k in response.get_json()["kits"]} == {"S1"}


@pytest.mark.parametrize("site", ["S2", "S9"])
def test_pharmacist_gets_404_for_another_or_unknown_site_alike(
    client: FlaskClient, session: Session, stocked: Study, users: dict[str, User], site: str
) -> None:
    response = client.get(f"/api/v1/studies/TST/kits?site={site}",
                          headers=_headers(session, users["pharmacist"]))  # fmt: skip
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == f"No site '{site}' of yours in study TST."
    assert not any(text in response.get_data(as_text=True) for text in ARM_TEXT)


def test_admin_gets_codes_and_statuses_only(
    client: FlaskClient, session: Session, stocked: Study, users: dict[str, User]
) -> None:
    response = client.get("/api/v1/studies/TST/kits", headers=_headers(session, users["admin"]))
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 8 + 4 + 8
    assert all("arm" not in k for k in body["kits"])
    assert not any(text in response.get_data(as_text=True) for text in ARM_TEXT)
    by_site = client.get("/api/v1/studies/TST/kits?site=S2",
                         headers=_headers(session, users["admin"]))  # fmt: skip
    assert by_site.get_json()["count"] == 4


@pytest.mark.parametrize("role", ["investigator", "investigator2", "assessor", "statistician"])
def test_other_roles_are_refused(
    client: FlaskClient, session: Session, stocked: Study, users: dict[str, User], role: str
) -> None:
    response = client.get(
        "/api/v1/studies/TST/kits?site=S1", headers=_headers(session, users[role])
    )
    assert response.status_code == 403
    assert not any(text in response.get_data(as_text=True) for text in ARM_TEXT)


def test_unknown_study_is_404(
    client: FlaskClient, session: Session, stocked: Study, users: dict[str, User]
) -> None:
    response = client.get("/api/v1/studies/NOPE/kits", headers=_headers(session, users["admin"]))
    assert response.status_code == 404


def test_without_a_token_the_answer_is_401(client: FlaskClient, stocked: Study) -> None:
    assert client.get("/api/v1/studies/TST/kits").status_code == 401
