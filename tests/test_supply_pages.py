"""The unblinded supply page: real and guaranteed stock per product, for unblinded roles only."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import Study, User
from randomizer.services.kits import generate_kits
from tests.conftest import login


@pytest.fixture
def stocked(session: Session, study: Study) -> Study:
    generate_kits(session, study, count=12, actor=audit.SYSTEM, site="S1")
    generate_kits(session, study, count=4, actor=audit.SYSTEM, site="S2")
    session.commit()
    return study


def test_the_statistician_sees_every_site_with_products_and_guaranteed_stock(
    client: FlaskClient, stocked: Study, users: dict[str, User]
) -> None:
    login(client, "stat1")
    page = client.get("/supply/TST?lang=en")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Active product X" in text and "Placebo product X" in text
    assert "S1 — Site one" in text and "S2 — Site two" in text
    # 6 of each product at S1, nobody randomized: all six guaranteed.
    assert re.search(r"<td[^>]*>6</td><td[^>]*>6</td>", text)


def test_a_pharmacist_sees_only_own_sites(
    client: FlaskClient, stocked: Study, users: dict[str, User]
) -> None:
    login(client, "pharm1")
    text = client.get("/supply/TST").get_data(as_text=True)
    assert "S1 — " in text and "S2 — " not in text


@pytest.mark.parametrize("who", ["admin1", "inv1", "assess1"])
def test_masked_roles_cannot_open_the_supply_page(
    client: FlaskClient, stocked: Study, users: dict[str, User], who: str
) -> None:
    login(client, who)
    for path in ("/supply/", "/supply/TST"):
        response = client.get(path)
        assert response.status_code == 403
        assert "Active product X" not in response.get_data(as_text=True)
