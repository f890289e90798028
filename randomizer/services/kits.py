"""Kits: generation with sealed arms balanced in blocks (lifecycle and pharmacy build on it)."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit, kitcodes, sequence
from randomizer.errors import InvalidInput, NotFound
from randomizer.models import Kit, KitStatus, Study, StudyMode
from randomizer.services.keyring import RowSealer, sealer_by_key_id, sealer_for
from randomizer.services.studies import definition_of

KIT_PURPOSE = "kits"
MAX_KITS_PER_CALL = 100_000


def kit_arm_blocks(study: Study, count: int, generator: sequence.Generator) -> list[str]:
    """Arm codes for ``count`` kits, balanced in shuffled blocks of twice the ratio sum.

    A final partial block takes a random part of a full shuffled block, so no arm is ever
    more than one block ahead.
    """
    arms = definition_of(study).arms
    unit = [a.code for a in arms for _ in range(a.ratio)] * 2
    out: list[str] = []
    while len(out) < count:
        block = list(unit)
        generator.shuffle(block)
        out.extend(block[: count - len(out)])
    return out


def generate_kits(
    session: Session,
    study: Study,
    *,
    count: int,
    actor: audit.Actor,
    site: str | None = None,
    lot: str | None = None,
    expiry: dt.date | None = None,
) -> list[Kit]:
    """Create kits with fresh random codes and sealed arms; at the depot, or received at
    ``site``. Audited with counts only (never arms)."""
    definition = definition_of(study)
    if not 1 <= count <= MAX_KITS_PER_CALL:
        raise InvalidInput(f"The count must be between 1 and {MAX_KITS_PER_CALL}.", field="count")
    if site is not None and site not in {s.code for s in definition.sites}:
        raise InvalidInput(f"Study {study.code} has no site {site!r}.", field="site")
    if lot is not None and not 1 <= len(lot.strip()) <= 64:
        raise InvalidInput("The lot must be 1–64 characters.", field="lot")
    sealer = sealer_for(session, study, KIT_PURPOSE)
    arms = kit_arm_blocks(study, count, sequence.Generator(secrets.token_bytes(32)))
    codes = _fresh_codes(session, count)
    status = KitStatus.AVAILABLE if site else KitStatus.AT_DEPOT
    kits = [
        Kit(study_id=study.id, code=code, data_key_id=sealer.key_id, status=status,
            site_code=site, lot=lot.strip() if lot else None, expiry=expiry,
            is_test=study.mode is StudyMode.TESTING,
            arm_sealed=sealer.seal("kit", code, arm))
        for code, arm in zip(codes, arms, strict=True)
    ]  # fmt: skip
    session.add_all(kits)
    session.flush()
    audit.record(
        session, actor=actor, action="kits.generate", object_type="kit_batch",
        object_id=f"{kits[0].code}..{kits[-1].code}", study_code=study.code,
        new={"count": count, "site": site, "status": status.value, "lot": lot,
             "expiry": expiry.isoformat() if expiry else None},
    )  # fmt: skip
    return kits


def _fresh_codes(session: Session, count: int) -> list[str]:
    codes: set[str] = set()
    while len(codes) < count:
        wanted = {kitcodes.new_code() for _ in range(count - len(codes))}
        taken = set(session.scalars(select(Kit.code).where(Kit.code.in_(wanted))))
        codes |= wanted - taken
    # Sort by the code itself: random, so the order reveals nothing about arm blocks.
    return sorted(codes)


def kit_sealer(session: Session, study: Study, kit: Kit) -> RowSealer:
    """The sealer that opens this kit's arm."""
    return sealer_by_key_id(session, study, kit.data_key_id)


def kit_arm(session: Session, study: Study, kit: Kit, sealer: RowSealer | None = None) -> str:
    """Open a kit's arm. Callers that disclose it to a person must audit the disclosure."""
    return (sealer or kit_sealer(session, study, kit)).open("kit", kit.code, kit.arm_sealed)


def get_kit(session: Session, study: Study, code: str) -> Kit:
    """A kit of this study by (typed) code, or NotFound; a mistyped code is named as such."""
    if not kitcodes.is_valid(code):
        raise NotFound(
            f"{code!r} is not a valid kit code (check character does not match: mistyped?).",
            field="kit_code",
        )
    kit = session.scalar(
        select(Kit).where(Kit.study_id == study.id, Kit.code == kitcodes.canonical(code))
    )
    if kit is None:
        raise NotFound(f"No kit {kitcodes.canonical(code)} in study {study.code}.",
                       field="kit_code")  # fmt: skip
    return kit
