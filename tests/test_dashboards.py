"""Home dashboards per role: live figures, visits coming due, and masked dashboards that
are identical whatever the arms."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer.models import Study, User
from randomizer.services import enrollment
from randomizer.services.dashboards import visits_due
from randomizer.services.reports import participants
from tests import test_auth
from tests.conftest import login, make_study
from tests.test_reports import _history

#: No app context stays pushed: each client's requests see their own signed-in user.
session = test_auth.session


def _board(html: str, code: str) -> str:
    found = re.search(rf'<section class="card dashboard" id="dashboard-{code}">(.*?)</section>',
                      html, re.S)  # fmt: skip
    assert found, f"no dashboard for {code}"
    return found.group(1)


def _home(client: FlaskClient, username: str) -> str:
    client.get("/lang/en")
    login(client, username)
    return client.get("/").text


def test_the_month_6_visit_is_due_when_its_window_opens_within_30_days(
    session: Session, study: Study, users: dict[str, User]
) -> None:
    _history(session, study, users, bytes(32))
    people = participants(session, study, ["S2"])
    randomized_on = people[0].randomized_at
    assert randomized_on is not None
    soon = randomized_on.date() + dt.timedelta(days=150)  # window opens on day 168
    (due,) = visits_due(session, study, people, soon)
    assert (due.visit, due.opens) == ("month_6", randomized_on.date() + dt.timedelta(days=168))
    assert visits_due(session, study, people, randomized_on.date() + dt.timedelta(days=100)) == []
    assert visits_due(session, study, people, randomized_on.date() + dt.timedelta(days=197)) == []


def test_each_role_sees_its_own_figures(
    app: Any, session: Session, study: Study, users: dict[str, User]
) -> None:
    _history(session, study, users, bytes(32))
    inv = _board(_home(app.test_client(), "inv2"), "TST")
    assert "<strong>1</strong> Screened" in re.sub(r"\s+", " ", inv)
    admin = _board(_home(app.test_client(), "admin1"), "TST")
    assert "Shipments in transit" in admin and "participant.randomize" in admin
    pharm = re.sub(r"\s+", " ", _board(_home(app.test_client(), "pharm1"), "TST"))
    assert "<strong>3</strong> Kits to prepare" in pharm and "kits available at S1" in pharm
    stat = _board(_home(app.test_client(), "stat1"), "TST")
    assert "List usage per stratum" in stat and "S1|grade=low" in stat
    assert not any(arm in page for page in (inv, admin) for arm in ("ACTIVEX", "PLACEBOX"))


def test_masked_dashboards_are_identical_whatever_the_arms(
    app: Any, session: Session, study: Study, users: dict[str, User]
) -> None:
    _history(session, study, users, bytes(32))
    other = make_study(session, **{'code = "TST"': 'code = "TS2"'})
    _history(session, other, users, b"\x5a" * 32)
    for username in ("admin1", "inv1", "inv2", "assess1"):
        html = _home(app.test_client(), username)
        first = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "TIME", _board(html, "TST"))
        second = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "TIME", _board(html, "TS2"))
        first = re.sub(r'participant_id=\d+|/participants/\d+"', "ID", first)
        second = re.sub(r'participant_id=\d+|/participants/\d+"', "ID", second)
        assert first == second.replace("TS2", "TST"), username
    assert enrollment.list_participants(session, other)
