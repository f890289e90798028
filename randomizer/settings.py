"""Configuration loading and wiring of extensions and blueprints for the app factory."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Flask, request, session
from flask_babel import Babel, get_locale
from flask_wtf import CSRFProtect

from randomizer import wording
from randomizer.crypto import PASSWORD_PROFILES, KeyFileError, use_password_profile
from randomizer.db import configure_engine, db
from randomizer.errors import N_, ConfigurationError, register_error_handlers
from randomizer.instance import InstanceSecrets, load_secrets, read_session_secret
from randomizer.throttle import FailureThrottle

LANGUAGES = ("es", "en")
SECRETS_EXTENSION = "randomizer.secrets"
CONNECT_TIMEOUT_SECONDS = 5

DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": None,
    "SQLALCHEMY_DATABASE_URI": None,
    "SQLALCHEMY_ENGINE_OPTIONS": {},
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    #: None: Secure exactly when the service is served over HTTPS (PREFERRED_URL_SCHEME).
    "SESSION_COOKIE_SECURE": None,
    "SESSION_COOKIE_NAME": "randomizer_session",
    "PERMANENT_SESSION_LIFETIME": dt.timedelta(hours=8),
    "IDLE_TIMEOUT_MINUTES": 30,
    "ABSOLUTE_TIMEOUT_HOURS": 8,
    "LOCKOUT_THRESHOLD": 5,
    "LOCKOUT_MINUTES": 15,
    #: None: required unless the instance is a demo (DEMO) or under test (TESTING).
    "REQUIRE_TOTP_FOR_PRIVILEGED": None,
    "DEMO": False,
    "WTF_CSRF_TIME_LIMIT": None,
    "BABEL_DEFAULT_LOCALE": "es",
    "BABEL_DEFAULT_TIMEZONE": "UTC",
    "MAIL_SERVER": None,
    "MAIL_PORT": 25,
    "MAIL_USE_STARTTLS": False,
    "MAIL_USERNAME": None,
    "MAIL_PASSWORD": None,
    "MAIL_FROM": "randomizer@localhost",
    "MASTER_KEY": None,
    "AUDIT_KEY": None,
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
}

csrf = CSRFProtect()
babel = Babel()


def configure(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Defaults, then instance/config.py, then RANDOMIZER_* variables, then test overrides."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("RANDOMIZER")
    if url := app.config.get("DATABASE_URL"):
        app.config["SQLALCHEMY_DATABASE_URI"] = url
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        db_file = Path(app.instance_path) / "randomizer.sqlite3"
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{db_file}"
    _production_defaults(app.config)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **engine_options(app.config["SQLALCHEMY_DATABASE_URI"]),
        **app.config["SQLALCHEMY_ENGINE_OPTIONS"],
    }
    _password_profile(app)


def _production_defaults(config: Any) -> None:
    """Resolve the settings whose default depends on how the instance is run."""
    if config["REQUIRE_TOTP_FOR_PRIVILEGED"] is None:
        config["REQUIRE_TOTP_FOR_PRIVILEGED"] = not (config["DEMO"] or config.get("TESTING"))
    if config["SESSION_COOKIE_SECURE"] is None:
        config["SESSION_COOKIE_SECURE"] = config.get("PREFERRED_URL_SCHEME") == "https"
    config.setdefault("REMEMBER_COOKIE_SECURE", config["SESSION_COOKIE_SECURE"])


def engine_options(url: str) -> dict[str, Any]:
    """Pool settings that survive a database restart: a pooled connection is tested before
    use (a stale one is replaced, once), and connecting or waiting for a free connection
    gives up after a few seconds (the request then answers 503, never hangs)."""
    if url.startswith("sqlite"):
        return {"pool_pre_ping": True}
    return {
        "pool_pre_ping": True,
        "pool_timeout": 10,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    }


#: A file whose presence marks an instance made by a benchmark script (``bench/``).
BENCHMARK_MARKER = "benchmark-instance"


def _password_profile(app: Flask) -> None:
    """The cheap ``bench`` hash profile only for tests and benchmark instances."""
    profile = app.config.get("PASSWORD_PROFILE") or "production"
    if profile not in PASSWORD_PROFILES:
        raise ConfigurationError(
            N_("PASSWORD_PROFILE must be one of %(choices)s (got '%(profile)s')"),
            choices=", ".join(PASSWORD_PROFILES),
            profile=profile,
        )
    marked = (Path(app.instance_path) / BENCHMARK_MARKER).exists()
    if profile != "production" and not (app.config.get("TESTING") or marked):
        raise ConfigurationError(
            N_(
                "PASSWORD_PROFILE='%(profile)s' is for tests and benchmarks only: this "
                "instance is neither (no %(benchmark_marker)s file in %(instance_path)s)"
            ),
            profile=profile,
            benchmark_marker=BENCHMARK_MARKER,
            instance_path=app.instance_path,
        )
    use_password_profile(profile)


def load_instance_secrets(app: Flask, *, required: bool) -> None:
    """Load the keys; refuse to start without them (except for ``init``)."""
    path = Path(app.instance_path)
    try:
        secrets = load_secrets(
            path,
            master_key_text=app.config.get("MASTER_KEY"),
            audit_key_text=app.config.get("AUDIT_KEY"),
        )
        if not app.config.get("SECRET_KEY"):
            app.config["SECRET_KEY"] = read_session_secret(path)
    except KeyFileError as exc:
        if required:
            raise ConfigurationError(
                N_(
                    "%(exc)s. Run `randomizer init` for a new instance; if this instance "
                    "already holds data, restore the missing file from your key backup: a "
                    "new key cannot open data sealed under the old one."
                ),
                exc=exc,
            ) from None
        app.extensions[SECRETS_EXTENSION] = None
        return
    app.extensions[SECRETS_EXTENSION] = secrets
    app.extensions["randomizer.throttle"] = FailureThrottle(
        app.config["LOCKOUT_THRESHOLD"], app.config["LOCKOUT_MINUTES"] * 60
    )


def instance_secrets(app: Flask) -> InstanceSecrets:
    """The loaded instance secrets (raises when the instance is not initialised)."""
    found: InstanceSecrets | None = app.extensions.get(SECRETS_EXTENSION)
    if found is None:
        raise ConfigurationError(N_("the instance has no keys yet: run `randomizer init`"))
    return found


def select_locale() -> str | None:
    """The user's chosen language, else the browser's best match, else Spanish."""
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return str(chosen)
    return request.accept_languages.best_match(LANGUAGES) if request else None


def init_extensions(app: Flask) -> None:
    """Database, CSRF, translations, login, error handlers and security headers."""
    from randomizer import auth
    from randomizer.views import input_layer, navigation, study_text

    input_layer.install(app)
    db.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    # E-mails are worded outside any request: they read the same catalogues as the pages.
    first = str(app.config.get("BABEL_TRANSLATION_DIRECTORIES", "translations")).split(";")[0]
    wording.translation_directory = Path(app.root_path) / first
    app.jinja_env.add_extension("jinja2.ext.do")
    app.jinja_env.globals["current_locale"] = lambda: str(get_locale() or "es")
    study_text.install(app)
    auth.init_app(app)
    navigation.init_app(app)
    register_error_handlers(app)

    @app.after_request
    def _security_headers(response: Any) -> Any:
        h = response.headers
        h.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if not request.path.startswith("/static/"):
            # Pages and answers can carry participant data: never cache them.
            h["Cache-Control"] = "no-store"
        return response


#: View modules, each with a blueprint ``bp``; the ``api_*`` modules add routes to the API
#: blueprint and must be imported before it is registered. Absent modules are skipped.
VIEW_MODULES = (
    "auth_views", "main", "lists", "kits", "pharmacy", "shipments", "participants",
    "unblinding", "codebreak", "audit_views", "health", "supply", "study_admin", "exposure",
    "account", "users_admin", "reports",
)  # fmt: skip
API_MODULES = ("api_kits", "api_participants", "api_unblinding", "api_audit")


def _optional(name: str) -> Any:
    import importlib

    qualified = f"randomizer.views.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name != qualified:
            raise
        return None


def register_blueprints(app: Flask) -> None:
    """Attach every area's blueprint, then the API blueprint with all its routes."""
    from randomizer.views import api

    for name in VIEW_MODULES:
        module = _optional(name)
        if module is not None:
            app.register_blueprint(module.bp)
    for name in API_MODULES:
        _optional(name)
    app.register_blueprint(api.bp)
    csrf.exempt(api.bp)
