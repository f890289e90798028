"""The second factor: TOTP (RFC 6238) codes from an authenticator app.

The base32 secret is sealed under the current master key (AES-256-GCM, associated data
binding it to the user and the key id) together with the last time step used, so that a
database copy reveals no secret and a code is accepted only once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import IntegrityFailure, associated_data, seal, unseal
from randomizer.errors import N_, Conflict, InvalidInput
from randomizer.instance import secrets_of
from randomizer.models import User

TOTP_ISSUER = "randomizer"
TOTP_DIGITS = 6
TOTP_STEP = 30
#: Codes of the previous and next 30-second step are accepted too (clock drift).
TOTP_DRIFT_STEPS = 1
RECOVERY_CODES = 10
#: Groups of four hex digits per recovery code ("3f9a-07c2-…").
RECOVERY_GROUPS = 3


def has_second_factor(user: User) -> bool:
    """Whether the user is enrolled in TOTP."""
    return user.totp_sealed is not None


def enrol_totp(
    session: Session, user: User, *, actor: audit.Actor = audit.SYSTEM, replace: bool = False
) -> str:
    """Give the user a new TOTP secret; returns the otpauth:// URI to scan. Audited."""
    if user.totp_sealed is not None and not replace:
        raise Conflict(
            N_("%(username)s already has a second factor; replace it explicitly (--replace)."),
            field="username",
            username=user.username,
        )
    replaced = user.totp_sealed is not None
    secret = new_totp_secret()
    _store_totp(session, user, secret, last_step=0)
    audit.record(
        session,
        actor=actor,
        action="user.totp_enrol",
        object_type="user",
        object_id=user.username,
        new={"replaced": replaced},
    )
    return provisioning_uri(secret, user.username)


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def provisioning_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app scans."""
    return _totp(secret).get_provisioning_uri(username, TOTP_ISSUER)


def confirm_totp(
    session: Session, user: User, *, secret: str, code: object, actor: audit.Actor
) -> list[str]:
    """Enrol ``secret`` once the user proves it with a current code; returns new recovery
    codes (shown once). Replaces an earlier second factor. Audited."""
    replaced = user.totp_sealed is not None
    _store_totp(session, user, secret, last_step=0)
    if not verify_totp(session, user, code):
        raise InvalidInput(
            N_(
                "That code is not valid. Enter the current 6-digit code from your "
                "authenticator app."
            ),
            field="code",
        )
    codes = new_recovery_codes(user)
    audit.record(session, actor=actor, action="user.totp_enrol", object_type="user",
                 object_id=user.username, new={"replaced": replaced, "confirmed": True,
                                               "recovery_codes": len(codes)})  # fmt: skip
    return codes


def new_recovery_codes(user: User) -> list[str]:
    """Replace the user's recovery codes by fresh ones; returns them (only digests stay)."""
    codes = [
        "-".join(secrets.token_hex(2) for _ in range(RECOVERY_GROUPS))
        for _ in range(RECOVERY_CODES)
    ]
    user.recovery_codes = [_recovery_digest(c) for c in codes]
    return codes


def use_recovery_code(session: Session, user: User, code: object) -> bool:
    """Spend one recovery code in place of a one-time code; each works once. Audited."""
    if not isinstance(code, str) or not user.recovery_codes:
        return False
    digest = _recovery_digest(code)
    if digest not in user.recovery_codes:
        return False
    user.recovery_codes = [d for d in user.recovery_codes if d != digest]
    audit.record(session, actor=audit.Actor(user.username, user.role.value),
                 action="user.recovery_code_used", object_type="user", object_id=user.username,
                 new={"left": len(user.recovery_codes)})  # fmt: skip
    session.flush()
    return True


def _recovery_digest(code: str) -> str:
    normal = code.strip().lower().replace(" ", "")
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()


def remove_totp(session: Session, user: User, *, actor: audit.Actor) -> None:
    """Remove the user's second factor (a lost phone); audited."""
    if user.totp_sealed is None:
        raise Conflict(
            N_("%(username)s has no second factor."), field="username", username=user.username
        )
    user.totp_sealed = None
    user.recovery_codes = None
    audit.record(
        session, actor=actor, action="user.totp_remove", object_type="user", object_id=user.username
    )


def verify_totp(session: Session, user: User, code: object, *, now: float | None = None) -> bool:
    """Check a one-time code of an enrolled user; each code is accepted only once.

    False for a user without a second factor, a malformed code, a wrong code or one already
    used. Flushes the new "last used step", which the caller's commit keeps.
    """
    if user.totp_sealed is None or not isinstance(code, str):
        return False
    code = code.replace(" ", "").strip()
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return False
    # Read the stored value under a row lock (PostgreSQL; SQLite transactions already hold
    # the write lock) so that two requests cannot both spend the same code. Only this
    # column is read: the caller's other changes to the user stay as they are.
    stored = session.scalar(select(User.totp_sealed).where(User.id == user.id).with_for_update())
    if stored is None:
        return False
    try:
        secret, last_step = _load_totp(session, user, stored)
    except IntegrityFailure:
        return False  # altered or moved to another account: no code can match
    current = int(time.time() if now is None else now) // TOTP_STEP
    totp = _totp(secret)
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        expected = totp.generate(step * TOTP_STEP)
        if step > last_step and hmac.compare_digest(expected, code.encode("ascii")):
            _store_totp(session, user, secret, last_step=step)
            session.flush()
            return True
    return False


def _totp(secret: str) -> TOTP:
    key = base64.b32decode(secret)
    return TOTP(key, TOTP_DIGITS, SHA1(), TOTP_STEP, enforce_key_length=False)


def _totp_aad(user: User, key_id: str) -> bytes:
    return associated_data("-", "totp", user.username, key_id)


def _store_totp(session: Session, user: User, secret: str, *, last_step: int) -> None:
    # Stored as "<master key id>:" + sealed JSON; the id says which key opens it after a
    # rotation. The last used step travels inside, so a code cannot be replayed.
    master = secrets_of(session).ring.current
    plaintext = json.dumps({"secret": secret, "last_step": last_step}).encode("utf-8")
    sealed = seal(master.key, plaintext, _totp_aad(user, master.key_id))
    user.totp_sealed = master.key_id.encode("utf-8") + b":" + sealed


def _load_totp(session: Session, user: User, stored: bytes) -> tuple[str, int]:
    key_id, sep, sealed = stored.partition(b":")
    if not sep:
        raise IntegrityFailure(f"the second factor of {user.username} is not readable")
    key_text = key_id.decode("utf-8")
    master = secrets_of(session).master(key_text)
    data = json.loads(unseal(master, sealed, _totp_aad(user, key_text)))
    return str(data["secret"]), int(data["last_step"])


def reseal_second_factors(session: Session) -> int:
    """Re-seal every TOTP secret under the current master key (after a key rotation)."""
    count = 0
    for user in session.scalars(select(User).where(User.totp_sealed.is_not(None))):
        secret, last_step = _load_totp(session, user, user.totp_sealed or b"")
        _store_totp(session, user, secret, last_step=last_step)
        count += 1
    session.flush()
    return count
