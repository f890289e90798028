"""The audit pages show each action with a translated label and the values as readable
key–value lines; the CSV export keeps the raw codes and values."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.pofile import read_po
from flask import g
from sqlalchemy import select

from randomizer.models import AuditEvent
from randomizer.views.audit_labels import ACTION_LABELS
from tests.conftest import login
from tests.enrollment_support import prepare_supply, register
from tests.test_participant_pages import _randomize

PACKAGE = Path(__file__).resolve().parent.parent / "randomizer"
CATALOGUE = PACKAGE / "translations" / "es" / "LC_MESSAGES" / "messages.po"
#: Ways the code names an audit action: keyword, default, constant, f-string over a
#: closed set, and the positional argument of the participant status changes.
_ACTION_PATTERNS = (
    r'action(?:: str)?\s*=\s*"([a-z_]+(?:\.[a-z_]+)?)"',
    r'ACTION\s*=\s*"([a-z_]+\.[a-z_]+)"',
    r'"(participant\.[a-z_]+)",\s*$',
)


def _actions_in_code() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in _ACTION_PATTERNS:
            found.update(re.findall(pattern, text, re.M))
        if 'action=f"shipment.{outcome}"' in text:
            found.update({"shipment.received", "shipment.damaged"})
    return found


def test_every_audit_action_in_the_code_has_a_label():
    actions = _actions_in_code()
    assert {"participant.withdraw", "kit.status", "logout", "pharmacy.view_products"} <= actions
    assert sorted(actions - ACTION_LABELS.keys()) == []


def test_every_action_label_is_translated_into_spanish():
    with CATALOGUE.open("rb") as po:
        catalogue = read_po(po)
    for action, label in ACTION_LABELS.items():
        message = catalogue.get(label._args[0])
        assert message is not None and message.string and not message.fuzzy, action


def test_audit_page_shows_labels_and_key_value_lines(client, session, study, users):
    prepare_supply(session, study)
    register(session, study, users["investigator"], "A-1")
    login(client, "admin1")
    html = client.get("/audit?action=participant.").get_data(as_text=True)
    assert "Participante tamizado" in html  # the label of participant.register, in Spanish
    assert '<small class="hint code">participant.register</small>' in html
    assert '<span class="k">Estado:</span> Elegible' in html
    assert '{"status"' not in html and "&#34;status&#34;" not in html


def test_audit_csv_keeps_raw_codes_and_values(client, session, study, users):
    prepare_supply(session, study)
    register(session, study, users["investigator"], "A-1")
    login(client, "admin1")
    text = client.get("/audit/export.csv?action=participant.register").get_data(as_text=True)
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "participant.register")
    ).one()
    assert "participant.register" in text and '""status"":""eligible""' in text
    assert event.new_values and '"status":"eligible"' in event.new_values


def test_a_signature_is_shown_in_the_words_signed_without_its_english_copy(
    app, client, session, study, users
):
    prepare_supply(session, study)
    participant = register(session, study, users["investigator"], "A-1")
    login(client, "inv1")
    client.get("/lang/es")
    answer = _randomize(client, participant.id)
    assert answer.status_code in (302, 303), answer.status_code
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "participant.randomize")
    ).one()
    assert event.new_values and '"meaning_en"' in event.new_values  # kept for programs
    g.pop("_login_user", None)  # the test's app context outlives the investigator's requests
    admin = app.test_client()
    login(admin, "admin1")
    admin.get("/lang/es")
    html = admin.get("/audit?action=participant.randomize").get_data(as_text=True)
    assert "Significado: Confirmo" in html
    assert "I confirm" not in html and "meaning_en" not in html
