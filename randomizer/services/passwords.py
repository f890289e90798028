"""The password policy, after NIST SP 800-63B §3.1.1.2 (memorized secrets).

At least 12 characters and up to 256 (never truncated: the whole password is hashed), no
composition rules; refused when it is a commonly used password (the list shipped in
``randomizer/data/common-passwords.txt``), a run of very few distinct characters, or the
username or the service's name with digits or punctuation added.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from randomizer.errors import N_, InvalidInput

MIN_PASSWORD_LENGTH = 12
#: Long enough for passphrases, short enough that hashing cannot be used to tie up workers.
MAX_PASSWORD_LENGTH = 256
SERVICE_NAME = "randomizer"


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower case)."""
    text = resources.files("randomizer").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _context_word(password: str, username: str) -> bool:
    lowered = password.lower()
    return any(
        re.fullmatch(re.escape(word) + r"[\W\d_]*", lowered)
        for word in (username.lower(), SERVICE_NAME)
        if word
    )


def check_password_policy(password: str, *, username: str = "") -> None:
    """Refuse a password that is too short, too long, common or guessable from its context."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            N_("The password must have at least %(min_password_length)s characters."),
            field="password",
            min_password_length=MIN_PASSWORD_LENGTH,
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            N_("The password must have at most %(max_password_length)s characters."),
            field="password",
            max_password_length=MAX_PASSWORD_LENGTH,
        )
    if len(set(password)) < 4:
        raise InvalidInput(N_("The password is too simple."), field="password")
    if password.lower() in common_passwords() or _context_word(password, username):
        raise InvalidInput(
            N_(
                "This password is too common or too easy to guess: choose another one (a few "
                "unrelated words make a good password)."
            ),
            field="password",
        )
