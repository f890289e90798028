"""Blinded resupply: the trigger, the top-up of every arm, and a 200-participant simulation."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import (
    Kit,
    KitStatus,
    Participant,
    ParticipantStatus,
    Shipment,
    ShipmentStatus,
    Study,
)
from randomizer.services import shipments, supply
from randomizer.services.kits import allocate_kit, generate_kits, open_arms
from tests.conftest import make_study

ADMIN = audit.Actor("admin1", "admin")
INV = audit.Actor("inv1", "investigator")
PHARM = audit.Actor("pharm1", "pharmacist")
TODAY = dt.date(2026, 6, 1)
PROPOSED, IN_TRANSIT = ShipmentStatus.PROPOSED, ShipmentStatus.IN_TRANSIT


def _participant(session: Session, study: Study, site: str, n: int) -> Participant:
    participant = Participant(
        study_id=study.id, site_code=site, screening_number=f"{site}-{n}", factors={},
        eligibility={}, failed_criteria=[], stratum=site, status=ParticipantStatus.ELIGIBLE,
        is_test=True, created_by="inv1",
    )  # fmt: skip
    session.add(participant)
    session.flush()
    return participant


def _arm_counts(session: Session, study: Study, shipment: Shipment) -> dict[str, int]:
    kits = session.scalars(select(Kit).where(Kit.shipment_id == shipment.id)).all()
    counts = {"ACTIVEX": 0, "PLACEBOX": 0}
    for arm in open_arms(session, study, kits).values():
        counts[arm] += 1
    return counts


def _deliver(session: Session, study: Study, shipment: Shipment) -> None:
    shipments.dispatch(session, study, shipment=shipment, actor=ADMIN)
    codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
    shipments.receive_kits(session, study, shipment=shipment, codes=codes, outcome="received",
                           actor=PHARM)  # fmt: skip
    shipments.finish_receipt(session, study, shipment=shipment, actor=PHARM, today=TODAY)


# --- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stock", "expected"),
    [({"A": 6, "B": 6}, False), ({"A": 6, "B": 3}, False), ({"A": 5, "B": 4}, False),
     ({"A": 4, "B": 4}, True), ({"A": 6, "B": 2}, True), ({"A": 9, "B": 2}, True),
     ({"A": 0, "B": 0}, True)],
)  # fmt: skip
def test_resupply_triggers_on_any_arm_or_on_the_total(
    stock: dict[str, int], expected: bool
) -> None:
    assert supply.needs_resupply(stock, trigger=2, resupply=6) is expected


def test_an_arm_at_its_trigger_implies_the_total_trigger_while_no_arm_exceeds_resupply() -> None:
    """Why the rule is blind: with every arm at most R, the per-arm trigger never fires alone."""
    for trigger, resupply in [(1, 4), (2, 6), (3, 10)]:
        for a in range(resupply + 1):
            for b in range(resupply + 1):
                for c in range(resupply + 1):
                    total = a + b + c
                    if min(a, b, c) <= trigger:
                        assert total <= 2 * resupply + trigger


def test_top_up_brings_every_arm_to_the_resupply_level() -> None:
    assert supply.top_up({"A": 1, "B": 5, "C": 7}, resupply=6) == {"A": 5, "B": 1, "C": 0}


def test_an_empty_site_gets_a_shipment_of_every_arm(session: Session, study: Study) -> None:
    generate_kits(session, study, count=40, actor=ADMIN)
    shipment = supply.check_site(session, study, site="S1", today=TODAY)
    assert shipment is not None and shipment.origin == "resupply"
    assert _arm_counts(session, study, shipment) == {"ACTIVEX": 6, "PLACEBOX": 6}
    # The proposal counts as stock: no second proposal while it is on its way.
    assert supply.check_site(session, study, site="S1", today=TODAY) is None


def test_allocation_that_reaches_the_trigger_proposes_a_top_up(
    session: Session, study: Study
) -> None:
    generate_kits(session, study, count=60, actor=ADMIN)
    first = supply.check_site(session, study, site="S1", today=TODAY)
    assert first is not None
    _deliver(session, study, first)
    for n, arm in enumerate(["ACTIVEX", "ACTIVEX", "ACTIVEX"]):
        participant = _participant(session, study, "S1", n)
        allocate_kit(session, study, site="S1", arm=arm, visit="baseline", actor=INV,
                     participant_id=participant.id, today=TODAY)  # fmt: skip
        assert shipments.list_shipments(session, study, statuses=[PROPOSED]) == []
    allocate_kit(session, study, site="S1", arm="PLACEBOX", visit="baseline", actor=INV,
                 participant_id=_participant(session, study, "S1", 9).id, today=TODAY)  # fmt: skip
    (proposal,) = shipments.list_shipments(session, study, statuses=[PROPOSED])
    # Three of one arm and one of the other were used: the top-up is 3 + 1, not one-for-one
    # by participant, and the size (4) follows from the total alone.
    assert _arm_counts(session, study, proposal) == {"ACTIVEX": 3, "PLACEBOX": 1}


def test_kits_expiring_too_soon_do_not_count_as_stock(session: Session, study: Study) -> None:
    generate_kits(session, study, count=12, actor=ADMIN, site="S1",
                  expiry=TODAY - dt.timedelta(days=1))  # fmt: skip
    generate_kits(session, study, count=40, actor=ADMIN, expiry=dt.date(2030, 1, 1))
    assert supply.site_stock(session, study, site="S1", today=TODAY) == {
        "ACTIVEX": 0, "PLACEBOX": 0}  # fmt: skip
    shipment = supply.check_site(session, study, site="S1", today=TODAY)
    assert shipment is not None and _arm_counts(session, study, shipment) == {
        "ACTIVEX": 6, "PLACEBOX": 6}  # fmt: skip


def test_a_depot_short_of_one_arm_still_ships_the_rest_and_says_so(
    session: Session, study: Study
) -> None:
    kits = generate_kits(session, study, count=8, actor=ADMIN)
    for kit, arm in open_arms(session, study, kits).items():
        if arm == "ACTIVEX":
            session.get_one(Kit, kit).status = KitStatus.QUARANTINED
    shipment = supply.check_site(session, study, site="S1", today=TODAY)
    assert shipment is not None and shipment.depot_short
    assert _arm_counts(session, study, shipment) == {"ACTIVEX": 0, "PLACEBOX": 4}


# --- the simulation ---------------------------------------------------------------------


@dataclass
class SiteView:
    """What masked staff at one site can see of their shipments: (event, how many
    participants the site had enrolled at that moment, number of kits), in order."""

    events: list[tuple[str, int, int]] = field(default_factory=list)


Assignment = Callable[[str, int], str]  # (site, k-th participant at that site) -> arm


def _simulate(
    session: Session, study: Study, sites: list[str], assign: Assignment
) -> dict[str, list[tuple[str, int, int]]]:
    """Run the enrolment order ``sites`` with arms from ``assign``; shipments proposed by
    the resupply rule are dispatched at once and received at the site's next enrolment."""
    generate_kits(session, study, count=600, actor=ADMIN, expiry=dt.date(2031, 1, 1))
    views = {s: SiteView() for s in ("S1", "S2")}
    seen: dict[str, int] = {"S1": 0, "S2": 0}
    in_transit: dict[int, int] = {}

    def after_step(site: str, k: int, *, receive_now: bool = False) -> None:
        mine = frozenset({site})
        for shipment in shipments.list_shipments(session, study, sites=mine, statuses=[PROPOSED]):
            size = len(shipments.shipment_lines(session, shipment))
            views[site].events.append(("proposed", k, size))
            shipments.dispatch(session, study, shipment=shipment, actor=ADMIN)
            views[site].events.append(("dispatched", k, size))
            in_transit[shipment.id] = k
        for shipment in shipments.list_shipments(session, study, sites=mine, statuses=[IN_TRANSIT]):
            if receive_now or in_transit[shipment.id] < k:
                codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
                shipments.receive_kits(session, study, shipment=shipment, codes=codes,
                                       outcome="received", actor=PHARM)  # fmt: skip
                shipments.finish_receipt(session, study, shipment=shipment, actor=PHARM,
                                         today=TODAY)  # fmt: skip
                views[site].events.append(("received", k, len(codes)))

    for site in ("S1", "S2"):  # initial stock: the rule fills an empty site
        supply.check_site(session, study, site=site, today=TODAY)
        after_step(site, 0, receive_now=True)
    for n, site in enumerate(sites):
        participant = _participant(session, study, site, n)
        allocate_kit(session, study, site=site, arm=assign(site, seen[site]), visit="baseline",
                     participant_id=participant.id, actor=INV, today=TODAY)  # fmt: skip
        seen[site] += 1
        after_step(site, seen[site])
    return {site: view.events for site, view in views.items()}


def _block_list(count: int) -> list[str]:
    """A permuted-block arm sequence (blocks of 2 and 4), as an allocation list makes."""
    out: list[str] = []
    while len(out) < count:
        block = ["ACTIVEX", "PLACEBOX"] * (1 + secrets.randbelow(2))
        for i in range(len(block) - 1, 0, -1):
            j = secrets.randbelow(i + 1)
            block[i], block[j] = block[j], block[i]
        out += block
    return out


def test_shipments_seen_by_a_site_never_tell_which_participants_share_an_arm(
    session: Session,
) -> None:
    """200 participants enrolled across two sites with automatic resupply.

    A site could only conclude that participants i and j share an arm if every arm
    assignment that produces the shipments it saw gives i and j the same arm. So the test
    runs the same enrolment order (which site enrols next) under a family of assignments
    and checks two things:

    1. every assignment yields exactly the same shipments seen by each site (the step at
       which each was proposed, dispatched and received, and its number of kits — the kit
       codes are random and are tested separately to carry no arm), and
    2. for every pair of participants, some assignment in the family gives them
       different arms.

    Together: whatever the real assignment, the observed shipment sequence is also
    produced by one in which i and j differ, for every pair. The family contains real
    permuted-block lists (blocks of 2 and 4, drawn at random), assignments built from the
    bits of the block index (each a valid list of blocks of 2) that split every pair at a
    site, alternation with and without a flip at the second site (splitting every pair
    across sites), and every participant on one arm (an extreme no list would produce).
    Each run uses its own study, so runs share nothing but the enrolment order.
    """
    order_rng = secrets.SystemRandom()
    sites = [order_rng.choice(["S1", "S2"]) for _ in range(200)]
    per_site = {s: sites.count(s) for s in ("S1", "S2")}
    bits = max(1, (max(per_site.values()) // 2).bit_length())
    arms = ("ACTIVEX", "PLACEBOX")

    def by_bit(b: int, flip_s2: int = 0) -> Assignment:
        return lambda site, k: arms[
            ((k // 2) >> b & 1) ^ (k % 2) ^ (flip_s2 if site == "S2" else 0)
        ]

    lists = {s: _block_list(per_site[s]) for s in ("S1", "S2")}
    family: dict[str, Assignment] = {
        "random block lists": lambda site, k: lists[site][k],
        "alternating": lambda site, k: arms[k % 2],
        "alternating, S2 flipped": lambda site, k: arms[(k + (site == "S2")) % 2],
        "all on one arm": lambda site, k: arms[0],
        **{f"bit {b}": by_bit(b) for b in range(bits)},
    }
    observed = {}
    for n, (name, assign) in enumerate(family.items()):
        study = make_study(session, **{'code = "TST"': f'code = "SIM{n}"'})
        observed[name] = _simulate(session, study, sites, assign)
        session.commit()
    reference = observed["random block lists"]
    assert sum(e[0] == "proposed" for e in reference["S1"] + reference["S2"]) > 20
    for name, seen in observed.items():
        assert seen == reference, f"the shipments seen differ under {name!r}"
    # Coverage: every pair is split by some assignment of the family.
    index = []
    counters = {"S1": 0, "S2": 0}
    for site in sites:
        index.append((site, counters[site]))
        counters[site] += 1
    for i in range(len(index)):
        for j in range(i + 1, len(index)):
            assert any(a(*index[i]) != a(*index[j]) for a in family.values()), (i, j)


def test_the_simulation_would_see_a_trigger_on_one_arm_alone(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power check: with only the per-arm trigger, four participants in a row on one arm
    bring a shipment earlier than alternating arms do, and the simulation tells them apart."""
    monkeypatch.setattr(
        supply, "needs_resupply", lambda stock, *, trigger, resupply: min(stock.values()) <= trigger
    )
    sites = ["S1"] * 12
    arms = ("ACTIVEX", "PLACEBOX")
    seen = []
    for n, assign in enumerate([lambda s, k: arms[k % 2], lambda s, k: arms[0]]):
        study = make_study(session, **{'code = "TST"': f'code = "POW{n}"'})
        seen.append(_simulate(session, study, sites, assign))
    assert seen[0] != seen[1]
