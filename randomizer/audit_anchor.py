"""External anchors of the audit chain: a signed statement of its length and head digest,
kept off-site, so that truncation or a rewritten head is detected (``audit verify
--anchor``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.audit import Verification, timestamp, verify
from randomizer.models import AuditEvent
from randomizer.wording import N_, Text

ANCHOR_FORMAT = "randomizer-audit-anchor/1"
_ANCHOR_FIELDS = ("format", "events", "head", "created_at", "public_key")


class AnchorError(ValueError):
    """An anchor file that is malformed, or not signed by this instance's anchor key.

    ``message`` is an ``N_``-marked msgid filled from ``params``; pages show ``text``
    translated, the CLI prints the English.
    """

    def __init__(self, message: str, **params: object) -> None:
        self.text = Text(message, params)
        super().__init__(str(self.text))


def make_anchor(session: Session, key: bytes, signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A signed statement of the verified chain's length and head digest, kept off-site.

    Refuses (AnchorError) to anchor a chain that does not verify: that would bless it.
    """
    result = verify(session, key)
    if not result.ok:
        raise AnchorError(N_("not anchoring a broken chain: %(problem)s"), problem=result.message())
    public = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    payload = {
        "format": ANCHOR_FORMAT,
        "events": result.events,
        "head": result.head,
        "created_at": timestamp(),
        "public_key": base64.b64encode(public).decode("ascii"),
    }
    signature = signing_key.sign(_anchor_message(payload))
    return {**payload, "signature": base64.b64encode(signature).decode("ascii")}


def check_anchor(
    session: Session, key: bytes, anchor: Mapping[str, Any], public_key: Ed25519PublicKey
) -> Verification:
    """Verify the chain, then that it still holds the anchored event unchanged.

    Catches what the chain alone cannot: the tail cut off (fewer events than anchored) or
    rewritten with the audit key (the anchored event's digest differs). AnchorError for an
    anchor that is malformed or signed by another key.
    """
    events, head, created = _parse_anchor(anchor, public_key)
    result = verify(session, key)
    if not result.ok:
        return result
    if result.events < events:
        return Verification(
            False,
            result.events,
            result.head,
            result.events + 1,
            f"the chain has {result.events} events but the anchor of {created} records "
            f"{events}: events {result.events + 1} to {events} were removed",
        )
    stored = session.scalar(select(AuditEvent.digest).where(AuditEvent.seq == events))
    if events and stored != head:
        return Verification(
            False,
            result.events,
            result.head,
            events,
            f"event {events} differs from the anchor of {created}: the chain was rewritten "
            f"at or before event {events}",
        )
    return result


def _anchor_message(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {name: payload[name] for name in _ANCHOR_FIELDS}, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


def _parse_anchor(anchor: Mapping[str, Any], public_key: Ed25519PublicKey) -> tuple[int, str, str]:
    if not isinstance(anchor, Mapping) or anchor.get("format") != ANCHOR_FORMAT:
        raise AnchorError(
            N_("not an audit anchor (expected format '%(format)s')"), format=ANCHOR_FORMAT
        )
    events, head = anchor.get("events"), anchor.get("head")
    created, signature = anchor.get("created_at"), anchor.get("signature")
    if (
        not isinstance(events, int)
        or isinstance(events, bool)
        or events < 0
        or not isinstance(head, str)
        or len(head) != 64
        or not isinstance(created, str)
        or not isinstance(signature, str)
        or not isinstance(anchor.get("public_key"), str)
    ):
        raise AnchorError(N_("the anchor lacks a field or has one of the wrong type"))
    try:
        public_key.verify(base64.b64decode(signature, validate=True), _anchor_message(anchor))
    except (InvalidSignature, ValueError):
        raise AnchorError(
            N_(
                "the anchor's signature does not verify with this instance's anchor key "
                "(altered, or made by another instance)"
            )
        ) from None
    return events, head, created
