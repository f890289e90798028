"""Fixtures: an app per test on each backend (SQLite and PostgreSQL), factories, helpers.

Tests that use the ``app`` fixture (directly or through ``client``, ``runner``,
``session``) run once per backend; pure tests run once. The summary at the end of the run
counts the tests per backend.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import create_app, migrate
from randomizer.db import Base, db
from randomizer.instance import ensure_instance_files
from randomizer.models import Role, Study, User

# One Playwright (and one Chromium) per test process, shared by every browser module: a
# second sync_playwright() in a process whose first is still open refuses to start.
from tests.browser import browser as browser

# The suite runs on a shared 2-core machine, two test processes at a time: an example's
# wall time says nothing about the code, so no per-example deadline anywhere.
hypothesis.settings.register_profile("suite", deadline=None)
hypothesis.settings.load_profile("suite")

PG_ADMIN_URL = os.environ.get(
    "RANDOMIZER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = [
    b for b in os.environ.get("RANDOMIZER_TEST_BACKENDS", "sqlite,postgresql").split(",") if b
]

SMALL_STUDY = """
[study]
code = "TST"
title = "Test study"
registry_id = "NCT00000001"
sponsor_contacts = [{ name = "Sponsor desk", email = "sponsor@example.org" }]

[[arms]]
code = "ACTIVEX"
name = "Active product X"
ratio = 1

[[arms]]
code = "PLACEBOX"
name = "Placebo product X"
ratio = 1

[randomization]
block_sizes = [2, 4]
per_stratum = 20
stratify_by_site = true

[[factors]]
code = "grade"
name = "Grade"
levels = ["low", "high"]

[[sites]]
code = "S1"
name = "Site one"

[[sites]]
code = "S2"
name = "Site two"

[[visits]]
code = "baseline"
day = 0
dispense = true

[[visits]]
code = "month_6"
day = 182
window_days = 14
dispense = true

[[eligibility]]
code = "consent"
text = "Signed informed consent"
kind = "inclusion"
type = "boolean"

[[eligibility]]
code = "age"
text = "Age in years"
kind = "inclusion"
type = "number"
min = 18
max = 75

[[eligibility]]
code = "pregnant"
text = "Pregnancy"
kind = "exclusion"
type = "boolean"
"""

PASSWORD = "correct-horse-battery"

#: Outcomes per backend: {backend: Counter(outcome)}.
_outcomes: dict[str, Counter[str]] = {}


def _backend_of(nodeid: str) -> str:
    params = nodeid.rsplit("[", 1)[1].rstrip("]").split("-") if "[" in nodeid else []
    return next((b for b in ("sqlite", "postgresql") if b in params), "no database")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # One outcome per test: the call, or the setup when it failed or skipped.
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        _outcomes.setdefault(_backend_of(report.nodeid), Counter())[outcome] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    parts = [
        f"{name}: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        for name, counts in sorted(_outcomes.items())
    ]
    terminalreporter.write_line("tests run per backend — " + "; ".join(parts))


# --- databases -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is faster)."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test session (created, migrated, dropped at the end)."""
    name = f"randomizer_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = sa.create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        # The audit table refuses TRUNCATE through a trigger; replica mode skips triggers.
        conn.exec_driver_sql("SET session_replication_role = replica")
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        conn.exec_driver_sql(
            "INSERT INTO audit_head (id, seq, digest) VALUES (1, 0, %s)", ("0" * 64,)
        )
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        target = tmp_path / "randomizer.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_database")
    _truncate_pg(url)
    return url


@pytest.fixture
def instance_path(tmp_path: Path) -> Path:
    path = tmp_path / "instance"
    ensure_instance_files(path)
    return path


@pytest.fixture(scope="session")
def compiled_catalogues(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Spanish catalogue compiled from the .po in git: pages are worded the same whether
    or not `make translations` ran (the .mo files are not in git)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    po = Path(__file__).parents[1] / "randomizer" / "translations" / "es" / "LC_MESSAGES"
    target = tmp_path_factory.mktemp("translations") / "es" / "LC_MESSAGES"
    target.mkdir(parents=True)
    with (po / "messages.po").open("rb") as source, (target / "messages.mo").open("wb") as mo:
        write_mo(mo, read_po(source, locale="es"))
    return target.parents[1]


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Override in a test module to change the app's configuration."""
    return {}


@pytest.fixture
def app(
    database_url: str,
    instance_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    app_config: dict[str, Any],
    compiled_catalogues: Path,
) -> Iterator[Flask]:
    monkeypatch.setenv("RANDOMIZER_INSTANCE_PATH", str(instance_path))
    monkeypatch.setenv("RANDOMIZER_DATABASE_URL", database_url)
    for var in ("RANDOMIZER_SECRET_KEY", "RANDOMIZER_MASTER_KEY", "RANDOMIZER_AUDIT_KEY"):
        monkeypatch.delenv(var, raising=False)
    config = {
        "TESTING": True,
        "WTF_CSRF_ENABLED": False,
        "SERVER_NAME": "localhost",
        "BABEL_TRANSLATION_DIRECTORIES": str(compiled_catalogues),
    }
    config.update(app_config)
    application = create_app(config)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """The app's session inside an app context (the test owns commits)."""
    with app.app_context():
        yield db.session
        db.session.rollback()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Runner:
    """Invokes the ``randomizer`` CLI against the test instance and database."""

    def __init__(self) -> None:
        self._runner = CliRunner()

    def invoke(self, *args: str, input: str | None = None) -> Any:
        from randomizer.cli import cli

        return self._runner.invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def runner(app: Flask) -> Runner:
    return Runner()


# --- factories -------------------------------------------------------------------------


def make_study(session: Session, text: str = SMALL_STUDY, **replace: str) -> Study:
    """Load a study (the small two-site test study unless other text is given)."""
    from randomizer.services.studies import load_study

    for old, new in replace.items():
        text = text.replace(old, new)
    study, _ = load_study(session, text=text, filename="test.toml")
    session.commit()
    return study


def make_user(
    session: Session,
    username: str,
    role: Role | str,
    sites: tuple[str, ...] = (),
    password: str = PASSWORD,
    **extra: Any,
) -> User:
    """Create and commit a user."""
    from randomizer.services.users import create_user

    user = create_user(
        session, username=username, role=role, password=password, sites=sites, **extra
    )
    session.commit()
    return user


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    """Sign in through the login form."""
    return client.post("/login", data={"username": username, "password": password})


def csrf_token(html: str) -> str:
    """The CSRF token of the first form in a page."""
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert found, "no CSRF token in page"
    return found.group(1)


@pytest.fixture
def study(session: Session) -> Study:
    return make_study(session)


@pytest.fixture
def users(session: Session, study: Study) -> dict[str, User]:
    """One user per role: investigator and pharmacist at S1, a second investigator at S2."""
    made = {
        "admin": make_user(session, "admin1", Role.ADMIN),
        "statistician": make_user(session, "stat1", Role.STATISTICIAN),
        "pharmacist": make_user(session, "pharm1", Role.PHARMACIST, ("S1",)),
        "investigator": make_user(session, "inv1", Role.INVESTIGATOR, ("S1",)),
        "investigator2": make_user(session, "inv2", Role.INVESTIGATOR, ("S2",)),
        "assessor": make_user(session, "assess1", Role.ASSESSOR),
    }
    return made
