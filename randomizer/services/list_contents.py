"""A list's slots with their block structure and opened arms, for unblinded computations.

The one place the predictability figures and the go-live commitment read a list's blocks
from. A slot's block number and size are sealed with its arm (``lists.SlotContent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass

from sqlalchemy.orm import Session

from randomizer import sequence
from randomizer.models import AllocationList, Study
from randomizer.services.list_files import stored_slots
from randomizer.services.lists import SlotCipher


@dataclass(frozen=True, slots=True)
class OpenedSlot:
    """A stored slot with its arm opened: never shown to a masked role."""

    slot: sequence.Slot
    randomization_number: str


def opened_slots(
    session: Session, study: Study, row: AllocationList, strata: Iterable[str] | None = None
) -> Iterator[OpenedSlot]:
    """Every slot of the list (of ``strata``, in the order given; by default the list's
    strata in its order), by sequence inside a stratum, arms opened."""
    cipher = SlotCipher(session, study, row)
    for stratum in row.params["strata"] if strata is None else strata:
        with closing(stored_slots(session, row, stratum)) as stored:
            for seq, number, _status, sealed in stored:
                c = cipher.open_slot(stratum, seq, sealed)
                yield OpenedSlot(sequence.Slot(stratum, c.block, c.block_size, seq, c.arm), number)


def blocks_by_stratum(
    session: Session, study: Study, row: AllocationList
) -> dict[str, list[list[str]]]:
    """The arms of each block, in list order, per stratum."""
    blocks: dict[str, list[list[str]]] = {s: [] for s in row.params["strata"]}
    current: tuple[str, int] | None = None
    for opened in opened_slots(session, study, row):
        slot = opened.slot
        if (slot.stratum, slot.block) != current:
            current = (slot.stratum, slot.block)
            blocks[slot.stratum].append([])
        blocks[slot.stratum][-1].append(slot.arm)
    return blocks
