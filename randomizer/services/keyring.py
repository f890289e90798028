"""Data keys per study and purpose, wrapped by the master key; sealing arms to their rows."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import (
    IntegrityFailure,
    Sealer,
    associated_data,
    new_key,
    new_key_id,
    pad,
    unpad,
    unwrap_key,
    wrap_key,
)
from randomizer.instance import secrets_of
from randomizer.models import DataKey, Study

#: Key purposes: the dummy list, the live list and the kits each have their own data key.
PURPOSES = ("list-dummy", "list-live", "kits")


def data_key(session: Session, study: Study, purpose: str) -> DataKey:
    """The study's data key for a purpose, created (and wrapped) on first use."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")
    found = session.scalar(
        select(DataKey).where(DataKey.study_id == study.id, DataKey.purpose == purpose)
    )
    if found is not None:
        return found
    master = secrets_of(session).ring.current
    row = DataKey(
        id=new_key_id(),
        study_id=study.id,
        purpose=purpose,
        wrapped=wrap_key(master.key, new_key()),
        master_key_id=master.key_id,
    )
    session.add(row)
    session.flush()
    return row


def open_key(session: Session, key: DataKey) -> bytes:
    """Unwrap a data key with the master key that wrapped it."""
    master = secrets_of(session).master(key.master_key_id)
    return unwrap_key(master, key.wrapped)


class RowSealer:
    """Seals and opens values of one study under one data key, bound to their rows."""

    def __init__(self, session: Session, study: Study, key: DataKey) -> None:
        self.study_code = study.code
        self.key_id = key.id
        self._sealer = Sealer(open_key(session, key))

    def aad(self, kind: str, object_id: object) -> bytes:
        return associated_data(self.study_code, kind, object_id, self.key_id)

    def seal(self, kind: str, object_id: object, value: str) -> bytes:
        return self._sealer.seal(pad(value.encode("utf-8")), self.aad(kind, object_id))

    def seal_bytes(self, kind: str, object_id: object, data: bytes) -> bytes:
        """Seal bytes as they are (no padding: the caller makes sure the length tells
        nothing it may not)."""
        return self._sealer.seal(data, self.aad(kind, object_id))

    def open_bytes(self, kind: str, object_id: object, sealed: bytes) -> bytes:
        """Open what ``seal_bytes`` sealed for this row."""
        try:
            return self._sealer.unseal(sealed, self.aad(kind, object_id))
        except IntegrityFailure:
            raise IntegrityFailure(
                f"sealed {kind} {object_id} of study {self.study_code} failed its integrity "
                "check (altered, or moved from another row); it was not opened"
            ) from None

    def open(self, kind: str, object_id: object, sealed: bytes) -> str:
        try:
            return unpad(self._sealer.unseal(sealed, self.aad(kind, object_id))).decode("utf-8")
        except IntegrityFailure:
            raise IntegrityFailure(
                f"sealed {kind} {object_id} of study {self.study_code} failed its integrity "
                "check (altered, or moved from another row); it was not opened"
            ) from None


def sealer_for(session: Session, study: Study, purpose: str) -> RowSealer:
    """A RowSealer for the study's data key of this purpose."""
    return RowSealer(session, study, data_key(session, study, purpose))


def sealer_by_key_id(session: Session, study: Study, key_id: str) -> RowSealer:
    """A RowSealer for a specific stored data key.

    Unwrapped once per process: a data key never changes (rotating the master key
    re-wraps it, the key itself stays), so the sealer stays valid for the process's life
    and a randomization does not read and unwrap the key row again.
    """
    cache_key = (id(secrets_of(session)), study.id, study.code, key_id)
    found = _SEALERS.get(cache_key)
    if found is not None:
        return found
    key = session.get(DataKey, key_id)
    if key is None or key.study_id != study.id:
        raise IntegrityFailure(f"data key {key_id} of study {study.code} is missing")
    sealer = RowSealer(session, study, key)
    if len(_SEALERS) >= _MAX_SEALERS:
        _SEALERS.clear()
    _SEALERS[cache_key] = sealer
    return sealer


#: Unwrapped data keys of this process, by (instance secrets, study, key id).
_SEALERS: dict[tuple[int, int, str, str], RowSealer] = {}
_MAX_SEALERS = 256


def slot_object_id(list_id: int, stratum: str, sequence: int) -> str:
    """The object id a slot's arm is bound to (stable before the row has an id)."""
    return f"{list_id}/{stratum}/{sequence}"


def rotate_master_key(session: Session, *, actor: audit.Actor) -> tuple[str, str, int]:
    """Re-wrap every data key under a new master key; returns (old id, new id, count).

    The caller writes the new key ring to the key file *before* committing (see
    ``cli.keys``), so that a crash leaves either the old wrapping with both keys on file,
    or the new wrapping with the new key on file.
    """
    secrets = secrets_of(session)
    old_ring = secrets.ring
    new_ring = old_ring.with_new_current()
    new_master = new_ring.current
    keys = session.scalars(select(DataKey).order_by(DataKey.id)).all()
    for key in keys:
        plain = unwrap_key(old_ring.get(key.master_key_id).key, key.wrapped)
        key.wrapped = wrap_key(new_master.key, plain)
        key.master_key_id = new_master.key_id
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="keys.rotate",
        object_type="master_key",
        object_id=new_master.key_id,
        old={"master_key_id": old_ring.current.key_id},
        new={"master_key_id": new_master.key_id, "data_keys_rewrapped": len(keys)},
    )
    secrets.ring = new_ring
    return old_ring.current.key_id, new_master.key_id, len(keys)
