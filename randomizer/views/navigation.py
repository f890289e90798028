"""Menu entries per role, registered by each area's blueprint; shown in the top bar and home."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, request, url_for
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

from randomizer.models import Role


@dataclass(frozen=True)
class Entry:
    endpoint: str
    label: LazyString
    roles: frozenset[Role]
    description: LazyString


ENTRIES: list[Entry] = []

ROLE_LABELS = {
    Role.ADMIN: _l("Administrator"),
    Role.STATISTICIAN: _l("Unblinded statistician"),
    Role.PHARMACIST: _l("Unblinded pharmacist"),
    Role.INVESTIGATOR: _l("Investigator"),
    Role.ASSESSOR: _l("Outcome assessor"),
}

ROLE_DESCRIPTIONS = {
    Role.ADMIN: _l(
        "You manage users, sites, study set-up and shipments, review the audit trail "
        "and read blinded reports. You never see treatment arms."
    ),
    Role.STATISTICIAN: _l(
        "You are unblinded: you generate, verify and export allocation lists "
        "and prepare DSMB reports. Keep what you see away from masked staff."
    ),
    Role.PHARMACIST: _l(
        "You are unblinded for your own sites: you receive kits, see which "
        "product each kit holds to prepare infusions, and confirm dispensing."
    ),
    Role.INVESTIGATOR: _l(
        "You screen and randomize participants at your sites, request the "
        "month-6 kit and, in an emergency, unblind one participant."
    ),
    Role.ASSESSOR: _l(
        "You see participants' status, read-only. Kit codes and arms are never shown to you."
    ),
}


def register(endpoint: str, label: LazyString, roles: set[Role], description: LazyString) -> None:
    """Add a menu entry for these roles (called once per blueprint module)."""
    if all(e.endpoint != endpoint for e in ENTRIES):
        ENTRIES.append(Entry(endpoint, label, frozenset(roles), description))


def init_app(app: Flask) -> None:
    """Template helpers for the menu and the home page."""
    from flask_login import current_user

    from randomizer.auth import current

    def nav_items() -> list[dict[str, Any]]:
        if not current_user.is_authenticated:
            return []
        role = current().role
        return [
            {"url": url_for(e.endpoint), "label": e.label, "active": request.endpoint == e.endpoint}
            for e in ENTRIES
            if role in e.roles
        ]

    def home_actions(role: Role) -> list[dict[str, Any]]:
        return [
            {"url": url_for(e.endpoint), "label": f"{e.label} — {e.description}"}
            for e in ENTRIES
            if role in e.roles
        ]

    app.jinja_env.globals.update(
        nav_items=nav_items,
        home_actions=home_actions,
        role_label=lambda role: ROLE_LABELS[Role(role)],
        role_description=lambda role: ROLE_DESCRIPTIONS[Role(role)],
    )
