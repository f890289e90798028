"""The CDISC SDTM DM (demographics) dataset of a locked study (SPEC §4.1).

One row per registered live participant. ARMCD/ARM come from the participant's list slot,
ACTARMCD/ACTARM from the kits actually dispensed. The dataset discloses every arm: it
exists only after the database lock, and producing it is audited in the same transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import N_, Conflict
from randomizer.models import Dispensation, Kit, Participant, ParticipantStatus, Study
from randomizer.services.kits import open_arms
from randomizer.services.lists import participant_arm
from randomizer.services.studies import definition_of
from randomizer.studydef import StudyDefinition

DM_COLUMNS = (
    "STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "ARMCD", "ARM", "ACTARMCD", "ACTARM",
    "RFSTDTC", "RFXSTDTC",
)  # fmt: skip
SCREEN_FAILURE = ("SCRNFAIL", "Screen Failure")
NOT_ASSIGNED = ("NOTASSGN", "Not Assigned")
NOT_TREATED = ("NOTTRT", "Not Treated")
#: Kits of more than one arm were dispensed (never expected; shown rather than hidden).
UNPLANNED = ("UNPLAN", "Unplanned Treatment")


def dm_header(definition: StudyDefinition) -> list[str]:
    """The DM columns, then one column per stratification factor (its code in upper case)."""
    return [*DM_COLUMNS, *(f.code.upper() for f in definition.factors)]


def _iso(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _planned(
    session: Session, study: Study, definition: StudyDefinition, p: Participant
) -> tuple[str, str]:
    if p.status is ParticipantStatus.SCREEN_FAILED:
        return SCREEN_FAILURE
    arm = participant_arm(session, study, p.id) if p.randomization_number else None
    return NOT_ASSIGNED if arm is None else (arm, definition.arm(arm).name)


def _dispensed(session: Session, study: Study) -> dict[int, list[tuple[dt.datetime, Kit]]]:
    """Kits handed out, by participant id, in the order they were dispensed."""
    rows = session.execute(
        select(Dispensation.participant_id, Dispensation.dispensed_at, Kit)
        .join(Kit, Kit.id == Dispensation.kit_id)
        .where(Kit.study_id == study.id, Dispensation.dispensed_at.is_not(None))
        .order_by(Dispensation.dispensed_at, Dispensation.id)
    ).all()
    found: dict[int, list[tuple[dt.datetime, Kit]]] = {}
    for participant_id, at, kit in rows:
        found.setdefault(participant_id, []).append((at, kit))
    return found


def _actual(definition: StudyDefinition, arms: Iterable[str]) -> tuple[str, str]:
    distinct = sorted(set(arms))
    if not distinct:
        return NOT_TREATED
    if len(distinct) > 1:
        return UNPLANNED
    return distinct[0], definition.arm(distinct[0]).name


def dm_rows(session: Session, study: Study) -> list[list[str]]:
    """The dataset's rows (no header), ordered by USUBJID. Callers audit the disclosure."""
    definition = definition_of(study)
    participants = session.scalars(
        select(Participant).where(
            Participant.study_id == study.id,
            Participant.is_test.is_(False),
            Participant.archived.is_(False),
        )
    ).all()
    dispensed = _dispensed(session, study)
    kit_arms = open_arms(session, study, [k for got in dispensed.values() for _, k in got])
    rows = []
    for p in participants:
        got = dispensed.get(p.id, [])
        subject = p.randomization_number or p.screening_number
        rows.append([
            study.code, "DM", f"{study.code}-{p.site_code}-{subject}", subject, p.site_code,
            *_planned(session, study, definition, p),
            *_actual(definition, (kit_arms[k.id] for _, k in got)),
            _iso(p.randomized_at), _iso(got[0][0] if got else None),
            *(p.factors.get(f.code, "") for f in definition.factors),
        ])  # fmt: skip
    return sorted(rows, key=lambda r: r[2])


def export_dm(session: Session, study: Study, *, out: TextIO, actor: audit.Actor) -> int:
    """Write the DM dataset as CSV to ``out``; only after the database lock. Audited.

    The caller commits before the file is handed out, and discards it if the commit fails.
    """
    if study.locked_at is None:
        raise Conflict(
            N_(
                "The database of study %(study)s is not locked: the SDTM DM dataset "
                "exists only after the database lock. No file was written."
            ),
            field="study",
            study=study.code,
        )
    rows = dm_rows(session, study)
    writer = csv.writer(out)
    writer.writerow(dm_header(definition_of(study)))
    writer.writerows(rows)
    audit.record(
        session, actor=actor, action="export.sdtm_dm", object_type="study",
        object_id=study.code, study_code=study.code,
        new={"dataset": "DM", "rows": len(rows), "unblinded": True},
    )  # fmt: skip
    return len(rows)
