"""The instance folder's secrets: master key ring, audit chain key, session secret.

No Flask. Files are created by ``randomizer init`` with mode 0600 and never silently
replaced: a missing file next to existing data is an error, not a reason for a new key.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from randomizer.crypto import KeyFileError, KeyRing, read_secret_file, write_secret_file

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

MASTER_KEY_FILE = "master.key"
AUDIT_KEY_FILE = "audit.key"
SECRET_KEY_FILE = "secret_key"
ANCHOR_KEY_FILE = "anchor_ed25519.pem"


@dataclass
class InstanceSecrets:
    """Keys that live outside the database. The key ring is re-read after a rotation."""

    path: Path
    ring: KeyRing
    audit_key: bytes
    ring_from_env: bool = False
    _anchor_key: Ed25519PrivateKey | None = field(default=None, repr=False)

    def reload_ring(self) -> KeyRing:
        """Re-read the master key file (another process may have rotated it)."""
        if not self.ring_from_env:
            self.ring = KeyRing.from_text(
                read_secret_file(self.path / MASTER_KEY_FILE), str(self.path / MASTER_KEY_FILE)
            )
        return self.ring

    def master(self, key_id: str) -> bytes:
        """The master key with this id, reloading the key file once if it is unknown."""
        try:
            return self.ring.get(key_id).key
        except KeyFileError:
            return self.reload_ring().get(key_id).key

    def anchor_key(self) -> Ed25519PrivateKey:
        """The Ed25519 key that signs exported audit anchors."""
        if self._anchor_key is None:
            pem = read_secret_file(self.path / ANCHOR_KEY_FILE).encode("ascii")
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise KeyFileError(f"{self.path / ANCHOR_KEY_FILE} is not an Ed25519 key")
            self._anchor_key = key
        return self._anchor_key


def ensure_instance_files(path: Path) -> list[str]:
    """Create the instance folder and any missing secret file; return the names created."""
    path.mkdir(parents=True, exist_ok=True)
    created: list[str] = []
    makers: dict[str, Callable[[], str]] = {
        MASTER_KEY_FILE: lambda: KeyRing(()).with_new_current().to_text(),
        AUDIT_KEY_FILE: lambda: base64.b64encode(secrets.token_bytes(32)).decode() + "\n",
        SECRET_KEY_FILE: lambda: secrets.token_urlsafe(48) + "\n",
        ANCHOR_KEY_FILE: lambda: (
            Ed25519PrivateKey.generate()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode("ascii")
        ),
    }
    for name, make in makers.items():
        target = path / name
        if not target.exists():
            write_secret_file(target, make())
            created.append(name)
    return created


def mark_demo(path: Path) -> None:
    """Record in ``config.py`` that this instance is a demo (production defaults relaxed)."""
    config = path / "config.py"
    text = config.read_text(encoding="utf-8") if config.exists() else ""
    if not any(line.replace(" ", "").startswith("DEMO=") for line in text.splitlines()):
        prefix = "" if not text or text.endswith("\n") else "\n"
        line = "DEMO = True  # written by `randomizer demo`: second factor not required\n"
        config.write_text(text + prefix + line, encoding="utf-8")


def load_secrets(
    path: Path, *, master_key_text: str | None = None, audit_key_text: str | None = None
) -> InstanceSecrets:
    """Load the instance secrets, from the environment's values where given."""
    if master_key_text:
        ring = KeyRing.from_text(master_key_text, "RANDOMIZER_MASTER_KEY")
    else:
        ring = KeyRing.from_text(
            read_secret_file(path / MASTER_KEY_FILE), str(path / MASTER_KEY_FILE)
        )
    audit_text = audit_key_text or read_secret_file(path / AUDIT_KEY_FILE)
    try:
        audit_key = base64.b64decode(audit_text.strip(), validate=True)
    except ValueError:
        audit_key = b""
    if len(audit_key) < 32:
        raise KeyFileError(f"{path / AUDIT_KEY_FILE}: not a base64 key of at least 256 bits")
    return InstanceSecrets(path, ring, audit_key, ring_from_env=bool(master_key_text))


def read_session_secret(path: Path) -> str:
    """The Flask session secret from the instance folder."""
    return read_secret_file(path / SECRET_KEY_FILE).strip()


def secrets_of(session: Session) -> InstanceSecrets:
    """The instance secrets the app attached to this session."""
    found = session.info.get("secrets")
    if not isinstance(found, InstanceSecrets):
        raise KeyFileError("this session carries no instance keys (run `randomizer init`)")
    return found
