"""Key ring and sealing: AES-256-GCM with associated data, AES key wrap, password hashing.

No Flask here. The master key never enters the database; data keys are stored only
wrapped by it. Every sealed value is ``nonce (12 bytes) || ciphertext+tag`` and is bound by
its associated data to one row, so a value copied to another row fails to open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

NONCE_BYTES = 12
KEY_BYTES = 32


class IntegrityFailure(Exception):
    """A sealed value or wrapped key failed authentication: altered, moved or wrong key."""


class KeyFileError(Exception):
    """The master key file is missing, unreadable or malformed."""


def associated_data(study: str, kind: str, object_id: object, key_id: str) -> bytes:
    """Canonical associated data binding a ciphertext to its row and key."""
    return json.dumps(
        [study, kind, str(object_id), key_id], separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


#: Sealed arms and seeds are padded to this many bytes, so that a ciphertext's length
#: (AES-GCM keeps the plaintext length) cannot tell arms with codes of different lengths
#: apart in a copy of the database.
PADDED_BYTES = 96


def pad(value: bytes) -> bytes:
    """Length byte, value, zero padding: always PADDED_BYTES long."""
    if len(value) >= PADDED_BYTES:
        raise ValueError(f"a sealed value may have at most {PADDED_BYTES - 1} bytes")
    return bytes([len(value)]) + value + bytes(PADDED_BYTES - 1 - len(value))


def unpad(padded: bytes) -> bytes:
    """Undo ``pad``; a malformed padding is an integrity failure."""
    if len(padded) != PADDED_BYTES or padded[0] >= PADDED_BYTES:
        raise IntegrityFailure("sealed value has a malformed padding")
    return padded[1 : 1 + padded[0]]


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt with AES-256-GCM under a fresh random 96-bit nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt a sealed value, raising IntegrityFailure if it is not authentic for ``aad``."""
    if len(sealed) < NONCE_BYTES + 16:
        raise IntegrityFailure("sealed value is truncated")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise IntegrityFailure("sealed value failed authentication") from None


class Sealer:
    """Seals many values under one data key, reusing the cipher object (hot path)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + 16:
            raise IntegrityFailure("sealed value is truncated")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise IntegrityFailure("sealed value failed authentication") from None


def new_key() -> bytes:
    """A fresh 256-bit key from the OS CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def new_key_id() -> str:
    """A short random identifier for a key."""
    return secrets.token_hex(8)


def wrap_key(master: bytes, data_key: bytes) -> bytes:
    """Wrap a data key with the master key (RFC 3394 AES key wrap)."""
    return aes_key_wrap(master, data_key)


def unwrap_key(master: bytes, wrapped: bytes) -> bytes:
    """Unwrap a data key, raising IntegrityFailure with the wrong master key."""
    try:
        return aes_key_unwrap(master, wrapped)
    except InvalidUnwrap:
        raise IntegrityFailure("data key could not be unwrapped with this master key") from None


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    key: bytes


@dataclass(frozen=True)
class KeyRing:
    """The master keys: the current one first, then retired ones kept to open old backups."""

    keys: tuple[MasterKey, ...]

    @property
    def current(self) -> MasterKey:
        return self.keys[0]

    def get(self, key_id: str) -> MasterKey:
        for k in self.keys:
            if k.key_id == key_id:
                return k
        raise KeyFileError(f"master key {key_id} is not in the key ring")

    def with_new_current(self) -> KeyRing:
        return KeyRing((MasterKey(new_key_id(), new_key()), *self.keys))

    def to_text(self) -> str:
        return (
            "\n".join(f"{k.key_id}:{base64.b64encode(k.key).decode('ascii')}" for k in self.keys)
            + "\n"
        )

    @classmethod
    def from_text(cls, text: str, source: str) -> KeyRing:
        keys: list[MasterKey] = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key_id, sep, b64 = line.partition(":")
            try:
                key = base64.b64decode(b64, validate=True)
            except ValueError:
                key = b""
            if not sep or not key_id or len(key) != KEY_BYTES:
                raise KeyFileError(f"{source}: line {n} is not 'key-id:base64-256-bit-key'")
            keys.append(MasterKey(key_id, key))
        if not keys:
            raise KeyFileError(f"{source}: holds no key")
        return cls(tuple(keys))


def write_secret_file(path: Path, text: str) -> None:
    """Write a secret file atomically with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
    os.replace(tmp, path)


def read_secret_file(path: Path) -> str:
    """Read a secret file, refusing one that others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} must not be readable by others (chmod 600)")
    return path.read_text(encoding="utf-8")


# --- passwords -----------------------------------------------------------------------

#: Argon2id parameters by profile. ``production`` is OWASP's minimum (m=19 MiB, t=2);
#: ``bench`` is the cheapest Argon2id allows, for measuring the transactional core apart
#: from the KDF: only test and benchmark instances may select it (``settings``).
PASSWORD_PROFILES: dict[str, dict[str, int]] = {
    "production": {"iterations": 2, "lanes": 1, "memory_cost": 19 * 1024},
    "bench": {"iterations": 1, "lanes": 1, "memory_cost": 8},
}
_ARGON_PARAMS = dict(PASSWORD_PROFILES["production"])


def use_password_profile(name: str) -> None:
    """Hash new passwords (and the dummy check) with this profile's parameters.

    Stored hashes carry their own parameters, so verification is unaffected."""
    _ARGON_PARAMS.clear()
    _ARGON_PARAMS.update(PASSWORD_PROFILES[name])


def hash_password(password: str) -> str:
    """Argon2id hash in a PHC-like string: argon2id$v=19$m=..,t=..,p=..$salt$hash."""
    salt = secrets.token_bytes(16)
    digest = _argon(password, salt, **_ARGON_PARAMS)
    p = _ARGON_PARAMS
    return "$".join(
        [
            "argon2id",
            "v=19",
            f"m={p['memory_cost']},t={p['iterations']},p={p['lanes']}",
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def verify_password(stored: str, password: str) -> bool:
    """Check a password against a stored Argon2id hash in constant time."""
    try:
        alg, _v, params, salt_b64, hash_b64 = stored.split("$")
        fields = dict(kv.split("=") for kv in params.split(","))
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        got = _argon(
            password,
            salt,
            iterations=int(fields["t"]),
            lanes=int(fields["p"]),
            memory_cost=int(fields["m"]),
        )
    except (ValueError, KeyError):
        return False
    return alg == "argon2id" and hmac.compare_digest(got, expected)


def dummy_password_check() -> None:
    """Spend the same time as a real check, so unknown users cannot be told apart."""
    _argon("dummy", b"\0" * 16, **_ARGON_PARAMS)


def _argon(password: str, salt: bytes, *, iterations: int, lanes: int, memory_cost: int) -> bytes:
    kdf = Argon2id(
        salt=salt, length=32, iterations=iterations, lanes=lanes, memory_cost=memory_cost
    )
    return kdf.derive(password.encode("utf-8"))


def token_digest(token: str) -> str:
    """SHA-256 hex of an API token (tokens are high-entropy, so no slow hash is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hmac_sha256(key: bytes, parts: Iterable[bytes]) -> str:
    """HMAC-SHA256 over the concatenation of ``parts``, in hex."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest()
