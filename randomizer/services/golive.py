"""Going live: the one-way switch from testing to live, signed by a statistician and an admin.

From then on randomizations draw from the live list (``lists.active_kind``); test data is
archived, never deleted and never mixed with live data: test participants are marked
archived, test kits still in circulation are quarantined (so that no allocation can pick
them), and open test shipments are cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict
from randomizer.models import (
    Kit,
    KitStatus,
    ListKind,
    Participant,
    Shipment,
    ShipmentStatus,
    Study,
    StudyMode,
)
from randomizer.services.commitment import commit_at_go_live
from randomizer.services.cosign import cosign
from randomizer.services.list_verify import verify_list
from randomizer.services.lists import find_list, refuse_twin
from randomizer.services.minimization import is_minimization
from randomizer.services.studies import lock_study_row
from randomizer.services.users import actor_of

#: Test kits in these states are still in circulation and are taken out of use.
_IN_CIRCULATION = (
    KitStatus.AT_DEPOT,
    KitStatus.IN_TRANSIT,
    KitStatus.AVAILABLE,
    KitStatus.ALLOCATED,
)
_OPEN_SHIPMENTS = (ShipmentStatus.PROPOSED, ShipmentStatus.IN_TRANSIT)
MEANING = "go live"


@dataclass(frozen=True)
class GoLiveResult:
    participants_archived: int
    kits_quarantined: int
    shipments_cancelled: int
    live_slots: int
    fingerprint: str


def go_live(
    session: Session,
    study: Study,
    *,
    statistician: str,
    statistician_password: str,
    admin: str,
    admin_password: str,
) -> GoLiveResult:
    """Switch the study to live for good; both signatures are checked before anything changes."""
    signers = cosign(
        session, step=N_("Going live"), meaning=MEANING, statistician=statistician,
        statistician_password=statistician_password, admin=admin, admin_password=admin_password,
    )  # fmt: skip
    signer, cosigner = signers.statistician, signers.admin
    locked = lock_study_row(session, study.id)
    if locked.mode is not StudyMode.TESTING:
        raise Conflict(
            N_("Study %(study)s is already live; going live is one-way."),
            field="study",
            study=study.code,
        )
    live = find_list(session, study, ListKind.LIVE)
    if live is None:
        raise Conflict(
            N_("Study %(study)s has no live list: generate or import one before going live."),
            field="list",
            study=study.code,
        )
    refuse_twin(session, study, live)
    actor = actor_of(signer)
    report = verify_list(session, study, kind=ListKind.LIVE, actor=actor)
    if not report.ok:
        raise Conflict(
            N_("The live list failed verification; it cannot be used: %(problems)s"),
            field="list",
            problems="; ".join(report.problems),
        )
    result = GoLiveResult(
        participants_archived=_archive_participants(session, study),
        kits_quarantined=_quarantine_test_kits(session, study),
        shipments_cancelled=_cancel_test_shipments(session, study),
        live_slots=report.slots,
        fingerprint=live.fingerprint,
    )
    locked.mode, locked.went_live_at = StudyMode.LIVE, utcnow()
    # A minimization record has no list to commit to: each assignment is replayed instead.
    commitment = None if is_minimization(live) else commit_at_go_live(session, study, live,
                                                                      actor=actor)  # fmt: skip
    audit.record(
        session, actor=actor, action="study.go_live", object_type="study", object_id=study.code,
        study_code=study.code, old={"mode": StudyMode.TESTING.value},
        new={"mode": StudyMode.LIVE.value, "statistician": signer.username,
             "admin": cosigner.username, "live_list_fingerprint": live.fingerprint,
             "live_slots": report.slots,
             "participants_archived": result.participants_archived,
             "kits_quarantined": result.kits_quarantined,
             "shipments_cancelled": result.shipments_cancelled,
             "commitment": commitment and commitment.commitment,
             "commitment_algorithm": commitment and commitment.algorithm,
             "committed_slots": commitment and commitment.slots},
        reason=f"signed by statistician {signer.username} and admin {cosigner.username}",
    )  # fmt: skip
    session.flush()
    return result


def _archive_participants(session: Session, study: Study) -> int:
    result = session.execute(
        update(Participant)
        .where(Participant.study_id == study.id, Participant.is_test.is_(True),
               Participant.archived.is_(False))
        .values(archived=True)
    )  # fmt: skip
    return int(result.rowcount)  # type: ignore[attr-defined]


def _quarantine_test_kits(session: Session, study: Study) -> int:
    result = session.execute(
        update(Kit)
        .where(Kit.study_id == study.id, Kit.is_test.is_(True), Kit.status.in_(_IN_CIRCULATION))
        .values(status=KitStatus.QUARANTINED)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _cancel_test_shipments(session: Session, study: Study) -> int:
    result = session.execute(
        update(Shipment)
        .where(Shipment.study_id == study.id, Shipment.is_test.is_(True),
               Shipment.status.in_(_OPEN_SHIPMENTS))
        .values(status=ShipmentStatus.CANCELLED)
    )  # fmt: skip
    return int(result.rowcount)  # type: ignore[attr-defined]
