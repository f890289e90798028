"""A published commitment to the live list (SPEC §4.1), and its release after the lock.

At go-live the service draws a 32-byte salt from the OS CSPRNG and records ``commitment =
SHA-256(salt || canonical list bytes)``; each later extension of the live list commits to
the slots it added, the same way. The salts stay sealed under the live list's data key
until ``release_list``, allowed only after the database lock, writes the canonical bytes
and the salt, so that anyone can check them with ``sha256sum`` alone.

Canonical list bytes (algorithm ``sha256-salted-v1``): UTF-8 CSV (RFC 4180 quoting where a
cell needs it), LF line endings, the header ``stratum,block,block_size,sequence,
randomization_number,arm``, then one row per committed slot, ordered by stratum key (by
code point) and, inside a stratum, by sequence.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from collections.abc import Callable, Iterator
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import IntegrityFailure
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, NotFound
from randomizer.models import AllocationList, ListCommitment, ListKind, Study, StudyMode
from randomizer.services.database_lock import refuse_if_locked
from randomizer.services.keyring import sealer_by_key_id
from randomizer.services.list_contents import opened_slots
from randomizer.services.lists import (
    Progress,
    extend_stratum,
    find_list,
    get_list,
    recorded_counts,
)
from randomizer.services.minimization import refuse_for_minimization

ALGORITHM = "sha256-salted-v1"
SALT_BYTES = 32
HEADER = ("stratum", "block", "block_size", "sequence", "randomization_number", "arm")
_SALT_KIND = "commitment-salt"
_ROWS_PER_CHUNK = 4096
#: Opens a file of the release by name, for writing bytes.
FileOpener = Callable[[str], IO[bytes]]


def canonical_chunks(
    session: Session, study: Study, row: AllocationList, ranges: dict[str, list[int]]
) -> Iterator[bytes]:
    """The canonical bytes of the slots in ``ranges`` ({stratum: [after, last]}), in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    rows = 0
    for opened in opened_slots(session, study, row, strata=sorted(ranges)):
        slot = opened.slot
        after, last = ranges[slot.stratum]
        if after < slot.sequence <= last:
            writer.writerow((slot.stratum, slot.block, slot.block_size, slot.sequence,
                             opened.randomization_number, slot.arm))  # fmt: skip
            rows += 1
            if rows % _ROWS_PER_CHUNK == 0:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def _salt_id(row: AllocationList, ordinal: int) -> str:
    return f"{row.id}/{ordinal}"


def commit_slots(
    session: Session,
    study: Study,
    row: AllocationList,
    ranges: dict[str, list[int]],
    *,
    occasion: str,
    actor: audit.Actor,
) -> ListCommitment:
    """Draw a salt, hash the committed slots, store the commitment (salt sealed)."""
    ordinal = 1 + (session.scalar(
        select(ListCommitment.ordinal).where(ListCommitment.list_id == row.id)
        .order_by(ListCommitment.ordinal.desc()).limit(1)) or 0)  # fmt: skip
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.sha256(salt)
    for chunk in canonical_chunks(session, study, row, ranges):
        digest.update(chunk)
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    commitment = ListCommitment(
        list_id=row.id, study_id=study.id, ordinal=ordinal, occasion=occasion, ranges=ranges,
        slots=sum(last - after for after, last in ranges.values()), algorithm=ALGORITHM,
        commitment=digest.hexdigest(), made_by=actor.username,
        salt_sealed=sealer.seal(_SALT_KIND, _salt_id(row, ordinal), salt.hex()),
    )  # fmt: skip
    session.add(commitment)
    session.flush()
    return commitment


def commit_at_go_live(
    session: Session, study: Study, row: AllocationList, *, actor: audit.Actor
) -> ListCommitment:
    """The go-live commitment to every live slot (the caller's audit event records it)."""
    ranges = {stratum: [0, n] for stratum, n in recorded_counts(row).items()}
    return commit_slots(session, study, row, ranges, occasion="go-live", actor=actor)


def extend_list(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    stratum: str,
    slots: int,
    actor: audit.Actor,
    progress: Progress | None = None,
) -> int:
    """``lists.extend_stratum``; once live, the added slots get their own commitment.
    Refused after the database lock (the trial's allocations are final)."""
    refuse_if_locked(study)
    added = extend_stratum(session, study, kind=kind, stratum=stratum, slots=slots, actor=actor,
                           progress=progress)  # fmt: skip
    if kind is ListKind.LIVE and study.mode is StudyMode.LIVE:
        row = get_list(session, study, kind)
        last = recorded_counts(row)[stratum]
        made = commit_slots(session, study, row, {stratum: [last - added, last]},
                            occasion="extension", actor=actor)  # fmt: skip
        audit.record(
            session, actor=actor, action="list.commitment", object_type="allocation_list",
            object_id=row.id, study_code=study.code, new=describe(study, made),
        )  # fmt: skip
    return added


def describe(study: Study, c: ListCommitment, *, salt: str | None = None) -> dict[str, Any]:
    """The commitment as published (SPEC §4.1); extensions also name their slots."""
    made = {"study": study.code, "algorithm": c.algorithm, "commitment": c.commitment,
            "slots": c.slots, "made_at": audit.timestamp(c.made_at)}  # fmt: skip
    if c.occasion == "extension":
        ((stratum, (after, last)),) = c.ranges.items()
        made |= {"occasion": c.occasion, "stratum": stratum, "sequences": [after + 1, last]}
    return made | ({"salt": salt} if salt is not None else {})


def list_commitments(session: Session, study: Study) -> list[ListCommitment]:
    """The study's commitments, go-live first (empty before go-live)."""
    return list(session.scalars(
        select(ListCommitment).where(ListCommitment.study_id == study.id)
        .order_by(ListCommitment.ordinal)))  # fmt: skip


def published(session: Session, study: Study) -> dict[str, Any]:
    """What ``list commitment`` prints: the go-live commitment, and any extensions."""
    refuse_for_minimization(find_list(session, study, ListKind.LIVE), study, N_("a commitment"))
    made = list_commitments(session, study)
    if not made:
        raise NotFound(
            N_("Study %(study)s has no commitment yet: it is made at go-live."),
            field="study",
            study=study.code,
        )
    first = describe(study, made[0])
    return first | ({"extensions": [describe(study, c) for c in made[1:]]} if made[1:] else {})


def release_names(c: ListCommitment) -> tuple[str, str]:
    """The list and commitment file names of a commitment in a release."""
    if c.ordinal == 1:
        return "list.csv", "commitment.json"
    return f"extension-{c.ordinal - 1}.csv", f"extension-{c.ordinal - 1}-commitment.json"


def release_list(
    session: Session, study: Study, *, actor: audit.Actor, open_file: FileOpener
) -> list[str]:
    """After the database lock: write each committed list and its salt; audited.

    Each list is hashed as it is written; a stored list that no longer matches its
    commitment is refused (IntegrityFailure) and the caller discards the files.
    """
    if study.locked_at is None:
        raise Conflict(
            N_(
                "The list of study %(study)s is released only after the database lock "
                "(`randomizer study lock`)."
            ),
            field="study",
            study=study.code,
        )
    refuse_for_minimization(find_list(session, study, ListKind.LIVE), study, N_("a release"))
    made = list_commitments(session, study)
    if not made:
        raise NotFound(
            N_("Study %(study)s has no commitment to release."), field="study", study=study.code
        )
    row = get_list(session, study, ListKind.LIVE)
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    names: list[str] = []
    for c in made:
        salt = sealer.open(_SALT_KIND, _salt_id(row, c.ordinal), c.salt_sealed)
        list_name, json_name = release_names(c)
        digest = hashlib.sha256(bytes.fromhex(salt))
        with open_file(list_name) as handle:
            for chunk in canonical_chunks(session, study, row, c.ranges):
                handle.write(chunk)
                digest.update(chunk)
        if digest.hexdigest() != c.commitment:
            raise IntegrityFailure(
                f"the stored live list of study {study.code} no longer matches commitment "
                f"{c.ordinal}; nothing was released"
            )
        with open_file(json_name) as handle:
            text = json.dumps(describe(study, c, salt=salt), indent=2, ensure_ascii=False)
            handle.write((text + "\n").encode("utf-8"))
        c.released_at = utcnow()
        names += [list_name, json_name]
    audit.record(
        session, actor=actor, action="list.release", object_type="allocation_list",
        object_id=row.id, study_code=study.code,
        new={"files": names, "commitments": [c.commitment for c in made]},
    )  # fmt: skip
    return names
