"""Kit generation, the kit lifecycle, and the kits CLI (generate, export)."""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit, kitcodes
from randomizer.errors import Conflict, InvalidInput, NotFound
from randomizer.models import AuditEvent, Kit, KitStatus, Study
from randomizer.services.kit_lifecycle import REASON_REQUIRED, TRANSITIONS, change_status
from randomizer.services.kits import (
    export_rows,
    generate_kits,
    get_kit,
    kit_arm,
    open_arms,
    set_status,
    status_totals,
)
from tests import kit_classifiers as kc
from tests.conftest import Runner

ADMIN = audit.Actor("admin1", "admin")


def _events(session: Session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


# --- generation -------------------------------------------------------------------------


def test_generated_kits_have_valid_unique_codes_and_balanced_arms(
    session: Session, study: Study
) -> None:
    kits = generate_kits(session, study, count=101, actor=ADMIN, lot="L1",
                         expiry=dt.date(2030, 1, 1))  # fmt: skip
    assert len({k.code for k in kits}) == 101
    assert all(kitcodes.is_valid(k.code) and k.status is KitStatus.AT_DEPOT for k in kits)
    counts = Counter(open_arms(session, study, kits).values())
    # Blocks of 4 (twice the ratio sum): 25 full blocks and one kit of a shuffled block.
    assert sorted(counts.values()) == [50, 51]
    (event,) = _events(session, "kits.generate")
    assert "ACTIVEX" not in (event.new_values or "") and '"count":101' in (event.new_values or "")


def test_kits_generated_at_a_site_are_available_there(session: Session, study: Study) -> None:
    kits = generate_kits(session, study, count=4, actor=ADMIN, site="S2")
    assert {(k.status, k.site_code) for k in kits} == {(KitStatus.AVAILABLE, "S2")}


@pytest.mark.parametrize(
    ("options", "field"),
    [({"count": 0}, "count"), ({"count": 100_001}, "count"),
     ({"count": 2, "site": "S9"}, "site"), ({"count": 2, "lot": " "}, "lot")],
)  # fmt: skip
def test_bad_generation_requests_are_refused(
    session: Session, study: Study, options: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        generate_kits(session, study, actor=ADMIN, **options)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert session.scalar(select(Kit.id)) is None


def test_a_classifier_does_no_better_than_chance_on_a_10000_kit_list(
    session: Session, study: Study
) -> None:
    """Character frequencies, characters by position, the code's numeric value and its
    place in the exported list (neighbours and aligned groups of 4) are each used to
    predict the arm of half the kits from the other half; see ``tests/kit_classifiers.py``
    for the bound (exceeding chance by 0.04 has probability about 1e-7 without a leak)."""
    generate_kits(session, study, count=10_000, actor=ADMIN)
    exported = export_rows(session, study, unblinded=True, actor=ADMIN)
    rows = kc.rows_of([(r["kit_code"], r["arm"]) for r in exported])
    assert [r.raw for r in rows] == [kitcodes.normalise(r["kit_code"]) for r in exported]
    for name, (acc, chance) in kc.scores(rows).items():
        assert acc <= chance + kc.MARGIN, f"{name}: accuracy {acc:.4f}, chance {chance:.4f}"


def test_the_classifiers_catch_a_list_balanced_in_blocks_along_code_order() -> None:
    """The same test has the power to see a real leak: arms in blocks of 4 down the list."""
    rng = random.Random(7)
    codes = sorted({kitcodes.new_code() for _ in range(10_000)})
    arms: list[str] = []
    while len(arms) < len(codes):
        block = ["A", "A", "B", "B"]
        rng.shuffle(block)
        arms += block
    scores = kc.scores(kc.rows_of(list(zip(codes, arms, strict=False))))
    acc, chance = scores["list block mates"]
    assert acc > chance + kc.MARGIN


# --- lifecycle --------------------------------------------------------------------------


IMPOSSIBLE = [(a, b) for a in KitStatus for b in KitStatus if b not in TRANSITIONS[a]]


@pytest.mark.parametrize(("start", "to"), IMPOSSIBLE[:: max(1, len(IMPOSSIBLE) // 25)])
def test_impossible_transitions_are_refused_and_change_nothing(
    session: Session, study: Study, start: KitStatus, to: KitStatus
) -> None:
    kit = generate_kits(session, study, count=2, actor=ADMIN, site="S1")[0]
    kit.status = start
    session.flush()
    before = len(_events(session, "kit.status"))
    with pytest.raises(Conflict) as refused:
        change_status(session, study, kit, to, actor=ADMIN, reason="because")
    assert kit.code in refused.value.message and "cannot become" in refused.value.message
    assert kit.status is start and len(_events(session, "kit.status")) == before


def test_every_status_is_in_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(KitStatus)
    assert TRANSITIONS[KitStatus.DESTROYED] == frozenset()


@pytest.mark.parametrize("to", sorted(REASON_REQUIRED & TRANSITIONS[KitStatus.AVAILABLE]))
def test_transitions_that_need_a_reason_refuse_without_one(
    session: Session, study: Study, to: KitStatus
) -> None:
    kit = generate_kits(session, study, count=2, actor=ADMIN, site="S1")[0]
    with pytest.raises(InvalidInput):
        change_status(session, study, kit, to, actor=ADMIN, reason="  ")
    change_status(session, study, kit, to, actor=ADMIN, reason="Fell off the shelf")
    (event,) = _events(session, "kit.status")
    assert (event.actor, event.reason, event.object_id) == ("admin1", "Fell off the shelf",
                                                             kit.code)  # fmt: skip
    assert kit.status is to


def test_available_requires_a_site_and_at_depot_the_depot(session: Session, study: Study) -> None:
    (depot_kit,) = generate_kits(session, study, count=1, actor=ADMIN)
    change_status(session, study, depot_kit, KitStatus.QUARANTINED, actor=ADMIN, reason="heat")
    with pytest.raises(Conflict):
        change_status(session, study, depot_kit, KitStatus.AVAILABLE, actor=ADMIN, reason="ok")
    change_status(session, study, depot_kit, KitStatus.AT_DEPOT, actor=ADMIN, reason="ok")


def test_set_status_limits_to_own_sites_and_reports_others_as_unknown(
    session: Session, study: Study
) -> None:
    kit = generate_kits(session, study, count=2, actor=ADMIN, site="S2")[0]
    with pytest.raises(NotFound) as refused:
        set_status(session, study, code=kit.code, to=KitStatus.DAMAGED, actor=ADMIN,
                   reason="x", sites=frozenset({"S1"}))  # fmt: skip
    assert kit.status is KitStatus.AVAILABLE and refused.value.field == "kit_code"


def test_a_mistyped_code_is_named_as_mistyped(session: Session, study: Study) -> None:
    (kit,) = generate_kits(session, study, count=1, actor=ADMIN)
    typo = kit.code[:-1] + next(c for c in kitcodes.ALPHABET if c != kit.code[-1])
    with pytest.raises(NotFound) as refused:
        get_kit(session, study, typo)
    assert "mistyped" in refused.value.message
    assert get_kit(session, study, kit.code.lower().replace("-", "")) is kit


def test_status_totals_count_by_location_and_status(session: Session, study: Study) -> None:
    generate_kits(session, study, count=6, actor=ADMIN)
    generate_kits(session, study, count=4, actor=ADMIN, site="S1")
    assert status_totals(session, study) == {
        None: {KitStatus.AT_DEPOT: 6},
        "S1": {KitStatus.AVAILABLE: 4},
    }


def test_masked_views_show_a_sites_unbound_kits_only_as_at_site(
    session: Session, study: Study
) -> None:
    from randomizer.services.blinded_kits import AT_SITE, blinded_kits, blinded_totals
    from randomizer.services.kit_lifecycle import expire_kits

    generate_kits(session, study, count=2, actor=ADMIN, site="S1", lot="L1",
                  expiry=dt.date(2026, 1, 31))  # fmt: skip
    generate_kits(session, study, count=2, actor=ADMIN, site="S1", expiry=dt.date(2030, 1, 1))
    generate_kits(session, study, count=2, actor=ADMIN)
    expire_kits(session, study, today=dt.date(2026, 2, 1), actor=ADMIN)
    seen = blinded_kits(session, study)
    assert {(k.status, k.lot, k.expiry) for k in seen if k.site_code} == {(AT_SITE, None, None)}
    assert blinded_totals(session, study) == {None: {"at_depot": 2}, "S1": {AT_SITE: 4}}


# --- CLI --------------------------------------------------------------------------------


def test_cli_generates_a_one_product_batch_and_prints_no_arm(
    runner: Runner, session: Session, study: Study
) -> None:
    result = runner.invoke("kits", "generate", "TST", "--count", "5", "--arm", "ACTIVEX")
    assert result.exit_code == 0, result.output
    assert "ACTIVEX" not in result.output and "Active" not in result.output
    kits = session.scalars(select(Kit)).all()
    assert len(kits) == 5 and {kit_arm(session, study, k) for k in kits} == {"ACTIVEX"}
    (event,) = _events(session, "kits.generate")
    assert "ACTIVEX" not in (event.new_values or "") and '"one_product":true' in event.new_values


def test_cli_generates_kits(runner: Runner, session: Session, study: Study) -> None:
    result = runner.invoke("kits", "generate", "TST", "--count", "12", "--site", "S1",
                           "--lot", "LOT-7", "--expiry", "2031-06-30")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "created 12 kits" in result.output
    kits = session.scalars(select(Kit)).all()
    assert len(kits) == 12
    assert {(k.site_code, k.lot, k.expiry) for k in kits} == {("S1", "LOT-7", dt.date(2031, 6, 30))}


@pytest.mark.parametrize(
    ("args", "message"),
    [(["NOPE", "--count", "2"], "No study"), (["TST", "--count", "0"], "count"),
     (["TST", "--count", "2", "--site", "S9"], "site"),
     (["TST", "--count", "2", "--expiry", "31/12/2030"], "expiry"),
     (["TST", "--count", "2", "--arm", "NOPE"], "arm: Study TST has no arm 'NOPE'"),
     (["TST", "--count", "3", "--site", "S1"], "count: Kits made at a site come in whole units")],
)  # fmt: skip
def test_cli_generate_refuses_bad_input(
    runner: Runner, session: Session, study: Study, args: list[str], message: str
) -> None:
    result = runner.invoke("kits", "generate", *args)
    assert result.exit_code != 0 and message in result.output
    assert session.scalars(select(Kit)).all() == []


def test_cli_export_writes_the_blinded_kit_list(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("kits", "generate", "TST", "--count", "8")
    out = tmp_path / "kits.csv"
    result = runner.invoke("kits", "export", "TST", "--out", str(out))
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["kit_code", "status", "site", "lot", "expiry"]
        rows = list(reader)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"at_depot"}
    text = out.read_text(encoding="utf-8")
    assert "ACTIVEX" not in text and "PLACEBOX" not in text
    assert _events(session, "kits.export_unblinded") == []


def test_cli_unblinded_export_adds_the_arm_and_is_audited(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("kits", "generate", "TST", "--count", "8")
    out = tmp_path / "kits.csv"
    result = runner.invoke("kits", "export", "TST", "--out", str(out), "--unblinded")
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["kit_code", "status", "site", "lot", "expiry", "arm"]
        assert Counter(r["arm"] for r in reader) == {"ACTIVEX": 4, "PLACEBOX": 4}
    session.expire_all()
    (event,) = _events(session, "kits.export_unblinded")
    assert '"count":8' in (event.new_values or "") and "ACTIVEX" not in (event.new_values or "")


def test_cli_export_to_an_unwritable_place_fails_and_records_nothing(
    runner: Runner, session: Session, study: Study, tmp_path: Path
) -> None:
    runner.invoke("kits", "generate", "TST", "--count", "2")
    out = tmp_path / "missing-dir" / "kits.csv"
    result = runner.invoke("kits", "export", "TST", "--out", str(out), "--unblinded")
    assert result.exit_code != 0 and "cannot be written" in result.output
    session.expire_all()
    assert _events(session, "kits.export_unblinded") == []


def test_expired_kits_are_marked_and_audited(session: Session, study: Study) -> None:
    from randomizer.services.kit_lifecycle import expire_kits

    old = generate_kits(session, study, count=4, actor=ADMIN, site="S1",
                        expiry=dt.date(2026, 1, 31))  # fmt: skip
    depot = generate_kits(session, study, count=2, actor=ADMIN, expiry=dt.date(2026, 1, 30))
    fresh = generate_kits(session, study, count=2, actor=ADMIN, expiry=dt.date(2026, 2, 1))
    codes = expire_kits(session, study, today=dt.date(2026, 2, 1), actor=ADMIN)
    assert sorted(codes) == sorted(k.code for k in old + depot)
    assert {k.status for k in old + depot} == {KitStatus.EXPIRED}
    assert {k.status for k in fresh} == {KitStatus.AT_DEPOT}
    # Depot kits one event each; a site's batch one event, its codes sealed.
    assert len(_events(session, "kit.status")) == 2
    (batch,) = _events(session, "kits.expire")
    assert batch.object_id == "S1/2026-01-31"
    assert not any(k.code in (batch.new_values or "") for k in old)


def test_a_site_batch_expiry_event_has_one_size_whatever_was_left(
    session: Session, study: Study
) -> None:
    from randomizer.services.kit_lifecycle import expire_kits

    sizes = []
    for n, left in enumerate((4, 1)):
        site = ("S1", "S2")[n]
        kits = generate_kits(session, study, count=4, actor=ADMIN, site=site,
                             expiry=dt.date(2026, 1, 31))  # fmt: skip
        for kit in kits[left:]:
            set_status(session, study, code=kit.code, to=KitStatus.QUARANTINED, actor=ADMIN,
                       reason="Held back")  # fmt: skip
            change_status(session, study, kit, KitStatus.DESTROYED, actor=ADMIN, reason="x")
        expire_kits(session, study, today=dt.date(2026, 2, 1), actor=ADMIN)
        sizes.append(len(_events(session, "kits.expire")[-1].new_values or ""))
    assert sizes[0] == sizes[1]


def test_cli_resupply_proposes_shipments_for_empty_sites(
    runner: Runner, session: Session, study: Study
) -> None:
    runner.invoke("kits", "generate", "TST", "--count", "40")
    result = runner.invoke("kits", "resupply", "TST")
    assert result.exit_code == 0, result.output
    assert "proposed for site S1" in result.output and "proposed for site S2" in result.output
    again = runner.invoke("kits", "resupply", "TST")
    assert "no site needs a shipment" in again.output


def test_cli_expire_reports_the_kits(runner: Runner, study: Study) -> None:
    runner.invoke("kits", "generate", "TST", "--count", "2", "--expiry", "2020-01-01")
    result = runner.invoke("kits", "expire", "TST")
    assert result.exit_code == 0 and "2 kit(s) marked expired" in result.output
