"""Database lock: the one-way end of a live study, signed by a statistician and an admin.

After the lock nothing that changes allocations or participants is possible: every such
operation calls ``refuse_if_locked`` first. Emergency unblinding stays possible (SPEC §2
invariant 5: the investigator is never gated).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import utcnow
from randomizer.errors import N_, Conflict, StudyLocked
from randomizer.models import Study, StudyMode
from randomizer.services.cosign import cosign
from randomizer.services.studies import lock_study_row
from randomizer.services.users import actor_of

MEANING = "database lock"


def refuse_if_locked(study: Study) -> None:
    """StudyLocked (409) once the study's database is locked; nothing is changed."""
    if study.locked_at is not None:
        raise StudyLocked(
            N_(
                "The database of study %(study)s is locked: participants and allocations "
                "can no longer be changed. Nothing was changed."
            ),
            field="study",
            study=study.code,
        )


def lock_study(
    session: Session,
    study: Study,
    *,
    statistician: str,
    admin: str,
    statistician_password: str,
    admin_password: str,
) -> dt.datetime:
    """Lock the live study's database for good; both signatures checked first. Audited."""
    signers = cosign(
        session, step=N_("The database lock"), meaning=MEANING, statistician=statistician,
        statistician_password=statistician_password, admin=admin, admin_password=admin_password,
    )  # fmt: skip
    # The same row lock as every allocation: a randomization in progress finishes first.
    locked = lock_study_row(session, study.id)
    refuse_if_locked(locked)
    if locked.mode is not StudyMode.LIVE:
        raise Conflict(
            N_("Study %(study)s is not live: only a live study's database can be locked."),
            field="study",
            study=study.code,
        )
    stat, admin_user = signers.statistician, signers.admin
    locked.locked_at, locked.locked_by, locked.lock_cosigned_by = (
        utcnow(), stat.username, admin_user.username
    )  # fmt: skip
    audit.record(
        session, actor=actor_of(stat), action="study.lock", object_type="study",
        object_id=study.code, study_code=study.code, old={"locked": False},
        new={"locked": True, "locked_at": audit.timestamp(locked.locked_at),
             "statistician": stat.username, "admin": admin_user.username, "meaning": MEANING},
        reason=f"signed by statistician {stat.username} and admin {admin_user.username}",
    )  # fmt: skip
    session.flush()
    return locked.locked_at
