"""Minimization studies (SPEC §4.4): the sealed record made in place of a list, each
assignment drawn at randomization, and the replay ``list verify`` runs.

A minimization study's "list" is an ``AllocationList`` row with no slots in advance: it
holds the sealed seed, the recorded design and, as fingerprint, a hash chain over every
assignment so far. Each randomization appends one ``AllocationSlot`` (stratum, position in
the stratum, the usual randomization number) whose sealed content records the arm, the
step, the draw value and the participant's level indexes, so kits, dispensing, unblinding,
exports and reports read it like any other slot.

The margins are the whole study's: a randomization locks the record's ``*`` row
(``enrollment.lock_stratum``) in the place where a block study locks its stratum's row, so
the lock order stays participant → allocation row → site stock → kit → audit head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit, sequence
from randomizer import minimization as pocock
from randomizer.crypto import IntegrityFailure
from randomizer.errors import N_, Conflict, InvalidInput, Text
from randomizer.models import (
    AllocationList,
    AllocationSlot,
    AuditEvent,
    ListKind,
    Participant,
    SlotStatus,
    Study,
)
from randomizer.services.keyring import RowSealer, sealer_by_key_id, slot_object_id
from randomizer.services.lists import (
    Progress,
    SlotContent,
    arm_ratios,
    generate_list,
    minimization_content,
    new_list_row,
    open_seed,
    randomization_number,
    recorded_arms,
    recorded_counts,
    seed_reference,
    slot_content,
)
from randomizer.services.studies import definition_of
from randomizer.studydef_minimization import SITE, MinimizationFactor

#: The allocation row every randomization of a minimization study locks.
LOCK_KEY = "*"
SOURCE = "minimization"


def is_minimization(row: AllocationList) -> bool:
    """Whether this allocation row is a minimization record (no slots made in advance)."""
    return row.algorithm_version == pocock.ALGORITHM_VERSION


def refuse_for_minimization(row: AllocationList | None, study: Study, action: str) -> None:
    """Conflict for the list operations that have no meaning without a pre-made list;
    ``action`` names the operation (an ``N_``-marked noun such as "the commitment")."""
    if row is not None and is_minimization(row):
        raise Conflict(
            N_("Study %(study)s allocates by minimization: there is no list made in advance, "
               "so %(action)s does not apply. Each assignment is drawn at randomization and "
               "`randomizer list verify` replays them all from the sealed seed."),
            field="list", study=study.code, action=Text(action),
        )  # fmt: skip


def make_list(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    actor: audit.Actor,
    per_stratum: int | None = None,
    seed: bytes | None = None,
    progress: Progress | None = None,
) -> AllocationList:
    """What ``list generate`` makes for the study's method: the list of blocks, or the
    minimization record (``per_stratum`` is then meaningless and refused)."""
    if definition_of(study).method == "permuted-blocks":
        return generate_list(session, study, kind=kind, actor=actor, per_stratum=per_stratum,
                             seed=seed, progress=progress)  # fmt: skip
    if per_stratum is not None:
        raise InvalidInput(
            N_("A minimization study has no slots made in advance: give no slots per stratum."),
            field="per_stratum",
        )
    if seed is not None and kind is not ListKind.DUMMY:
        raise InvalidInput(N_("A seed may be given only for a dummy list."), field="seed")
    if seed is not None and len(seed) != sequence.SEED_BYTES:
        raise InvalidInput(N_("The seed must be 256 bits (64 hex digits)."), field="seed")
    return open_record(session, study, kind=kind, actor=actor, seed=seed)


def open_record(
    session: Session, study: Study, *, kind: ListKind, actor: audit.Actor, seed: bytes | None
) -> AllocationList:
    """Make the (empty) minimization record of this kind: design and sealed seed; audited."""
    definition = definition_of(study)
    assert definition.minimization is not None
    seed = seed or sequence.new_seed()
    m = definition.minimization
    row = new_list_row(
        session, study, kind=kind, source=SOURCE, actor=actor,
        algorithm=pocock.ALGORITHM_VERSION,
        params={"method": "minimization", "arms": [[a.code, a.ratio] for a in arm_ratios(study)],
                "strata": definition.strata(), "slots": {},
                "minimization": {"factors": [[f.code, str(f.weight), list(f.levels)]
                                             for f in m.factors],
                                 "measure": m.measure, "p_best": str(m.p_best)}},
    )  # fmt: skip
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    row.seed_ref = seed_reference(seed)
    row.seed_sealed = sealer.seal("seed", row.id, seed.hex())
    row.fingerprint = chain_start(row.seed_ref)
    audit.record(
        session, actor=actor, action="list.generate", object_type="allocation_list",
        object_id=row.id, study_code=study.code,
        new={"kind": kind.value, "method": "minimization", "slots": 0,
             "fingerprint": row.fingerprint, "algorithm": row.algorithm_version,
             "seed_ref": row.seed_ref},
    )  # fmt: skip
    return row


def recorded_factors(row: AllocationList) -> list[MinimizationFactor]:
    """The minimization factors recorded with the record (what it was made with)."""
    return [
        MinimizationFactor(str(code), Fraction(weight), tuple(levels))
        for code, weight, levels in row.params["minimization"]["factors"]
    ]


def recorded_design(row: AllocationList) -> pocock.Design:
    """The algorithm's design as recorded with the record."""
    m = row.params["minimization"]
    factors = recorded_factors(row)
    return pocock.Design(
        tuple(recorded_arms(row)), tuple(f.weight for f in factors),
        tuple(len(f.levels) for f in factors), m["measure"], Fraction(m["p_best"]),
    )  # fmt: skip


def participant_levels(row: AllocationList, participant: Participant) -> tuple[int, ...]:
    """The participant's level index in each recorded factor (-1 for a value not there)."""
    out = []
    for f in recorded_factors(row):
        value = participant.site_code if f.code == SITE else participant.factors.get(f.code)
        out.append(f.levels.index(value) if value in f.levels else -1)
    return tuple(out)


def chain_start(seed_ref: str | None) -> str:
    """The fingerprint of a record with no assignment yet (it names the seed reference, so
    the dummy and live records never look alike)."""
    return hashlib.sha256(f"{pocock.ALGORITHM_VERSION}\t{seed_ref}\n".encode()).hexdigest()


def chain_next(fingerprint: str, stratum: str, seq: int, content: SlotContent) -> str:
    """The fingerprint after one more assignment: SHA-256 of the previous one and the
    assignment's canonical line (step, stratum, sequence, levels, draw, arm)."""
    levels = ".".join(map(str, content.levels or ()))
    line = f"{fingerprint}\t{content.block}\t{stratum}\t{seq}\t{levels}\t{content.draw}\t"
    return hashlib.sha256(f"{line}{content.arm}\n".encode()).hexdigest()


@dataclass(frozen=True)
class Recorded:
    """One stored assignment, opened."""

    slot: AllocationSlot
    content: SlotContent


def _history(session: Session, row: AllocationList, sealer: RowSealer) -> list[Recorded]:
    """Every stored assignment opened, in step order."""
    slots = session.scalars(select(AllocationSlot).where(AllocationSlot.list_id == row.id))
    opened = [Recorded(slot, slot_content(slot, sealer)) for slot in slots]
    return sorted(opened, key=lambda r: (r.content.block, r.slot.id))


def assign(
    session: Session, study: Study, row: AllocationList, participant: Participant
) -> tuple[AllocationSlot, str]:
    """Draw the participant's arm from the margins so far and append its sealed slot.

    The caller holds the record's ``*`` row lock. Returns the new slot and its arm.
    """
    # Read the counts and the fingerprint again: they may have moved while we waited.
    session.refresh(row)
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    design = recorded_design(row)
    margins = pocock.Margins(design)
    history = _history(session, row, sealer)
    for r in history:
        margins.add(r.content.levels or (), r.content.arm)
    levels = participant_levels(row, participant)
    try:
        design.check_levels(levels)
    except ValueError:
        raise Conflict(
            N_("This participant's site or factors are not among those the minimization "
               "record was made with; nothing was changed. Ask the study statistician."),
            field="factors",
        ) from None  # fmt: skip
    made = pocock.draw(margins, open_seed(session, study, row), len(history) + 1, levels)
    stratum = participant.stratum
    counts = recorded_counts(row)
    seq = counts.get(stratum, 0) + 1
    number = randomization_number(row.kind, row.params["strata"].index(stratum) + 1, seq)
    text = minimization_content(made.arm, made.step, made.value, made.levels)
    slot = AllocationSlot(
        list_id=row.id, study_id=study.id, stratum=stratum, sequence=seq,
        randomization_number=number, status=SlotStatus.AVAILABLE,
        arm_sealed=sealer.seal("slot", slot_object_id(row.id, stratum, seq), text),
    )  # fmt: skip
    session.add(slot)
    content = SlotContent(made.arm, made.step, 0, made.value, made.levels)
    row.params = {**row.params, "slots": {**counts, stratum: seq}}
    row.fingerprint = chain_next(row.fingerprint, stratum, seq, content)
    session.flush()
    return slot, made.arm


def verify_record(
    session: Session, study: Study, row: AllocationList, note: Callable[[str], None]
) -> tuple[int, str, str]:
    """Replay every assignment from the sealed seed and the recorded levels.

    Notes each difference (never an arm); returns (assignments, replayed fingerprint,
    stored fingerprint).
    """
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    try:
        seed = open_seed(session, study, row)
    except IntegrityFailure as exc:
        note(f"the sealed seed does not open: {exc}")
        seed = None
    try:
        history = _history(session, row, sealer)
    except IntegrityFailure as exc:
        note(f"a sealed assignment fails its integrity check: {exc}")
        return 0, "", ""
    design = recorded_design(row)
    margins = pocock.Margins(design)
    replayed = stored = chain_start(row.seed_ref)
    counts: dict[str, int] = {}
    events = _randomize_events(session, study)
    last_event = 0
    for step, r in enumerate(history, 1):
        slot, content = r.slot, r.content
        where = f"assignment {step} ({slot.randomization_number})"
        counts[slot.stratum] = counts.get(slot.stratum, 0) + 1
        _check_binding(session, row, r, step, counts[slot.stratum], where, note)
        event = events.get(slot.participant_id or 0)
        if event is None or event[1] != slot.randomization_number or event[0] < last_event:
            note(f"{where}: not bound to the participant the audit trail randomized at this step")
        last_event = event[0] if event else last_event
        stored = chain_next(stored, slot.stratum, slot.sequence, content)
        levels = content.levels or ()
        try:
            design.check_levels(levels)
        except ValueError:
            note(f"{where}: the recorded levels do not fit the recorded factors")
            continue
        if seed is not None:
            made = pocock.draw(margins, seed, step, levels)
            if (made.value, made.arm) != (content.draw, content.arm):
                note(f"{where}: the recorded assignment is not what the seed gives")
            replay = SlotContent(made.arm, step, 0, made.value, made.levels)
            replayed = chain_next(replayed, slot.stratum, slot.sequence, replay)
        margins.add(levels, content.arm)
    if counts != recorded_counts(row):
        note("the stored assignments per stratum differ from the recorded counts")
    return len(history), replayed, stored


def _randomize_events(session: Session, study: Study) -> dict[int, tuple[int, str]]:
    """Participant id → (audit sequence, randomization number) of its randomization event:
    the audit chain (tamper-evident on its own) fixes who was randomized when."""
    rows = session.execute(
        select(AuditEvent.participant_id, AuditEvent.seq, AuditEvent.new_values).where(
            AuditEvent.action == "participant.randomize", AuditEvent.study_code == study.code
        )
    )
    out = {}
    for participant_id, seq, new in rows:
        number = json.loads(new or "{}").get("randomization_number")
        if participant_id is not None and isinstance(number, str):
            out[participant_id] = (seq, number)
    return out


def _check_binding(
    session: Session,
    row: AllocationList,
    r: Recorded,
    step: int,
    seq: int,
    where: str,
    note: Callable[[str], None],
) -> None:
    """The slot's place and participant agree with what was recorded."""
    slot, content = r.slot, r.content
    if content.block != step or content.block_size != 0 or content.draw is None:
        note(f"{where}: the steps are not 1, 2, 3… in order")
    if slot.sequence != seq:
        note(f"{where}: position {slot.sequence} in its stratum, expected {seq}")
    strata = row.params["strata"]
    index = strata.index(slot.stratum) + 1 if slot.stratum in strata else 0
    if slot.randomization_number != randomization_number(row.kind, index, slot.sequence):
        note(f"{where}: the randomization number is not the derived one")
    participant = session.get(Participant, slot.participant_id) if slot.participant_id else None
    if participant is None or slot.status is not SlotStatus.USED:
        note(f"{where}: bound to no participant")
        return
    if participant.randomization_number != slot.randomization_number:
        note(f"{where}: the participant holds another randomization number")
    if participant.stratum != slot.stratum:
        note(f"{where}: the participant's stratum is not the recorded one")
    if participant_levels(row, participant) != content.levels:
        note(f"{where}: the participant's site or factors differ from those recorded")


def recorded_summary(row: AllocationList) -> dict[str, Any]:
    """The design as ``list show`` prints it (no seed, no arm)."""
    m = row.params["minimization"]
    return {
        "factors": [f"{code} (weight {weight})" for code, weight, _levels in m["factors"]],
        "measure": m["measure"],
        "p_best": m["p_best"],
    }
