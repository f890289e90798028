"""Production defaults: a second factor for privileged roles unless demo, Secure cookies over
HTTPS, the outbox sent by its worker, a gunicorn configuration in the repository."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from randomizer import create_app
from randomizer.instance import mark_demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_app(instance_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RANDOMIZER_INSTANCE_PATH", str(instance_path))
    monkeypatch.setenv("RANDOMIZER_DATABASE_URL", f"sqlite:///{instance_path}/db.sqlite3")
    return lambda **config: create_app(config)


def test_privileged_roles_need_a_second_factor_by_default(make_app):
    assert make_app().config["REQUIRE_TOTP_FOR_PRIVILEGED"] is True


def test_a_demo_instance_does_not_require_a_second_factor(make_app, instance_path):
    mark_demo(instance_path)
    mark_demo(instance_path)  # once only
    assert (instance_path / "config.py").read_text().count("DEMO") == 1
    assert make_app().config["REQUIRE_TOTP_FOR_PRIVILEGED"] is False


def test_an_explicit_setting_wins(make_app):
    assert (
        make_app(REQUIRE_TOTP_FOR_PRIVILEGED=False).config["REQUIRE_TOTP_FOR_PRIVILEGED"] is False
    )


@pytest.mark.parametrize(("scheme", "secure"), [("https", True), ("http", False)])
def test_session_cookies_are_secure_when_served_over_https(make_app, scheme, secure):
    assert make_app(PREFERRED_URL_SCHEME=scheme).config["SESSION_COOKIE_SECURE"] is secure


def test_the_gunicorn_configuration_serves_the_app_factory():
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert settings["wsgi_app"] == "randomizer:create_app()"
    assert settings["bind"].startswith("127.0.0.1:")
    assert settings["timeout"] <= 60
