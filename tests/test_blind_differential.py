"""The test of record for blinding (SPEC §2, invariant 2): the two-list differential.

One scripted history — registrations in every stratum of a site, randomizations, refused
participants retried, later-visit dispensing, damage reports with replacements (including
an attempt to drain one participant's arm), kit expiry, a depot holding few kits of one
product and many of the other (one-product batches), resupply proposals dispatched and
received — runs twice, each time in a database of its own, against allocation lists and
kit lists drawn from different seeds. Every output a masked role can obtain (API status
and bodies, pages, the admin's audit feed and CSV, the outbox of e-mails, shipment lists)
is recorded; after masking kit codes, times and digests, the two runs must be identical.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from randomizer import audit, create_app, migrate
from randomizer.db import db, utcnow
from randomizer.instance import ensure_instance_files
from randomizer.models import (
    Dispensation,
    ListKind,
    Notification,
    Participant,
    Role,
    Shipment,
    ShipmentStatus,
)
from randomizer.services import shipments
from randomizer.services.kit_lifecycle import expire_kits
from randomizer.services.kits import generate_kits
from randomizer.services.lists import generate_list
from randomizer.services.minimization import make_list
from randomizer.services.studies import get_study
from randomizer.services.users import create_token
from tests.conftest import PASSWORD, PG_ADMIN_URL, SMALL_STUDY, login, make_study, make_user
from tests.engines import dispose_engines  # noqa: F401  (fixture)
from tests.minimization_support import MINIMIZATION_STUDY

pytestmark = pytest.mark.usefixtures("dispose_engines")
SYSTEM = audit.SYSTEM
ELIGIBLE = {"consent": True, "age": 40, "pregnant": False}
TOO_OLD = {"consent": True, "age": 80, "pregnant": False}


# --- two databases, two apps ---------------------------------------------------------------


@pytest.fixture
def twin_urls(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        paths = [tmp_path / f"run{n}.sqlite3" for n in (1, 2)]
        for path in paths:
            shutil.copy(template, path)
        yield [f"sqlite:///{p}" for p in paths]
        return
    names = [f"randomizer_twin_{os.getpid()}_{uuid.uuid4().hex[:6]}" for _ in (1, 2)]
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    urls = []
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            urls.append(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    admin.dispose()
    for url in urls:
        engine = sa.create_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
    yield urls
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _app(url: str, instance: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    ensure_instance_files(instance)
    monkeypatch.setenv("RANDOMIZER_INSTANCE_PATH", str(instance))
    monkeypatch.setenv("RANDOMIZER_DATABASE_URL", url)
    for var in ("RANDOMIZER_SECRET_KEY", "RANDOMIZER_MASTER_KEY", "RANDOMIZER_AUDIT_KEY"):
        monkeypatch.delenv(var, raising=False)
    return create_app({"TESTING": True, "WTF_CSRF_ENABLED": False, "SERVER_NAME": "localhost"})


# --- masking ---------------------------------------------------------------------------------

_MASKS = [
    (
        re.compile(r"\b[23456789ABCDEFGHJKMNPQRTVWXYZ]{4}-[23456789ABCDEFGHJKMNPQRTVWXYZ]{4}\b"),
        "KIT",
    ),  # kit codes
    (re.compile(r"\b[0-9a-f]{64}\b"), "DIGEST"),
    (re.compile(r"rnd_[A-Za-z0-9_-]+"), "TOKEN"),
    (re.compile(r"\b[0-9a-f]{12,40}\b"), "HEX"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"), "TIME"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "DATE"),
    (re.compile(r"\b\d{1,2}:\d{2}(:\d{2})?\b"), "CLOCK"),
    (re.compile(r'name="(csrf_token|submission)"[^>]*value="[^"]*"'), "FORMTOKEN"),
    (re.compile(r'value="[0-9a-f]{32}"'), "FORMTOKEN"),
]


#: A sealed value: random bytes of a length that must not differ (kept in the mask).
_SEALED = re.compile(r'(kit_codes_sealed(?:&#34;|")*\s*:\s*(?:&#34;|")*)([A-Za-z0-9+/=]+)')


def _mask(text: str) -> str:
    text = _SEALED.sub(lambda m: f"{m.group(1)}SEALED{len(m.group(2))}", text)
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def _lines(text: str) -> list[str]:
    """Masked lines, sorted: listings sorted by (random) kit code keep their multiset only."""
    return sorted(line.strip() for line in _mask(text).splitlines() if line.strip())


class Recorder:
    """Collects every masked output of one run, in order."""

    def __init__(self, client: FlaskClient, tokens: dict[str, str]) -> None:
        self.client, self.tokens, self.out = client, tokens, []  # type: ignore[var-annotated]

    def api(self, who: str, method: str, path: str, body: Any = None, key: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        if key:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        response = self.client.open(path, method=method, headers=headers, json=body)
        text = _mask(response.get_data(as_text=True))
        if path.startswith("/api/v1/studies/TST/kits"):
            # Listed by kit code, which is random: keep the multiset of (masked) rows.
            data = json.loads(text)
            data["kits"] = sorted(data["kits"], key=lambda k: json.dumps(k, sort_keys=True))
            text = json.dumps(data, sort_keys=True)
        self.out.append((who, method, path, response.status_code, text))
        return response

    def page(self, who: str, path: str, *, sort: bool = False) -> None:
        login(self.client, who)
        response = self.client.get(path)
        text = response.get_data(as_text=True)
        response.close()  # a streamed answer (the CSV) ends its request here
        self.out.append((who, "GET", path, response.status_code, _lines(text) if sort else
                         _mask(text)))  # fmt: skip
        self.client.post("/logout")

    def post_page(self, who: str, path: str, data: dict[str, str]) -> None:
        login(self.client, who)
        response = self.client.post(path, data=data)
        self.out.append((who, "POST", path, response.status_code,
                         _mask(response.get_data(as_text=True))))  # fmt: skip
        self.client.post("/logout")


# --- the history ------------------------------------------------------------------------------

#: The small study with its texts in two languages (arm names too) and its sites in Santiago,
#: so the masked pages go through the translated texts and the zoned times.
ZONED_BILINGUAL_STUDY = (
    SMALL_STUDY.replace('title = "Test study"\n',
                        'languages = ["es", "en"]\ntitle = "Test study"\ntitle_es = "Estudio"\n')
    .replace('name = "Active product X"\n', 'name = "Active product X"\nname_es = "Producto X"\n')
    .replace('name = "Site one"\n', 'name = "Site one"\ntimezone = "America/Santiago"\n')
    .replace('name = "Site two"\n', 'name = "Site two"\ntimezone = "America/Santiago"\n')
    .replace('code = "month_6"\n', 'code = "month_6"\nname = "Month 6"\nname_es = "Mes 6"\n')
)  # fmt: skip


def _setup(app: Flask, seed: bytes, text: str) -> dict[str, str]:
    with app.app_context():
        session = db.session
        study = make_study(session, text)
        people = {
            "admin1": make_user(session, "admin1", Role.ADMIN, email="admin@example.org"),
            "stat1": make_user(session, "stat1", Role.STATISTICIAN, email="stat@example.org"),
            "pharm1": make_user(session, "pharm1", Role.PHARMACIST, ("S1",),
                                email="pharm1@example.org"),
            "inv1": make_user(session, "inv1", Role.INVESTIGATOR, ("S1",)),
            "inv2": make_user(session, "inv2", Role.INVESTIGATOR, ("S2",)),
            "assess1": make_user(session, "assess1", Role.ASSESSOR),
        }  # fmt: skip
        if text == MINIMIZATION_STUDY:  # the seed then drives every assignment
            make_list(session, study, kind=ListKind.DUMMY, actor=SYSTEM, seed=seed)
        else:
            generate_list(session, study, kind=ListKind.DUMMY,
                          actor=SYSTEM, per_stratum=20, seed=seed)  # fmt: skip
        today = utcnow().date()
        # The depot: few kits of the cell product, many of the vehicle (one-product batches).
        generate_kits(session, study, count=10, actor=SYSTEM, arm="ACTIVEX",
                      expiry=today + dt.timedelta(days=400))  # fmt: skip
        generate_kits(session, study, count=60, actor=SYSTEM, arm="PLACEBOX",
                      expiry=today + dt.timedelta(days=400))  # fmt: skip
        # S1 starts with a batch that expires soon and a fresh one; S2 with a fresh one.
        generate_kits(session, study, count=8, actor=SYSTEM, site="S1",
                      expiry=today + dt.timedelta(days=3))  # fmt: skip
        generate_kits(session, study, count=16, actor=SYSTEM, site="S1",
                      expiry=today + dt.timedelta(days=400))  # fmt: skip
        generate_kits(session, study, count=8, actor=SYSTEM, site="S2",
                      expiry=today + dt.timedelta(days=400))  # fmt: skip
        tokens = {name: create_token(session, user) for name, user in people.items()}
        session.commit()
        return tokens


def _ship_everything(app: Flask, rec: Recorder) -> None:
    """Admin runs the resupply check, dispatches every proposal; the site receives it."""
    rec.post_page("admin1", "/shipments/TST/resupply", {})
    rec.page("admin1", "/shipments/")
    with app.app_context():
        study = get_study(db.session, "TST")
        proposed = shipments.list_shipments(db.session, study, statuses=[ShipmentStatus.PROPOSED])
        ids = [s.id for s in proposed]
    for shipment_id in ids:
        rec.page("admin1", f"/shipments/TST/{shipment_id}", sort=True)
        rec.post_page("admin1", f"/shipments/TST/{shipment_id}/dispatch", {})
    with app.app_context():
        session = db.session
        study = get_study(session, "TST")
        for shipment_id in ids:
            shipment = session.get_one(Shipment, shipment_id)
            if shipment.site_code != "S1":
                continue
            codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
            login(rec.client, "pharm1")
            rec.client.post(f"/pharmacy/TST/shipments/{shipment_id}/receive",
                            data={"codes": "\n".join(codes), "outcome": "received"})  # fmt: skip
            rec.client.post(f"/pharmacy/TST/shipments/{shipment_id}/finish", data={})
            rec.client.post("/logout")
        for shipment_id in ids:  # S2 has no pharmacist account here: received by the service
            shipment = session.get_one(Shipment, shipment_id)
            if shipment.site_code == "S2":
                from randomizer.services.supply import policy

                codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
                pharm = audit.Actor("pharm2", "pharmacist")
                shipments.receive_kits(session, study, shipment=shipment, codes=codes,
                                       outcome="received", actor=pharm)  # fmt: skip
                policy.finish_receipt(session, study, shipment=shipment, actor=pharm)
        session.commit()
    rec.page("admin1", "/shipments/")


def _register(rec: Recorder, who: str, site: str, number: str, grade: str,
              answers: dict[str, Any]) -> int:  # fmt: skip
    response = rec.api(who, "POST", "/api/v1/studies/TST/participants", {
        "site": site, "screening_number": number, "factors": {"grade": grade},
        "eligibility": answers}, key=False)  # fmt: skip
    return int(response.get_json()["participant_id"])


def _history(app: Flask, seed: bytes, text: str) -> list[Any]:
    tokens = _setup(app, seed, text)
    rec = Recorder(app.test_client(), tokens)
    signature = {"signature": {"password": PASSWORD}}
    _ship_everything(app, rec)
    # Registrations in every stratum of both sites; one screen failure.
    people: list[tuple[str, int]] = []
    for n, (who, site, grade) in enumerate(
        [("inv1", "S1", "low"), ("inv1", "S1", "high"), ("inv1", "S1", "low"),
         ("inv2", "S2", "low"), ("inv2", "S2", "high"), ("inv1", "S1", "high")]
    ):  # fmt: skip
        people.append((who, _register(rec, who, site, f"SCR-{n}", grade, ELIGIBLE)))
    failed = _register(rec, "inv1", "S1", "SCR-F", "low", TOO_OLD)
    rec.api("inv1", "POST", f"/api/v1/participants/{failed}/randomize", signature)
    # Two randomizations at S1 and a later visit, dispensed early with a reason.
    for who, pid in people[:2]:
        rec.api(who, "POST", f"/api/v1/participants/{pid}/randomize", signature)
    first_who, first = people[0]
    rec.api(first_who, "POST", f"/api/v1/participants/{first}/dispense",
            {"visit": "month_6", "override_reason": "Travel", **signature})  # fmt: skip
    # The drain attempt: one participant's kit reported damaged again and again.
    for attempt in range(12):
        with app.app_context():
            participant = db.session.get_one(Participant, first)
            from randomizer.services.enrollment import kits_of

            held = [code for visit, code in kits_of(db.session, participant) if visit == "baseline"]
        rec.post_page("inv1", f"/participants/{first}/replace-kit", {
            "kit_code": held[0], "what": "damaged", "reason": f"Cracked vial {attempt}",
            "submission": uuid.uuid4().hex})  # fmt: skip
    # The soon-expiring batch expires; the other participants are randomized.
    with app.app_context():
        study = get_study(db.session, "TST")
        expire_kits(db.session, study, today=utcnow().date() + dt.timedelta(days=5))
        db.session.commit()
    for who, pid in people[2:]:
        rec.api(who, "POST", f"/api/v1/participants/{pid}/randomize", signature)
    rec.api("inv1", "POST", f"/api/v1/participants/{failed}/randomize", signature)  # retried
    # Then a replacement for each other S1 participant, and more registrations retried.
    for who, pid in people[1:3] + people[5:]:
        with app.app_context():
            from randomizer.services.enrollment import kits_of

            held = kits_of(db.session, db.session.get_one(Participant, pid))
        if held:
            rec.post_page(who, f"/participants/{pid}/replace-kit", {
                "kit_code": held[0][1], "what": "damaged", "reason": "Dropped",
                "submission": uuid.uuid4().hex})  # fmt: skip
    late = [_register(rec, "inv1", "S1", f"SCR-L{n}", "low", ELIGIBLE) for n in range(3)]
    for pid in late:
        rec.api("inv1", "POST", f"/api/v1/participants/{pid}/randomize", signature)
    _ship_everything(app, rec)
    for pid in late:  # retried after the shipments arrived
        rec.api("inv1", "POST", f"/api/v1/participants/{pid}/randomize", signature)
    # One participant withdrawn; the pharmacist sets the kits aside (unblinded: not recorded,
    # but what masked roles read afterwards is).
    rec.post_page("inv1", f"/participants/{late[0]}/withdraw", {
        "reason": "Consent withdrawn", "submission": uuid.uuid4().hex})  # fmt: skip
    _set_aside_kits_of(app, rec, late[0])
    # Everything the masked roles can read at the end.
    for _who, pid in people + [(None, failed)] + [(None, p) for p in late]:  # type: ignore[list-item]
        rec.api("inv1" if pid not in (people[3][1], people[4][1]) else "inv2", "GET",
                f"/api/v1/participants/{pid}", key=False)  # fmt: skip
        rec.api("assess1", "GET", f"/api/v1/participants/{pid}", key=False)
        rec.api("admin1", "GET", f"/api/v1/participants/{pid}", key=False)
    rec.api("admin1", "GET", "/api/v1/audit?after=0&limit=1000", key=False)
    rec.api("admin1", "GET", "/api/v1/studies/TST/kits", key=False)
    for path in ("/kits/TST", "/lists/TST/dummy", "/admin/outbox", "/shipments/", "/audit"):
        rec.page("admin1", path, sort=path in ("/kits/TST",))
    for path in ("/participants", f"/participants/{first}", "/"):
        rec.page("inv1", path)
    rec.page("assess1", "/participants")
    with app.app_context():
        mails = db.session.scalars(select(Notification).order_by(Notification.id)).all()
        rec.out.append(("mail", [(m.recipients, _mask(m.subject), _mask(m.body)) for m in mails]))
    login(rec.client, "admin1")
    csv_answer = rec.client.get("/audit/export.csv")
    rec.out.append(("csv", csv_answer.status_code, _mask(csv_answer.get_data(as_text=True))))
    csv_answer.close()
    return rec.out


def _set_aside_kits_of(app: Flask, rec: Recorder, participant_id: int) -> None:
    with app.app_context():
        held = db.session.scalars(
            select(Dispensation.id).where(
                Dispensation.participant_id == participant_id, Dispensation.status == "allocated"
            )
        ).all()
    login(rec.client, "pharm1")
    for dispensation_id in held:
        answer = rec.client.post(f"/pharmacy/TST/queue/{dispensation_id}/set-aside")
        assert answer.status_code == 302, answer.get_data(as_text=True)
    rec.client.post("/logout")


def _diff(a: list[Any], b: list[Any]) -> str:
    for n, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            sx, sy = str(x), str(y)
            at = next((i for i, (p, q) in enumerate(zip(sx, sy, strict=False)) if p != q),
                      min(len(sx), len(sy)))  # fmt: skip
            return (f"output {n} ({sx[:60]}) differs at {at}:\n  run 1: …{sx[at - 600:at + 300]}"
                    f"\n  run 2: …{sy[at - 600:at + 300]}")  # fmt: skip
    return f"different lengths: {len(a)} and {len(b)}"


def _two_runs(
    twin_urls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = SMALL_STUDY
) -> list[Any]:
    """The history against two lists and kit lists from different seeds, each in its own
    database (under minimization: two seeds, so two different allocation histories)."""
    outputs = []
    for n, (url, seed) in enumerate(zip(twin_urls, (bytes(32), bytes([7]) * 32), strict=True)):
        app = _app(url, tmp_path / f"instance{n}", monkeypatch)
        try:
            outputs.append(_history(app, seed, text))
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    return outputs


@pytest.mark.parametrize("text", [ZONED_BILINGUAL_STUDY, MINIMIZATION_STUDY],
                         ids=["permuted-blocks", "minimization"])  # fmt: skip
def test_masked_outputs_are_identical_whatever_the_lists(
    twin_urls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    outputs = _two_runs(twin_urls, tmp_path, monkeypatch, text)
    first, second = outputs
    # The history did what it says: randomizations, refusals, replacements, expiry and
    # shipments happened.
    statuses = [o[3] for o in first if len(o) == 5 and o[1] == "POST" and "/api/" in o[2]]
    print(f"\ndifferential history: {len(first)} masked outputs; API answers by status "
          f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }")  # fmt: skip
    flat = str(first)
    for sign in (
        "supply-unavailable",
        "shipment.propose",
        "kit.replace",
        "kit.status",
        '\\"status\\":\\"expired\\"',
        "participant.dispense",
        "participant.withdraw",
        "kit.set_aside",
        "not-eligible",
    ):
        assert sign in flat or sign.replace("\\", "") in flat, sign
    assert statuses.count(201) >= 10 and statuses.count(409) >= 2
    assert first == second, _diff(first, second)


def test_the_differential_catches_a_gate_that_reads_the_real_stock(
    twin_urls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power check: a gate that opens on the true per-arm stock (what a site has of each
    product, known only to the unblinded) makes the two runs differ."""
    from randomizer.services.supply import policy

    def real_stock(session: Any, study: Any, stock: Any, *, until: dt.date) -> dict[str, int]:
        return {arm: stock.index.in_date(arm, until) for arm in stock.index.arms}

    monkeypatch.setattr(policy, "guaranteed_now", real_stock)
    outputs = _two_runs(twin_urls, tmp_path, monkeypatch)
    assert outputs[0] != outputs[1]
