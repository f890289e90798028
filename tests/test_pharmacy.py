"""Pharmacist pages (own sites only) and the admin kit pages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit, kitcodes
from randomizer.models import (
    AuditEvent,
    Dispensation,
    Kit,
    KitStatus,
    Participant,
    Shipment,
    ShipmentStatus,
    Study,
    User,
)
from randomizer.services import enrollment, shipments
from randomizer.services.kits import generate_kits, kit_arm
from tests.conftest import PASSWORD, login, make_study, make_user
from tests.enrollment_support import prepare_supply, register

SYSTEM = audit.SYSTEM
ARM_TEXTS = ("ACTIVEX", "PLACEBOX", "Active product X", "Placebo product X")
NAMES = {"ACTIVEX": "Active product X", "PLACEBOX": "Placebo product X"}


def _views(session: Session) -> list[AuditEvent]:
    session.expire_all()
    return list(
        session.scalars(select(AuditEvent).where(AuditEvent.action == "pharmacy.view_products"))
    )


def _randomized(session: Session, study: Study, user: User, number: str, site: str) -> Participant:
    participant = register(session, study, user, number, site=site)
    enrollment.randomize(session, participant, signer=user, password=PASSWORD)
    session.commit()
    return participant


@pytest.fixture
def trial(session: Session, study: Study, users: dict[str, User]) -> dict[str, Any]:
    prepare_supply(session, study, per_stratum=8, kits=8)
    generate_kits(session, study, count=40, actor=SYSTEM)
    p1 = _randomized(session, study, users["investigator"], "P-1", "S1")
    p2 = _randomized(session, study, users["investigator2"], "P-2", "S2")
    out = {}
    for site in ("S1", "S2"):
        shipment = shipments.propose_manual(session, study, site=site, count=4, actor=SYSTEM)
        shipments.dispatch(session, study, shipment=shipment, actor=SYSTEM)
        out[site] = shipment.id
    session.commit()
    return {"p1": p1, "p2": p2, "shipments": out}


@pytest.fixture
def pharm(client: FlaskClient, trial: dict[str, Any]) -> FlaskClient:
    assert login(client, "pharm1").status_code == 302
    return client


def _dispensation(session: Session, participant: Participant) -> Dispensation:
    session.expire_all()
    return session.scalars(
        select(Dispensation).where(
            Dispensation.participant_id == participant.id, Dispensation.status != "replaced"
        )
    ).one()


def test_inventory_shows_products_of_own_sites_and_is_audited(
    pharm: FlaskClient, session: Session, study: Study
) -> None:
    html = pharm.get("/pharmacy/TST/inventory").get_data(as_text=True)
    s1_kits = session.scalars(select(Kit).where(Kit.site_code == "S1")).all()
    assert all(k.code in html for k in s1_kits)
    assert "Active product X" in html and "Placebo product X" in html
    assert not any(
        k.code in html for k in session.scalars(select(Kit).where(Kit.site_code == "S2"))
    )
    (event,) = _views(session)
    assert (event.actor, event.object_id) == ("pharm1", "S1")
    assert f'"count":{len(s1_kits)}' in (event.new_values or "")
    assert '"view":"inventory"' in (event.new_values or "")


def test_inventory_pages_and_opens_only_the_kits_it_shows(
    pharm: FlaskClient, session: Session, study: Study
) -> None:
    from randomizer.views.pharmacy import INVENTORY_PAGE

    generate_kits(session, study, count=INVENTORY_PAGE + 10, actor=audit.SYSTEM, site="S1")
    session.commit()
    total = len(session.scalars(select(Kit).where(Kit.site_code == "S1")).all())
    first = pharm.get("/pharmacy/TST/inventory").get_data(as_text=True)
    last = pharm.get("/pharmacy/TST/inventory?page=2").get_data(as_text=True)
    codes = [k.code for k in session.scalars(select(Kit).where(Kit.site_code == "S1"))]
    shown = [sum(c in page for c in codes) for page in (first, last)]
    assert shown == [INVENTORY_PAGE, total - INVENTORY_PAGE]
    counts = [e.new_values or "" for e in _views(session)]
    assert f'"count":{INVENTORY_PAGE}' in counts[0]
    assert f'"count":{total - INVENTORY_PAGE}' in counts[1]


@pytest.mark.parametrize(
    "url",
    [
        "/pharmacy/TST/inventory?site=S2",
        "/pharmacy/TST/inventory?site=S9",
        "/pharmacy/NOPE/inventory",
    ],
)
def test_inventory_of_another_site_is_404_and_discloses_nothing(
    pharm: FlaskClient, session: Session, url: str
) -> None:
    response = pharm.get(url)
    assert response.status_code == 404
    assert not any(t in response.get_data(as_text=True) for t in ARM_TEXTS)
    assert _views(session) == []


def test_another_sites_shipment_and_dispensation_are_404(
    pharm: FlaskClient, session: Session, trial: dict[str, Any]
) -> None:
    s2 = trial["shipments"]["S2"]
    assert pharm.get(f"/pharmacy/TST/shipments/{s2}").status_code == 404
    assert pharm.post(f"/pharmacy/TST/shipments/{s2}/finish", data={}).status_code == 404
    other = _dispensation(session, trial["p2"])
    response = pharm.post(f"/pharmacy/TST/queue/{other.id}", data={})
    assert response.status_code == 404
    assert _dispensation(session, trial["p2"]).status == "allocated"


def test_a_pharmacist_of_no_site_in_the_study_gets_404(
    client: FlaskClient, session: Session, trial: dict[str, Any]
) -> None:
    other = {
        'code = "TST"': 'code = "OTH"',
        'code = "S1"': 'code = "S9"',
        'code = "S2"': 'code = "S8"',
    }
    make_study(session, **other)
    make_user(session, "pharm9", "pharmacist", ("S9",))
    login(client, "pharm9")
    assert client.get("/pharmacy/TST/inventory").status_code == 404
    assert client.get("/pharmacy/TST/queue").status_code == 404


def test_preparation_queue_names_the_product_to_prepare_and_is_audited(
    pharm: FlaskClient, session: Session, study: Study, trial: dict[str, Any]
) -> None:
    html = pharm.get("/pharmacy/TST/queue").get_data(as_text=True)
    p1 = trial["p1"]
    dispensation = _dispensation(session, p1)
    kit = session.get_one(Kit, dispensation.kit_id)
    row = re.search(
        rf'<li class="card queue-item[^>]*>.*?{re.escape(kit.code)}.*?</li>', html, re.S
    )
    assert row is not None
    assert p1.randomization_number in row.group(0) and "baseline" in row.group(0)
    assert NAMES[kit_arm(session, study, kit)] in row.group(0)
    assert trial["p2"].randomization_number not in html
    (event,) = _views(session)
    assert '"view":"queue"' in (event.new_values or "") and '"count":1' in (event.new_values or "")


def test_confirm_dispensing_checks_the_scanned_kit(
    pharm: FlaskClient, session: Session, trial: dict[str, Any]
) -> None:
    dispensation = _dispensation(session, trial["p1"])
    kit = session.get_one(Kit, dispensation.kit_id)
    other = session.scalars(
        select(Kit).where(Kit.site_code == "S1", Kit.status == KitStatus.AVAILABLE)
    ).first()
    assert other is not None
    prefix = f"d{dispensation.id}-"
    wrong = pharm.post(
        f"/pharmacy/TST/queue/{dispensation.id}", data={f"{prefix}kit_code": other.code}
    )
    # The pages are in Spanish (the sites' language), refusals included.
    assert wrong.status_code == 422 and "no es el kit asignado aquí" in wrong.get_data(as_text=True)
    assert _dispensation(session, trial["p1"]).status == "allocated"
    right = pharm.post(
        f"/pharmacy/TST/queue/{dispensation.id}", data={f"{prefix}kit_code": kit.code.lower()}
    )
    assert right.status_code == 302
    assert _dispensation(session, trial["p1"]).status == "dispensed"
    assert session.get_one(Kit, kit.id).status is KitStatus.DISPENSED


def _kit_states(session: Session) -> list[tuple[str, str]]:
    session.expire_all()
    return sorted((k.code, k.status.value) for k in session.scalars(select(Kit)))


def test_receipt_page_refuses_a_mistyped_code_and_changes_nothing(
    pharm: FlaskClient, session: Session, trial: dict[str, Any]
) -> None:
    shipment_id = trial["shipments"]["S1"]
    shipment = session.get_one(Shipment, shipment_id)
    codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
    raw = kitcodes.normalise(codes[1])
    typo = raw[:4] + raw[5] + raw[4] + raw[6:]
    if typo == raw:
        typo = raw[:7] + next(c for c in kitcodes.ALPHABET if c != raw[7])
    before, events = _kit_states(session), session.scalar(select(func.count(AuditEvent.seq)))
    url = f"/pharmacy/TST/shipments/{shipment_id}/receive"
    response = pharm.post(url, data={"codes": f"{codes[0]}\n{typo}", "outcome": "received"})
    assert response.status_code == 422
    assert "carácter de control no coincide" in response.get_data(as_text=True)
    assert _kit_states(session) == before
    assert session.scalar(select(func.count(AuditEvent.seq))) == events
    good = pharm.post(url, data={"codes": f"{codes[0]}\n{codes[1]}", "outcome": "received"})
    assert good.status_code == 302
    finish = pharm.post(
        f"/pharmacy/TST/shipments/{shipment_id}/finish", data={"missing_remark": "Two vials absent"}
    )
    assert finish.status_code == 302
    session.expire_all()
    assert session.get_one(Shipment, shipment_id).status is ShipmentStatus.RECEIVED
    page = pharm.get(f"/pharmacy/TST/shipments/{shipment_id}").get_data(as_text=True)
    assert page.count("Two vials absent") == 2 and not any(t in page for t in ARM_TEXTS)


def test_reporting_damage_of_a_free_kit_marks_it_damaged(
    pharm: FlaskClient, session: Session
) -> None:
    kit = session.scalars(
        select(Kit).where(Kit.site_code == "S1", Kit.status == KitStatus.AVAILABLE)
    ).first()
    assert kit is not None
    assert (
        pharm.post(
            "/pharmacy/TST/damage", data={"code": kit.code, "kind": "damaged", "reason": ""}
        ).status_code
        == 422
    )
    response = pharm.post(
        "/pharmacy/TST/damage", data={"code": kit.code, "kind": "damaged", "reason": "Dropped"}
    )
    assert response.status_code == 302
    session.expire_all()
    assert session.get_one(Kit, kit.id).status is KitStatus.DAMAGED


def test_reporting_damage_of_an_allocated_kit_replaces_it_with_the_same_product(
    pharm: FlaskClient, session: Session, study: Study, trial: dict[str, Any]
) -> None:
    old = _dispensation(session, trial["p1"])
    old_kit = session.get_one(Kit, old.kit_id)
    response = pharm.post(
        "/pharmacy/TST/damage",
        data={"code": old_kit.code, "kind": "lost", "reason": "Not in fridge"},
    )
    assert response.status_code == 302
    new = _dispensation(session, trial["p1"])
    new_kit = session.get_one(Kit, new.kit_id)
    assert new.replaces_id == old.id and new_kit.id != old_kit.id
    assert session.get_one(Kit, old_kit.id).status is KitStatus.LOST
    assert kit_arm(session, study, new_kit) == kit_arm(session, study, old_kit)


def test_reporting_another_sites_kit_is_refused(pharm: FlaskClient, session: Session) -> None:
    kit = session.scalars(select(Kit).where(Kit.site_code == "S2")).first()
    assert kit is not None
    response = pharm.post(
        "/pharmacy/TST/damage", data={"code": kit.code, "kind": "damaged", "reason": "x"}
    )
    assert response.status_code == 404
    session.expire_all()
    assert session.get_one(Kit, kit.id).status is not KitStatus.DAMAGED


# --- admin kit pages --------------------------------------------------------------------


@pytest.fixture
def admin(client: FlaskClient, trial: dict[str, Any]) -> FlaskClient:
    assert login(client, "admin1").status_code == 302
    return client


def test_admin_kit_pages_show_codes_statuses_and_totals_never_arms(
    admin: FlaskClient, session: Session
) -> None:
    for url in ["/kits/", "/kits/TST", "/kits/TST?site=S1&status=available", "/kits/TST?page=9"]:
        response = admin.get(url)
        assert response.status_code == 200, url
        assert not any(t in response.get_data(as_text=True) for t in ARM_TEXTS), url
    html = admin.get("/kits/TST?site=S1").get_data(as_text=True)
    assert all(k.code in html for k in session.scalars(select(Kit).where(Kit.site_code == "S1")))


def test_admin_generates_kits_from_the_page(admin: FlaskClient, session: Session) -> None:
    before = session.scalar(select(func.count(Kit.id)))
    response = admin.post(
        "/kits/TST/generate",
        data={"count": "6", "site": "", "lot": "LOT-9", "expiry": "2031-01-31"},
    )
    assert response.status_code == 302
    assert session.scalar(select(func.count(Kit.id))) == before + 6
    assert admin.post("/kits/TST/generate", data={"count": "0"}).status_code == 422


def test_admin_status_change_refuses_impossible_moves_with_a_message(
    admin: FlaskClient, session: Session
) -> None:
    kit = session.scalars(select(Kit).where(Kit.status == KitStatus.AT_DEPOT)).first()
    assert kit is not None
    refused = admin.post("/kits/TST/status", data={"code": kit.code, "status": "dispensed"})
    assert refused.status_code == 409 and "no puede pasar a" in refused.get_data(as_text=True)
    done = admin.post(
        "/kits/TST/status", data={"code": kit.code, "status": "quarantined", "reason": "Heat"}
    )
    assert done.status_code == 302
    session.expire_all()
    assert session.get_one(Kit, kit.id).status is KitStatus.QUARANTINED


@pytest.mark.parametrize("username", ["inv1", "assess1", "stat1", "pharm1"])
def test_only_admins_reach_the_kit_pages(
    client: FlaskClient, trial: dict[str, Any], username: str
) -> None:
    login(client, username)
    assert client.get("/kits/TST").status_code == 403
    assert client.post("/kits/TST/generate", data={"count": "2"}).status_code == 403


# --- the preparation queue's rules -----------------------------------------------------


def _queue_card(html: str, dispensation_id: int) -> str:
    found = re.search(rf'id="dispensation-{dispensation_id}">(.*?)</li>', html, re.S)
    assert found, "no card for this dispensation in the queue"
    return found.group(1)


def _dispense(client: FlaskClient, dispensation: Dispensation, code: str) -> Any:
    return client.post(
        f"/pharmacy/TST/queue/{dispensation.id}", data={f"d{dispensation.id}-kit_code": code}
    )


def test_queue_rows_show_status_visit_due_date_and_window(
    pharm: FlaskClient, session: Session, trial: dict[str, Any]
) -> None:
    pharm.get("/lang/en")
    dispensation = _dispensation(session, trial["p1"])
    card = _queue_card(pharm.get("/pharmacy/TST/queue").get_data(as_text=True), dispensation.id)
    randomized = trial["p1"].randomized_at.date().isoformat()
    assert "Randomized" in card and "baseline" in card
    assert f"<dt>Due</dt><dd>{randomized}</dd>" in card
    assert f"{randomized} to {randomized}" in card
    assert "Not due yet" not in card


def test_kit_for_a_later_visit_is_marked_not_due_yet(
    pharm: FlaskClient, session: Session, trial: dict[str, Any], users: dict[str, User]
) -> None:
    pharm.get("/lang/en")
    p1 = trial["p1"]
    enrollment.dispense(
        session, p1, visit="month_6", signer=users["investigator"], password=PASSWORD,
        override_reason="Participant travels abroad; infusion planned early.",
    )  # fmt: skip
    session.commit()
    month_6 = session.scalars(select(Dispensation).where(Dispensation.visit == "month_6")).one()
    card = _queue_card(pharm.get("/pharmacy/TST/queue").get_data(as_text=True), month_6.id)
    assert "Not due yet" in card and "month_6" in card
    assert "The window of this visit opens on" in card


def test_dispensing_with_an_empty_scan_field_is_refused_naming_the_field(
    pharm: FlaskClient, session: Session, trial: dict[str, Any]
) -> None:
    pharm.get("/lang/en")
    dispensation = _dispensation(session, trial["p1"])
    response = _dispense(pharm, dispensation, "")
    assert response.status_code == 422
    card = _queue_card(response.get_data(as_text=True), dispensation.id)
    assert "Scan the kit: scan or type the code" in card
    assert _dispensation(session, trial["p1"]).status == "allocated"


def _stock_index(session: Session, study: Study) -> tuple[int, dict[str, Any]]:
    from randomizer.services.supply.stock import peek_stock

    session.expire_all()
    stock = peek_stock(session, study, "S1", is_test=True)
    return stock.index.available, {a: list(k) for a, k in stock.index.kits.items()}


def test_withdrawn_participants_kit_is_refused_then_set_aside(
    pharm: FlaskClient, session: Session, study: Study, trial: dict[str, Any]
) -> None:
    pharm.get("/lang/en")
    p1 = trial["p1"]
    dispensation = _dispensation(session, p1)
    kit = session.get_one(Kit, dispensation.kit_id)
    enrollment.withdraw(session, p1, actor=SYSTEM, reason="Consent withdrawn.")
    session.commit()
    before = _stock_index(session, study)
    card = _queue_card(pharm.get("/pharmacy/TST/queue").get_data(as_text=True), dispensation.id)
    assert "Withdrawn" in card and "Do not dispense" in card and "kit_code" not in card

    refused = _dispense(pharm, dispensation, kit.code)
    assert refused.status_code == 409
    assert f"Do not dispense kit {kit.code}: the participant is withdrawn" in refused.get_data(
        as_text=True
    )
    assert _dispensation(session, p1).status == "allocated"
    assert session.get_one(Kit, kit.id).status is KitStatus.ALLOCATED

    aside = pharm.post(f"/pharmacy/TST/queue/{dispensation.id}/set-aside", data={})
    assert aside.status_code == 302
    session.expire_all()
    assert session.get_one(Kit, kit.id).status is KitStatus.QUARANTINED
    assert session.get_one(Dispensation, dispensation.id).status == "set_aside"
    assert _stock_index(session, study) == before  # the sealed index stays true
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "kit.set_aside")).one()
    assert event.object_id == kit.code and "withdrawn" in (event.reason or "")
    queue = pharm.get("/pharmacy/TST/queue").get_data(as_text=True)
    assert f'id="dispensation-{dispensation.id}"' not in queue


def test_a_set_aside_kit_never_becomes_available_again(
    pharm: FlaskClient, session: Session, study: Study, trial: dict[str, Any]
) -> None:
    from randomizer.errors import Conflict
    from randomizer.services.kits import set_status

    p1 = trial["p1"]
    dispensation = _dispensation(session, p1)
    enrollment.mark_randomized_in_error(session, p1, actor=SYSTEM, reason="Wrong person.")
    session.commit()
    assert pharm.post(f"/pharmacy/TST/queue/{dispensation.id}/set-aside").status_code == 302
    kit = session.get_one(Kit, dispensation.kit_id)
    with pytest.raises(Conflict, match="cannot become available again"):
        set_status(session, study, code=kit.code, to=KitStatus.AVAILABLE, actor=SYSTEM,
                   reason="Released.", sites=frozenset({"S1"}))  # fmt: skip
    session.rollback()


def test_an_active_participants_kit_cannot_be_set_aside(
    pharm: FlaskClient, session: Session, trial: dict[str, Any]
) -> None:
    pharm.get("/lang/en")
    dispensation = _dispensation(session, trial["p1"])
    response = pharm.post(f"/pharmacy/TST/queue/{dispensation.id}/set-aside")
    assert response.status_code == 409
    assert "dispense it instead" in response.get_data(as_text=True)
    assert _dispensation(session, trial["p1"]).status == "allocated"
