"""Kit codes: random, from an unambiguous alphabet, with a check character.

Pure module. A code is 7 random characters and a check character, shown as ``ABCD-EFGH``.
The alphabet has 29 characters (a prime). The check character makes the weighted sum
``sum(i * value(c_i) for i = 1..8) ≡ 0 (mod 29)``; because 29 is prime and the weights 1..8
are distinct and non-zero mod 29, every single-character error and every transposition of
two adjacent characters changes the sum, so a mistyped code is refused instead of matching
another kit. Codes are drawn from the OS CSPRNG and carry no arm, order or site.
"""

from __future__ import annotations

import secrets

#: Without 0/O, 1/I/L, 5/S and U/V look-alikes: 29 characters (a prime modulus).
ALPHABET = "23456789ABCDEFGHJKMNPQRTVWXYZ"
_N = len(ALPHABET)
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
BODY_LENGTH = 7
_INVERSE_LAST_WEIGHT = pow(BODY_LENGTH + 1, -1, _N)


def _check_char(body: str) -> str:
    partial = sum((i + 1) * _INDEX[c] for i, c in enumerate(body))
    return ALPHABET[(-partial * _INVERSE_LAST_WEIGHT) % _N]


def new_code() -> str:
    """A fresh random kit code, formatted ``XXXX-XXXX``."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    raw = body + _check_char(body)
    return f"{raw[:4]}-{raw[4:]}"


def normalise(typed: str) -> str:
    """Upper-case and drop spaces and dashes (as typed or scanned)."""
    return "".join(c for c in typed.upper() if c not in " -\t")


def is_valid(typed: str) -> bool:
    """True when a typed or scanned code is well formed and its check character matches."""
    raw = normalise(typed)
    if len(raw) != BODY_LENGTH + 1 or any(c not in _INDEX for c in raw):
        return False
    return _check_char(raw[:-1]) == raw[-1]


def canonical(typed: str) -> str:
    """The stored form ``XXXX-XXXX`` of a valid typed code (call ``is_valid`` first)."""
    raw = normalise(typed)
    return f"{raw[:4]}-{raw[4:]}"
