"""The sealed site stock index: packed entries behave like the sorted list they replace."""

from __future__ import annotations

import bisect
import datetime as dt
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from randomizer.services.supply.stock import NO_EXPIRY, KitEntries, StockIndex

ARMS = ("A", "B")
DAY = dt.date(2027, 1, 1)

moves = st.lists(
    st.tuples(st.booleans(), st.sampled_from(ARMS), st.integers(1, 40), st.integers(0, 5)),
    max_size=80,
)


@settings(deadline=None)
@given(moves)
def test_index_matches_a_sorted_list_model_through_adds_removes_and_a_round_trip(ops: list) -> None:
    index = StockIndex(ARMS)
    model: dict[str, list[tuple[int, int]]] = {a: [] for a in ARMS}
    for add, arm, kit_id, days in ops:
        expiry = DAY + dt.timedelta(days=days)
        entry = (expiry.toordinal(), kit_id)
        if add:
            index.add(arm, kit_id, expiry)
            if entry not in model[arm]:
                bisect.insort(model[arm], entry)
        else:
            index.remove(arm, kit_id, expiry)
            if entry in model[arm]:
                model[arm].remove(entry)
    reopened = StockIndex.decode(ARMS, index.encode())
    for arm in ARMS:
        assert list(index.kits[arm]) == model[arm]
        assert list(reopened.kits[arm]) == model[arm]
    assert reopened.available == sum(len(m) for m in model.values())


def test_the_sealed_form_is_the_little_endian_pairs_stored_before() -> None:
    entries = [(DAY.toordinal(), 7), (DAY.toordinal(), 9), (NO_EXPIRY, 3)]
    packed = b"".join(struct.pack("<II", *e) for e in entries)
    assert list(KitEntries.from_bytes(packed)) == entries
    assert KitEntries.from_bytes(packed).to_bytes() == packed


def test_pick_takes_the_earliest_in_date_expiry_and_never_a_skipped_kit() -> None:
    index = StockIndex(ARMS)
    for kit_id, days in [(1, -1), (2, 3), (3, 3), (4, 10)]:
        index.add("A", kit_id, DAY + dt.timedelta(days=days))
    picks = {index.pick("A", DAY) for _ in range(60)}
    assert picks == {2, 3}
    assert index.pick("A", DAY, skip=[2, 3]) == 4
    assert index.pick("A", DAY, skip=[2]) == 3
    assert index.pick("A", DAY, skip=[2, 3, 4]) is None
    assert index.pick("B", DAY) is None


def test_discarding_a_stale_kit_removes_it_whatever_its_expiry() -> None:
    index = StockIndex(ARMS)
    index.add("A", 5, DAY)
    index.add("A", 6, DAY)
    index.add("A", 5, DAY + dt.timedelta(days=2))
    index.kits["A"].discard_kit(5)
    assert list(index.kits["A"]) == [(DAY.toordinal(), 6)]
