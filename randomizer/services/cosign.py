"""Two-person signatures for one-way study steps (going live, database lock).

A statistician and an admin each sign with their own password; both signatures are checked
through ``users.check_signature`` before the step changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.errors import NotPermitted, SignatureInvalid
from randomizer.models import Role, User
from randomizer.services.users import check_signature


@dataclass(frozen=True)
class Cosigners:
    """The statistician and the admin who signed a step."""

    statistician: User
    admin: User


def cosign(
    session: Session,
    *,
    step: str,
    meaning: str,
    statistician: str,
    statistician_password: str,
    admin: str,
    admin_password: str,
) -> Cosigners:
    """Check both signatures (statistician first); ``step`` names the step in refusals."""
    return Cosigners(
        _signer(session, step, meaning, statistician, statistician_password, Role.STATISTICIAN),
        _signer(session, step, meaning, admin, admin_password, Role.ADMIN),
    )


def _signer(
    session: Session, step: str, meaning: str, username: str, password: str, role: Role
) -> User:
    field = role.value
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None or user.role is not role or not user.active:
        raise NotPermitted(f"{step} must be signed by an active {role.value} account; "
                           f"{username!r} is not one.", field=field)  # fmt: skip
    try:
        check_signature(session, user, password, meaning)
    except SignatureInvalid as exc:
        raise SignatureInvalid(f"{role.value} {user.username}: {exc.message}",
                               field=f"{field}_password") from None  # fmt: skip
    return user
