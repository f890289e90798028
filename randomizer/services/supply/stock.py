"""Each site's kit stock: a locked row with masked figures and one sealed per-arm index.

Every move of a kit into or out of a site's available stock goes through this module in
the transaction that moves it, under the site's row lock (``SELECT … FOR UPDATE``): that
row is what allocations at one site share, so other sites and other studies never wait
on it. The sealed index lists, per arm, the available kits (id and expiry) and how many
kits of that arm were ever sent to the site; drawing a kit opens that one value instead of
every kit at the site. Its length depends on the total stock only (fixed-width entries),
and it is bound to its row by associated data like every sealed value.
"""

from __future__ import annotations

import bisect
import datetime as dt
import secrets
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from randomizer.crypto import IntegrityFailure
from randomizer.models import Kit, KitStatus, SiteStock, Study
from randomizer.services.keyring import RowSealer, data_key, sealer_by_key_id
from randomizer.services.studies import definition_of

#: The site code of the central depot's row (no site may be called so: codes are short
#: identifiers in the study file; this one has a character they cannot have).
DEPOT = "*depot*"
KIT_PURPOSE = "kits"
NO_EXPIRY = 0xFFFFFFFF
_HEAD = struct.Struct("<II")
_ENTRY = struct.Struct("<II")


class KitEntries:
    """One arm's available kits as sorted (expiry ordinal, kit id) pairs, packed in one
    array of 32-bit words: opening, sealing, adding and removing cost a copy of the
    array (C speed), not a Python object per kit, so a draw stays flat in the stock."""

    __slots__ = ("_words",)

    def __init__(self, words: array[int] | None = None) -> None:
        self._words = words if words is not None else array("I")

    @classmethod
    def from_bytes(cls, data: bytes) -> KitEntries:
        words = array("I")
        words.frombytes(data)
        if sys.byteorder != "little":  # the sealed form is little-endian
            words.byteswap()
        return cls(words)

    def to_bytes(self) -> bytes:
        if sys.byteorder == "little":
            return self._words.tobytes()
        swapped = array("I", self._words)
        swapped.byteswap()
        return swapped.tobytes()

    def __len__(self) -> int:
        return len(self._words) // 2

    def __getitem__(self, position: int) -> tuple[int, int]:
        if not 0 <= position < len(self):
            raise IndexError(position)
        return self._words[2 * position], self._words[2 * position + 1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._words[0::2], self._words[1::2], strict=True)

    def find(self, entry: tuple[int, int]) -> int:
        """Where ``entry`` is or would go (bisect left)."""
        return bisect.bisect_left(self, entry)

    def insert(self, position: int, entry: tuple[int, int]) -> None:
        self._words[2 * position : 2 * position] = array("I", entry)

    def delete(self, position: int) -> None:
        del self._words[2 * position : 2 * position + 2]

    def discard_kit(self, kit_id: int) -> None:
        """Drop every entry of one kit, whatever its expiry (repairs a stale index)."""
        ids = self._words[1::2]
        while kit_id in ids:
            self.delete(ids.index(kit_id))
            ids = self._words[1::2]


@dataclass
class StockIndex:
    """Per arm: the available kits as sorted (expiry ordinal, kit id), and the kits ever sent
    to the site by expiry ordinal."""

    arms: tuple[str, ...]
    received: dict[str, dict[int, int]] = field(default_factory=dict)
    kits: dict[str, KitEntries] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for arm in self.arms:
            self.received.setdefault(arm, {})
            self.kits.setdefault(arm, KitEntries())

    def add(self, arm: str, kit_id: int, expiry: dt.date | None) -> None:
        entry = (_ordinal(expiry), kit_id)
        entries = self._of(arm)
        position = entries.find(entry)
        if position == len(entries) or entries[position] != entry:
            entries.insert(position, entry)

    def remove(self, arm: str, kit_id: int, expiry: dt.date | None) -> None:
        entries = self._of(arm)
        entry = (_ordinal(expiry), kit_id)
        position = entries.find(entry)
        if position < len(entries) and entries[position] == entry:
            entries.delete(position)

    def receive(self, arm: str, expiry: dt.date | None) -> None:
        """One kit of ``arm`` sent to the site."""
        classes = self._received_of(arm)
        classes[_ordinal(expiry)] = classes.get(_ordinal(expiry), 0) + 1

    def retire(self, expiry: dt.date) -> int:
        """The kits of this expiry date expired at the site: they no longer count as sent.
        Returns how many of that date had been sent (all arms)."""
        ordinal = expiry.toordinal()
        return sum(self._received_of(arm).pop(ordinal, 0) for arm in self.arms)

    def received_in_date(self, arm: str, until: dt.date) -> int:
        """Kits of ``arm`` ever sent to the site that are in date on ``until``."""
        low = until.toordinal()
        return sum(n for expiry, n in self._received_of(arm).items() if expiry >= low)

    def in_date(self, arm: str, until: dt.date) -> int:
        """Available kits of ``arm`` still in date on ``until``."""
        entries = self._of(arm)
        return len(entries) - bisect.bisect_left(entries, (until.toordinal(), 0))

    @property
    def available(self) -> int:
        return sum(len(e) for e in self.kits.values())

    def pick(self, arm: str, until: dt.date, skip: Iterable[int] = ()) -> int | None:
        """A kit id of ``arm`` in date on ``until``: the earliest expiry first (so that
        kits expire unused as seldom as possible), at random among equal expiries."""
        skipped = set(skip)
        entries = self._of(arm)
        start = entries.find((until.toordinal(), 0))
        while start < len(entries) and entries[start][1] in skipped:
            start += 1
        if start == len(entries):
            return None
        end = entries.find((entries[start][0] + 1, 0))
        candidates = (
            [p for p in range(start, end) if entries[p][1] not in skipped]
            if skipped
            else range(start, end)
        )
        return entries[candidates[secrets.randbelow(len(candidates))]][1]

    def _of(self, arm: str) -> KitEntries:
        if arm not in self.kits:
            raise IntegrityFailure("the stock index holds no entry for one of the study's arms")
        return self.kits[arm]

    def _received_of(self, arm: str) -> dict[int, int]:
        if arm not in self.received:
            raise IntegrityFailure("the stock index holds no entry for one of the study's arms")
        return self.received[arm]

    def encode(self) -> bytes:
        """Fixed-width: every arm lists every expiry class (zeros too), so the length tells
        the number of classes and of available kits, never how they split by arm."""
        classes = sorted({e for arm in self.arms for e in self.received[arm]})
        parts = [_HEAD.pack(len(classes), sum(len(self.kits[a]) for a in self.arms))]
        parts += [_HEAD.pack(len(self.kits[a]), 0) for a in self.arms]
        parts += [_ENTRY.pack(e, self.received[a].get(e, 0)) for a in self.arms for e in classes]
        parts += [self.kits[a].to_bytes() for a in self.arms]
        return b"".join(parts)

    @classmethod
    def decode(cls, arms: tuple[str, ...], data: bytes) -> StockIndex:
        index = cls(arms)
        try:
            n_classes, total = _HEAD.unpack_from(data, 0)
            offset = _HEAD.size
            counts = []
            for _arm in arms:
                counts.append(_HEAD.unpack_from(data, offset)[0])
                offset += _HEAD.size
            expected = offset + _ENTRY.size * (n_classes * len(arms) + total)
            if sum(counts) != total or len(data) != expected:
                raise IntegrityFailure("the stock index has a malformed length")
            for arm in arms:
                for _ in range(n_classes):
                    expiry, n = _ENTRY.unpack_from(data, offset)
                    offset += _ENTRY.size
                    if n:
                        index.received[arm][expiry] = n
            for arm, count in zip(arms, counts, strict=True):
                end = offset + _ENTRY.size * count
                index.kits[arm] = KitEntries.from_bytes(data[offset:end])
                offset = end
        except struct.error:
            raise IntegrityFailure("the stock index is truncated") from None
        return index


def _ordinal(expiry: dt.date | None) -> int:
    return NO_EXPIRY if expiry is None else expiry.toordinal()


@dataclass
class LockedStock:
    """A site's stock row, locked for this transaction, with its index opened."""

    row: SiteStock
    index: StockIndex
    #: None for a read-only view (``peek_stock``), which is never saved.
    _sealer: RowSealer | None
    #: Figures read from the kit table in this transaction, by date (``policy.site_facts``);
    #: dropped by every kit move that could change them.
    figures: dict[dt.date, Any] = field(default_factory=dict)

    @property
    def sealer(self) -> RowSealer:
        if self._sealer is None:
            raise RuntimeError("a stock row opened for reading is never written")
        return self._sealer

    def save(self) -> None:
        """Seal the index back into the row (the caller's flush writes it)."""
        self.row.index_sealed = self.sealer.seal_bytes(
            "site_stock", _object_id(self.row), self.index.encode()
        )

    def seal_note(self, name: str, data: bytes) -> bytes:
        """Seal a note about this site's stock (e.g. which kits of a batch expired) under
        the kits' key, bound to the site and the note's name."""
        return self.sealer.seal_bytes("site_stock_note", f"{_object_id(self.row)}/{name}", data)

    def open_note(self, name: str, sealed: bytes) -> bytes:
        """Open what ``seal_note`` sealed (unblinded uses only)."""
        return self.sealer.open_bytes("site_stock_note", f"{_object_id(self.row)}/{name}", sealed)

    def holdings(self) -> dict[str, dict[int, int]]:
        return {s: {int(k): n for k, n in c.items()} for s, c in (self.row.holdings or {}).items()}

    def hold(self, stratum: str, before: int) -> None:
        """One participant of ``stratum`` went from ``before`` kits to one more."""
        holdings = self.holdings()
        counts = holdings.setdefault(stratum, {})
        if before:
            counts[before] = counts.get(before, 0) - 1
            if counts[before] <= 0:
                del counts[before]
        counts[before + 1] = counts.get(before + 1, 0) + 1
        self.row.holdings = {s: {str(k): n for k, n in c.items()} for s, c in holdings.items()}


def lock_stock(session: Session, study: Study, site: str, *, is_test: bool) -> LockedStock:
    """Lock (creating on first use) and open a site's (or ``DEPOT``'s) stock row."""
    cache: dict[tuple[int, str, bool], LockedStock] = session.info.setdefault("site_stock", {})
    held = cache.get((study.id, site, is_test))
    if held is not None and held.row in session:
        return held
    row = _lock_row(session, study, site, is_test)
    arms = tuple(a.code for a in definition_of(study).arms)
    if row.data_key_id is None:
        row.data_key_id = data_key(session, study, KIT_PURPOSE).id
    sealer = _sealer(session, study, row.data_key_id)
    if row.index_sealed is None:
        index = StockIndex(arms)
    else:
        plain = sealer.open_bytes("site_stock", _object_id(row), row.index_sealed)
        index = StockIndex.decode(arms, plain)
    locked = LockedStock(row, index, sealer)
    cache[(study.id, site, is_test)] = locked
    return locked


def _object_id(row: SiteStock) -> str:
    return f"{row.site_code}/{'test' if row.is_test else 'live'}"


def _sealer(session: Session, study: Study, key_id: str) -> RowSealer:
    """The kit key's sealer, unwrapped once per session."""
    cache: dict[str, RowSealer] = session.info.setdefault("kit_sealers", {})
    key = f"{study.id}/{key_id}"
    if key not in cache:
        cache[key] = sealer_by_key_id(session, study, key_id)
    return cache[key]


def _lock_row(session: Session, study: Study, site: str, is_test: bool) -> SiteStock:
    query = (
        select(SiteStock)
        .where(SiteStock.study_id == study.id, SiteStock.site_code == site,
               SiteStock.is_test == is_test)
        .with_for_update()
        .execution_options(populate_existing=True)
    )  # fmt: skip
    row = session.scalar(query)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            session.add(SiteStock(study_id=study.id, site_code=site, is_test=is_test,
                                  credited=0, consumed=0, holdings={}))  # fmt: skip
    except IntegrityError:  # made concurrently: lock the one that won
        pass
    return session.scalars(query).one()


def kit_arms(session: Session, study: Study, kits: Iterable[Kit]) -> dict[int, str]:
    """Open these kits' arms (moves into or out of stock; never shown to anyone)."""
    return {
        kit.id: _sealer(session, study, kit.data_key_id).open("kit", kit.code, kit.arm_sealed)
        for kit in kits
    }


def credit(session: Session, study: Study, site: str, kits: Iterable[Kit]) -> None:
    """Kits sent to a site (dispatched to it, or made there): counted as received by arm."""
    kits = list(kits)
    if not kits:
        return
    forget_figures(session)
    by_mode: dict[bool, list[Kit]] = {}
    for kit in kits:
        by_mode.setdefault(kit.is_test, []).append(kit)
    for is_test, group in by_mode.items():
        stock = lock_stock(session, study, site, is_test=is_test)
        arms = kit_arms(session, study, group)
        for kit in group:
            stock.index.receive(arms[kit.id], kit.expiry)
        stock.row.credited += len(group)
        stock.save()


def pool_of(kit: Kit) -> str | None:
    """The stock a kit counts in: its site's while available there, the depot's while free
    at the depot (not reserved for a shipment), else none."""
    if kit.status is KitStatus.AVAILABLE and kit.site_code is not None:
        return kit.site_code
    if kit.status is KitStatus.AT_DEPOT and kit.shipment_id is None and kit.site_code is None:
        return DEPOT
    return None


def moved(
    session: Session,
    study: Study,
    before: Mapping[int, str | None],
    kits: Iterable[Kit],
    *,
    allocated: bool = False,
) -> None:
    """Keep the indexes true after these kits moved; ``before[kit.id]`` is ``pool_of`` the
    kit before the move (taken by the caller). ``allocated``: the kits went from a site's
    stock to a participant, which changes no loss or transit figure."""
    kits = list(kits)
    if not allocated:
        forget_figures(session)
    changed = [k for k in kits if before.get(k.id) != pool_of(k)]
    if not changed:
        return
    arms = kit_arms(session, study, changed)
    touched: dict[int, LockedStock] = {}
    for kit in changed:
        old, new = before.get(kit.id), pool_of(kit)
        for pool, add in ((old, False), (new, True)):
            if pool is None:
                continue
            stock = lock_stock(session, study, pool, is_test=kit.is_test)
            touched[id(stock)] = stock
            if add:
                stock.index.add(arms[kit.id], kit.id, kit.expiry)
            else:
                stock.index.remove(arms[kit.id], kit.id, kit.expiry)
    for stock in touched.values():
        stock.save()


def forget_figures(session: Session) -> None:
    """Drop the kit-table figures read in this transaction (after a kit move)."""
    for stock in session.info.get("site_stock", {}).values():
        stock.figures.clear()


def pools(kits: Iterable[Kit]) -> dict[int, str | None]:
    """``pool_of`` each kit, by id: what ``moved`` takes as ``before``."""
    return {k.id: pool_of(k) for k in kits}


@event.listens_for(Session, "after_transaction_end")
def _release(session: Session, transaction: SessionTransaction) -> None:
    # A row lock ends with its transaction: the next one must lock and read again.
    if transaction.parent is None:
        session.info.pop("site_stock", None)


def peek_stock(session: Session, study: Study, site: str, *, is_test: bool) -> LockedStock:
    """Open a site's stock row without locking it, for reading (empty before first use)."""
    arms = tuple(a.code for a in definition_of(study).arms)
    row = session.scalar(
        select(SiteStock).where(SiteStock.study_id == study.id, SiteStock.site_code == site,
                                SiteStock.is_test == is_test)
    )  # fmt: skip
    if row is None or row.data_key_id is None or row.index_sealed is None:
        blank = SiteStock(study_id=study.id, site_code=site, is_test=is_test, credited=0,
                          consumed=0, holdings={}, closed=False, depot_short=False)  # fmt: skip
        return LockedStock(blank, StockIndex(arms), None)
    sealer = _sealer(session, study, row.data_key_id)
    plain = sealer.open_bytes("site_stock", _object_id(row), row.index_sealed)
    return LockedStock(row, StockIndex.decode(arms, plain), sealer)
