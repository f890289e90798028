"""Two-person bulk unblinding (SPEC §4.4): who must sign an unblinded export.

With ``[randomization] bulk_export_signers = 2`` an unblinded export of the live list, or of
the kit list of a live study, needs two different unblinded people: a statistician and a
second statistician or pharmacist, each re-entering their password. The dummy list (and
the kits of a study still in testing) stays single-signer. Every refusal happens before a
single arm is opened, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.errors import N_, NotPermitted, Text
from randomizer.models import Role, Study, StudyMode, User
from randomizer.services.cosign import check_signer
from randomizer.services.kits import export_rows, list_kits, open_arms
from randomizer.services.studies import definition_of

MEANING = "unblinded bulk export"
UNBLINDED_ROLES = tuple(role for role in Role if role.unblinded)
#: The form and option names of the two signers, in order.
FIELDS = ("statistician", "second")


@dataclass(frozen=True)
class Signature:
    """A signer's username and the password they re-entered."""

    username: str
    password: str


def signers_needed(study: Study, *, live: bool) -> int:
    """How many people must sign an unblinded export (of live data, or not)."""
    return definition_of(study).bulk_export_signers if live else 1


def check_signers(
    session: Session, study: Study, signatures: Sequence[Signature], *, live: bool, what: str
) -> list[User]:
    """The signers of an unblinded export of ``what``, checked; refuses too few or the same
    person twice. With one signer required, no signature is needed from the console."""
    needed = signers_needed(study, live=live)
    if needed > 1 and len(signatures) < needed:
        raise NotPermitted(
            N_(
                "An unblinded export of %(what)s of study %(study)s needs %(needed)s "
                "unblinded people: a statistician and a second unblinded person "
                "(--statistician NAME --second NAME, both passwords on standard input, "
                "one per line)."
            ),
            field=FIELDS[min(len(signatures), len(FIELDS) - 1)],
            what=Text(what),
            study=study.code,
            needed=needed,
        )
    names = [s.username.strip().lower() for s in signatures]
    if len(set(names)) < len(names):
        raise NotPermitted(
            N_("The two signatures must come from two different people."), field=FIELDS[-1]
        )
    return [
        check_signer(session, sig.username, sig.password,
                     roles=(Role.STATISTICIAN,) if i == 0 else UNBLINDED_ROLES,
                     action=N_("An unblinded export"), meaning=MEANING, field=FIELDS[i])
        for i, sig in enumerate(signatures[: len(FIELDS)])
    ]  # fmt: skip


def signed_by(users: Sequence[User]) -> dict[str, Any]:
    """What the audit event of a signed export records about its signatures."""
    return {"signatures": [{"username": u.username, "role": u.role.value, "meaning": MEANING}
                           for u in users]}  # fmt: skip


def export_kits_unblinded(
    session: Session, study: Study, *, signatures: Sequence[Signature], actor: audit.Actor
) -> list[dict[str, str]]:
    """The kit list with arms, after the signatures a live study needs; audited with them."""
    signers = check_signers(
        session, study, signatures, live=study.mode is StudyMode.LIVE, what=N_("the kit list")
    )
    kits = list_kits(session, study)
    arms = open_arms(session, study, kits)
    arm_of = {kit.code: arms[kit.id] for kit in kits}
    rows = export_rows(session, study, unblinded=False, actor=actor)
    for row in rows:
        row["arm"] = arm_of[row["kit_code"]]
    audit.record(
        session, actor=actor, action="kits.export_unblinded", object_type="study",
        object_id=study.code, study_code=study.code,
        new={"count": len(rows), **signed_by(signers)},
    )  # fmt: skip
    return rows
