"""Pages show study texts in the user's language and times in the site's zone, named.

The clock is fixed on both sides of Chile's 2026 daylight-saving changes (zoneinfo:
2026-04-05 03:00 UTC, UTC−3 → UTC−4; 2026-09-06 04:00 UTC, UTC−4 → UTC−3).
"""

from __future__ import annotations

import datetime as dt
import re
import types
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from flask_babel import refresh
from sqlalchemy.orm import Session

import randomizer.audit
import randomizer.db
from randomizer import audit
from randomizer.models import Participant, Study, User
from randomizer.services import enrollment
from randomizer.services.studies import definition_of
from tests.conftest import PASSWORD, SMALL_STUDY, login, make_study
from tests.enrollment_support import prepare_supply, register

SANTIAGO = (
    SMALL_STUDY.replace('title = "Test study"\n', 'languages = ["es", "en"]\ntitle = "Test study"\n'
                        'title_es = "Estudio de prueba"\n')
    .replace('name = "Site one"\n', 'name = "Site one"\ntimezone = "America/Santiago"\n')
    .replace('name = "Site two"\n', 'name = "Site two"\ntimezone = "America/Santiago"\n')
    .replace('code = "baseline"\n', 'code = "baseline"\nname = "Baseline"\nname_es = "Basal"\n')
    .replace('name = "Grade"\n',
             'name = "Grade"\nname_es = "Grado"\nlevels_es = ["bajo", "alto"]\n')
    .replace('text = "Age in years"\n', 'text = "Age in years"\ntext_es = "Edad en años"\n')
)  # fmt: skip
UTC = dt.UTC

#: (moment in UTC, local text shown, offset shown): each pair straddles a change.
CASES = [
    (dt.datetime(2026, 4, 5, 2, 30, tzinfo=UTC), "2026-04-04 23:30", "UTC-03:00"),
    (dt.datetime(2026, 4, 5, 3, 30, tzinfo=UTC), "2026-04-04 23:30", "UTC-04:00"),
    (dt.datetime(2026, 9, 6, 3, 30, tzinfo=UTC), "2026-09-05 23:30", "UTC-04:00"),
    (dt.datetime(2026, 9, 6, 4, 30, tzinfo=UTC), "2026-09-06 01:30", "UTC-03:00"),
]


@pytest.fixture
def study(session: Session) -> Study:
    return make_study(session, SANTIAGO)


@contextmanager
def clock(moment: dt.datetime) -> Iterator[None]:
    """Every ``now()`` of the service (model defaults, services, audit times) is ``moment``."""

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return moment.astimezone(tz) if tz else moment.replace(tzinfo=None)

    fake = types.SimpleNamespace(**{k: getattr(dt, k) for k in dir(dt) if not k.startswith("__")})
    fake.datetime = Frozen
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(randomizer.db, "dt", fake)
        patch.setattr(randomizer.audit, "dt", fake)
        yield


def _randomized_at(session: Session, study: Study, user: User, moment: dt.datetime) -> Participant:
    with clock(moment):
        participant = register(session, study, user, f"P-{moment:%m%d%H%M}")
        enrollment.randomize(session, participant, signer=user, password=PASSWORD)
        session.commit()
    return participant


def _as(app: Flask, username: str) -> FlaskClient:
    """A client of its own, signed in (Spanish pages, the default). The tests' app context
    outlives requests, so the user Flask-Login keeps in ``g`` is dropped first."""
    g.pop("_login_user", None)
    own = app.test_client()
    assert login(own, username).status_code == 302
    return own


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


NAMES = {"UTC-03:00": "hora de verano de Chile", "UTC-04:00": "hora estándar de Chile"}


def test_confirmation_queue_and_audit_show_santiago_time_across_dst(
    app: Flask, session: Session, study: Study, users: dict[str, User]
) -> None:
    prepare_supply(session, study, per_stratum=4, kits=6, sites=("S1",))
    people = [_randomized_at(session, study, users["investigator"], m) for m, _l, _o in CASES]
    assert [p.randomized_at for p in people] == [m for m, _l, _o in CASES]  # stored in UTC
    investigator = _as(app, "inv1")
    queue = _text(_as(app, "pharm1").get("/pharmacy/TST/queue").get_data(True))
    admin = _as(app, "admin1")
    trail = _text(admin.get("/audit?action=participant.randomize").get_data(True))
    csv = admin.get("/audit/export.csv?action=participant.randomize").get_data(True)
    for participant, (moment, local, offset) in zip(people, CASES, strict=True):
        url = f"/participants/{participant.id}/confirmation"
        page = _text(investigator.get(url).get_data(True))
        assert f"Aleatorizado el {local}:00 {NAMES[offset]} ({offset})" in page, page
        assert f"{local} {NAMES[offset]} ({offset})" in queue, (local, queue)
        assert f"{local}:00 {NAMES[offset]} ({offset})" in trail, (local, trail)
        assert audit.timestamp(moment)[:19] in csv  # the export stays UTC
    assert "2026-04-05 02:30" not in trail + queue  # never the UTC clock time
    # day 0 of the visit windows is the day at the site: 4 April in Santiago, not 5 April
    window = enrollment.visit_window(definition_of(study), people[0], "month_6")
    assert window.due == dt.date(2026, 4, 4) + dt.timedelta(days=182)


def test_audit_date_filter_reads_days_in_the_site_zone(
    client: FlaskClient, session: Session, study: Study, users: dict[str, User]
) -> None:
    # 2026-04-05 02:30 UTC is still 4 April in Santiago; 04:30 UTC is 5 April there
    for moment, action in (
        (dt.datetime(2026, 4, 5, 2, 30, tzinfo=UTC), "thing.late_on_the_4th"),
        (dt.datetime(2026, 4, 5, 4, 30, tzinfo=UTC), "thing.early_on_the_5th"),
    ):
        with clock(moment):
            audit.record(session, actor=audit.SYSTEM, action=action)
            session.commit()
    login(client, "admin1")
    page = client.get("/audit?date_from=2026-04-04&date_to=2026-04-04").get_data(True)
    assert "thing.late_on_the_4th" in page and "thing.early_on_the_5th" not in page
    page = client.get("/audit?date_from=2026-04-05").get_data(True)
    assert "thing.early_on_the_5th" in page and "thing.late_on_the_4th" not in page
    assert "Desde (fecha, America/Santiago)" in page
    csv = client.get("/audit/export.csv?date_from=2026-04-05").get_data(True)
    assert "thing.early_on_the_5th" in csv and "thing.late_on_the_4th" not in csv


LANGUAGES = {
    "es": (["Estudio de prueba", "Basal", "Grado", "bajo", "Edad en años"], ["Baseline"]),
    "en": (["Test study", "Baseline", "Grade", "low", "Age in years"], ["Basal", "Grado"]),
}


def test_study_texts_and_zone_names_follow_the_page_language_with_fallback(
    app: Flask, session: Session, study: Study, users: dict[str, User]
) -> None:
    prepare_supply(session, study, per_stratum=2, kits=2, sites=("S1",))
    participant = _randomized_at(session, study, users["investigator"], CASES[0][0])
    for lang, (expected, absent) in LANGUAGES.items():
        reader = _as(app, "inv1")
        reader.get(f"/lang/{lang}")
        refresh()  # Flask-Babel keeps the locale in the app context the tests share
        shown = _text(reader.get(f"/participants/{participant.id}").get_data(True))
        shown += _text(reader.get("/studies/TST/participants/new").get_data(True))
        for text in expected:
            assert text in shown, (lang, text)
        for text in absent:
            assert text not in shown, (lang, text)
        # no translation given: the base field in both languages
        assert "Signed informed consent" in shown
    confirmation = _text(reader.get(f"/participants/{participant.id}/confirmation").get_data(True))
    assert "Randomized at 2026-04-04 23:30:00 Chile Summer Time (UTC-03:00)" in confirmation


def test_a_site_without_a_zone_shows_utc_named(
    client: FlaskClient, session: Session, users: dict[str, User]
) -> None:
    plain = make_study(session, SMALL_STUDY.replace('code = "TST"', 'code = "TS2"'))
    prepare_supply(session, plain, per_stratum=2, kits=2, sites=("S1",))
    participant = _randomized_at(session, plain, users["investigator"], CASES[0][0])
    login(client, "inv1")
    page = _text(client.get(f"/participants/{participant.id}/confirmation").get_data(True))
    assert "Aleatorizado el 2026-04-05 02:30:00 UTC" in page


def test_enrolment_months_follow_the_site_calendar() -> None:
    from randomizer.services.reports import enrolment_by_month
    from randomizer.studydef import parse_study

    sites = parse_study(SANTIAGO).sites
    # 1 May 02:00 UTC is still 30 April in Santiago
    people = [Participant(site_code="S1", randomized_at=dt.datetime(2026, 5, 1, 2, tzinfo=UTC))]
    assert enrolment_by_month(people, sites) == [("2026-04", 1)]
    assert enrolment_by_month(people) == [("2026-05", 1)]  # no zones given: UTC
