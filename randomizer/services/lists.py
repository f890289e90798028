"""Allocation lists: generation and storage (sealed), shared by the CLI, pages and demo."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from randomizer import audit, sequence
from randomizer.db import utcnow
from randomizer.errors import Conflict, InvalidInput, NotFound
from randomizer.models import AllocationList, AllocationSlot, ListKind, SlotStatus, Study, StudyMode
from randomizer.services.keyring import RowSealer, sealer_for, slot_object_id
from randomizer.services.studies import definition_of

BATCH = 5000
Progress = Callable[[int], None]


def key_purpose(kind: ListKind) -> str:
    """The data key purpose of a list kind (dummy and live lists have separate keys)."""
    return f"list-{kind.value}"


def arm_ratios(study: Study) -> list[sequence.ArmRatio]:
    """The study's arms as the sequence generator takes them."""
    return [sequence.ArmRatio(a.code, a.ratio) for a in definition_of(study).arms]


def randomization_number(kind: ListKind, stratum_no: int, seq: int) -> str:
    """Printed number of a slot: list marker, stratum number, position. Carries no arm."""
    return f"{'T' if kind is ListKind.DUMMY else 'R'}{stratum_no:02d}-{seq:04d}"


def get_list(session: Session, study: Study, kind: ListKind) -> AllocationList:
    """The study's list of this kind, or NotFound."""
    found = session.scalar(
        select(AllocationList).where(
            AllocationList.study_id == study.id, AllocationList.kind == kind
        )
    )
    if found is None:
        raise NotFound(f"Study {study.code} has no {kind.value} list yet.", field="list")
    return found


def find_list(session: Session, study: Study, kind: ListKind) -> AllocationList | None:
    """The study's list of this kind, if any."""
    return session.scalar(
        select(AllocationList).where(
            AllocationList.study_id == study.id, AllocationList.kind == kind
        )
    )


def generate_list(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    actor: audit.Actor,
    per_stratum: int | None = None,
    seed: bytes | None = None,
    progress: Progress | None = None,
) -> AllocationList:
    """Generate, seal and store a list for every stratum; audited (never reveals arms)."""
    definition = definition_of(study)
    if seed is not None and kind is not ListKind.DUMMY:
        raise InvalidInput("A seed may be given only for a dummy list.", field="seed")
    if seed is not None and len(seed) != sequence.SEED_BYTES:
        raise InvalidInput("The seed must be 256 bits (64 hex digits).", field="seed")
    if kind is ListKind.LIVE and study.mode is StudyMode.LIVE:
        raise Conflict("The study is live: its live list can be extended, never replaced.")
    if find_list(session, study, kind) is not None:
        raise Conflict(
            f"Study {study.code} already has a {kind.value} list; it can be extended with "
            "more blocks but not generated again.",
            field="list",
        )
    per_stratum = definition.per_stratum if per_stratum is None else per_stratum
    if not 1 <= per_stratum <= 1_000_000:
        raise InvalidInput(
            "Slots per stratum must be between 1 and 1,000,000.", field="per_stratum"
        )
    seed = seed or sequence.new_seed()
    arms, strata = arm_ratios(study), definition.strata()
    sealer = sealer_for(session, study, key_purpose(kind))
    row = AllocationList(
        study_id=study.id, kind=kind, data_key_id=sealer.key_id, source="generated",
        seed_ref=hashlib.sha256(seed).hexdigest()[:12],
        algorithm_version=sequence.ALGORITHM_VERSION, fingerprint="", created_by=actor.username,
        params={"arms": [[a.code, a.ratio] for a in arms],
                "block_sizes": sorted(definition.block_sizes), "strata": strata, "slots": {}},
    )  # fmt: skip
    session.add(row)
    session.flush()
    row.seed_sealed = sealer.seal("seed", row.id, seed.hex())
    slots = sequence.generate(seed, strata, arms, definition.block_sizes, per_stratum=per_stratum)
    counts, fingerprint = store_slots(session, study, row, sealer, slots, progress)
    row.fingerprint = fingerprint
    row.params = {**row.params, "slots": counts}
    _refuse_twin(session, study, row)
    audit.record(
        session, actor=actor, action="list.generate", object_type="allocation_list",
        object_id=row.id, study_code=study.code,
        new={"kind": kind.value, "slots": sum(counts.values()), "strata": len(counts),
             "fingerprint": fingerprint, "algorithm": row.algorithm_version,
             "seed_ref": row.seed_ref},
    )  # fmt: skip
    return row


def store_slots(
    session: Session,
    study: Study,
    row: AllocationList,
    sealer: RowSealer,
    slots: Iterable[sequence.Slot],
    progress: Progress | None = None,
    *,
    numbers: Iterator[str] | None = None,
) -> tuple[dict[str, int], str]:
    """Seal and insert slots in batches (streaming); returns (count per stratum, fingerprint).

    ``numbers`` supplies randomization numbers (an import keeps its own); by default they
    are derived from the stratum's position and the slot's sequence.
    """
    strata_index = {s: i + 1 for i, s in enumerate(row.params["strata"])}
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    batch: list[dict[str, Any]] = []
    for slot in slots:
        digest.update(sequence.canonical_line(slot))
        counts[slot.stratum] = counts.get(slot.stratum, 0) + 1
        batch.append({
            "list_id": row.id, "study_id": study.id, "stratum": slot.stratum,
            "block": slot.block, "block_size": slot.block_size, "sequence": slot.sequence,
            "randomization_number": next(numbers) if numbers else randomization_number(
                row.kind, strata_index[slot.stratum], slot.sequence),
            "arm_sealed": sealer.seal(
                "slot", slot_object_id(row.id, slot.stratum, slot.sequence), slot.arm),
            "status": SlotStatus.AVAILABLE.value,
        })  # fmt: skip
        if len(batch) >= BATCH:
            session.execute(insert(AllocationSlot), batch)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        session.execute(insert(AllocationSlot), batch)
        if progress:
            progress(len(batch))
    return counts, digest.hexdigest()


def _refuse_twin(session: Session, study: Study, row: AllocationList) -> None:
    """A live list identical to the dummy list (or vice versa) would unmask training data."""
    other_kind = ListKind.DUMMY if row.kind is ListKind.LIVE else ListKind.LIVE
    other = find_list(session, study, other_kind)
    if other is not None and other.fingerprint == row.fingerprint:
        raise Conflict(
            f"This {row.kind.value} list is identical to the {other_kind.value} list; "
            "the live list must be made separately.",
            field="list",
        )


def slot_arm(session: Session, study: Study, slot: AllocationSlot, sealer: RowSealer) -> str:
    """Open a slot's arm. Only allocation, unblinding and unblinded exports call this."""
    return sealer.open("slot", slot_object_id(slot.list_id, slot.stratum, slot.sequence),
                       slot.arm_sealed)  # fmt: skip


def mark_used(slot: AllocationSlot, participant_id: int) -> None:
    """Bind a slot to its participant for good (never reused, skipped or reassigned)."""
    slot.status = SlotStatus.USED
    slot.participant_id = participant_id
    slot.used_at = utcnow()
