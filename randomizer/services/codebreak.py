"""Code-break envelopes: the fallback for an emergency while the service is down.

The statistician prints one sheet per randomization number with the arm under a fold; the
sheets are sealed and held at the site (README: "When the service is down"). Producing them
opens every arm of the list, so it is the statistician's alone and audited like an export.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import N_, InvalidInput, NotPermitted
from randomizer.models import AllocationSlot, ListKind, Role, Study, User
from randomizer.services.keyring import sealer_by_key_id
from randomizer.services.lists import get_list, slot_arm
from randomizer.services.studies import definition_of
from randomizer.services.users import actor_of

#: Most sheets in one print run (a browser prints a few thousand pages at most).
MAX_ENVELOPES = 5000


@dataclass(frozen=True)
class Envelope:
    """One sheet: what is printed outside, and the arm printed under the fold."""

    randomization_number: str
    stratum: str
    site: str | None
    arm_code: str
    arm_name: str


@dataclass(frozen=True)
class EnvelopeRun:
    study_code: str
    study_title: str
    registry_id: str
    kind: ListKind
    fingerprint: str
    envelopes: list[Envelope]


def make_envelopes(
    session: Session, study: Study, *, kind: ListKind, actor_user: User, site: str | None = None
) -> EnvelopeRun:
    """Open the arms of a list (all slots, or one site's) for printing; audited."""
    if actor_user.role is not Role.STATISTICIAN:
        raise NotPermitted(N_("Only the unblinded statistician may produce code-break envelopes."))
    definition = definition_of(study)
    if site and not definition.stratify_by_site:
        raise InvalidInput(
            N_("This study's list is not stratified by site: print all envelopes."), field="site"
        )
    if site and site not in {s.code for s in definition.sites}:
        raise InvalidInput(
            N_("Study %(study)s has no site '%(site)s'."), field="site", study=study.code, site=site
        )
    allocation_list = get_list(session, study, kind)
    query = select(AllocationSlot).where(AllocationSlot.list_id == allocation_list.id)
    if site:
        query = query.where(
            (AllocationSlot.stratum == site) | AllocationSlot.stratum.startswith(f"{site}|")
        )
    slots = session.scalars(
        query.order_by(AllocationSlot.randomization_number).limit(MAX_ENVELOPES + 1)
    ).all()
    if len(slots) > MAX_ENVELOPES:
        raise InvalidInput(
            N_("More than %(max_envelopes)s envelopes: print one site at a time."),
            field="site",
            max_envelopes=MAX_ENVELOPES,
        )
    sealer = sealer_by_key_id(session, study, allocation_list.data_key_id)
    envelopes = []
    for slot in slots:
        arm = slot_arm(session, study, slot, sealer)
        envelopes.append(
            Envelope(
                slot.randomization_number,
                slot.stratum,
                slot.stratum.split("|", 1)[0] if definition.stratify_by_site else None,
                arm,
                definition.arm(arm).name,
            )
        )
    audit.record(
        session,
        actor=actor_of(actor_user),
        action="codebreak.envelopes",
        object_type="allocation_list",
        object_id=allocation_list.id,
        study_code=study.code,
        new={
            "kind": kind.value,
            "site": site,
            "envelopes": len(envelopes),
            "first": envelopes[0].randomization_number if envelopes else None,
            "last": envelopes[-1].randomization_number if envelopes else None,
            "fingerprint": allocation_list.fingerprint,
        },
    )
    return EnvelopeRun(
        study.code, study.title, study.registry_id, kind, allocation_list.fingerprint, envelopes
    )
