"""List summaries for the statistician's page and ``list show``: never a seed or an arm."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from randomizer.crypto import IntegrityFailure
from randomizer.models import AllocationList, AllocationSlot, ListKind, SlotStatus, Study
from randomizer.services.list_files import stored_slots
from randomizer.services.lists import SlotCipher, get_list


@dataclass
class StratumSummary:
    stratum: str
    slots: int = 0
    used: int = 0
    #: Number of blocks of each size.
    blocks: dict[int, int] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.slots - self.used


@dataclass
class ListSummary:
    """What the statistician's summary page and ``list show`` print: never a seed or an arm."""

    row: AllocationList
    strata: list[StratumSummary]
    #: Why the block counts could not be read (a sealed slot failed its integrity check).
    blocks_problem: str | None = None

    @property
    def slots(self) -> int:
        return sum(s.slots for s in self.strata)

    @property
    def used(self) -> int:
        return sum(s.used for s in self.strata)

    @property
    def block_sizes(self) -> dict[int, int]:
        total: dict[int, int] = {}
        for s in self.strata:
            for size, n in s.blocks.items():
                total[size] = total.get(size, 0) + n
        return dict(sorted(total.items()))


def summarize(
    session: Session, study: Study, kind: ListKind, *, with_blocks: bool = False
) -> ListSummary:
    """Slots and use per stratum of a list; block-size counts only ``with_blocks``.

    Block sizes are list structure, sealed with each slot's arm: only the statistician's
    page and ``list show`` ask for them (every slot is then opened), never a masked role.
    """
    row = get_list(session, study, kind)
    strata = {s: StratumSummary(s) for s in row.params["strata"]}
    where = AllocationSlot.list_id == row.id
    counted: Sequence[Row[Any]] = session.execute(
        select(AllocationSlot.stratum, AllocationSlot.status, func.count())
        .where(where)
        .group_by(AllocationSlot.stratum, AllocationSlot.status)
    ).all()
    for stratum, status, n in counted:
        entry = strata.setdefault(stratum, StratumSummary(stratum))
        entry.slots += n
        if status is SlotStatus.USED:
            entry.used += n
    problem = None
    # Minimization slots are single assignments: there are no blocks to count.
    if with_blocks and row.source != "minimization":
        try:
            _count_blocks(session, study, row, strata)
        except IntegrityFailure as exc:
            problem = str(exc)
            for entry in strata.values():
                entry.blocks.clear()
    return ListSummary(row, list(strata.values()), problem)


def _count_blocks(
    session: Session, study: Study, row: AllocationList, strata: dict[str, StratumSummary]
) -> None:
    cipher = SlotCipher(session, study, row)
    for stratum, entry in strata.items():
        seen: set[int] = set()
        with closing(stored_slots(session, row, stratum)) as stored:
            for seq, _number, _status, sealed in stored:
                content = cipher.open_slot(stratum, seq, sealed)
                if content.block not in seen:
                    seen.add(content.block)
                    entry.blocks[content.block_size] = entry.blocks.get(content.block_size, 0) + 1
