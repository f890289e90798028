"""Who may sign a one-way or bulk step: the named account, checked, then its signature."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.errors import NotPermitted, SignatureInvalid
from randomizer.models import Role, User
from randomizer.services.users import check_signature


def check_signer(
    session: Session,
    username: str,
    password: object,
    *,
    roles: Collection[Role],
    action: str,
    meaning: str,
    field: str,
) -> User:
    """The named user, once they have signed: active, in one of ``roles``, not locked out,
    right password. Refusals name ``field`` (``FIELD_password`` for the password)."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None or user.role not in roles or not user.active:
        allowed = " or ".join(role.value for role in roles)
        raise NotPermitted(
            f"{action} must be signed by an active {allowed} account; {username!r} is not one.",
            field=field,
        )
    if user.locked_until is not None and user.locked_until > utcnow():
        raise NotPermitted(
            f"{field} {user.username}: the account is locked after failed sign-ins and "
            "cannot sign until the lockout ends.",
            field=field,
        )
    try:
        check_signature(session, user, password, meaning)
    except SignatureInvalid as exc:
        raise SignatureInvalid(
            f"{field} {user.username}: {exc.message}", field=f"{field}_password"
        ) from None
    return user
