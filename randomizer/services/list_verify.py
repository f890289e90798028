"""``list verify``: prove that the stored list is what its seed and parameters produce.

A generated list is regenerated from its sealed seed and recorded parameters (arms, ratios,
block sizes, strata and slots per stratum); the fingerprint of the regeneration must equal
the recorded one, and every stored slot, opened, must equal its regenerated twin. An
imported list has no seed: its stored slots are opened and checked against the fingerprint
recorded at import, and the report says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit, sequence
from randomizer.crypto import IntegrityFailure
from randomizer.models import AllocationList, AllocationSlot, ListKind, Study
from randomizer.services.list_files import FETCH, stored_slots
from randomizer.services.lists import (
    Progress,
    SlotCipher,
    SlotContent,
    get_list,
    open_seed,
    randomization_number,
    recorded_arms,
    recorded_counts,
    regenerate,
)
from randomizer.services.minimization import is_minimization, verify_record

#: Differences listed in a report; the rest are counted.
MAX_LISTED = 20


@dataclass
class VerifyReport:
    kind: ListKind
    source: str
    recorded: str
    #: Fingerprint of the regenerated list (generated lists only).
    regenerated: str | None = None
    #: Fingerprint of the stored slots, opened.
    stored: str = ""
    slots: int = 0
    differences: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.differences == 0 and not self.problems

    def note(self, problem: str) -> None:
        self.differences += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)

    def lines(self) -> list[str]:
        """What ``list verify`` prints (never an arm or the seed)."""
        head = [
            f"{self.kind.value} list ({self.source}), {self.slots} slots",
            f"recorded fingerprint:    {self.recorded}",
        ]
        if self.source == "minimization":
            head[0] = f"{self.kind.value} minimization record, {self.slots} assignments"
            head.append(f"replayed fingerprint:    {self.regenerated}")
        elif self.regenerated is not None:
            head.append(f"regenerated fingerprint: {self.regenerated}")
        else:
            head.append("imported list: no seed to regenerate from; the stored slots were "
                        "checked against the fingerprint recorded at import")  # fmt: skip
        head.append(f"stored slots fingerprint: {self.stored}")
        more = self.differences - len(self.problems)
        tail = [f"… and {more} more difference(s)"] if more > 0 else []
        return head + self.problems + tail


def verify_list(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    actor: audit.Actor,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check a list against its seed (or, imported, its recorded fingerprint); audited."""
    row = get_list(session, study, kind)
    report = VerifyReport(kind, row.source, row.fingerprint)
    seed: bytes | None = None
    if is_minimization(row):
        report.slots, report.regenerated, report.stored = verify_record(
            session, study, row, report.note
        )
        if report.regenerated != row.fingerprint:
            report.note("the replayed assignments' fingerprint differs from the recorded one")
    elif row.seed_sealed is not None:
        try:
            seed = open_seed(session, study, row)
        except IntegrityFailure as exc:
            report.note(f"the sealed seed does not open: {exc}")
        else:
            report.regenerated = sequence.fingerprint(regenerate(seed, row))
            if report.regenerated != row.fingerprint:
                report.note("the regenerated list's fingerprint differs from the recorded one")
    if not is_minimization(row):
        _compare_stored(session, study, row, seed, report, progress)
    if report.stored != row.fingerprint:
        report.note("the stored slots' fingerprint differs from the recorded one")
    audit.record(
        session, actor=actor, action="list.verify", object_type="allocation_list",
        object_id=row.id, study_code=study.code,
        new={"kind": kind.value, "ok": report.ok, "slots": report.slots,
             "differences": report.differences, "fingerprint": row.fingerprint},
    )  # fmt: skip
    return report


def _compare_stored(
    session: Session,
    study: Study,
    row: AllocationList,
    seed: bytes | None,
    report: VerifyReport,
    progress: Progress | None,
) -> None:
    """Open every stored slot in list order, hash it, and compare it with the seed's."""
    cipher = SlotCipher(session, study, row)
    digest = hashlib.sha256()
    counts = recorded_counts(row)
    arms, sizes = recorded_arms(row), row.params["block_sizes"]
    for index, stratum in enumerate(row.params["strata"], 1):
        want = counts.get(stratum, 0)
        expected = (
            sequence.generate_stratum(seed, stratum, arms, sizes, min_slots=want)
            if seed is not None
            else None
        )
        with closing(stored_slots(session, row, stratum)) as rows:
            stored = _stratum(row, index, stratum, cipher, rows, expected, digest, report,
                              progress)  # fmt: skip
        report.slots += stored
        if stored != want:
            report.note(f"stratum {stratum!r}: {stored} slots stored, {want} recorded")
    strays = session.scalar(
        select(func.count()).where(
            AllocationSlot.list_id == row.id,
            AllocationSlot.stratum.not_in(row.params["strata"]),
        )
    )
    if strays:
        report.note(f"{strays} stored slot(s) belong to no recorded stratum")
    report.stored = digest.hexdigest()


def _stratum(
    row: AllocationList,
    index: int,
    stratum: str,
    cipher: SlotCipher,
    rows: Iterator[tuple[int, str, object, bytes]],
    expected: Iterator[sequence.Slot] | None,
    digest: Any,
    report: VerifyReport,
    progress: Progress | None,
) -> int:
    """Walk one stratum's stored and regenerated slots side by side, by sequence."""
    derived = row.source == "generated"
    pending = next(expected, None) if expected is not None else None
    stored = 0
    for seq, number, _status, sealed in rows:
        stored += 1
        where = f"stratum {stratum!r} sequence {seq}"
        try:
            content = cipher.open_slot(stratum, seq, sealed)
        except IntegrityFailure:
            report.note(f"{where}: the sealed slot fails its integrity check")
            content = SlotContent("\ufffd", 0, 0)
        slot = sequence.Slot(stratum, content.block, content.block_size, seq, content.arm)
        digest.update(sequence.canonical_line(slot))
        if expected is not None:
            while pending is not None and pending.sequence < seq:
                report.note(f"stratum {stratum!r} sequence {pending.sequence}: produced by "
                            "the seed but not stored")  # fmt: skip
                pending = next(expected, None)
            if pending is None or pending.sequence > seq:
                report.note(f"{where}: stored but not produced by the seed")
            else:
                if pending != slot:
                    report.note(f"{where}: stored slot differs from the regenerated one")
                pending = next(expected, None)
        if derived and number != randomization_number(row.kind, index, seq):
            report.note(f"{where}: randomization number {number!r} is not the derived one")
        if progress and stored % FETCH == 0:
            progress(FETCH)
    while expected is not None and pending is not None:
        report.note(f"stratum {stratum!r} sequence {pending.sequence}: produced by the seed "
                    "but not stored")  # fmt: skip
        pending = next(expected, None)
    if progress and stored % FETCH:
        progress(stored % FETCH)
    return stored
