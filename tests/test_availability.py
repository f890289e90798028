"""Database outages answer 503 with Retry-After; stale pooled connections are replaced;
``/healthz`` says whether the service can serve (SPEC §4.2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from randomizer import create_app
from randomizer.db import db
from tests.enrollment_support import call, token_for

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def unreachable_app(instance_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app configured for a PostgreSQL server that does not answer."""
    monkeypatch.setenv("RANDOMIZER_INSTANCE_PATH", str(instance_path))
    monkeypatch.setenv("RANDOMIZER_DATABASE_URL", UNREACHABLE)
    app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False})
    yield app
    with app.app_context():
        db.engine.dispose()


def test_healthz_answers_ok_when_database_schema_and_keys_are_there(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_healthz_is_503_when_the_schema_is_not_at_the_head_migration(client, monkeypatch):
    # The code knows a newer migration than the database is at (an upgrade not yet run).
    monkeypatch.setattr("randomizer.views.health._head", lambda: "a-newer-revision")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable"}


def test_healthz_is_503_without_details_when_the_database_is_down(unreachable_app):
    response = unreachable_app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable"}
    assert response.headers["Retry-After"].isdigit()


def test_api_answers_503_problem_with_retry_after_when_the_database_is_down(unreachable_app):
    client = unreachable_app.test_client()
    response = call(client, "GET", "/api/v1/participants/1", "rnd_some-token")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("/database-unavailable")
    assert int(response.headers["Retry-After"]) > 0


def test_sign_in_page_answers_503_when_the_database_is_down(unreachable_app):
    client = unreachable_app.test_client()
    response = client.post("/login", data={"username": "admin1", "password": "x"})
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert "Retry-After" in response.headers


def test_a_restarted_database_is_served_at_once_through_fresh_connections(
    app, client, session, users, backend
):
    if backend == "sqlite":
        pytest.skip("SQLite has no server whose connections can be dropped")
    token = token_for(session, users["admin"])
    assert call(client, "GET", "/api/v1/audit/verify", token).status_code == 200
    session.rollback()  # the app's connection goes back to its pool
    # What a server restart does to the pooled connections: every one is closed under it.
    killer = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with killer.begin() as conn:
        killed = conn.scalar(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    killer.dispose()
    assert killed >= 1
    assert call(client, "GET", "/api/v1/audit/verify", token).status_code == 200
