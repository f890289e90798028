"""Allocation list files: import a list made elsewhere (validated), export a list (streamed).

CSV columns (SPEC §4.1): ``stratum, block, block_size, sequence, randomization_number,
status`` and, unblinded, ``arm``. An import is checked completely before anything is
stored, and every problem names the CSV row (the header is row 1).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Generator, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit, sequence
from randomizer.errors import N_, Conflict, InvalidInput, Text
from randomizer.models import AllocationList, AllocationSlot, ListKind, SlotStatus, Study, User
from randomizer.services.bulk_unblinding import Signature, check_signers, signed_by
from randomizer.services.lists import (
    Progress,
    SlotCipher,
    arm_ratios,
    check_new_list,
    get_list,
    new_list_row,
    refuse_twin,
    store_slots,
)
from randomizer.services.studies import definition_of

COLUMNS = ("stratum", "block", "block_size", "sequence", "randomization_number", "status")
ARM_COLUMN = "arm"
UNBLINDED_COLUMNS = (*COLUMNS, ARM_COLUMN)
#: Largest list an import accepts (all rows are held for validation before storing).
MAX_IMPORT_ROWS = 1_000_000
#: Problems listed in one refusal; the rest are counted.
MAX_PROBLEMS = 50
#: Rows fetched per round trip when streaming a list out.
FETCH = 2000
ALGORITHM_IMPORTED = "imported"

_INTEGER = re.compile(r"[0-9]{1,9}")
_SEQUENCE_IN_MESSAGE = re.compile(r"\bsequence (\d+)\b")
#: Cells starting with these are formulas to a spreadsheet: refused in numbers we export.
_FORMULA_START = ("=", "+", "-", "@")
_MAX_NUMBER_LENGTH = 32


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    slot: sequence.Slot
    number: str


# --- import ------------------------------------------------------------------------------


def import_list(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    source: Iterable[str],
    actor: audit.Actor,
    filename: str = "upload.csv",
    progress: Progress | None = None,
) -> AllocationList:
    """Validate a CSV list and store it sealed; nothing is stored if any row is wrong."""
    check_new_list(session, study, kind)  # before reading a possibly long file
    definition = definition_of(study)
    if definition.method != "permuted-blocks":
        raise Conflict(
            N_("Study %(study)s allocates by minimization: there is no list to import; each "
               "assignment is drawn at randomization."),
            field="list", study=study.code,
        )  # fmt: skip
    strata, arms = definition.strata(), arm_ratios(study)
    rows, problems = _read_rows(source, set(strata))
    problems += _check_structure(rows, arms, definition.block_sizes)
    problems += _check_numbers(session, study, rows)
    present = {r.slot.stratum for r in rows}
    if rows and (missing := [s for s in strata if s not in present]):
        problems.append(f"no rows for stratum {_list(missing)}: every stratum needs its blocks")
    if problems:
        raise InvalidInput(_refusal(filename, problems), field="file")
    position = {s: i for i, s in enumerate(strata)}
    rows.sort(key=lambda r: (position[r.slot.stratum], r.slot.sequence))
    row = new_list_row(
        session, study, kind=kind, source="imported", actor=actor, algorithm=ALGORITHM_IMPORTED,
        params={"arms": [[a.code, a.ratio] for a in arms],
                "block_sizes": sorted(definition.block_sizes), "strata": strata,
                "slots": {}, "file": filename},
    )  # fmt: skip
    counts, fingerprint = store_slots(
        session, study, row, (r.slot for r in rows), progress, numbers=(r.number for r in rows)
    )
    row.fingerprint = fingerprint
    row.params = {**row.params, "slots": counts}
    refuse_twin(session, study, row)
    audit.record(
        session, actor=actor, action="list.import", object_type="allocation_list",
        object_id=row.id, study_code=study.code,
        new={"kind": kind.value, "slots": len(rows), "strata": len(strata),
             "fingerprint": fingerprint, "file": filename},
    )  # fmt: skip
    return row


def _read_rows(source: Iterable[str], strata: set[str]) -> tuple[list[_Row], list[str]]:
    reader = csv.DictReader(source)
    try:
        header = reader.fieldnames
    except (csv.Error, UnicodeDecodeError) as exc:
        return [], [f"row 1: not a readable UTF-8 CSV file ({exc})"]
    if not header:
        return [], ["the file is empty: expected a header row " + _list(UNBLINDED_COLUMNS)]
    problems = _check_header([h.strip() for h in header])
    if problems:
        return [], problems
    reader.fieldnames = [h.strip() for h in header]
    rows: list[_Row] = []
    try:
        for record in reader:
            if len(rows) >= MAX_IMPORT_ROWS:
                problems.append(f"the file has more than {MAX_IMPORT_ROWS:,} rows")
                break
            parsed = _parse_row(reader.line_num, record, strata, problems)
            if parsed is not None:
                rows.append(parsed)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.append(f"row {reader.line_num + 1}: the file cannot be read as CSV ({exc})")
    if not rows and not problems:
        problems.append("the file has a header but no rows")
    return rows, problems


def _check_header(header: list[str]) -> list[str]:
    required = (*COLUMNS[:5], ARM_COLUMN)
    allowed = {*COLUMNS, ARM_COLUMN}
    problems = []
    if missing := [c for c in required if c not in header]:
        problems.append(f"row 1: missing column {_list(missing)} (the columns of `list export "
                        f"--unblinded`: {_list(UNBLINDED_COLUMNS)})")  # fmt: skip
    if unknown := [c for c in header if c not in allowed]:
        problems.append(f"row 1: unknown column {_list(unknown)}")
    if repeated := sorted({c for c in header if header.count(c) > 1}):
        problems.append(f"row 1: column {_list(repeated)} appears more than once")
    return problems


def _parse_row(
    line: int, record: dict[str | Any, Any], strata: set[str], problems: list[str]
) -> _Row | None:
    before = len(problems)
    if record.get(None):
        problems.append(f"row {line}: has more cells than the header")
    cells = {k: (v or "").strip() for k, v in record.items() if isinstance(k, str)}
    if not any(cells.values()):
        problems.append(f"row {line}: is empty")
        return None
    numbers = {}
    for column in ("block", "block_size", "sequence"):
        if _INTEGER.fullmatch(cells[column]) and int(cells[column]) >= 1:
            numbers[column] = int(cells[column])
        else:
            problems.append(
                f"row {line}: {column} {cells[column]!r} is not a positive whole number"
            )
    stratum, number = cells["stratum"], cells["randomization_number"]
    if stratum not in strata:
        problems.append(
            f"row {line}: unknown stratum {stratum!r} (the study has {_list(sorted(strata))})"
        )
    problems += [f"row {line}: {p}" for p in _number_problems(number)]
    if cells.get("status", "") not in ("", SlotStatus.AVAILABLE.value):
        problems.append(f"row {line}: status must be empty or 'available' in an imported list, "
                        f"not {cells['status']!r}")  # fmt: skip
    if not cells[ARM_COLUMN]:
        problems.append(f"row {line}: arm is empty")
    if len(problems) > before and (stratum not in strata or len(numbers) < 3):
        return None
    slot = sequence.Slot(stratum, numbers["block"], numbers["block_size"], numbers["sequence"],
                         cells[ARM_COLUMN])  # fmt: skip
    return _Row(line, slot, number)


def _number_problems(number: str) -> list[str]:
    if not number:
        return ["randomization_number is empty"]
    if len(number) > _MAX_NUMBER_LENGTH:
        return [f"randomization_number {number[:40]!r}… is longer than {_MAX_NUMBER_LENGTH}"]
    if not number.isprintable() or number.startswith(_FORMULA_START):
        return [f"randomization_number {number!r} must be printable and not start with = + - @"]
    return []


def _check_structure(
    rows: list[_Row], arms: list[sequence.ArmRatio], block_sizes: Iterable[int]
) -> list[str]:
    """``sequence.check_blocks`` per stratum, each message prefixed with the row it names."""
    by_stratum: dict[str, list[_Row]] = {}
    for r in rows:
        by_stratum.setdefault(r.slot.stratum, []).append(r)
    problems = []
    for stratum, members in by_stratum.items():
        lines: dict[int, list[int]] = {}
        for r in members:
            lines.setdefault(r.slot.sequence, []).append(r.line)
        for message in sequence.check_blocks((r.slot for r in members), arms, list(block_sizes)):
            found = _SEQUENCE_IN_MESSAGE.search(message)
            where = lines.get(int(found.group(1)), []) if found else []
            problems.append(f"{_rows_label(where, stratum)}: {message}")
    return problems


def _rows_label(lines: list[int], stratum: str) -> str:
    if not lines:
        return f"stratum {stratum!r}"
    return f"row{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}"


def _check_numbers(session: Session, study: Study, rows: list[_Row]) -> list[str]:
    problems = []
    first: dict[str, int] = {}
    for r in rows:
        if r.number in first:
            problems.append(f"row {r.line}: randomization_number {r.number!r} repeats row "
                            f"{first[r.number]}")  # fmt: skip
        else:
            first[r.number] = r.line
    numbers = list(first)
    for start in range(0, len(numbers), 1000):
        taken = session.scalars(
            select(AllocationSlot.randomization_number).where(
                AllocationSlot.study_id == study.id,
                AllocationSlot.randomization_number.in_(numbers[start : start + 1000]),
            )
        )
        problems += [
            f"row {first[n]}: randomization_number {n!r} is already used by the study's other list"
            for n in taken
        ]
    return problems


def _refusal(filename: str, problems: list[str]) -> Text:
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    lines = "\n".join(shown)
    if more:
        return Text(
            N_(
                "%(filename)s: the list was not imported (%(count)s problems); nothing was "
                "stored:\n%(problems)s\n… and %(more)s more problems"
            ),
            {"filename": filename, "count": len(problems), "problems": lines, "more": more},
        )
    return Text(
        N_(
            "%(filename)s: the list was not imported (problems: %(count)s); nothing was "
            "stored:\n%(problems)s"
        ),
        {"filename": filename, "count": len(problems), "problems": lines},
    )


def _list(items: Iterable[str]) -> str:
    shown = [repr(i) for i in items]
    return ", ".join(shown[:8]) + (f", … ({len(shown)} in all)" if len(shown) > 8 else "")


# --- export ------------------------------------------------------------------------------


def export_list(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    out: TextIO,
    unblinded: bool,
    actor: audit.Actor,
    progress: Progress | None = None,
    signatures: Sequence[Signature] = (),
) -> int:
    """Write the list as CSV to ``out``, stratum by stratum, streaming; audited.

    With ``unblinded`` each arm is opened and written, and the audit event says so, with
    the signatures checked first (two people for the live list when the study asks for
    it). The caller commits only after the file is complete, and discards it if the
    commit fails.
    """
    row = get_list(session, study, kind)
    signers: list[User] = []
    if unblinded:
        live = kind is ListKind.LIVE
        what = N_("the live list") if live else N_("the dummy list")
        signers = check_signers(session, study, signatures, live=live, what=what)
    # The block structure is sealed with the arm: every slot is opened, the arm is written
    # only when unblinded.
    cipher = SlotCipher(session, study, row)
    writer = csv.writer(out)
    writer.writerow(UNBLINDED_COLUMNS if unblinded else COLUMNS)
    count = 0
    for stratum in row.params["strata"]:
        with closing(stored_slots(session, row, stratum)) as stored:
            for seq, number, status, sealed in stored:
                content = cipher.open_slot(stratum, seq, sealed)
                cells = [stratum, content.block, content.block_size, seq, number,
                         SlotStatus(status).value]  # fmt: skip
                if unblinded:
                    cells.append(content.arm)
                writer.writerow(cells)
                count += 1
                if progress and count % FETCH == 0:
                    progress(FETCH)
    if progress and count % FETCH:
        progress(count % FETCH)
    audit.record(
        session, actor=actor, action="list.export_unblinded" if unblinded else "list.export",
        object_type="allocation_list", object_id=row.id, study_code=study.code,
        new={"kind": kind.value, "unblinded": unblinded, "slots": count,
             "fingerprint": row.fingerprint, **(signed_by(signers) if signers else {})},
    )  # fmt: skip
    return count


def stored_slots(
    session: Session, row: AllocationList, stratum: str
) -> Generator[tuple[int, str, Any, bytes], None, None]:
    """(sequence, number, status, sealed content) of a stratum's slots, by sequence,
    fetched in rounds (a server-side cursor on PostgreSQL) so memory stays flat."""
    result = session.execute(
        select(
            AllocationSlot.sequence, AllocationSlot.randomization_number, AllocationSlot.status,
            AllocationSlot.arm_sealed,
        )
        .where(AllocationSlot.list_id == row.id, AllocationSlot.stratum == stratum)
        .order_by(AllocationSlot.sequence),
        execution_options={"yield_per": FETCH},
    )  # fmt: skip
    with result:  # closes the server-side cursor when the reader stops early, too
        for r in result:
            yield r[0], r[1], r[2], r[3]
