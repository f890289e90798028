"""Accounts: creation, sign-in with lockout, re-authentication for signatures, API tokens."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import dummy_password_check, hash_password, token_digest, verify_password
from randomizer.db import utcnow
from randomizer.errors import N_, AuthenticationFailed, InvalidInput, NotFound, SignatureInvalid
from randomizer.models import ApiToken, Role, Site, User, UserSite
from randomizer.services.exposure import check_role_change
from randomizer.services.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    check_password_policy,
)
from randomizer.services.second_factor import (
    enrol_totp,
    has_second_factor,
    remove_totp,
    reseal_second_factors,
    use_recovery_code,
    verify_totp,
)
from randomizer.throttle import FailureThrottle
from randomizer.wording import Text, Translate

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "check_password_policy",
    "enrol_totp",
    "has_second_factor",
    "remove_totp",
    "reseal_second_factors",
    "verify_totp",
]

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
TOKEN_PREFIX = "rnd_"

#: The one message for every failed sign-in, so that it reveals nothing.
SIGN_IN_REFUSED = N_("Unknown username or wrong password.")
#: Roles that REQUIRE_TOTP_FOR_PRIVILEGED keeps out until they enrol a second factor.
PRIVILEGED_ROLES = frozenset({Role.ADMIN, Role.STATISTICIAN, Role.PHARMACIST})


class SecondFactorMissing(AuthenticationFailed):
    """The password was right, but this role may only sign in with a second factor."""

    status, slug, title = 403, "second-factor-required", "Second factor required"


class SecondFactorInvalid(AuthenticationFailed):
    """The password was right, but the one-time code was not."""

    slug, title = "second-factor-invalid", "Wrong one-time code"


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int = 5
    minutes: int = 15
    #: Roles refused sign-in while they have no second factor (empty: none).
    second_factor_roles: frozenset[Role] = frozenset()


@dataclass(frozen=True)
class SignIn:
    """Outcome of the password step: signed in, or the one-time code is still owed."""

    user: User
    second_factor_pending: bool


def actor_of(user: User) -> audit.Actor:
    """The audit actor for a user."""
    return audit.Actor(user.username, user.role.value)


def _check_sites(session: Session, role: Role, sites: Iterable[str]) -> list[str]:
    """The sorted site codes, refusing unknown sites and site roles without a site."""
    site_codes = sorted(set(sites))
    known = set(session.scalars(select(Site.code).where(Site.code.in_(site_codes))))
    if unknown := [s for s in site_codes if s not in known]:
        raise InvalidInput(
            N_("Unknown site '%(unknown)s': load the study that defines it first."),
            field="site",
            unknown=unknown[0],
        )
    if role in (Role.INVESTIGATOR, Role.PHARMACIST) and not site_codes:
        raise InvalidInput(
            N_("The %(role)s role needs at least one site."), field="site", role=role
        )
    return site_codes


def create_user(
    session: Session,
    *,
    username: str,
    role: Role | str,
    password: str,
    full_name: str | None = None,
    email: str | None = None,
    sites: Iterable[str] = (),
    actor: audit.Actor = audit.SYSTEM,
) -> User:
    """Create an account with its site scope; audited."""
    username = username.strip().lower()
    if not USERNAME_RE.match(username):
        raise InvalidInput(
            N_(
                "The username must be 2–64 characters: lower-case letters, digits, '.', '_' or '-'."
            ),
            field="username",
        )
    try:
        role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise InvalidInput(
            N_("Unknown role '%(role)s'; choose one of %(allowed)s."),
            field="role",
            role=role,
            allowed=allowed,
        ) from None
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise InvalidInput(
            N_("The username '%(username)s' is taken."), field="username", username=username
        )
    if email is not None and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
        raise InvalidInput(N_("'%(email)s' is not an e-mail address."), field="email", email=email)
    site_codes = _check_sites(session, role, sites)
    check_password_policy(password, username=username)
    user = User(
        username=username,
        full_name=full_name or username,
        email=email,
        role=role,
        password_hash=hash_password(password),
        active=True,
        failed_logins=0,
        session_version=1,
        sites=[UserSite(site_code=s) for s in site_codes],
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.create",
        object_type="user",
        object_id=user.username,
        new={"role": role.value, "sites": site_codes, "email": email, "full_name": user.full_name},
    )
    return user


def get_user(session: Session, username: str) -> User:
    """The user with this username, or NotFound."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        raise NotFound(N_("No user named '%(username)s'."), field="username", username=username)
    return user


def update_user(
    session: Session,
    user: User,
    *,
    actor: audit.Actor,
    role: Role | None = None,
    sites: Iterable[str] | None = None,
    active: bool | None = None,
    reason: str | None = None,
    acknowledge_exposure: bool = False,
) -> User:
    """Change role, sites or status; live sessions of the user end at their next request.

    A change that would hide blinding exposure (unblinded to masked, assessor to unblinded)
    is refused unless ``acknowledge_exposure``, and the acknowledgement is audited.
    """
    old = {"role": user.role.value, "sites": sorted(user.site_codes), "active": user.active}
    new_role = user.role if role is None else Role(role)
    new_sites = _check_sites(session, new_role, user.site_codes if sites is None else sites)
    acknowledged = check_role_change(session, user, new_role, acknowledged=acknowledge_exposure)
    user.role = new_role
    if new_sites != old["sites"]:
        kept = [s for s in user.sites if s.site_code in new_sites]
        added = set(new_sites) - {s.site_code for s in kept}
        user.sites = kept + [UserSite(site_code=code) for code in sorted(added)]
    if active is not None:
        user.active = active
    new = {
        "role": user.role.value,
        "sites": sorted(s.site_code for s in user.sites),
        "active": user.active,
    }
    if new == old:
        return user
    if acknowledged:
        new["exposure_acknowledged"] = acknowledged
    user.session_version += 1
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.update",
        object_type="user",
        object_id=user.username,
        old=old,
        new=new,
        reason=reason,
    )
    return user


def authenticate(
    session: Session, *, username: str, password: str, policy: LockoutPolicy, source: str
) -> SignIn:
    """Password step of sign-in, with lockout; audited. Raises AuthenticationFailed.

    For a user enrolled in TOTP the sign-in is not complete: ``complete_sign_in`` must
    follow with the code, and the failure counter is only reset once it has.
    """
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        dummy_password_check()
        audit.record(
            session,
            actor=audit.Actor(username[:64] or "?", "anonymous"),
            action="login.failed",
            object_type="user",
            new={"source": source},
            reason="unknown username",
        )
        raise AuthenticationFailed(SIGN_IN_REFUSED)
    if _locked(session, user, source):
        dummy_password_check()
        raise AuthenticationFailed(SIGN_IN_REFUSED)
    if not verify_password(user.password_hash, password) or not user.active:
        why = "wrong password" if user.active else "account deactivated"
        _count_failure(session, user, policy, source, why)
        raise AuthenticationFailed(SIGN_IN_REFUSED)
    if user.totp_sealed is not None:
        return SignIn(user, second_factor_pending=True)
    if user.role in policy.second_factor_roles:
        _refuse(session, user, source, "second factor required but not enrolled")
        raise SecondFactorMissing(
            N_(
                "Your role may only sign in with a second factor (an authenticator app), and "
                "you have none yet. Ask an administrator to enrol you."
            ),
            field="password",
        )
    _signed_in(session, user, source, second_factor=False)
    return SignIn(user, second_factor_pending=False)


def complete_sign_in(
    session: Session,
    *,
    user_id: int,
    session_version: int,
    code: str,
    policy: LockoutPolicy,
    source: str,
) -> User:
    """Second step: check the one-time code of a user whose password was accepted."""
    user = session.get(User, user_id)
    if (
        user is None
        or not user.active
        or user.session_version != session_version
        or user.totp_sealed is None
    ):
        raise AuthenticationFailed(SIGN_IN_REFUSED)
    if _locked(session, user, source):
        raise AuthenticationFailed(SIGN_IN_REFUSED)
    if not verify_totp(session, user, code) and not use_recovery_code(session, user, code):
        if _count_failure(session, user, policy, source, "wrong one-time code"):
            raise AuthenticationFailed(SIGN_IN_REFUSED)
        raise SecondFactorInvalid(
            N_(
                "That code is not valid. Enter the current 6-digit code from your "
                "authenticator app."
            ),
            field="code",
        )
    _signed_in(session, user, source, second_factor=True)
    return user


def _locked(session: Session, user: User, source: str) -> bool:
    if user.locked_until is None or user.locked_until <= utcnow():
        return False
    _refuse(session, user, source, "account locked")
    return True


def _count_failure(
    session: Session, user: User, policy: LockoutPolicy, source: str, why: str
) -> bool:
    """Count a failed attempt and lock the account at the threshold; True when it locked."""
    user.failed_logins += 1
    locked = user.failed_logins >= policy.threshold
    if locked:
        user.locked_until = utcnow() + dt.timedelta(minutes=policy.minutes)
        user.failed_logins = 0
        why += f"; locked for {policy.minutes} minutes"
    _refuse(session, user, source, why)
    return locked


def _refuse(session: Session, user: User, source: str, why: str) -> None:
    audit.record(
        session,
        actor=actor_of(user),
        action="login.failed",
        object_type="user",
        object_id=user.username,
        new={"source": source},
        reason=why,
    )


def _signed_in(session: Session, user: User, source: str, *, second_factor: bool) -> None:
    user.failed_logins = 0
    user.locked_until = None
    audit.record(
        session,
        actor=actor_of(user),
        action="login",
        object_type="user",
        object_id=user.username,
        new={"source": source, "second_factor": "totp" if second_factor else None},
    )


def end_sessions(session: Session, user: User, *, actor: audit.Actor, action: str) -> None:
    """Invalidate every live session of the user (sign-out everywhere); audited."""
    user.session_version += 1
    audit.record(session, actor=actor, action=action, object_type="user", object_id=user.username)


def check_signature(session: Session, user: User, password: object, meaning: str) -> None:
    """Electronic signature: the signer re-enters their password; a refusal changes nothing.

    Wrong passwords are counted in the database outside the refused request's transaction
    (see ``throttle``); after the sign-in lockout threshold the signer is refused, even with
    the right password, until the lockout period has passed.
    """
    if not isinstance(password, str) or not password:
        raise SignatureInvalid(N_("Re-enter your password to sign."), field="password")
    throttle = session.info.get("signature_throttle")
    key = f"{user.id}:{user.password_hash}"
    if isinstance(throttle, FailureThrottle) and throttle.blocked(session, key):
        raise SignatureInvalid(
            N_(
                "Too many wrong passwords: signing is paused for this account. Wait a few "
                "minutes or ask an administrator; nothing was signed or changed."
            ),
            field="password",
        )
    if not verify_password(user.password_hash, password):
        if isinstance(throttle, FailureThrottle):
            throttle.fail(session, key)
        raise SignatureInvalid(
            N_("The password does not match: nothing was signed or changed."), field="password"
        )
    if isinstance(throttle, FailureThrottle):
        throttle.clear(session, key)


def signature_record(
    signer: User, signed_at: dt.datetime, meaning: Text, translate: Translate
) -> dict[str, str]:
    """A signature as the audit trail keeps it (21 CFR 11.50): who, when, and the meaning
    in the words the signer read (``translate``: their page's gettext), with the English."""
    return {
        "signer": signer.full_name,
        "username": signer.username,
        "signed_at": audit.timestamp(signed_at),
        "meaning": meaning.render(translate),
        "meaning_en": str(meaning),
    }


def create_token(session: Session, user: User, *, actor: audit.Actor = audit.SYSTEM) -> str:
    """Issue an API token; only its SHA-256 is stored. Returns the token (shown once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=token_digest(token), prefix=token[:10])
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="token.create",
        object_type="api_token",
        object_id=row.id,
        new={"user": user.username, "prefix": row.prefix},
    )
    return token


def revoke_token(session: Session, token_id: int, *, actor: audit.Actor) -> None:
    """Revoke an API token; audited."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        raise NotFound(N_("No such active token."))
    row.revoked_at = utcnow()
    audit.record(
        session,
        actor=actor,
        action="token.revoke",
        object_type="api_token",
        object_id=row.id,
        new={"user": row.user.username},
    )


def user_for_token(session: Session, token: str) -> User | None:
    """The active user owning an unrevoked token, or None."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None or not row.user.active:
        return None
    return row.user
