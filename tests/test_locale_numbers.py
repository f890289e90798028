"""Numbers in HTML forms are read in the page's language: a decimal comma on a Spanish page,
a decimal point on an English one; anything else is refused naming the field, never
silently read as another number."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from randomizer.models import Participant, ParticipantStatus
from tests.conftest import login
from tests.enrollment_support import prepare_supply, register
from tests.test_participant_pages import screen, screening_body


@pytest.fixture
def page_in(client, session, study, users):
    """A signed-in investigator's client, pages in the language asked for."""
    prepare_supply(session, study)

    def open_in(lang: str):
        client.get(f"/lang/{lang}")
        assert login(client, "inv1").status_code == 302
        return client

    return open_in


def _stored(session):
    return session.scalars(select(Participant)).one()


@pytest.mark.parametrize(
    ("lang", "typed", "stored", "status"),
    [
        ("es", "17,5", 17.5, ParticipantStatus.SCREEN_FAILED),
        ("es", "40,5", 40.5, ParticipantStatus.ELIGIBLE),
        ("es", "40", 40, ParticipantStatus.ELIGIBLE),
        ("en", "17.5", 17.5, ParticipantStatus.SCREEN_FAILED),
        ("en", "75.5", 75.5, ParticipantStatus.SCREEN_FAILED),
        ("en", " 40.5 ", 40.5, ParticipantStatus.ELIGIBLE),
    ],
)
def test_decimal_is_read_in_the_page_language(page_in, session, lang, typed, stored, status):
    response = screen(page_in(lang), screening_body(**{"criterion-age": typed}))
    assert response.status_code == 302
    participant = _stored(session)
    assert participant.eligibility["age"] == stored
    assert participant.status is status


@pytest.mark.parametrize(
    ("lang", "typed"),
    [
        ("es", "17.5"),  # an English decimal point on a Spanish page: 175 or 17,5?
        ("es", "1.234,5"),  # thousands separators are not taken
        ("es", "1,2,3"),
        ("en", "17,5"),
        ("en", "1,234.5"),
        ("en", "forty"),
        ("en", "1e3"),
        ("en", "٤٠"),  # digits of another script
        ("en", "nan"),
    ],
)
def test_ambiguous_or_malformed_number_is_refused_naming_the_field(page_in, session, lang, typed):
    response = screen(page_in(lang), screening_body(**{"criterion-age": typed}))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    error = html.split('id="criterion-age-error">', 1)[1].split("</p>", 1)[0]
    assert error.startswith("Age in years:")
    assert session.scalar(select(func.count()).select_from(Participant)) == 0


def test_spanish_refusal_says_how_to_write_the_number(page_in, session):
    html = screen(page_in("es"), screening_body(**{"criterion-age": "17.5"})).get_data(as_text=True)
    assert "39,5" in html
    assert "no es un número" in html


def test_number_field_shows_range_and_unit_in_the_page_language(page_in):
    html = page_in("es").get("/studies/TST/participants/new").get_data(as_text=True)
    assert "de 18 a 75" in html
    assert 'inputmode="decimal"' in html


def test_count_field_takes_digits_only(client, session, study, users):
    from tests.conftest import csrf_token

    client.get("/lang/en")
    login(client, "admin1")
    html = client.get("/shipments/").get_data(as_text=True)
    response = client.post(
        f"/shipments/{study.code}/new",
        data={"csrf_token": csrf_token(html), "site": "S1", "count": "1.000"},
    )
    assert response.status_code == 422
    assert "Number of kits: “1.000” is not a whole number" in response.get_data(as_text=True)


def test_signature_page_shows_the_recorded_answers(page_in, session, study, users):
    participant = register(session, study, users["investigator"], "A")
    client = page_in("es")
    html = client.get(f"/participants/{participant.id}/randomize").get_data(as_text=True)
    answers = html.split('class="facts recorded-answers"', 1)[1].split("</dl>", 1)[0]
    for criterion in ("Signed informed consent", "Age in years", "Pregnancy"):
        assert f"<dt>{criterion}</dt>" in answers
    assert f"<dd>{participant.eligibility['age']}</dd>" in answers.replace(",", ".")
    assert "<dd>Sí</dd>" in answers and "<dd>No</dd>" in answers
    assert "Grade" in html


def test_correction_form_shows_the_stored_number_in_the_page_language(page_in, session, study):
    client = page_in("es")
    assert screen(client, screening_body(**{"criterion-age": "40,5"})).status_code == 302
    participant = _stored(session)
    html = client.get(f"/participants/{participant.id}/correct").get_data(as_text=True)
    assert 'value="40,5"' in html
