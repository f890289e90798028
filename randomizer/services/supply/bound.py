"""The blind supply bound: the fewest kits of an arm a site can hold, from masked facts only.

Pure arithmetic, no database. For one site, one arm *a* with share ``r_a / R`` of the
ratio, and a date ``until`` by which a kit must still be in date, every term below is
known without knowing any participant's arm:

* ``received_a`` — kits of arm *a* ever sent to the site that are in date on ``until``.
  Shipments are made of whole *units* (one kit per ratio part), so this follows from the
  shipment sizes and expiry dates, plus the arm of any one-product batch.
* ``worst_consumed_a`` — the most kits of arm *a* the site's participants can have taken.
  Under minimization (or strata shared between sites) any participant may have arm *a*:
  every kit the site's participants hold. With stratified permuted blocks, in the first
  ``n`` slots of a stratum at most ``max_arm_slots(n)`` carry arm *a* (whole blocks hold
  the exact ratio; only the last, partial block can lean one way). The participants
  holding most kits (later visits, replacements) are assumed to be exactly those: per
  stratum, the sum of the ``max_arm_slots(n)`` largest kit counts.
* ``lost`` — kits sent to the site and in date on ``until`` that are neither available,
  in transit nor allocated (damaged, lost, quarantined, returned): all assumed of arm *a*.
* ``in_transit_a`` — per shipment on its way, at most ``min(kits still in transit, the
  shipment's units × r_a)``.

Then ``available_a(until) ≥ received_a − worst_consumed_a − lost − in_transit_a``, the
*guaranteed* stock of arm *a*: each true count is below its worst case, term by term (the
kits consumed from batches that expire before ``until`` only make the true count larger).
How many kits actually expired never enters: it depends on which arms drew from the
expiring batch. A site takes an allocation only while the guaranteed stock of every arm is
at least one, so no allocation can fail for the arm it needs, and open or closed is the
same whatever the arms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache


@lru_cache(maxsize=64)
def _whole_block_totals(block_sizes: tuple[int, ...], limit: int) -> frozenset[int]:
    """Every total up to ``limit`` that a run of whole blocks can have."""
    reachable = bytearray(limit + 1)
    reachable[0] = 1
    for total in range(1, limit + 1):
        reachable[total] = any(size <= total and reachable[total - size] for size in block_sizes)
    return frozenset(i for i, ok in enumerate(reachable) if ok)


def max_arm_slots(n: int, share: Fraction, block_sizes: Sequence[int]) -> int:
    """Most slots of an arm with this ``share`` among the first ``n`` slots of a stratum
    (see ``_max_arm_slots``)."""
    return _max_arm_slots(n, share, tuple(sorted(set(block_sizes))))


@lru_cache(maxsize=8192)
def _max_arm_slots(n: int, share: Fraction, sizes: tuple[int, ...]) -> int:
    """Most slots of an arm with this ``share`` among the first ``n`` slots of a stratum.

    The first ``n`` slots are whole blocks (exactly ``share`` of each) and ``j`` slots of
    the next block of size ``m`` (``0 ≤ j < m``), which hold at most ``min(j, share·m)``
    of the arm. The largest such total over every possible ``m`` and ``j``.
    """
    if n <= 0:
        return 0
    totals = _whole_block_totals(sizes, n)
    best: Fraction | None = None
    for m in sizes:
        for j in range(min(m, n + 1)):
            if n - j in totals:
                value = (n - j) * share + min(Fraction(j), share * m)
                best = value if best is None or value > best else best
    return n if best is None else min(n, int(best))


def worst_consumed(holdings: Mapping[str, Mapping[int, int]], cap: Mapping[str, int]) -> int:
    """The most kits that ``cap[stratum]`` participants of each stratum can hold.

    ``holdings[stratum]`` counts participants by the number of kits they hold.
    """
    total = 0
    for stratum, counts in holdings.items():
        left = cap.get(stratum, 0)
        for kits in sorted(counts, reverse=True):
            take = min(left, counts[kits])
            total += take * kits
            left -= take
            if not left:
                break
    return total


@dataclass(frozen=True)
class SiteFacts:
    """What the bound needs about a site for one ``until`` date (module docstring)."""

    #: Kits of each arm ever sent to the site, in date on ``until`` (sealed in the index).
    received: Mapping[str, int]
    #: Kits in date on ``until`` that are neither available, in transit nor allocated.
    lost: int
    #: Per stratum, participants by the number of kits they hold.
    holdings: Mapping[str, Mapping[int, int]]
    #: (kits still in transit, units) of each shipment on its way to the site.
    in_transit: Sequence[tuple[int, int]]


def guaranteed_stock(
    facts: SiteFacts,
    *,
    ratios: Mapping[str, int],
    block_sizes: Sequence[int] | None,
    extra_units: int = 0,
    transit_arrived: bool = False,
) -> dict[str, int]:
    """The guaranteed available kits of each arm (module docstring).

    ``block_sizes`` None means the site's strata are not its own (the list is not
    stratified by site), so any of its participants may share one arm. ``extra_units``
    adds shipments not yet sent; ``transit_arrived`` counts kits in transit as arrived
    (the projection the resupply rule uses).
    """
    ratio_sum = sum(ratios.values())
    out: dict[str, int] = {}
    for arm, ratio in ratios.items():
        share = Fraction(ratio, ratio_sum)
        cap = {
            stratum: _participants(counts)
            if block_sizes is None
            else max_arm_slots(_participants(counts), share, block_sizes)
            for stratum, counts in facts.holdings.items()
        }
        transit = 0 if transit_arrived else sum(min(t, u * ratio) for t, u in facts.in_transit)
        out[arm] = (
            facts.received.get(arm, 0) + extra_units * ratio
            - worst_consumed(facts.holdings, cap) - facts.lost - transit
        )  # fmt: skip
    return out


def _participants(counts: Mapping[int, int]) -> int:
    return sum(n for kits, n in counts.items() if kits > 0)


def units_to_reach(guaranteed: Mapping[str, int], ratios: Mapping[str, int], level: int) -> int:
    """Fewest whole units that bring every arm's guaranteed stock to ``level`` kits per
    ratio part (``level × ratio`` kits of each arm)."""
    return max(
        (max(0, -(-(level * r - guaranteed[arm]) // r)) for arm, r in ratios.items()),
        default=0,
    )


def margin(guaranteed: Mapping[str, int], ratios: Mapping[str, int]) -> int:
    """Guaranteed kits per ratio part of the shortest arm: the levels' unit."""
    return min(guaranteed[arm] // r for arm, r in ratios.items())


def worst_imbalance(
    strata: Iterable[str], ratios: Mapping[str, int], block_sizes: Sequence[int] | None, n: int
) -> dict[str, int]:
    """Per arm, the most slots beyond its share that ``n`` participants per stratum can
    take, summed over ``strata``: the part of the margin the block sizes cost.

    ``block_sizes`` None (minimization, or strata shared between sites): nothing bounds
    the arms, so all ``n`` may take one arm."""
    ratio_sum = sum(ratios.values())
    names = list(strata)
    out = {}
    for arm, ratio in ratios.items():
        share = Fraction(ratio, ratio_sum)
        excess = max(
            (
                (k if block_sizes is None else max_arm_slots(k, share, block_sizes)) - k * share
                for k in range(n + 1)
            ),
            default=Fraction(0),
        )
        out[arm] = int(-(-excess * len(names) // 1))
    return out
