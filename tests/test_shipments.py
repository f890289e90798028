"""Shipments: proposal, dispatch, receipt kit by kit (refusals change nothing), missing and
damaged kits, cancellation; and the admin shipment pages."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit, kitcodes
from randomizer.errors import Conflict, InvalidInput
from randomizer.models import (
    AuditEvent,
    Kit,
    KitStatus,
    Shipment,
    ShipmentLine,
    ShipmentStatus,
    Study,
    User,
)
from randomizer.services import shipments
from randomizer.services.kits import generate_kits, open_arms
from tests.conftest import login

ADMIN = audit.Actor("admin1", "admin")
PHARM = audit.Actor("pharm1", "pharmacist")
ARM_TEXTS = ("ACTIVEX", "PLACEBOX", "Active product X", "Placebo product X")


def _state(session: Session) -> dict[str, Any]:
    """Everything a refused receipt must leave as it was."""
    session.expire_all()
    return {
        "kits": sorted((k.code, k.status.value, k.site_code) for k in session.scalars(select(Kit))),
        "lines": sorted(
            (ln.id, ln.outcome, ln.checked_by) for ln in session.scalars(select(ShipmentLine))
        ),
        "shipments": sorted((s.id, s.status.value) for s in session.scalars(select(Shipment))),
        "events": session.scalar(select(func.count()).select_from(AuditEvent)),
    }


def _typo(code: str) -> str:
    """The code with one character changed: caught by the check character."""
    raw = kitcodes.normalise(code)
    swapped = next(c for c in kitcodes.ALPHABET if c != raw[2])
    return kitcodes.canonical(raw[:2] + swapped + raw[3:])


def _valid_unknown_code(session: Session) -> str:
    while True:
        code = kitcodes.new_code()
        if session.scalar(select(Kit.id).where(Kit.code == code)) is None:
            return code


@pytest.fixture
def in_transit(session: Session, study: Study) -> dict[str, Shipment]:
    """One dispatched shipment of 6 kits to each site."""
    generate_kits(session, study, count=40, actor=ADMIN)
    out = {}
    for site in ("S1", "S2"):
        shipment = shipments.propose_manual(session, study, site=site, count=6, actor=ADMIN)
        shipments.dispatch(session, study, shipment=shipment, actor=ADMIN)
        out[site] = shipment
    session.commit()
    return out


def _codes(session: Session, shipment: Shipment) -> list[str]:
    return [line.kit_code for line in shipments.shipment_lines(session, shipment)]


def test_manual_shipment_is_balanced_and_reserves_depot_kits(
    session: Session, study: Study
) -> None:
    generate_kits(session, study, count=20, actor=ADMIN)
    shipment = shipments.propose_manual(session, study, site="S1", count=6, actor=ADMIN)
    kits = session.scalars(select(Kit).where(Kit.shipment_id == shipment.id)).all()
    assert len(kits) == 6 and {k.status for k in kits} == {KitStatus.AT_DEPOT}
    assert Counter(open_arms(session, study, kits).values()) == {"ACTIVEX": 3, "PLACEBOX": 3}
    (event,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "shipment.propose"))
    assert not any(t in (event.new_values or "") for t in ARM_TEXTS)
    again = shipments.propose_manual(session, study, site="S2", count=14, actor=ADMIN)
    assert {k.id for k in kits}.isdisjoint(
        k.id for k in session.scalars(select(Kit).where(Kit.shipment_id == again.id))
    )


def test_dispatch_puts_kits_in_transit_to_the_site(
    session: Session, in_transit: dict[str, Shipment]
) -> None:
    shipment = in_transit["S1"]
    assert shipment.status is ShipmentStatus.IN_TRANSIT and shipment.dispatched_by == "admin1"
    kits = session.scalars(select(Kit).where(Kit.shipment_id == shipment.id)).all()
    assert {(k.status, k.site_code) for k in kits} == {(KitStatus.IN_TRANSIT, "S1")}


def test_dispatching_twice_is_refused(
    session: Session, study: Study, in_transit: dict[str, Shipment]
) -> None:
    with pytest.raises(Conflict):
        shipments.dispatch(session, study, shipment=in_transit["S1"], actor=ADMIN)


def test_receiving_typed_or_scanned_codes_makes_kits_available(
    session: Session, study: Study, in_transit: dict[str, Shipment]
) -> None:
    shipment = in_transit["S1"]
    codes = _codes(session, shipment)
    typed = [codes[0].lower(), codes[1].replace("-", " "), codes[2]]
    kits = shipments.receive_kits(
        session, study, shipment=shipment, codes=typed, outcome="received", actor=PHARM
    )
    assert {(k.status, k.site_code) for k in kits} == {(KitStatus.AVAILABLE, "S1")}
    assert sorted(k.code for k in kits) == sorted(codes[:3])
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "shipment.received")
    ).one()
    assert event.actor == "pharm1" and codes[0] in (event.new_values or "")


@pytest.mark.parametrize(
    "problem", ["mistyped", "unknown", "other site", "other shipment", "twice", "already checked"]
)
def test_a_bad_code_refuses_the_whole_batch_and_changes_nothing(
    session: Session, study: Study, in_transit: dict[str, Shipment], problem: str
) -> None:
    shipment = in_transit["S1"]
    good = _codes(session, shipment)
    if problem == "already checked":
        shipments.receive_kits(
            session, study, shipment=shipment, codes=good[:1], outcome="received", actor=PHARM
        )
        session.commit()
    if problem == "other shipment":
        later = shipments.propose_manual(session, study, site="S1", count=2, actor=ADMIN)
        shipments.dispatch(session, study, shipment=later, actor=ADMIN)
        session.commit()
        in_transit["later"] = later
    bad = {
        "mistyped": _typo(good[3]),
        "unknown": _valid_unknown_code(session),
        "other site": _codes(session, in_transit["S2"])[0],
        "other shipment": _codes(session, in_transit.get("later", shipment))[0],
        "twice": good[1],
        "already checked": good[0],
    }[problem]
    before = _state(session)
    with pytest.raises(InvalidInput) as refused:
        shipments.receive_kits(
            session,
            study,
            shipment=shipment,
            codes=[good[1], good[2], bad],
            outcome="received",
            actor=PHARM,
        )
    session.rollback()
    assert refused.value.field == "codes" and "Nothing was recorded" in refused.value.message
    shown = bad if problem == "mistyped" else kitcodes.canonical(bad)
    assert shown in refused.value.message
    if problem == "mistyped":
        assert "check character" in refused.value.message
    assert _state(session) == before


def test_damaged_kits_need_a_remark(
    session: Session, study: Study, in_transit: dict[str, Shipment]
) -> None:
    shipment = in_transit["S1"]
    code = _codes(session, shipment)[0]
    with pytest.raises(InvalidInput):
        shipments.receive_kits(
            session, study, shipment=shipment, codes=[code], outcome="damaged", actor=PHARM
        )
    (kit,) = shipments.receive_kits(
        session,
        study,
        shipment=shipment,
        codes=[code],
        outcome="damaged",
        actor=PHARM,
        remark="Box crushed",
    )
    assert kit.status is KitStatus.DAMAGED


def test_finishing_reports_unchecked_kits_missing(
    session: Session, study: Study, in_transit: dict[str, Shipment]
) -> None:
    shipment = in_transit["S1"]
    codes = _codes(session, shipment)
    shipments.receive_kits(
        session, study, shipment=shipment, codes=codes[:4], outcome="received", actor=PHARM
    )
    missing = shipments.finish_receipt(session, study, shipment=shipment, actor=PHARM)
    assert sorted(missing) == sorted(codes[4:])
    assert shipment.status is ShipmentStatus.RECEIVED and shipment.received_by == "pharm1"
    lost = session.scalars(select(Kit).where(Kit.code.in_(missing))).all()
    assert {k.status for k in lost} == {KitStatus.LOST}
    with pytest.raises(Conflict):
        shipments.receive_kits(
            session, study, shipment=shipment, codes=codes[4:5], outcome="received", actor=PHARM
        )


def test_receiving_a_proposed_shipment_is_refused(session: Session, study: Study) -> None:
    generate_kits(session, study, count=8, actor=ADMIN)
    shipment = shipments.propose_manual(session, study, site="S1", count=2, actor=ADMIN)
    with pytest.raises(Conflict):
        shipments.receive_kits(
            session,
            study,
            shipment=shipment,
            codes=_codes(session, shipment),
            outcome="received",
            actor=PHARM,
        )


def test_cancelling_frees_the_kits(session: Session, study: Study) -> None:
    generate_kits(session, study, count=8, actor=ADMIN)
    shipment = shipments.propose_manual(session, study, site="S1", count=4, actor=ADMIN)
    with pytest.raises(InvalidInput):
        shipments.cancel(session, study, shipment=shipment, actor=ADMIN, reason="")
    shipments.cancel(session, study, shipment=shipment, actor=ADMIN, reason="Site closed")
    assert shipment.status is ShipmentStatus.CANCELLED
    assert session.scalar(select(func.count()).where(Kit.shipment_id.is_not(None))) == 0


def test_an_empty_depot_cannot_ship(session: Session, study: Study) -> None:
    with pytest.raises(Conflict):
        shipments.propose_manual(session, study, site="S1", count=2, actor=ADMIN)


# --- admin pages ------------------------------------------------------------------------


def test_admin_pages_list_codes_and_dispatch(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    generate_kits(session, study, count=20, actor=ADMIN)
    session.commit()
    login(client, "admin1")
    response = client.post("/shipments/TST/new", data={"site": "S2", "count": "4"})
    assert response.status_code == 302
    shipment = session.scalars(select(Shipment)).one()
    page = client.get(f"/shipments/TST/{shipment.id}").get_data(as_text=True)
    assert all(code in page for code in _codes(session, shipment))
    assert not any(t in page for t in ARM_TEXTS)
    assert client.post(f"/shipments/TST/{shipment.id}/dispatch").status_code == 302
    session.expire_all()
    assert session.get_one(Shipment, shipment.id).status is ShipmentStatus.IN_TRANSIT
    listing = client.get("/shipments/").get_data(as_text=True)
    assert not any(t in listing for t in ARM_TEXTS)


def test_admin_page_refuses_a_bad_count_with_the_field(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    login(client, "admin1")
    response = client.post("/shipments/TST/new", data={"site": "S2", "count": "4"})
    assert response.status_code == 409
    # The page is in Spanish, refusals included.
    assert "El depósito central puede cubrir 0 de estos 4 kits" in response.get_data(as_text=True)
    assert client.post("/shipments/TST/new", data={"site": "S2", "count": "x"}).status_code == 422
    odd = client.post("/shipments/TST/new", data={"site": "S2", "count": "3"})
    assert odd.status_code == 422 and "múltiplo de 2" in odd.get_data(as_text=True)
    assert session.scalars(select(Shipment)).all() == []


def test_admin_resupply_check_proposes_for_empty_sites(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    generate_kits(session, study, count=40, actor=ADMIN)
    session.commit()
    login(client, "admin1")
    assert client.post("/shipments/TST/resupply").status_code == 302
    session.expire_all()
    assert sorted(s.site_code for s in session.scalars(select(Shipment))) == ["S1", "S2"]


def test_admin_cancels_with_a_reason(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    generate_kits(session, study, count=8, actor=ADMIN)
    shipment = shipments.propose_manual(session, study, site="S1", count=2, actor=ADMIN)
    session.commit()
    login(client, "admin1")
    assert client.post(f"/shipments/TST/{shipment.id}/cancel", data={}).status_code == 422
    response = client.post(f"/shipments/TST/{shipment.id}/cancel", data={"reason": "Wrong site"})
    assert response.status_code == 302
    session.expire_all()
    assert session.get_one(Shipment, shipment.id).status is ShipmentStatus.CANCELLED


@pytest.mark.parametrize("username", ["pharm1", "inv1", "stat1", "assess1"])
def test_only_admins_reach_the_shipment_pages(
    client: FlaskClient, study: Study, users: dict[str, User], username: str
) -> None:
    login(client, username)
    assert client.get("/shipments/").status_code == 403
    assert client.post("/shipments/TST/resupply").status_code == 403
