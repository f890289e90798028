"""Loading study definitions and reading them back."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import N_, Conflict, InvalidInput, NotFound
from randomizer.models import AllocationList, Site, Study, StudyMode
from randomizer.studydef import StudyDefinition, StudyDefinitionError, parse_study


@lru_cache(maxsize=64)
def _parse_cached(text: str) -> StudyDefinition:
    return parse_study(text, "<stored definition>")


def definition_of(study: Study) -> StudyDefinition:
    """The parsed definition of a loaded study (cached by its text)."""
    return _parse_cached(study.definition_toml)


def get_study(session: Session, code: str) -> Study:
    """The study with this code, or NotFound."""
    study = session.scalar(select(Study).where(Study.code == code))
    if study is None:
        raise NotFound(N_("No study with code '%(code)s'."), field="study", code=code)
    return study


def lock_study_row(session: Session, study_id: int) -> Study:
    """The study, refreshed and row-locked until the transaction ends (``FOR UPDATE``).

    Allocations take the same lock, so a step taken under it never races a randomization.
    """
    return session.scalars(
        select(Study).where(Study.id == study_id).with_for_update()
        .execution_options(populate_existing=True)
    ).one()  # fmt: skip


def load_study(
    session: Session, *, text: str, filename: str, actor: audit.Actor = audit.SYSTEM
) -> tuple[Study, bool]:
    """Validate and load a definition; returns (study, changed). Audited.

    Loading the same text again changes nothing. A changed definition is accepted only while
    the study is in testing mode and has no allocation list yet, since lists and kits are
    built from it.
    """
    try:
        definition = parse_study(text, filename)
    except StudyDefinitionError as exc:
        raise InvalidInput(
            N_("The study definition is refused: %(problem)s"), field=exc.field, problem=str(exc)
        ) from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    study = session.scalar(select(Study).where(Study.code == definition.code))
    if study is not None:
        if study.definition_toml == text:
            return study, False
        if study.mode is not StudyMode.TESTING or session.scalar(
            select(func.count())
            .select_from(AllocationList)
            .where(AllocationList.study_id == study.id)
        ):
            raise Conflict(
                N_(
                    "Study %(study)s already has allocation lists or is live; its "
                    "definition can no longer be replaced."
                ),
                field="study",
                study=definition.code,
            )
        old = {"sha256": hashlib.sha256(study.definition_toml.encode()).hexdigest()}
        _apply(session, study, definition, text)
        audit.record(
            session,
            actor=actor,
            action="study.update",
            object_type="study",
            object_id=study.code,
            study_code=study.code,
            old=old,
            new={"sha256": digest, "file": filename},
        )
        return study, True
    study = Study(
        code=definition.code,
        mode=StudyMode.TESTING,
        definition_toml=text,
        title=definition.title,
        registry_id=definition.registry_id,
    )
    session.add(study)
    session.flush()
    _apply(session, study, definition, text)
    audit.record(
        session,
        actor=actor,
        action="study.load",
        object_type="study",
        object_id=study.code,
        study_code=study.code,
        new={
            "sha256": digest,
            "file": filename,
            "title": definition.title,
            "registry_id": definition.registry_id,
            "sites": [s.code for s in definition.sites],
        },
    )
    return study, True


def _apply(session: Session, study: Study, definition: StudyDefinition, text: str) -> None:
    study.title, study.registry_id = definition.title, definition.registry_id
    study.definition_toml = text
    existing = {s.code: s for s in study.sites}
    for position, sd in enumerate(definition.sites):
        site = existing.pop(sd.code, None) or Site(study_id=study.id, code=sd.code)
        site.name, site.position = sd.name, position
        site.trigger_level, site.resupply_level = sd.trigger_level, sd.resupply_level
        session.add(site)
    for gone in existing.values():
        session.delete(gone)
    session.flush()
    session.refresh(study, ["sites"])
