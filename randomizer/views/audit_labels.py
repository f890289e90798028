"""How the audit pages show an event: a translated label per action, and the old and new
values as readable "key: value" lines. The stored event and the CSV export keep the raw
codes and JSON; only the page reads them for people."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from randomizer.views.kits import KIT_STATUS_LABELS, SHIPMENT_STATUS_LABELS

#: Every action ``audit.record`` writes (tests/test_audit_labels.py checks the code for more).
ACTION_LABELS: dict[str, Any] = {
    "codebreak.envelopes": _l("Code-break envelopes printed"),
    "export.sdtm_dm": _l("SDTM DM dataset exported"),
    "keys.rotate": _l("Master key rotated"),
    "kit.allocate": _l("Kit allocated"),
    "kit.dispense": _l("Kit dispensed"),
    "kit.replace": _l("Kit replaced"),
    "kit.set_aside": _l("Kit set aside (not dispensed)"),
    "kit.status": _l("Kit status changed"),
    "kits.expire": _l("Kits expired"),
    "kits.export_unblinded": _l("Kit list exported unblinded"),
    "kits.generate": _l("Kits generated"),
    "list.commitment": _l("List commitment made"),
    "list.export_unblinded": _l("Allocation list exported unblinded"),
    "list.extend": _l("Allocation list extended"),
    "list.generate": _l("Allocation list generated"),
    "list.import": _l("Allocation list imported"),
    "list.release": _l("Allocation list released"),
    "list.verify": _l("Allocation list verified"),
    "login": _l("Signed in"),
    "login.failed": _l("Failed sign-in"),
    "logout": _l("Signed out"),
    "participant.correct": _l("Screening corrected"),
    "participant.dispense": _l("Kit requested for a visit"),
    "participant.randomize": _l("Participant randomized"),
    "participant.randomized_in_error": _l("Marked as randomized in error"),
    "participant.register": _l("Participant screened"),
    "participant.unblind": _l("Emergency unblinding"),
    "participant.unblind_redisplay": _l("Unblinding shown again"),
    "participant.withdraw": _l("Participant withdrawn"),
    "pharmacy.view_products": _l("Pharmacist viewed products"),
    "randomization.pause": _l("Randomization paused"),
    "randomization.resume": _l("Randomization resumed"),
    "report.dsmb": _l("DSMB report opened"),
    "shipment.cancel": _l("Shipment cancelled"),
    "shipment.damaged": _l("Shipment kits checked in damaged"),
    "shipment.dispatch": _l("Shipment dispatched"),
    "shipment.propose": _l("Shipment proposed"),
    "shipment.receive": _l("Shipment receipt finished"),
    "shipment.received": _l("Shipment kits checked in"),
    "study.go_live": _l("Study went live"),
    "study.load": _l("Study definition loaded"),
    "study.lock": _l("Database locked"),
    "study.update": _l("Study definition updated"),
    "token.create": _l("API token created"),
    "token.revoke": _l("API token revoked"),
    "unblinding.log_with_arms": _l("Unblinding log opened with arms"),
    "user.create": _l("User created"),
    "user.password_change": _l("Password changed"),
    "user.password_reset": _l("Password reset"),
    "user.recovery_code_used": _l("Recovery code used"),
    "user.totp_enrol": _l("Second factor enrolled"),
    "user.totp_remove": _l("Second factor removed"),
    "user.update": _l("User updated"),
}

#: Labels of the keys that events carry most; other keys are shown as stored.
KEY_LABELS: dict[str, Any] = {
    "status": _l("Status"),
    "kit_status": _l("Kit status"),
    "kit_code": _l("Kit code"),
    "kit_codes": _l("Kit codes"),
    "site": _l("Site"),
    "sites": _l("Sites"),
    "visit": _l("Visit"),
    "count": _l("Count"),
    "view": _l("View"),
    "role": _l("Role"),
    "reason": _l("Reason"),
    "randomization_number": _l("Randomization number"),
    "screening_number": _l("Screening number"),
    "factors": _l("Stratification"),
    "eligibility": _l("Eligibility"),
    "failed_criteria": _l("Criteria not met"),
    "stratum": _l("Stratum"),
    "source": _l("Source"),
    "second_factor": _l("Second factor"),
    "lot": _l("Lot"),
    "expiry": _l("Expiry"),
    "kind": _l("List"),
    "slots": _l("Slots"),
    "fingerprint": _l("Fingerprint"),
    "email": _l("E-mail"),
    "active": _l("Active"),
    "username": _l("Username"),
    "kit_codes_sealed": _l("Kit codes (sealed)"),
    "signature": _l("Signature"),
    "signer": _l("Signed by"),
    "signed_at": _l("Signed at"),
    "meaning": _l("Meaning"),
}

_PARTICIPANT_STATUS: dict[str, Any] = {
    "eligible": _l("Eligible"),
    "screen_failed": _l("Screen failure"),
    "randomized": _l("Randomized"),
    "withdrawn": _l("Withdrawn"),
    "randomized_in_error": _l("Randomized in error"),
}
_VIEWS: dict[str, Any] = {"inventory": _l("inventory"), "queue": _l("preparation queue")}


def action_label(action: str) -> str:
    """The action in the user's language (the code itself when it has no label)."""
    label = ACTION_LABELS.get(action)
    return str(label) if label is not None else action


def readable(values: Any) -> list[tuple[str, str]]:
    """An event's values as (label, text) lines in the user's language."""
    if values is None:
        return []
    if not isinstance(values, dict):
        return [("", _text("", values))]
    return [(str(KEY_LABELS.get(k, k)), _text(k, v)) for k, v in values.items()
            if k not in _MACHINE_COPIES]  # fmt: skip


#: Values recorded for programs beside the one a person reads: a signature keeps the
#: meaning in the signer's words (shown) and in English (kept for the CSV and the API).
_MACHINE_COPIES = frozenset({"meaning_en"})


def _text(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(_("Yes") if value else _("No"))
    if isinstance(value, str):
        if key.endswith("_sealed"):
            # Sealed bytes mean nothing to a reader; their size is what the event shows.
            return str(_("sealed value, %(n)d bytes", n=len(value) * 3 // 4 - value.count("=")))
        if key in ("status", "kit_status"):
            label = _PARTICIPANT_STATUS.get(value) or _kit_status(value)
            return str(label) if label is not None else value
        if key == "view" and value in _VIEWS:
            return str(_VIEWS[value])
        return value
    if isinstance(value, list):
        return ", ".join(_text(key, v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{KEY_LABELS.get(k, k)}: {_text(k, v)}" for k, v in value.items()
                         if k not in _MACHINE_COPIES)  # fmt: skip
    return str(value)


def _kit_status(value: str) -> Any:
    labels = [*KIT_STATUS_LABELS.items(), *SHIPMENT_STATUS_LABELS.items()]
    return next((label for status, label in labels if status.value == value), None)
