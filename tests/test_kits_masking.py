"""Masked roles and kits: the no-supply answer does not depend on the short arm, and
investigators and assessors never meet a product name or arm code on any page or API answer
they can reach."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import SupplyUnavailable
from randomizer.models import (
    AllocationSlot,
    Dispensation,
    Kit,
    KitStatus,
    ListKind,
    Participant,
    SlotStatus,
    Study,
    User,
)
from randomizer.services import enrollment, lists, pharmacy, shipments
from randomizer.services.keyring import sealer_by_key_id
from randomizer.services.kit_lifecycle import change_status
from randomizer.services.kits import generate_kits, open_arms
from randomizer.services.supply import policy
from randomizer.services.supply.allocation import allocate_kit
from randomizer.services.users import actor_of
from tests.conftest import PASSWORD, login
from tests.enrollment_support import call, prepare_supply, register, token_for

ARM_TEXTS = ("ACTIVEX", "PLACEBOX", "Active product X", "Placebo product X")
SYSTEM = audit.SYSTEM


def _next_arm(session: Session, study: Study, stratum: str) -> str:
    """The arm of the next free slot of a stratum (the test peeks; no one else can)."""
    session.expire_all()
    listing = lists.find_list(session, study, ListKind.DUMMY)
    assert listing is not None
    slot = session.scalars(
        select(AllocationSlot)
        .where(AllocationSlot.list_id == listing.id, AllocationSlot.stratum == stratum,
               AllocationSlot.status == SlotStatus.AVAILABLE)
        .order_by(AllocationSlot.sequence).limit(1)
    ).one()  # fmt: skip
    return lists.slot_arm(
        session, study, slot, sealer_by_key_id(session, study, listing.data_key_id)
    )


def _stock_only(session: Session, study: Study, site: str, short: str | None) -> None:
    """Make every S1 kit of ``short`` unusable (quarantined) and every other one available."""
    kits = session.scalars(
        select(Kit).where(Kit.site_code == site, Kit.status.in_(
            [KitStatus.AVAILABLE, KitStatus.QUARANTINED]))
    ).all()  # fmt: skip
    for kit_id, arm in open_arms(session, study, kits).items():
        kit = session.get_one(Kit, kit_id)
        to = KitStatus.QUARANTINED if arm == short else KitStatus.AVAILABLE
        if kit.status is not to:
            change_status(session, study, kit, to, actor=SYSTEM, reason="Test set-up")
    session.commit()


def _advance_until(
    session: Session, study: Study, users: dict[str, User], short: str, n: list[int]
) -> None:
    """Randomize filler participants until the next S1|grade=low slot holds ``short``."""
    while _next_arm(session, study, "S1|grade=low") != short:
        _stock_only(session, study, "S1", None)
        n[0] += 1
        filler = register(session, study, users["investigator"], f"FILL-{n[0]}")
        enrollment.randomize(session, filler, signer=users["investigator"], password=PASSWORD)
        session.commit()


def _without_csrf(html: str) -> str:
    # The per-request CSRF token is the one part of a page that changes between requests.
    return re.sub(r'name="csrf_token" (type="hidden" )?value="[^"]+"', "", html)


def _headers(app: Flask, response: Any) -> list[Any]:
    """Headers, with the signed session cookie replaced by what it holds, less the clock
    readings of the idle timeout (they change with every request, whatever the arm)."""
    out: list[Any] = []
    for name, value in sorted(response.headers.items()):
        if name == "Set-Cookie" and value.startswith(app.config["SESSION_COOKIE_NAME"] + "="):
            signed = value.split(";", 1)[0].split("=", 1)[1]
            serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
            held = dict(serializer.loads(signed))
            for clock in ("seen_at", "signed_in_at", "csrf_token"):
                held.pop(clock, None)
            out.append((name, sorted(held.items()), value.split(";", 1)[1]))
        else:
            out.append((name, value))
    return out


@pytest.mark.parametrize("short", ["ACTIVEX", "PLACEBOX"])
def test_allocate_kit_refusal_is_the_same_whichever_arm_is_short(
    session: Session, study: Study, short: str
) -> None:
    generate_kits(session, study, count=8, actor=SYSTEM, site="S1")
    _stock_only(session, study, "S1", short)
    participant = Participant(
        study_id=study.id, site_code="S1", screening_number="X", factors={}, eligibility={},
        failed_criteria=[], stratum="S1", status="eligible", is_test=True, created_by="inv1",
    )  # fmt: skip
    session.add(participant)
    session.flush()
    with pytest.raises(SupplyUnavailable) as refused:
        allocate_kit(session, study, site="S1", arm=short, participant_id=participant.id,
                     visit="baseline", actor=SYSTEM)  # fmt: skip
    err = refused.value
    assert (type(err), err.status, err.slug, err.title, err.field, err.message) == (
        SupplyUnavailable, 409, "supply-unavailable", "No kit available", None,
        "No kit can be allocated at this site right now. Nothing was changed; ask the study "
        "pharmacist or the depot about this site's supply.",
    )  # fmt: skip


def test_masked_no_supply_answers_are_byte_identical_whichever_arm_is_short(
    app: Flask, client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    """One participant meets an S1 where its slot's arm is out of stock, first with ACTIVEX
    the short arm, then (after fillers move the list on) with PLACEBOX. The API answer
    (status, headers, body) and the page (status, headers, HTML without the CSRF token)
    are compared byte for byte."""
    prepare_supply(session, study, per_stratum=40, kits=12, sites=("S1",))
    token = token_for(session, users["investigator"])
    probe = register(session, study, users["investigator"], "PROBE")
    login(client, "inv1")
    answers: dict[str, list[Any]] = {}
    n = [0]
    for short in ("ACTIVEX", "PLACEBOX"):
        _advance_until(session, study, users, short, n)
        _stock_only(session, study, "S1", short)
        api = call(client, "POST", f"/api/v1/participants/{probe.id}/randomize", token,
                   {"signature": {"password": PASSWORD}})  # fmt: skip
        page = client.post(f"/participants/{probe.id}/randomize",
                           data={"password": PASSWORD, "submission": "f" * 32})  # fmt: skip
        answers[short] = [
            api.status_code, _headers(app, api), api.get_data(),
            page.status_code, _headers(app, page),
            _without_csrf(page.get_data(as_text=True)),
        ]  # fmt: skip
        assert api.status_code == 409 and page.status_code == 409
    assert answers["ACTIVEX"] == answers["PLACEBOX"]
    body = answers["ACTIVEX"][2].decode()
    assert "supply-unavailable" in body and not any(t in body for t in ARM_TEXTS)


# --- every page and API answer a masked site role can reach -----------------------------


@pytest.fixture
def busy_trial(session: Session, study: Study, users: dict[str, User]) -> dict[str, Any]:
    """A trial with randomized participants at both sites, a month-6 kit allocated, kits
    dispensed, replaced and damaged, shipments proposed, in transit and received, and
    pharmacist product views in the audit trail."""
    prepare_supply(session, study, per_stratum=8, kits=12)
    generate_kits(session, study, count=60, actor=SYSTEM)
    made = []
    for n, (site, user) in enumerate([("S1", "investigator"), ("S1", "investigator"),
                                      ("S2", "investigator2")]):  # fmt: skip
        p = register(session, study, users[user], f"BUSY-{n}", site=site)
        enrollment.randomize(session, p, signer=users[user], password=PASSWORD)
        session.commit()
        made.append(p)
    pharm = actor_of(users["pharmacist"])
    first = session.scalars(
        select(Dispensation).where(Dispensation.participant_id == made[0].id)
    ).one()
    from randomizer.services.kits import confirm_dispensing
    from randomizer.services.supply.allocation import replace_kit

    replace_kit(session, study, dispensation=first, reason="Cracked vial", actor=pharm)
    second = session.scalars(
        select(Dispensation).where(Dispensation.participant_id == made[1].id)
    ).one()
    confirm_dispensing(session, study, dispensation=second, actor=pharm)
    for site in ("S1", "S2"):
        proposal = shipments.propose_manual(session, study, site=site, count=4, actor=SYSTEM)
        shipments.dispatch(session, study, shipment=proposal, actor=SYSTEM)
    policy.check_all(session, study)
    pharmacy.inventory(session, study, sites=["S1"], actor=pharm)
    pharmacy.preparation_queue(session, study, sites=["S1"], actor=pharm)
    session.commit()
    return {
        "participants": [p.id for p in made],
        "shipments": [s.id for s in shipments.list_shipments(session, study)],
        "dispensations": list(session.scalars(select(Dispensation.id))),
    }


def _urls(app: Flask, data: dict[str, Any]) -> list[str]:
    """Every GET route, filled with every known value of its arguments."""
    values: dict[str, list[str]] = {
        "code": ["TST"], "study_code": ["TST"],
        "participant_id": [str(i) for i in data["participants"]],
        "shipment_id": [str(i) for i in data["shipments"]], "kind": ["dummy", "live"],
        "change": ["withdraw"], "username": ["inv1", "pharm1"], "fmt": ["html", "csv"],
    }  # fmt: skip
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint in ("static", "auth.set_language"):
            continue
        paths = [rule.rule]
        for arg in rule.arguments:
            assert arg in values, f"no test value for <{arg}> in {rule.rule}"
            paths = [re.sub(rf"<[^>]*\b{arg}>", v, p) for p in paths for v in values[arg]]
        urls += paths
    extra = [
        "/kits/TST?site=S1",
        "/api/v1/studies/TST/kits?site=S1",
        "/pharmacy/TST/inventory?site=S1",
    ]
    return sorted(set(urls + extra))


def _post_urls(app: Flask, data: dict[str, Any]) -> list[str]:
    values = {
        "code": ["TST"], "study_code": ["TST"], "participant_id": [str(data["participants"][0])],
        "shipment_id": [str(data["shipments"][0])], "kind": ["dummy"], "change": ["withdraw"],
        "dispensation_id": [str(data["dispensations"][0])], "username": ["inv1"],
    }  # fmt: skip
    urls = []
    for rule in app.url_map.iter_rules():
        if "POST" not in (rule.methods or ()) or rule.endpoint in ("auth.logout", "auth.login"):
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = re.sub(rf"<[^>]*\b{arg}>", values[arg][0], path)
        urls.append(path)
    return sorted(urls)


@pytest.mark.parametrize("username", ["inv1", "inv2", "assess1"])
def test_masked_site_roles_never_see_a_product_on_any_page_or_api_answer(
    app: Flask, client: FlaskClient, session: Session, users: dict[str, User],
    busy_trial: dict[str, Any], username: str,
) -> None:  # fmt: skip
    user = next(u for u in users.values() if u.username == username)
    token = token_for(session, user)
    assert login(client, username).status_code == 302
    seen = 0
    for url in _urls(app, busy_trial):
        if url.startswith("/api/"):
            response = call(client, "GET", url, token, key=None)
        else:
            response = client.get(url)
        text = response.get_data(as_text=True) + str(response.headers)
        leaked = [t for t in ARM_TEXTS if t in text]
        assert not leaked, f"{username} saw {leaked} at {url} ({response.status_code})"
        seen += response.status_code == 200
    for url in _post_urls(app, busy_trial):
        if url.startswith("/api/"):
            response = call(client, "POST", url, token, {})
        else:
            response = client.post(url, data={})
        text = response.get_data(as_text=True) + str(response.headers)
        assert not [t for t in ARM_TEXTS if t in text], f"{username} POST {url}"
    assert seen >= 5  # the crawl did reach real pages


@pytest.mark.parametrize("username", ["inv1", "assess1"])
def test_masked_roles_are_refused_kit_and_pharmacy_pages(
    client: FlaskClient, users: dict[str, User], busy_trial: dict[str, Any], username: str
) -> None:
    login(client, username)
    shipment = busy_trial["shipments"][0]
    for url in ["/kits/", "/kits/TST", "/shipments/", f"/shipments/TST/{shipment}",
                "/pharmacy/", "/pharmacy/TST/inventory", "/pharmacy/TST/queue",
                f"/pharmacy/TST/shipments/{shipment}"]:  # fmt: skip
        assert client.get(url).status_code == 403, url
