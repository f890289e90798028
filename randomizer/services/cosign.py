"""Two-person signatures: one-way study steps (going live, database lock) and bulk exports.

A statistician and an admin (or, for a bulk unblinded export, a second unblinded person)
each sign with their own password; every signature is checked through ``check_signer``
(active account of the right role, not locked out, ``users.check_signature``) before the
step changes anything.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.db import utcnow
from randomizer.errors import N_, NotPermitted, SignatureInvalid, Text
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
    """Check both signatures (statistician first); ``step`` (``N_``-marked) names the step."""
    return Cosigners(
        check_signer(session, statistician, statistician_password, roles=(Role.STATISTICIAN,),
                     action=step, meaning=meaning, field=Role.STATISTICIAN.value),
        check_signer(session, admin, admin_password, roles=(Role.ADMIN,), action=step,
                     meaning=meaning, field=Role.ADMIN.value),
    )  # fmt: skip


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
        raise NotPermitted(
            N_(
                "%(action)s must be signed by an active %(allowed)s account; "
                "'%(username)s' is not one."
            ),
            field=field,
            action=Text(action),
            allowed=_either(tuple(roles)),
            username=username,
        )
    if user.locked_until is not None and user.locked_until > utcnow():
        raise NotPermitted(
            N_(
                "%(name)s %(username)s: the account is locked after failed sign-ins and "
                "cannot sign until the lockout ends."
            ),
            field=field,
            name=_signer(field),
            username=user.username,
        )
    try:
        check_signature(session, user, password, meaning)
    except SignatureInvalid as exc:
        raise SignatureInvalid(
            N_("%(name)s %(username)s: %(refusal)s"),
            field=f"{field}_password",
            name=_signer(field),
            username=user.username,
            refusal=exc,
        ) from None
    return user


#: How a refusal names the signer whose signature it is about.
SIGNERS = {
    "statistician": N_("statistician"),
    "admin": N_("admin"),
    "second": N_("second signer"),
}


def _either(roles: tuple[Role, ...]) -> object:
    """The roles as "a, b or c", in the reader's language."""
    if len(roles) < 2:
        return roles
    return Text(N_("%(some)s or %(last)s"), {"some": roles[:-1], "last": roles[-1]})


def _signer(field: str) -> Text:
    return Text(SIGNERS.get(field, field))
