"""Blind supply: the bound, the gate, resupply in whole units, and a 200-participant
simulation that prints its figures."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import InvalidInput, SupplyUnavailable
from randomizer.models import (
    Dispensation,
    Kit,
    KitStatus,
    Participant,
    ParticipantStatus,
    Role,
    Shipment,
    ShipmentStatus,
    Study,
)
from randomizer.services import shipments
from randomizer.services.kit_lifecycle import change_status
from randomizer.services.kits import generate_kits, open_arms
from randomizer.services.supply import bound, policy
from randomizer.services.supply.allocation import allocate_kit, replace_kit
from randomizer.services.supply.stock import DEPOT, lock_stock
from tests.conftest import make_study

ADMIN = audit.Actor("admin1", "admin")
INV = audit.Actor("inv1", "investigator")
PHARM = audit.Actor("pharm1", "pharmacist")
TODAY = dt.date(2026, 6, 1)
PROPOSED, IN_TRANSIT = ShipmentStatus.PROPOSED, ShipmentStatus.IN_TRANSIT
HALF = Fraction(1, 2)
ARMS = ("ACTIVEX", "PLACEBOX")


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
    counts = dict.fromkeys(ARMS, 0)
    for arm in open_arms(session, study, kits).values():
        counts[arm] += 1
    return counts


def _actual_stock(session: Session, study: Study, site: str) -> dict[str, int]:
    """The true available kits per arm at a site (the test peeks; no role can)."""
    kits = session.scalars(
        select(Kit).where(Kit.study_id == study.id, Kit.site_code == site,
                          Kit.status == KitStatus.AVAILABLE)
    ).all()  # fmt: skip
    counts = dict.fromkeys(ARMS, 0)
    for arm in open_arms(session, study, kits).values():
        counts[arm] += 1
    return counts


def _deliver(session: Session, study: Study, shipment: Shipment) -> None:
    shipments.dispatch(session, study, shipment=shipment, actor=ADMIN)
    codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
    shipments.receive_kits(session, study, shipment=shipment, codes=codes, outcome="received",
                           actor=PHARM)  # fmt: skip
    policy.finish_receipt(session, study, shipment=shipment, actor=PHARM, today=TODAY)


# --- the bound (pure) -------------------------------------------------------------------


def _brute_max_arm(n: int, sizes: tuple[int, ...], ratio: tuple[int, int]) -> int:
    """Most slots of arm 0 in the first n slots over every sequence of blocks (slow)."""
    best = 0
    unit = sum(ratio)
    for count in range(1, n + 1):
        for seq in itertools.product(sizes, repeat=count):
            if sum(seq[:-1]) > n or sum(seq) < n:
                continue
            full = sum(seq[:-1])
            last, j = seq[-1], n - full
            best = max(best, full * ratio[0] // unit + min(j, last * ratio[0] // unit))
    return best


@pytest.mark.parametrize(
    ("sizes", "ratio"), [((2, 4), (1, 1)), ((4,), (1, 1)), ((2, 6), (1, 1)), ((3, 6), (2, 1))]
)
def test_max_arm_slots_matches_every_block_sequence(
    sizes: tuple[int, ...], ratio: tuple[int, int]
) -> None:
    share = Fraction(ratio[0], sum(ratio))
    for n in range(0, 13):
        assert bound.max_arm_slots(n, share, sizes) == _brute_max_arm(n, sizes, ratio), n


def test_worst_consumed_takes_the_participants_holding_most_kits() -> None:
    holdings = {"S1|a": {1: 3, 5: 1}, "S1|b": {2: 2}}
    assert bound.worst_consumed(holdings, {"S1|a": 2, "S1|b": 1}) == 5 + 1 + 2


def test_guaranteed_stock_subtracts_the_worst_case_of_every_term() -> None:
    facts = bound.SiteFacts(
        received={"A": 10, "B": 10}, lost=2, holdings={"S": {1: 3}}, in_transit=[(1, 1)]
    )
    # Worst consumed of one arm among 3 participants = 2 (blocks of 2 and 4); lost 2, any
    # arm; in transit: min(1 kit, 1 unit × ratio 1) = 1.
    got = bound.guaranteed_stock(facts, ratios={"A": 1, "B": 1}, block_sizes=(2, 4))
    assert got == {"A": 10 - 2 - 2 - 1, "B": 5}


def test_without_site_strata_every_participant_may_share_one_arm() -> None:
    facts = bound.SiteFacts({"A": 6, "B": 6}, 0, {"S": {1: 3}}, [])
    assert bound.guaranteed_stock(facts, ratios={"A": 1, "B": 1}, block_sizes=None) == {
        "A": 3, "B": 3}  # fmt: skip


def test_under_minimization_every_kit_the_sites_participants_hold_may_be_of_one_arm() -> None:
    # Minimization bounds no stratum: all 6 participants (9 kits) may have arm A.
    facts = bound.SiteFacts({"A": 12, "B": 12}, 1, {"S1|low": {1: 3, 2: 1}, "S1|high": {2: 2}},
                            [])  # fmt: skip
    unbounded = bound.guaranteed_stock(facts, ratios={"A": 1, "B": 1}, block_sizes=None)
    assert unbounded == {"A": 12 - 9 - 1, "B": 12 - 9 - 1}
    blocks = bound.guaranteed_stock(facts, ratios={"A": 1, "B": 1}, block_sizes=(2,))
    assert blocks["A"] > unbounded["A"]


def test_worst_imbalance_without_blocks_is_every_participant_beyond_the_share() -> None:
    assert bound.worst_imbalance(["a", "b"], {"A": 1, "B": 1}, None, 4) == {"A": 4, "B": 4}
    assert bound.worst_imbalance(["a", "b"], {"A": 1, "B": 1}, (2,), 4) == {"A": 1, "B": 1}


def test_units_reach_the_level_for_every_arm_in_its_ratio() -> None:
    assert bound.units_to_reach({"A": 1, "B": 4}, {"A": 2, "B": 1}, 3) == 3
    assert bound.margin({"A": 7, "B": 4}, {"A": 2, "B": 1}) == 3


# --- the gate -----------------------------------------------------------------------------


def test_the_gate_refuses_every_arm_alike_when_one_could_run_dry(
    session: Session, study: Study
) -> None:
    kits = generate_kits(session, study, count=4, actor=ADMIN, site="S1")
    arms = open_arms(session, study, kits)
    one_active = next(k for k in kits if arms[k.id] == "ACTIVEX")
    change_status(session, study, one_active, KitStatus.DAMAGED, actor=PHARM, reason="Dropped")
    # Guaranteed: 2 - 1 (lost, could be either arm) = 1 each: the site may allocate.
    stock = lock_stock(session, study, "S1", is_test=True)
    assert policy.guaranteed_now(session, study, stock, until=TODAY) == {
        "ACTIVEX": 1,
        "PLACEBOX": 1,
    }
    allocate_kit(
        session,
        study,
        site="S1",
        arm="PLACEBOX",
        visit="baseline",
        actor=INV,
        participant_id=_participant(session, study, "S1", 0).id,
        today=TODAY,
    )
    # After one allocation the guaranteed stock of some arm is below one: closed for both,
    # although one kit of the other product still sits there.
    for n, arm in enumerate(ARMS, start=10):
        participant = _participant(session, study, "S1", n)
        with pytest.raises(SupplyUnavailable):
            allocate_kit(session, study, site="S1", arm=arm, participant_id=participant.id,
                         visit="baseline", actor=INV, today=TODAY)  # fmt: skip


def test_draining_one_participants_arm_closes_the_site_for_everyone(
    session: Session, study: Study
) -> None:
    """The attack of the issue: report one participant's kit damaged again and again; the
    site closes for every participant at once, never for that arm only."""
    generate_kits(session, study, count=12, actor=ADMIN, site="S1")
    victim = _participant(session, study, "S1", 0)
    allocate_kit(session, study, site="S1", arm="ACTIVEX", participant_id=victim.id,
                 visit="baseline", actor=INV, today=TODAY)  # fmt: skip
    replaced = 0
    while True:
        held = session.scalars(
            select(Dispensation).where(Dispensation.participant_id == victim.id,
                                       Dispensation.status == "allocated")
        ).one()  # fmt: skip
        stock = lock_stock(session, study, "S1", is_test=True)
        open_now = min(policy.guaranteed_now(session, study, stock, until=TODAY).values()) >= 1
        actual = _actual_stock(session, study, "S1")
        if not open_now:
            break
        assert min(actual.values()) >= 1  # open implies a kit of every arm is really there
        replace_kit(session, study, dispensation=held, reason="Damaged again", actor=PHARM,
                    today=TODAY)  # fmt: skip
        replaced += 1
    assert replaced >= 1
    # Closed: a participant of either arm is refused, with PLACEBOX kits still on the shelf.
    assert _actual_stock(session, study, "S1")["PLACEBOX"] >= 1
    for n, arm in enumerate(ARMS, start=1):
        with pytest.raises(SupplyUnavailable):
            allocate_kit(session, study, site="S1", arm=arm, visit="baseline", actor=INV,
                         participant_id=_participant(session, study, "S1", n).id,
                         today=TODAY)  # fmt: skip


# --- resupply -------------------------------------------------------------------------------


def test_an_empty_site_gets_a_balanced_shipment_up_to_the_resupply_level(
    session: Session, study: Study
) -> None:
    generate_kits(session, study, count=40, actor=ADMIN)
    shipment = policy.check_site(session, study, site="S1", today=TODAY)
    assert shipment is not None and shipment.origin == "resupply"
    assert _arm_counts(session, study, shipment) == {"ACTIVEX": 6, "PLACEBOX": 6}
    # The proposal counts as coming: no second proposal while it is on its way.
    assert policy.check_site(session, study, site="S1", today=TODAY) is None


def test_shipments_come_in_whole_units_whatever_the_arms_used(
    session: Session, study: Study
) -> None:
    generate_kits(session, study, count=80, actor=ADMIN)
    first = policy.check_site(session, study, site="S1", today=TODAY)
    assert first is not None
    _deliver(session, study, first)
    # Blocks AABB, BA, AB: the rule fires on the count of participants, not on the arms.
    for n, arm in enumerate("AABBBAAB"):
        allocate_kit(session, study, site="S1", arm=f"{'ACTIVEX' if arm == 'A' else 'PLACEBOX'}",
                     visit="baseline", actor=INV,
                     participant_id=_participant(session, study, "S1", n).id,
                     today=TODAY)  # fmt: skip
        if shipments.list_shipments(session, study, statuses=[PROPOSED]):
            break
    assert n == 5  # worst case of one arm among 6 participants is 4: guaranteed 6 - 4 = 2
    (proposal,) = shipments.list_shipments(session, study, statuses=[PROPOSED])
    counts = _arm_counts(session, study, proposal)
    assert counts["ACTIVEX"] == counts["PLACEBOX"]  # fixed composition, never one-for-one


def test_a_depot_short_of_one_arm_ships_whole_units_only_and_alerts_the_unblinded(
    session: Session, study: Study
) -> None:
    from tests.conftest import make_user

    make_user(session, "stat1", Role.STATISTICIAN, email="stat@example.org")
    make_user(session, "pharm1", Role.PHARMACIST, ("S1",), email="pharm1@example.org")
    make_user(session, "pharm2", Role.PHARMACIST, ("S2",), email="pharm2@example.org")
    make_user(session, "admin1", Role.ADMIN, email="admin@example.org")
    generate_kits(session, study, count=2, actor=ADMIN, arm="ACTIVEX")
    generate_kits(session, study, count=30, actor=ADMIN, arm="PLACEBOX")
    shipment = policy.check_site(session, study, site="S1", today=TODAY)
    assert shipment is not None and shipment.depot_short
    assert _arm_counts(session, study, shipment) == {"ACTIVEX": 2, "PLACEBOX": 2}
    from randomizer.models import Notification

    def alerts() -> list[Notification]:
        return list(session.scalars(select(Notification).order_by(Notification.id)))

    # Depot short; and the empty site cannot allocate until the shipment arrives.
    short, closed = alerts()
    assert "Depot short" in short.subject and "cannot allocate" in closed.subject
    assert short.recipients == closed.recipients == ["pharm1@example.org", "stat@example.org"]
    for alert in (short, closed):
        assert not any(t in alert.subject + alert.body for t in (*ARMS, "Active product X"))
    # Alerted once, not again at the next check.
    policy.check_site(session, study, site="S1", today=TODAY)
    assert len(alerts()) == 2


def test_site_batches_come_in_whole_units_and_one_product_batches_are_refused_bad_arms(
    session: Session, study: Study
) -> None:
    with pytest.raises(InvalidInput) as odd:
        generate_kits(session, study, count=5, actor=ADMIN, site="S1")
    assert odd.value.field == "count"
    with pytest.raises(InvalidInput) as arm:
        generate_kits(session, study, count=5, actor=ADMIN, arm="NOPE")
    assert arm.value.field == "arm" and "NOPE" in arm.value.message
    assert session.scalars(select(Kit)).all() == []


def test_kits_expiring_too_soon_do_not_count_as_stock(session: Session, study: Study) -> None:
    generate_kits(session, study, count=12, actor=ADMIN, site="S1",
                  expiry=TODAY - dt.timedelta(days=1))  # fmt: skip
    generate_kits(session, study, count=40, actor=ADMIN, expiry=dt.date(2030, 1, 1))
    shipment = policy.check_site(session, study, site="S1", today=TODAY)
    assert shipment is not None and _arm_counts(session, study, shipment) == {
        "ACTIVEX": 6, "PLACEBOX": 6}  # fmt: skip


def test_the_depot_row_serialises_picks(session: Session, study: Study) -> None:
    generate_kits(session, study, count=12, actor=ADMIN)
    first = policy.check_site(session, study, site="S1", today=TODAY)
    second = policy.check_site(session, study, site="S2", today=TODAY)
    assert first is not None and second is None  # the depot held one site's worth
    depot = lock_stock(session, study, DEPOT, is_test=True)
    assert depot.index.available == 0


# --- the simulation -------------------------------------------------------------------------


@dataclass
class Figures:
    """What one simulated trial produced."""

    #: What masked staff saw, per site: (event, enrolled so far, kits or 0), in order.
    seen: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    attempts: int = 0
    refused: int = 0
    #: Steps at which the gate was open at a site while an arm had no kit (must be none).
    stockouts_while_open: int = 0
    replacements: int = 0


Assignment = Callable[[str, int], str]  # (site, k-th participant at that site) -> arm


def _simulate(
    session: Session,
    study: Study,
    sites: list[str],
    assign: Assignment,
    damage: set[int],
    lead: int = 2,
) -> Figures:
    """Enrol in the order ``sites``; shipments are dispatched at once and received ``lead``
    enrolments later at that site; participants whose index is in ``damage`` report their
    kit damaged once. A refused randomization is retried at that site's next turn."""
    generate_kits(session, study, count=900, actor=ADMIN, expiry=dt.date(2031, 1, 1))
    figures = Figures(seen={s: [] for s in ("S1", "S2")})
    seen: dict[str, int] = {"S1": 0, "S2": 0}
    turns: dict[str, int] = {"S1": 0, "S2": 0}  # the clock of shipments: enrolment turns
    waiting: dict[str, list[Participant]] = {"S1": [], "S2": []}
    sent_at: dict[int, int] = {}

    def ship(site: str, k: int, *, receive_now: bool = False) -> None:
        mine = frozenset({site})
        for shipment in shipments.list_shipments(session, study, sites=mine, statuses=[PROPOSED]):
            size = len(shipments.shipment_lines(session, shipment))
            figures.seen[site].append(("proposed", k, size))
            shipments.dispatch(session, study, shipment=shipment, actor=ADMIN)
            sent_at[shipment.id] = k
        for shipment in shipments.list_shipments(session, study, sites=mine, statuses=[IN_TRANSIT]):
            if receive_now or sent_at[shipment.id] + lead <= k:
                codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
                shipments.receive_kits(session, study, shipment=shipment, codes=codes,
                                       outcome="received", actor=PHARM)  # fmt: skip
                policy.finish_receipt(session, study, shipment=shipment, actor=PHARM,
                                      today=TODAY)  # fmt: skip
                figures.seen[site].append(("received", k, len(codes)))

    def check_open(site: str) -> None:
        stock = lock_stock(session, study, site, is_test=True)
        if min(policy.guaranteed_now(session, study, stock, until=TODAY).values()) >= 1:
            figures.stockouts_while_open += min(_actual_stock(session, study, site).values()) < 1

    for site in ("S1", "S2"):
        policy.check_site(session, study, site=site, today=TODAY)
        ship(site, 0, receive_now=True)
    for n, site in enumerate(sites):
        turns[site] += 1
        waiting[site].append(_participant(session, study, site, n))
        while waiting[site]:
            participant = waiting[site][0]
            figures.attempts += 1
            try:
                with session.begin_nested():
                    allocate_kit(session, study, site=site, arm=assign(site, seen[site]),
                                 visit="baseline", participant_id=participant.id, actor=INV,
                                 today=TODAY)  # fmt: skip
            except SupplyUnavailable:
                figures.refused += 1
                figures.seen[site].append(("refused", seen[site], 0))
                break
            waiting[site].pop(0)
            if n in damage:
                held = session.scalars(select(Dispensation).where(
                    Dispensation.participant_id == participant.id)).one()  # fmt: skip
                try:
                    with session.begin_nested():
                        replace_kit(session, study, dispensation=held, reason="Damaged",
                                    actor=PHARM, today=TODAY)  # fmt: skip
                    figures.replacements += 1
                    figures.seen[site].append(("replaced", seen[site], 0))
                except SupplyUnavailable:
                    figures.seen[site].append(("replace refused", seen[site], 0))
            seen[site] += 1
            check_open(site)
        ship(site, turns[site])
        check_open(site)
    return figures


def _block_list(count: int) -> list[str]:
    """A permuted-block arm sequence (blocks of 2 and 4), as an allocation list makes."""
    out: list[str] = []
    while len(out) < count + 4:
        block = list(ARMS) * (1 + secrets.randbelow(2))
        for i in range(len(block) - 1, 0, -1):
            j = secrets.randbelow(i + 1)
            block[i], block[j] = block[j], block[i]
        out += block
    return out


def test_200_participants_never_meet_a_stockout_and_shipments_never_tell_arms(
    session: Session,
) -> None:
    """200 participants across two sites with the demo's levels (trigger 2, resupply 6,
    blocks of 2 and 4), automatic resupply received two enrolments after dispatch, and
    one participant in ten reporting a damaged kit.

    1. While a site's gate is open, every arm really has a kit there (no stockout), in
       every run.
    2. Every assignment of the family yields exactly the same events seen by each site
       (proposals with their sizes, receipts, refusals, replacements), and for every pair
       of participants some assignment of the family gives them different arms: what a
       site sees is also produced by an assignment in which any two participants differ.
       The family holds real permuted-block lists and valid lists of blocks of 2 built
       from the bits of the block index, with and without a flip at the second site.
    The figures are printed.
    """
    rng = secrets.SystemRandom()
    sites = [rng.choice(["S1", "S2"]) for _ in range(200)]
    damage = {n for n in range(200) if n % 10 == 7}
    per_site = {s: sites.count(s) for s in ("S1", "S2")}
    bits = max(1, (max(per_site.values()) // 2).bit_length())

    def by_bit(b: int, flip_s2: int = 0) -> Assignment:
        return lambda site, k: ARMS[((k // 2) >> b & 1) ^ (k % 2) ^ (flip_s2 * (site == "S2"))]

    lists = {s: _block_list(per_site[s]) for s in ("S1", "S2")}
    family: dict[str, Assignment] = {
        "random block lists": lambda site, k: lists[site][k],
        "alternating": lambda site, k: ARMS[k % 2],
        "alternating, S2 flipped": lambda site, k: ARMS[(k + (site == "S2")) % 2],
        **{f"bit {b}": by_bit(b) for b in range(bits)},
    }
    runs: dict[str, Figures] = {}
    for n, (name, assign) in enumerate(family.items()):
        study = make_study(session, **{'code = "TST"': f'code = "SIM{n}"'})
        runs[name] = _simulate(session, study, sites, assign, damage)
        session.commit()
    reference = runs["random block lists"]
    print(
        f"\nsupply simulation (200 participants, levels 2/6, blocks 2 and 4): "
        f"{reference.attempts} randomization attempts, {reference.refused} refused while a "
        f"site was closed ({reference.refused / reference.attempts:.1%}), "
        f"{reference.replacements} replacements, "
        f"{sum(e[0] == 'proposed' for s in reference.seen.values() for e in s)} shipments, "
        f"stockouts while open: {sum(r.stockouts_while_open for r in runs.values())} "
        f"over {len(runs)} runs"
    )
    assert all(r.stockouts_while_open == 0 for r in runs.values())
    assert sum(e[0] == "proposed" for s in reference.seen.values() for e in s) > 10
    for name, figures in runs.items():
        assert figures.seen == reference.seen, f"the events seen differ under {name!r}"
    index = []
    counters = {"S1": 0, "S2": 0}
    for site in sites:
        index.append((site, counters[site]))
        counters[site] += 1
    for i in range(len(index)):
        for j in range(i + 1, len(index)):
            assert any(a(*index[i]) != a(*index[j]) for a in family.values()), (i, j)


def test_slow_shipments_close_sites_for_everyone_but_never_leave_an_arm_empty(
    session: Session,
) -> None:
    """The same 200 participants with shipments taking eight enrolments to arrive: sites
    close (and reopen), and still no arm runs out while a site is open. Prints the figures."""
    rng = secrets.SystemRandom()
    sites = [rng.choice(["S1", "S2"]) for _ in range(200)]
    lists = {s: _block_list(sites.count(s)) for s in ("S1", "S2")}
    study = make_study(session, **{'code = "TST"': 'code = "SLOW"'})
    figures = _simulate(session, study, sites, lambda site, k: lists[site][k],
                        {n for n in range(200) if n % 10 == 7}, lead=8)  # fmt: skip
    print(
        f"\nsupply simulation, shipments arriving 8 enrolments after dispatch: "
        f"{figures.attempts} attempts, {figures.refused} refused while closed "
        f"({figures.refused / figures.attempts:.1%}), stockouts while open: "
        f"{figures.stockouts_while_open}"
    )
    assert figures.stockouts_while_open == 0
    assert figures.refused > 0  # the scenario does close sites
