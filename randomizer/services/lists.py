"""Allocation lists: generation, extension and storage (sealed), shared by CLI, pages and demo.

Import, export and verification build on this module (``list_files``, ``list_verify``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit, sequence
from randomizer.crypto import NONCE_BYTES, IntegrityFailure, pad, unpad
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, InvalidInput, NotFound, Text
from randomizer.models import (
    AllocationList,
    AllocationSlot,
    DataKey,
    ListKind,
    SlotStatus,
    Study,
    StudyMode,
)
from randomizer.services.keyring import (
    RowSealer,
    data_key,
    open_key,
    sealer_by_key_id,
    slot_object_id,
)
from randomizer.services.studies import definition_of

BATCH = 5000
#: Most slots one extension may add to a stratum.
MAX_EXTENSION = 100_000
Progress = Callable[[int], None]


def key_purpose(kind: ListKind) -> str:
    """The data key purpose of a list kind (dummy and live lists have separate keys)."""
    return f"list-{kind.value}"


def active_kind(study: Study) -> ListKind:
    """The list randomizations draw from: the dummy list in testing, the live list once live."""
    return ListKind.LIVE if study.mode is StudyMode.LIVE else ListKind.DUMMY


def arm_ratios(study: Study) -> list[sequence.ArmRatio]:
    """The study's arms as the sequence generator takes them."""
    return [sequence.ArmRatio(a.code, a.ratio) for a in definition_of(study).arms]


def recorded_arms(row: AllocationList) -> list[sequence.ArmRatio]:
    """The arms and ratios recorded with a list (what it was generated or checked with)."""
    return [sequence.ArmRatio(str(code), int(ratio)) for code, ratio in row.params["arms"]]


def recorded_counts(row: AllocationList) -> dict[str, int]:
    """Slots per stratum as recorded with the list."""
    return {str(k): int(v) for k, v in row.params["slots"].items()}


def randomization_number(kind: ListKind, stratum_no: int, seq: int) -> str:
    """Printed number of a slot: list marker, stratum number, position. Carries no arm."""
    return f"{_number_prefix(kind, stratum_no)}{seq:04d}"


def _number_prefix(kind: ListKind, stratum_no: int) -> str:
    return f"{'T' if kind is ListKind.DUMMY else 'R'}{stratum_no:02d}-"


def get_list(session: Session, study: Study, kind: ListKind) -> AllocationList:
    """The study's list of this kind, or NotFound."""
    found = find_list(session, study, kind)
    if found is None:
        raise NotFound(
            N_("Study %(study)s has no %(kind)s list yet."),
            field="list",
            study=study.code,
            kind=kind,
        )
    return found


def find_list(session: Session, study: Study, kind: ListKind) -> AllocationList | None:
    """The study's list of this kind, if any."""
    return session.scalar(
        select(AllocationList).where(
            AllocationList.study_id == study.id, AllocationList.kind == kind
        )
    )


#: Separates the arm, block number and block size inside a slot's sealed content.
SLOT_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class SlotContent:
    """What a slot's seal holds: its arm and its place in the block structure.

    The block number and block size are sealed with the arm (never plaintext columns): a
    copy of the database would otherwise show which slots are block mates, and so that
    the last slot of every block is determined by the others.
    """

    arm: str
    block: int
    block_size: int
    #: Under minimization (``block`` is then the step, ``block_size`` 0): the draw value
    #: and the participant's level index in each minimization factor, as recorded.
    draw: int | None = None
    levels: tuple[int, ...] | None = None


def minimization_content(arm: str, step: int, value: int, levels: Sequence[int]) -> str:
    """The text sealed for a minimization assignment (``SlotContent`` with the step as its
    block, block size 0, the draw and the levels)."""
    return SLOT_SEPARATOR.join([arm, str(step), "0", str(value), ".".join(map(str, levels))])


def slot_plaintext(arm: str, block: int, block_size: int) -> bytes:
    """The padded plaintext sealed for a slot (always ``PADDED_BYTES`` long)."""
    return pad(f"{arm}{SLOT_SEPARATOR}{block}{SLOT_SEPARATOR}{block_size}".encode())


def parse_slot_content(text: str) -> SlotContent:
    """Undo ``slot_plaintext`` (after unpadding); a malformed content fails integrity."""
    parts = text.split(SLOT_SEPARATOR)
    if len(parts) not in (3, 5) or not all(p.isdigit() for p in parts[1:4]):
        raise IntegrityFailure("a sealed slot holds a malformed content")
    if len(parts) == 3:
        return SlotContent(parts[0], int(parts[1]), int(parts[2]))
    levels = parts[4].split(".")
    if not all(level.isdigit() for level in levels):
        raise IntegrityFailure("a sealed slot holds a malformed content")
    return SlotContent(parts[0], int(parts[1]), int(parts[2]), int(parts[3]),
                       tuple(int(level) for level in levels))  # fmt: skip


class SlotCipher:
    """Seals and opens the contents of one list's slots under the list's data key.

    The associated data is exactly :class:`RowSealer`'s for ``("slot", slot_object_id)``,
    so either opens what the other sealed; it is assembled from a per-stratum prefix
    because JSON-encoding it afresh for each of a million slots would cost more than the
    encryption itself.
    """

    def __init__(self, session: Session, study: Study, row: AllocationList) -> None:
        key = session.get(DataKey, row.data_key_id)
        if key is None or key.study_id != study.id:
            raise IntegrityFailure(f"data key {row.data_key_id} of study {study.code} is missing")
        self.study_code, self.key_id, self.list_id = study.code, key.id, row.id
        self._aead = AESGCM(open_key(session, key))
        #: AES-GCM encryption under the list's data key: ``encrypt(nonce, data, aad)``.
        self.encrypt = self._aead.encrypt
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self._head = dumps([study.code, "slot"])[:-1] + ","
        #: What follows the sequence number in the associated data.
        self.aad_tail = '",' + dumps(self.key_id) + "]"
        self._dumps = dumps
        self._prefixes: dict[str, str] = {}

    def aad_prefix(self, stratum: str) -> str:
        """The associated data of a slot of ``stratum`` up to its sequence number."""
        prefix = self._prefixes.get(stratum)
        if prefix is None:
            # JSON of the object id without its closing quote; the digits need no escaping.
            prefix = self._head + self._dumps(f"{self.list_id}/{stratum}/")[:-1]
            self._prefixes[stratum] = prefix
        return prefix

    def aad(self, stratum: str, seq: int) -> bytes:
        return f"{self.aad_prefix(stratum)}{seq}{self.aad_tail}".encode()

    def seal(self, stratum: str, seq: int, content: SlotContent) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        plain = slot_plaintext(content.arm, content.block, content.block_size)
        return nonce + self.encrypt(nonce, plain, self.aad(stratum, seq))

    def open(self, stratum: str, seq: int, sealed: bytes) -> str:
        """The slot's arm."""
        return self.open_slot(stratum, seq, sealed).arm

    def open_slot(self, stratum: str, seq: int, sealed: bytes) -> SlotContent:
        """The slot's arm, block number and block size."""
        try:
            if len(sealed) < NONCE_BYTES + 16:
                raise InvalidTag
            plain = self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self.aad(stratum, seq)
            )
        except InvalidTag:
            raise IntegrityFailure(
                f"sealed slot {slot_object_id(self.list_id, stratum, seq)} of study "
                f"{self.study_code} failed its integrity check (altered, or moved from another "
                "row); it was not opened"
            ) from None
        return parse_slot_content(unpad(plain).decode("utf-8"))


def _check_changeable(study: Study, kind: ListKind, action: str) -> None:
    if study.mode is StudyMode.LIVE and kind is ListKind.DUMMY:
        raise Conflict(
            N_("Study %(study)s is live: its dummy list is archived and cannot be %(action)s."),
            field="list",
            study=study.code,
            action=Text(action),
        )
    if study.mode is StudyMode.LIVE and action != "extended":
        raise Conflict(
            N_("Study %(study)s is live: its live list can be extended, never %(action)s."),
            field="list",
            study=study.code,
            action=Text(action),
        )


def check_new_list(session: Session, study: Study, kind: ListKind) -> None:
    """Refuse a list of this kind when the study already has one or is live."""
    _check_changeable(study, kind, N_("replaced"))
    if find_list(session, study, kind) is not None:
        raise Conflict(
            N_(
                "Study %(study)s already has a %(kind)s list; it can be extended with "
                "more blocks but not made again."
            ),
            field="list",
            study=study.code,
            kind=kind,
        )


def new_list_row(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    source: str,
    actor: audit.Actor,
    params: dict[str, Any],
    algorithm: str,
) -> AllocationList:
    """Insert the list row (after refusing a second list of the kind) under its data key."""
    check_new_list(session, study, kind)
    key = data_key(session, study, key_purpose(kind))
    row = AllocationList(
        study_id=study.id, kind=kind, data_key_id=key.id, source=source,
        algorithm_version=algorithm, fingerprint="", created_by=actor.username, params=params,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


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
    if definition.method != "permuted-blocks":
        raise Conflict(
            N_("Study %(study)s allocates by minimization: it has no list of blocks."),
            field="list", study=study.code,
        )  # fmt: skip
    if seed is not None and kind is not ListKind.DUMMY:
        raise InvalidInput(N_("A seed may be given only for a dummy list."), field="seed")
    if seed is not None and len(seed) != sequence.SEED_BYTES:
        raise InvalidInput(N_("The seed must be 256 bits (64 hex digits)."), field="seed")
    per_stratum = definition.per_stratum if per_stratum is None else per_stratum
    if not 1 <= per_stratum <= 1_000_000:
        raise InvalidInput(
            N_("Slots per stratum must be between 1 and 1,000,000."), field="per_stratum"
        )
    seed = seed or sequence.new_seed()
    arms, strata = arm_ratios(study), definition.strata()
    row = new_list_row(
        session, study, kind=kind, source="generated", actor=actor,
        algorithm=sequence.ALGORITHM_VERSION,
        params={"arms": [[a.code, a.ratio] for a in arms],
                "block_sizes": sorted(definition.block_sizes), "strata": strata, "slots": {},
                "per_stratum": per_stratum},
    )  # fmt: skip
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    row.seed_ref = seed_reference(seed)
    row.seed_sealed = sealer.seal("seed", row.id, seed.hex())
    slots = sequence.generate(seed, strata, arms, definition.block_sizes, per_stratum=per_stratum)
    counts, fingerprint = store_slots(session, study, row, slots, progress)
    row.fingerprint = fingerprint
    row.params = {**row.params, "slots": counts}
    refuse_twin(session, study, row)
    audit.record(
        session, actor=actor, action="list.generate", object_type="allocation_list",
        object_id=row.id, study_code=study.code,
        new={"kind": kind.value, "slots": sum(counts.values()), "strata": len(counts),
             "fingerprint": fingerprint, "algorithm": row.algorithm_version,
             "seed_ref": row.seed_ref, "per_stratum": per_stratum},
    )  # fmt: skip
    return row


def seed_reference(seed: bytes) -> str:
    """Short public reference to a seed (never the seed): the start of its SHA-256."""
    return hashlib.sha256(seed).hexdigest()[:12]


def open_seed(session: Session, study: Study, row: AllocationList) -> bytes:
    """The sealed seed of a generated list (IntegrityFailure when it does not open)."""
    if row.seed_sealed is None:
        raise Conflict(
            N_("The %(kind)s list of study %(study)s was imported: it has no seed."),
            field="list",
            kind=row.kind,
            study=study.code,
        )
    sealer = sealer_by_key_id(session, study, row.data_key_id)
    return bytes.fromhex(sealer.open("seed", row.id, row.seed_sealed))


def regenerate(seed: bytes, row: AllocationList) -> Iterator[sequence.Slot]:
    """The list a seed produces with the recorded parameters and slot counts, in list order."""
    arms, sizes, counts = recorded_arms(row), row.params["block_sizes"], recorded_counts(row)
    streams = [
        sequence.generate_stratum(seed, s, arms, sizes, min_slots=counts.get(s, 0))
        for s in row.params["strata"]
    ]
    return itertools.chain.from_iterable(streams)


def store_slots(
    session: Session,
    study: Study,
    row: AllocationList,
    slots: Iterable[sequence.Slot],
    progress: Progress | None = None,
    *,
    numbers: Iterator[str] | None = None,
) -> tuple[dict[str, int], str]:
    """Seal and insert slots in batches (streaming); returns (count per stratum, fingerprint).

    ``numbers`` supplies randomization numbers (an import keeps its own); by default they
    are derived from the stratum's position and the slot's sequence. The fingerprint is of
    the slots given, in the order given.
    """
    # The hot loop of a million-slot list: sealing is inlined (same associated data as
    # SlotCipher.aad, same canonical line as sequence.canonical_line; tests hold both equal)
    # and per-stratum values are looked up only when the stratum changes.
    cipher = SlotCipher(session, study, row)
    encrypt, urandom, tail = cipher.encrypt, os.urandom, cipher.aad_tail
    prefixes = {s: _number_prefix(row.kind, i + 1) for i, s in enumerate(row.params["strata"])}
    list_id, study_id, available = row.id, study.id, SlotStatus.AVAILABLE.value
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    batch: list[tuple[Any, ...]] = []
    lines: list[str] = []
    stratum = number_prefix = aad_prefix = ""
    for slot in slots:
        seq = slot.sequence
        if slot.stratum != stratum:
            stratum = slot.stratum
            number_prefix, aad_prefix = prefixes[stratum], cipher.aad_prefix(stratum)
        counts[stratum] = counts.get(stratum, 0) + 1
        lines.append(f"{stratum}\t{slot.block}\t{slot.block_size}\t{seq}\t{slot.arm}\n")
        nonce = urandom(NONCE_BYTES)
        plain = slot_plaintext(slot.arm, slot.block, slot.block_size)
        sealed = nonce + encrypt(nonce, plain, f"{aad_prefix}{seq}{tail}".encode())
        number = next(numbers) if numbers else f"{number_prefix}{seq:04d}"
        batch.append((list_id, study_id, stratum, seq, number, sealed, available))
        if len(batch) >= BATCH:
            _insert(session, batch, progress)
            digest.update("".join(lines).encode("utf-8"))
            batch, lines = [], []
    if batch:
        _insert(session, batch, progress)
        digest.update("".join(lines).encode("utf-8"))
    return counts, digest.hexdigest()


_SLOT_COLUMNS = (
    "list_id", "study_id", "stratum", "sequence", "randomization_number", "arm_sealed",
    "status",
)  # fmt: skip


def _insert(session: Session, batch: list[tuple[Any, ...]], progress: Progress | None) -> None:
    # Plain DB-API executemany with positional tuples: the ORM's and Core's per-row parameter
    # processing costs more than sealing does, and these values need no conversion.
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    table = AllocationSlot.__tablename__
    sql = (
        f"INSERT INTO {table} ({', '.join(_SLOT_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(_SLOT_COLUMNS))})"
    )
    connection.exec_driver_sql(sql, batch)
    if progress:
        progress(len(batch))


def refuse_twin(session: Session, study: Study, row: AllocationList) -> None:
    """A live list identical to the dummy list (or vice versa) would unmask training data."""
    other_kind = ListKind.DUMMY if row.kind is ListKind.LIVE else ListKind.LIVE
    other = find_list(session, study, other_kind)
    if other is not None and other.fingerprint == row.fingerprint:
        raise Conflict(
            N_(
                "This %(kind)s list is identical to the %(other_kind)s list; the live "
                "list must be made separately."
            ),
            field="list",
            kind=row.kind,
            other_kind=other_kind,
        )


def extend_stratum(
    session: Session,
    study: Study,
    *,
    kind: ListKind,
    stratum: str,
    slots: int,
    actor: audit.Actor,
    progress: Progress | None = None,
) -> int:
    """Append whole blocks to one stratum, continuing its seeded stream; audited.

    Returns the number of slots added (at least ``slots``: blocks are never cut).
    """
    _check_changeable(study, kind, N_("extended"))
    if definition_of(study).method != "permuted-blocks":
        raise Conflict(
            N_(
                "Study %(study)s allocates by minimization: there is no list made in advance "
                "to extend; each assignment is drawn at randomization."
            ),
            field="list",
            study=study.code,
        )
    row = session.scalars(
        select(AllocationList)
        .where(AllocationList.study_id == study.id, AllocationList.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise NotFound(
            N_("Study %(study)s has no %(kind)s list yet."),
            field="list",
            study=study.code,
            kind=kind,
        )
    if stratum not in row.params["strata"]:
        raise InvalidInput(
            N_("Study %(study)s has no stratum '%(stratum)s'."),
            field="stratum",
            study=study.code,
            stratum=stratum,
        )
    if not 1 <= slots <= MAX_EXTENSION:
        raise InvalidInput(
            N_("Add between 1 and %(max_extension)s slots."),
            field="slots",
            max_extension=MAX_EXTENSION,
        )
    if row.seed_sealed is None:
        raise Conflict(
            N_(
                "This list was imported: it has no seed to continue from. Make the extra blocks "
                "where the list was made; an imported list cannot be extended here."
            ),
            field="list",
        )
    counts = recorded_counts(row)
    current = counts.get(stratum, 0)
    stored = session.scalar(
        select(func.count()).where(
            AllocationSlot.list_id == row.id, AllocationSlot.stratum == stratum
        )
    )
    if stored != current:
        raise IntegrityFailure(
            f"stratum {stratum!r} holds {stored} slots but {current} are recorded; "
            "run `randomizer list verify` before extending"
        )
    seed = open_seed(session, study, row)
    stream = sequence.generate_stratum(
        seed, stratum, recorded_arms(row), row.params["block_sizes"], min_slots=current + slots
    )
    added = store_slots(session, study, row, itertools.islice(stream, current, None), progress)[0]
    counts[stratum] = current + added.get(stratum, 0)
    old_fingerprint = row.fingerprint
    history = [*row.params.get("extensions", []), {
        "stratum": stratum, "added": added.get(stratum, 0), "by": actor.username,
        "at": audit.timestamp()}]  # fmt: skip
    row.params = {**row.params, "slots": counts, "extensions": history}
    row.fingerprint = sequence.fingerprint(regenerate(seed, row))
    audit.record(
        session, actor=actor, action="list.extend", object_type="allocation_list",
        object_id=row.id, study_code=study.code,
        old={"stratum": stratum, "slots": current, "fingerprint": old_fingerprint},
        new={"kind": kind.value, "stratum": stratum, "slots": counts[stratum],
             "added": counts[stratum] - current, "fingerprint": row.fingerprint},
    )  # fmt: skip
    return counts[stratum] - current


def participant_arm(session: Session, study: Study, participant_id: int) -> str | None:
    """Open the arm of the slot bound to a participant (None when no slot is bound).

    Only allocation, unblinding and unblinded roles' views call this; those that show the
    arm to a person audit the disclosure.
    """
    slot = session.scalar(
        select(AllocationSlot).where(AllocationSlot.participant_id == participant_id)
    )
    if slot is None:
        return None
    allocation_list = session.get_one(AllocationList, slot.list_id)
    sealer = sealer_by_key_id(session, study, allocation_list.data_key_id)
    return slot_arm(session, study, slot, sealer)


def slot_arm(session: Session, study: Study, slot: AllocationSlot, sealer: RowSealer) -> str:
    """Open a slot's arm. Only allocation, unblinding and unblinded exports call this."""
    return slot_content(slot, sealer).arm


def slot_content(slot: AllocationSlot, sealer: RowSealer) -> SlotContent:
    """Open a slot's sealed content (arm, block, block size): unblinded uses only."""
    object_id = slot_object_id(slot.list_id, slot.stratum, slot.sequence)
    return parse_slot_content(sealer.open("slot", object_id, slot.arm_sealed))


def mark_used(slot: AllocationSlot, participant_id: int) -> None:
    """Bind a slot to its participant for good (never reused, skipped or reassigned)."""
    slot.status = SlotStatus.USED
    slot.participant_id = participant_id
    slot.used_at = utcnow()
