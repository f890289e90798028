"""The demo instance: NCT03917797 study, one user per role, a dummy list and kits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.models import Role, Study, User
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
    lines += demo_logins(session)
    return lines


def demo_logins(session: Session) -> list[str]:
    """Lines listing the demo logins that still work on this instance (one per role)."""
    from randomizer.crypto import verify_password

    working = []
    for username, _role, _sites, _full_name, password in DEMO_USERS:
        user = session.scalar(select(User).where(User.username == username))
        # Print only what really signs in: an instance where a demo account was changed or
        # replaced must not advertise a password that no longer works.
        if user is None or not user.active or not verify_password(user.password_hash, password):
            continue
        scope = ", ".join(sorted(user.site_codes)) or "all sites"
        working.append(f"  {user.role.value:<13} {username:<9} {password:<20} ({scope})")
    if not working:
        return ["This instance has no working demo logins (it was not built by `randomizer demo`)."]
    return [
        "Demo logins (demo only — never use these passwords for real data):",
        *working,
    ]


#: Kits made at each demo site (received there, ready to allocate).
#: Kits made at a site come in whole units (6 per arm here: the demo's resupply level).
DEMO_KITS_PER_SITE = 12
#: Kits at the central depot, so that an admin's first shipment can be filled.
DEMO_DEPOT_KITS = 40
#: Kits of the one shipment on its way to each site, for the pharmacist to receive.
DEMO_SHIPMENT_KITS = 4


def _extras(session: Session, study_code: str) -> list[str]:
    """A dummy list and kits at every site, from the list and kit services (idempotent).

    The lines name counts and the fingerprint only, never an arm.
    """
    from sqlalchemy import func

    from randomizer import audit
    from randomizer.models import Kit, KitStatus, ListKind
    from randomizer.services.kits import generate_kits
    from randomizer.services.lists import find_list
    from randomizer.services.minimization import make_list
    from randomizer.services.studies import definition_of, get_study

    study = get_study(session, study_code)
    row = find_list(session, study, ListKind.DUMMY)
    if row is None:
        row = make_list(session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM)
    counts = row.params["slots"]
    lines = [
        f"dummy list: {sum(counts.values())} slots in {len(counts)} strata, "
        f"fingerprint {row.fingerprint}"
    ]
    for site in definition_of(study).sites:
        have = session.scalar(
            select(func.count())
            .select_from(Kit)
            .where(Kit.study_id == study.id, Kit.site_code == site.code,
                   Kit.status == KitStatus.AVAILABLE)
        )  # fmt: skip
        if not have:
            generate_kits(
                session, study, count=DEMO_KITS_PER_SITE, site=site.code, actor=audit.SYSTEM
            )
            have = DEMO_KITS_PER_SITE
        lines.append(f"kits at {site.code}: {have}")
    return lines + _depot_and_shipments(session, study)


def _depot_and_shipments(session: Session, study: Study) -> list[str]:
    """Depot stock and one shipment in transit to every site, made once (idempotent): an
    admin can dispatch a first shipment and a pharmacist has one to receive kit by kit."""
    from sqlalchemy import func

    from randomizer import audit
    from randomizer.models import Kit, KitStatus, Shipment
    from randomizer.services import shipments
    from randomizer.services.kits import generate_kits
    from randomizer.services.studies import definition_of

    made = session.scalar(select(func.count()).select_from(Shipment).where(
        Shipment.study_id == study.id))  # fmt: skip
    if not made:
        generate_kits(session, study, count=DEMO_DEPOT_KITS, actor=audit.SYSTEM)
        for site in definition_of(study).sites:
            shipment = shipments.propose_manual(
                session, study, site=site.code, count=DEMO_SHIPMENT_KITS, actor=audit.SYSTEM
            )
            shipments.dispatch(session, study, shipment=shipment, actor=audit.SYSTEM)
    depot = session.scalar(select(func.count()).select_from(Kit).where(
        Kit.study_id == study.id, Kit.status == KitStatus.AT_DEPOT))  # fmt: skip
    lines = [f"kits at the depot: {depot}"]
    for shipment in session.scalars(
        select(Shipment).where(Shipment.study_id == study.id).order_by(Shipment.id)
    ):
        lines.append(f"shipment {shipment.id} to {shipment.site_code}: {shipment.status.value}")
    return lines
