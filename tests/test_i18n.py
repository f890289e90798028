"""Every page in Spanish and English; the Spanish catalogue covers the foundation's strings."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import kitcodes, settings
from randomizer.audit import SYSTEM
from randomizer.models import (
    AuditEvent,
    KitStatus,
    ListKind,
    Notification,
    ParticipantStatus,
    Role,
    Shipment,
    ShipmentStatus,
    Study,
    User,
)
from randomizer.services import enrollment, shipments, unblinding
from randomizer.services.kits import generate_kits
from randomizer.services.notifications import BODY_SEPARATOR
from tests.conftest import PASSWORD, login
from tests.enrollment_support import prepare_supply, register
from tests.unblinding_support import randomized, supply

PACKAGE = Path(__file__).parents[1] / "randomizer"
CATALOGUE = PACKAGE / "translations" / "es" / "LC_MESSAGES" / "messages.po"
TEMPLATE = PACKAGE / "translations" / "messages.pot"
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None, "N_": None}

#: The foundation's user-facing files: sign-in, errors, the layout and the start page.
FOUNDATION_TEMPLATES = ["base.html", "login.html", "login_totp.html", "home.html", "error.html"]
FOUNDATION_MODULES = [
    "auth.py",
    "errors.py",
    "forms.py",
    "views/auth_views.py",
    "views/main.py",
    "views/navigation.py",
]


def _forget_loaded_catalogues() -> None:
    # Flask-Babel keeps loaded catalogues on the one shared Babel object, for every app of
    # the process: without this, whichever test first rendered Spanish decides for all.
    domain = settings.babel.__dict__.get("domain_instance")
    if domain is not None:
        domain.cache.clear()


@pytest.fixture(autouse=True)
def fresh_catalogues() -> Iterator[None]:
    _forget_loaded_catalogues()
    yield
    _forget_loaded_catalogues()


@pytest.fixture
def app_config(compiled_catalogues: Path) -> dict[str, Any]:
    # Spanish is the service's default language (the sites work in Spanish), whatever
    # default the shared fixtures choose for other tests.
    return {
        "BABEL_TRANSLATION_DIRECTORIES": str(compiled_catalogues),
        "BABEL_DEFAULT_LOCALE": "es",
    }


def _foundation_messages() -> set[str]:
    sources = [(PACKAGE / "templates" / name, "jinja2") for name in FOUNDATION_TEMPLATES]
    sources += [(PACKAGE / name, "python") for name in FOUNDATION_MODULES]
    return _messages(sources)


def _all_messages() -> set[str]:
    sources = [(path, "jinja2") for path in (PACKAGE / "templates").rglob("*.html")]
    sources += [(path, "python") for path in PACKAGE.rglob("*.py")]
    return _messages(sources)


def _messages(sources: list[tuple[Path, str]]) -> set[str]:
    found: set[str] = set()
    for path, method in sources:
        options = {"extensions": "jinja2.ext.do"} if method == "jinja2" else {}
        for _line, message, _comments, _context in extract_from_file(
            method, str(path), keywords=KEYWORDS, options=options
        ):
            found.add(message if isinstance(message, str) else message[0])
    return found


def _catalogue() -> Any:
    with CATALOGUE.open("rb") as fh:
        return read_po(fh, locale="es")


# --- the catalogue ---------------------------------------------------------------------


def test_the_foundation_has_strings_to_translate():
    messages = _foundation_messages()
    assert {"Sign in", "Username", "Password", "What you can do"} <= messages
    assert len(messages) > 40


def test_every_foundation_string_is_in_the_template_and_translated():
    catalogue = _catalogue()
    with TEMPLATE.open("rb") as fh:
        template = {m.id for m in read_po(fh) if m.id}
    untranslated = []
    for msgid in sorted(_foundation_messages()):
        assert msgid in template, f"run `make translations-update`: {msgid!r} is not extracted"
        entry = catalogue.get(msgid)
        if entry is None or not entry.string or entry.fuzzy:
            untranslated.append(msgid)
    assert untranslated == []


def test_every_string_of_every_page_is_extracted_and_translated():
    """The sites work in Spanish: no page may fall back to English for lack of a translation."""
    catalogue = _catalogue()
    with TEMPLATE.open("rb") as fh:
        template = {m.id for m in read_po(fh) if m.id}
    template = {m if isinstance(m, str) else m[0] for m in template}
    messages = _all_messages()
    assert len(messages) > 400
    missing = sorted(m for m in messages if m not in template)
    assert missing == [], "run `make translations-update` and translate the new strings"
    untranslated = sorted(
        m for m in messages
        if (entry := catalogue.get(m)) is None or not entry.string or entry.fuzzy
    )  # fmt: skip
    assert untranslated == []


def test_translations_keep_every_placeholder():
    placeholder = re.compile(r"%\(\w+\)[sd]")
    for entry in _catalogue():
        if not entry.id or not entry.string:
            continue
        ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        wanted = sorted(placeholder.findall(ids[-1]))
        for text in strings:
            assert sorted(placeholder.findall(text)) == wanted, entry.id
    assert not list(_catalogue().check())


# --- pages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "lang", "words"),
    [
        ("es-CL,es;q=0.9", "es", ["Iniciar sesión", "Usuario", "Contraseña"]),
        ("en-GB,en;q=0.8", "en", ["Sign in", "Username", "Password"]),
        (None, "es", ["Iniciar sesión", "Usuario"]),  # the sites work in Spanish
        ("fr-FR", "es", ["Iniciar sesión"]),
    ],
    ids=["spanish", "english", "no-preference", "unsupported"],
)
def test_the_login_page_follows_the_browser_language(
    client: FlaskClient, accept: str | None, lang: str, words: list[str]
):
    headers = {"Accept-Language": accept} if accept else {}
    html = client.get("/login", headers=headers).get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    for word in words:
        assert word in html


def test_the_language_links_override_the_browser(client: FlaskClient):
    english = {"Accept-Language": "en"}
    assert client.get("/lang/es", headers={**english, "Referer": "http://localhost/login"})
    html = client.get("/login", headers=english).get_data(as_text=True)
    assert '<html lang="es">' in html and "Iniciar sesión" in html
    client.get("/lang/en")
    html = client.get("/login", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert '<html lang="en">' in html and "Sign in" in html


def test_the_language_link_returns_only_to_this_site(client: FlaskClient):
    response = client.get("/lang/en", headers={"Referer": "https://evil.example/"})
    assert response.headers["Location"] == "/"
    back = client.get("/lang/en", headers={"Referer": "http://localhost/login"})
    assert back.headers["Location"] == "http://localhost/login"


def test_an_unknown_language_is_ignored(client: FlaskClient):
    client.get("/lang/xx")
    assert "Iniciar sesión" in client.get("/login").get_data(as_text=True)


@pytest.mark.usefixtures("users")
def test_the_refusal_is_translated(client: FlaskClient):
    response = client.post(
        "/login",
        data={"username": "inv1", "password": "wrong-password"},
        headers={"Accept-Language": "es"},
    )
    assert "Usuario desconocido o contraseña incorrecta." in response.get_data(as_text=True)


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("es", ["Bienvenido/a", "Investigador/a", "Lo que puede hacer", "Cerrar sesión"]),
        ("en", ["Welcome", "Investigator", "What you can do", "Sign out"]),
    ],
)
def test_the_home_page_is_in_both_languages(client: FlaskClient, lang: str, words: list[str]):
    login(client, "inv1", PASSWORD)
    client.get(f"/lang/{lang}")
    html = client.get("/").get_data(as_text=True)
    for word in words:
        assert word in html


def test_the_language_choice_survives_sign_in(client: FlaskClient, users: Any):
    client.get("/lang/en")
    login(client, "inv1", PASSWORD)
    html = client.get("/", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert "Welcome" in html


def test_error_pages_are_translated(client: FlaskClient):
    html = client.get("/nowhere", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert "Página no encontrada" in html
    assert "Volver a la página de inicio" in html


# --- refusals ----------------------------------------------------------------------------

#: The exception classes whose message reaches people; their subclasses are found below.
REFUSAL_ROOTS = {"RandomizerError", "InvalidAnswer", "AnchorError"}


def _refusal_classes(trees: list[ast.Module]) -> set[str]:
    """Every class that derives, however indirectly, from a refusal root."""
    found = set(REFUSAL_ROOTS)
    classes = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    while True:
        more = {
            c.name
            for c in classes
            if c.name not in found
            and any(isinstance(b, ast.Name) and b.id in found for b in c.bases)
        }
        if not more:
            return found
        found |= more


def _wording_argument(call: ast.Call, name: str) -> ast.expr | None:
    if name == "InvalidAnswer":  # (field, reason, **params)
        return call.args[1] if len(call.args) > 1 else None
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "message"), None)


def _marked(node: ast.expr) -> str | None:
    """The literal inside ``N_("...")``, or None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "N_"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def _wording_problems(sources: dict[str, str], catalogue: Any) -> list[str]:
    """Refusals raised with English text built in place, or with an untranslated msgid."""
    trees = {name: ast.parse(text) for name, text in sources.items()}
    classes = _refusal_classes(list(trees.values()))
    problems = []
    for name, tree in trees.items():
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called not in classes:
                continue
            where = f"{name}:{call.lineno}"
            argument = _wording_argument(call, called)
            options = (
                [argument.body, argument.orelse] if isinstance(argument, ast.IfExp) else [argument]
            )
            for option in options:
                msgid = _marked(option) if option is not None else None
                if msgid is not None:
                    entry = catalogue.get(msgid)
                    if entry is None or not entry.string or entry.fuzzy:
                        problems.append(f"{where}: not translated: {msgid!r}")
                elif (
                    option is None
                    or isinstance(option, ast.Constant | ast.JoinedStr | ast.BinOp)
                    or (isinstance(option, ast.Attribute) and option.attr == "message")
                    or (
                        isinstance(option, ast.Call)
                        and isinstance(option.func, ast.Name)
                        and option.func.id in {"str", "_", "gettext", "format"}
                    )
                ):
                    problems.append(f'{where}: the wording must be N_("...") with parameters')
    return problems


def _package_sources() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text(encoding="utf-8")
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
    }


def test_every_refusal_raised_anywhere_is_marked_and_translated():
    """No module builds a refusal in English: each is a msgid the Spanish catalogue covers."""
    sources = _package_sources()
    assert sum(s.count("raise ") for s in sources.values()) > 200
    assert _wording_problems(sources, _catalogue()) == []


def test_the_refusal_check_catches_built_and_untranslated_wordings():
    source = (
        "class Refused(RandomizerError): pass\n"
        "raise Refused(f'Kit {code} is gone')\n"
        "raise NotFound('No kit.')\n"
        "raise Refused(N_('A wording nobody translated.'))\n"
        "raise Refused(N_('Describe the damage.'))\n"
        "raise InvalidAnswer('site', 'unknown site')\n"
    )
    problems = _wording_problems(
        {
            "x.py": source,
            "errors.py": "class NotFound(Conflict): pass\nclass Conflict(RandomizerError): pass\n",
        },
        _catalogue(),
    )
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "6"]


def test_every_status_word_a_refusal_can_quote_is_translated():
    """Refusals quote statuses and roles by their value; each has its Spanish word."""
    catalogue = _catalogue()
    words = [
        member.value.replace("_", " ")
        for kind in (KitStatus, ShipmentStatus, ParticipantStatus, Role, ListKind)
        for member in kind
    ]
    assert [w for w in words if not (e := catalogue.get(w)) or not e.string or e.fuzzy] == []


# --- refusals, e-mails and signatures in the reader's language ---------------------------


@pytest.fixture
def shipment_to_s1(session: Session, study: Study, users: dict[str, User]) -> int:
    prepare_supply(session, study, per_stratum=8, kits=4)
    generate_kits(session, study, count=8, actor=SYSTEM)
    shipment = shipments.propose_manual(session, study, site="S1", count=4, actor=SYSTEM)
    shipments.dispatch(session, study, shipment=shipment, actor=SYSTEM)
    session.commit()
    return shipment.id


def _mistyped_receipt(client: FlaskClient, session: Session, shipment_id: int) -> tuple[str, str]:
    shipment = session.get_one(Shipment, shipment_id)
    raw = kitcodes.normalise(shipments.shipment_lines(session, shipment)[0].kit_code)
    typo = next(
        typed
        for c in kitcodes.ALPHABET
        if not kitcodes.is_valid(typed := raw[:-1] + c)
    )  # fmt: skip
    assert login(client, "pharm1").status_code == 302
    response = client.post(
        f"/pharmacy/TST/shipments/{shipment_id}/receive",
        data={"codes": typo, "outcome": "received"},
    )
    assert response.status_code == 422
    return typo, html_unescape(response.get_data(as_text=True))


def test_a_mistyped_kit_code_is_refused_in_spanish_on_a_spanish_page(
    client: FlaskClient, session: Session, shipment_to_s1: int
):
    typo, html = _mistyped_receipt(client, session, shipment_to_s1)
    assert (
        f"'{typo}' no es un código de kit válido: su carácter de control no coincide "
        "(¿error de digitación?). No se registró nada" in html
    )
    assert "is not a valid kit code" not in html


def test_the_same_refusal_is_in_english_on_an_english_page(
    client: FlaskClient, session: Session, shipment_to_s1: int
):
    client.get("/lang/en")
    typo, html = _mistyped_receipt(client, session, shipment_to_s1)
    assert f"'{typo}' is not a valid kit code: its check character does not match" in html


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"Accept-Language": "es"}, "Envíe 'Authorization: Bearer <token>'."),
        ({"Accept-Language": "en"}, "Send 'Authorization: Bearer <token>'."),
        ({}, "Send 'Authorization: Bearer <token>'."),  # no language asked: English
    ],
    ids=["spanish", "english", "none"],
)
def test_the_api_words_its_refusals_in_the_language_the_client_asks_for(
    client: FlaskClient, headers: dict[str, str], detail: str
):
    response = client.get("/api/v1/studies/TST/kits", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["detail"] == detail


def test_the_sponsor_notice_of_an_unblinding_is_in_spanish_and_english(
    session: Session, study: Study, users: dict[str, User]
):
    supply(session, study)
    participant = randomized(session, study, users["investigator"], "E-1")
    unblinding.unblind(
        session, participant, actor_user=users["investigator"], reason_category="adverse_event",
        reason="Anaphylaxis", password=PASSWORD,
        confirm_number=participant.randomization_number,
    )  # fmt: skip
    [mail] = session.scalars(select(Notification)).all()
    spanish, english = mail.subject.split(" / ")
    number = participant.randomization_number
    assert spanish == (
        f"[PRUEBA] [randomizer] Apertura de emergencia del ciego en el estudio TST: "
        f"participante {number} del centro S1"
    )
    assert english.startswith("[TEST] [randomizer] Emergency unblinding in study TST")
    first, second = mail.body.split(BODY_SEPARATOR)
    assert "abrió el ciego de un participante en una emergencia" in first
    assert "unblinded one participant in an emergency" in second
    assert f"número de aleatorización {number}" in first


def test_the_signature_stores_the_meaning_the_signer_read_in_spanish(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
):
    prepare_supply(session, study)
    participant = register(session, study, users["investigator"], "S-1")
    assert login(client, "inv1").status_code == 302
    page = client.get(f"/participants/{participant.id}/randomize").get_data(as_text=True)
    shown = "Confirmo que este participante es elegible y solicito su aleatorización"
    assert f"“{shown}”" in page
    token = re.search(r'name="submission" type="hidden" value="([0-9a-f]+)"', page)
    assert token is not None
    response = client.post(
        f"/participants/{participant.id}/randomize",
        data={"password": PASSWORD, "submission": token.group(1)},
    )
    assert response.status_code == 302
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "participant.randomize")
    ).one()
    signature = json.loads(event.new_values or "{}")["signature"]
    assert signature["meaning"] == shown
    assert signature["meaning_en"] == enrollment.RANDOMIZE_MEANING


def test_counts_take_the_singular_or_the_plural(
    client: FlaskClient, session: Session, shipment_to_s1: int
):
    shipment = session.get_one(Shipment, shipment_to_s1)
    codes = [line.kit_code for line in shipments.shipment_lines(session, shipment)]
    assert login(client, "pharm1").status_code == 302
    url = f"/pharmacy/TST/shipments/{shipment_to_s1}/receive"
    one = client.post(url, data={"codes": codes[0], "outcome": "received"}, follow_redirects=True)
    assert "1 kit recibido." in one.get_data(as_text=True)
    two = client.post(
        url, data={"codes": "\n".join(codes[1:3]), "outcome": "received"}, follow_redirects=True
    )
    assert "2 kits recibidos." in two.get_data(as_text=True)
