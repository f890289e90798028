"""Account self-service and administration: own password change, password resets with a
forced change, accounts created with a temporary password. Every step is audited and ends
the user's other sessions (``session_version``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import hash_password
from randomizer.errors import N_, InvalidInput, SignatureInvalid
from randomizer.models import Role, User
from randomizer.services.passwords import check_password_policy
from randomizer.services.second_factor import enrol_totp, new_recovery_codes
from randomizer.services.users import actor_of, check_signature, create_user

CHANGE_MEANING = "password change"


def temporary_password() -> str:
    """A random one-time password an admin hands over (the user replaces it at sign-in)."""
    return secrets.token_urlsafe(12)


def change_password(session: Session, user: User, *, old_password: str, new_password: str) -> None:
    """The user's own change: the current password first; every session of the user ends."""
    try:
        check_signature(session, user, old_password, CHANGE_MEANING)
    except SignatureInvalid as exc:
        raise SignatureInvalid(exc.text, field="old_password") from None
    if new_password == old_password:
        raise InvalidInput(
            N_("The new password must differ from the current one."), field="new_password"
        )
    try:
        check_password_policy(new_password, username=user.username)
    except InvalidInput as exc:
        raise InvalidInput(exc.text, field="new_password") from None
    user.password_hash = hash_password(new_password)
    user.password_change_required = False
    user.session_version += 1
    audit.record(session, actor=actor_of(user), action="user.password_change",
                 object_type="user", object_id=user.username)  # fmt: skip


def reset_password(session: Session, user: User, *, actor: audit.Actor) -> str:
    """Give the user a temporary password to replace at the next sign-in; returns it (shown
    once). The user's sessions end and any sign-in lockout is lifted. Audited."""
    password = temporary_password()
    user.password_hash = hash_password(password)
    user.password_change_required = True
    user.failed_logins, user.locked_until = 0, None
    user.session_version += 1
    audit.record(session, actor=actor, action="user.password_reset", object_type="user",
                 object_id=user.username, new={"change_required": True})  # fmt: skip
    return password


def create_account(
    session: Session,
    *,
    username: str,
    role: Role | str,
    full_name: str | None,
    email: str | None,
    sites: Iterable[str],
    actor: audit.Actor,
) -> tuple[User, str]:
    """An account with a temporary password the user must change at first sign-in."""
    password = temporary_password()
    user = create_user(session, username=username, role=role, password=password,
                       full_name=full_name, email=email, sites=sites, actor=actor)  # fmt: skip
    user.password_change_required = True
    session.flush()
    return user, password


def enrol_for_user(session: Session, user: User, *, actor: audit.Actor) -> tuple[str, list[str]]:
    """An admin enrols (or replaces) a user's second factor: the otpauth:// URI to hand over
    and fresh recovery codes, both shown once. Audited."""
    uri = enrol_totp(session, user, actor=actor, replace=True)
    return uri, new_recovery_codes(user)
