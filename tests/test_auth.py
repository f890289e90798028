"""Sign-in, second factor, lockout, sessions, CSRF, security headers and page access."""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from flask import Flask, url_for
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.routing import AnyConverter, IntegerConverter

from randomizer import audit, crypto
from randomizer.auth import verify_second_factor
from randomizer.db import db, utcnow
from randomizer.instance import secrets_of
from randomizer.models import AuditEvent, Role, User
from randomizer.services.users import (
    enrol_totp,
    get_user,
    has_second_factor,
    reseal_second_factors,
    update_user,
    verify_totp,
)
from tests.conftest import PASSWORD, Runner, csrf_token, login
from tests.engines import dispose_engines  # noqa: F401  (fixture)

REFUSED = b"Unknown username or wrong password."


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A client whose browser asks for English (the messages below are the English ones)."""
    english = app.test_client()
    english.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return english


CSRF_ON = {"WTF_CSRF_ENABLED": True}


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """A plain session on the app's database, with no app context left pushed.

    (Overrides the shared fixture.) A pushed app context would be shared by every request
    of the test client, and with it ``g``, where Flask-Login keeps the signed-in user and
    Flask-WTF the CSRF token: "the very next request" could then not be tested.
    """
    with app.app_context():
        engine = db.engine
    with Session(engine, info={"secrets": app.extensions["randomizer.secrets"]}) as plain:
        yield plain
        plain.rollback()


def _events(session: Session, action: str | None = None) -> list[AuditEvent]:
    session.rollback()
    query = sa.select(AuditEvent).order_by(AuditEvent.seq)
    if action:
        query = query.where(AuditEvent.action == action)
    found = list(session.scalars(query))
    session.rollback()  # SQLite: do not hold the write lock while the client runs
    return found


def _reload(session: Session, username: str) -> User:
    session.rollback()
    return get_user(session, username)


def _signed_in(client: FlaskClient) -> bool:
    response = client.get("/")
    return response.status_code == 200


# --- the sign-in form ------------------------------------------------------------------


def test_the_login_page_has_the_form(client: FlaskClient):
    page = client.get("/login")
    assert page.status_code == 200
    assert b'name="username"' in page.data and b'name="password"' in page.data
    assert b'autocomplete="current-password"' in page.data


@pytest.mark.usefixtures("users")
def test_a_right_password_signs_in_and_lands_on_the_home_page(client: FlaskClient):
    response = login(client, "inv1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert _signed_in(client)


@pytest.mark.usefixtures("users")
def test_wrong_password_and_unknown_user_get_the_same_answer(client: FlaskClient):
    wrong = login(client, "inv1", "not-the-password")
    unknown = login(client, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert REFUSED in wrong.data and REFUSED in unknown.data
    assert wrong.data.replace(b"inv1", b"nobody") == unknown.data
    assert not _signed_in(client)


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize(
    "data",
    [{"username": "inv1"}, {"password": PASSWORD}, {"username": "", "password": ""}],
    ids=["no-password", "no-username", "empty"],
)
def test_an_incomplete_form_is_shown_again_with_the_field_marked(
    client: FlaskClient, data: dict[str, str]
):
    response = client.post("/login", data=data)
    assert response.status_code == 200
    assert b'aria-invalid="true"' in response.data
    assert not _signed_in(client)


def test_sign_in_and_failures_are_audited(client: FlaskClient, session: Session, users: Any):
    login(client, "nobody", "whatever-password")
    login(client, "inv1", "not-the-password")
    login(client, "inv1")
    failed = _events(session, "login.failed")
    assert [(e.actor, e.reason) for e in failed] == [
        ("nobody", "unknown username"),
        ("inv1", "wrong password"),
    ]
    (signed_in,) = _events(session, "login")
    assert (signed_in.actor, signed_in.role, signed_in.object_id) == (
        "inv1",
        "investigator",
        "inv1",
    )
    assert '"source":"web"' in (signed_in.new_values or "")
    assert all("not-the-password" not in str(vars(e)) for e in _events(session))


def test_five_failures_lock_the_account_even_against_the_right_password(
    client: FlaskClient, session: Session, users: Any
):
    for _ in range(5):
        assert login(client, "inv1", "not-the-password").status_code == 401
    locked = login(client, "inv1")
    assert locked.status_code == 401
    assert REFUSED in locked.data
    assert not _signed_in(client)
    reasons = [e.reason for e in _events(session, "login.failed")]
    assert reasons[4] == "wrong password; locked for 15 minutes"
    assert reasons[5] == "account locked"


def test_a_lock_ends_after_its_time(client: FlaskClient, session: Session, users: Any):
    for _ in range(5):
        login(client, "inv1", "not-the-password")
    user = _reload(session, "inv1")
    user.locked_until = utcnow() - dt.timedelta(seconds=1)
    session.commit()
    assert login(client, "inv1").status_code == 302


def test_a_deactivated_account_gets_the_same_refusal(
    client: FlaskClient, session: Session, users: Any
):
    update_user(session, _reload(session, "inv1"), actor=audit.SYSTEM, active=False)
    session.commit()
    response = login(client, "inv1")
    assert response.status_code == 401
    assert REFUSED in response.data


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize(
    ("target", "lands"),
    [
        ("/audit", "/audit"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_sign_in_returns_only_to_a_page_of_this_site(client: FlaskClient, target: str, lands: str):
    response = client.post(
        "/login", query_string={"next": target}, data={"username": "admin1", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == lands


# --- CSRF ------------------------------------------------------------------------------


@pytest.mark.parametrize("app_config", [CSRF_ON])
@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("token", [None, "forged-token"], ids=["missing", "forged"])
def test_a_form_without_a_valid_csrf_token_gets_a_clear_page(
    client: FlaskClient, token: str | None
):
    data = {"username": "inv1", "password": PASSWORD}
    if token:
        data["csrf_token"] = token
    response = client.post("/login", data=data)
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "The form expired or was not sent from this site; reload and try again." in text
    assert "CSRF" not in text and "csrf" not in text.replace("csrf_token", "")
    assert not _signed_in(client)


@pytest.mark.parametrize("app_config", [CSRF_ON])
@pytest.mark.usefixtures("users")
def test_the_csrf_token_of_the_page_signs_in_and_out(client: FlaskClient):
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"username": "inv1", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    home = client.get("/").get_data(as_text=True)
    assert client.post("/logout").status_code == 400, "sign-out without a token"
    assert client.post("/logout", data={"csrf_token": csrf_token(home)}).status_code == 302
    assert not _signed_in(client)


# --- sessions --------------------------------------------------------------------------


@pytest.mark.usefixtures("users")
def test_the_home_page_requires_sign_in(client: FlaskClient):
    response = client.get("/")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/login"


def test_sign_out_is_audited_and_ends_the_session_everywhere(
    app: Flask, client: FlaskClient, session: Session, users: Any
):
    login(client, "inv1")
    other = app.test_client()
    login(other, "inv1")
    copied = client.get_cookie("randomizer_session")
    assert copied is not None
    assert client.post("/logout").status_code == 302
    assert not _signed_in(client)
    assert not _signed_in(other), "another session of the user survived sign-out"
    client.set_cookie("randomizer_session", copied.value)
    assert not _signed_in(client), "a copy of the signed-out cookie still works"
    assert [e.actor for e in _events(session, "logout")] == ["inv1"]


@pytest.mark.parametrize(
    "change",
    [
        {"role": Role.ASSESSOR},
        {"sites": ("S2",)},
        {"active": False},
    ],
    ids=["role", "sites", "deactivated"],
)
def test_a_change_to_the_account_ends_its_session_at_the_next_request(
    change: dict[str, Any], client: FlaskClient, session: Session, users: Any
):
    login(client, "inv1")
    assert _signed_in(client)
    update_user(session, _reload(session, "inv1"), actor=audit.SYSTEM, **change)
    session.commit()
    assert not _signed_in(client)
    assert _events(session, "user.update")[-1].object_id == "inv1"


def test_an_unchanged_account_keeps_its_session(client: FlaskClient, session: Session, users: Any):
    login(client, "inv1")
    update_user(session, _reload(session, "inv1"), actor=audit.SYSTEM, sites=("S1",))
    session.commit()
    assert _signed_in(client)


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize(
    ("signed_in_ago", "seen_ago", "ends"),
    [
        (60, 60, False),
        (3600, 31 * 60, True),  # idle for longer than 30 minutes
        (9 * 3600, 60, True),  # signed in longer than 8 hours ago, though active
    ],
    ids=["active", "idle-timeout", "absolute-timeout"],
)
def test_sessions_end_after_the_idle_and_absolute_timeouts(
    client: FlaskClient, signed_in_ago: int, seen_ago: int, ends: bool
):
    login(client, "inv1")
    now = time.time()
    with client.session_transaction() as s:
        s["signed_in_at"] = now - signed_in_ago
        s["seen_at"] = now - seen_ago
    response = client.get("/")
    assert (response.status_code == 302) is ends
    if ends:
        assert urlsplit(response.headers["Location"]).path == "/login"
        page = client.get("/login")
        assert b"Your session ended. Please sign in again." in page.data
        assert not _signed_in(client)


# --- headers ---------------------------------------------------------------------------


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("path", ["/login", "/", "/api/v1/openapi.json", "/nowhere"])
def test_security_headers_are_on_every_answer(client: FlaskClient, path: str):
    login(client, "admin1")
    headers = client.get(path).headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.usefixtures("users")
def test_the_session_cookie_is_http_only_and_same_site(client: FlaskClient):
    response = login(client, "inv1")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


# --- access to every route -------------------------------------------------------------

#: Endpoints anyone may reach: the sign-in steps, the language switch, static files and
#: the API description, the health check.
PUBLIC = {
    "health.healthz",
    "static",
    "auth.login",
    "auth.login_totp",
    "auth.logout",
    "auth.set_language",
    "api.openapi",
}


def _route_cases(app: Flask) -> list[tuple[str, str, str]]:
    cases = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        values: dict[str, Any] = {}
        for name, converter in rule._converters.items():
            if isinstance(converter, IntegerConverter):
                values[name] = 1
            elif isinstance(converter, AnyConverter):
                values[name] = sorted(converter.items)[0]
            else:
                values[name] = "TST"
        with app.test_request_context():
            url = url_for(rule.endpoint, **values)
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            cases.append((rule.endpoint, method, url))
    return cases


def test_every_route_requires_sign_in_or_a_token(app: Flask, client: FlaskClient, study: Any):
    cases = _route_cases(app)
    assert len(cases) > 3
    for endpoint, method, url in cases:
        response = client.open(url, method=method)
        if url.startswith("/api/"):
            assert response.status_code == 401, f"{method} {url} ({endpoint})"
            assert response.mimetype == "application/problem+json"
        else:
            assert response.status_code == 302, f"{method} {url} ({endpoint})"
            assert urlsplit(response.headers["Location"]).path == "/login", endpoint


@pytest.mark.parametrize("role", list(Role))
def test_each_role_has_a_home_page_saying_what_it_can_do(
    role: Role, client: FlaskClient, users: Any
):
    username = {
        Role.ADMIN: "admin1",
        Role.STATISTICIAN: "stat1",
        Role.PHARMACIST: "pharm1",
        Role.INVESTIGATOR: "inv1",
        Role.ASSESSOR: "assess1",
    }[role]
    login(client, username)
    page = client.get("/", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'data-role="{role.value}"' in html
    assert "What you can do" in html
    assert "TST" in html  # the loaded study is listed


# --- the second factor -----------------------------------------------------------------


def _enrol(runner: Runner, username: str) -> TOTP:
    result = runner.invoke("user", "totp", username)
    assert result.exit_code == 0, result.output
    uri = result.stdout.splitlines()[-1]
    assert uri.startswith("otpauth://totp/randomizer:")
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return TOTP(base64.b32decode(secret), 6, SHA1(), 30, enforce_key_length=False)


def _code(totp: TOTP, offset_steps: int = 0) -> str:
    return totp.generate(time.time() + 30 * offset_steps).decode()


@pytest.mark.usefixtures("dispose_engines")
def test_the_totp_secret_is_sealed_under_the_master_key(
    runner: Runner, session: Session, users: Any
):
    totp = _enrol(runner, "admin1")
    user = _reload(session, "admin1")
    assert user.totp_sealed is not None
    key_id, _, sealed = user.totp_sealed.partition(b":")
    ring = secrets_of(session).ring
    assert key_id.decode() == ring.current.key_id
    aad = crypto.associated_data("-", "totp", "admin1", key_id.decode())
    assert b'"secret"' in crypto.unseal(ring.current.key, sealed, aad)
    with pytest.raises(crypto.IntegrityFailure):
        crypto.unseal(ring.current.key, sealed, crypto.associated_data("-", "totp", "x", "y"))
    session.rollback()
    assert _code(totp)  # the URI holds a usable secret
    assert [e.object_id for e in _events(session, "user.totp_enrol")] == ["admin1"]


@pytest.mark.usefixtures("dispose_engines")
def test_enrolling_twice_needs_replace(runner: Runner, session: Session, users: Any):
    _enrol(runner, "admin1")
    again = runner.invoke("user", "totp", "admin1")
    assert again.exit_code == 1
    assert "already has a second factor" in again.stderr
    assert runner.invoke("user", "totp", "admin1", "--replace").exit_code == 0
    assert runner.invoke("user", "totp", "admin1", "--remove").exit_code == 0
    assert not has_second_factor(_reload(session, "admin1"))
    session.rollback()


@pytest.mark.usefixtures("dispose_engines")
def test_an_enrolled_user_signs_in_with_password_then_code(
    runner: Runner, client: FlaskClient, session: Session, users: Any
):
    totp = _enrol(runner, "stat1")
    first = login(client, "stat1")
    assert first.status_code == 302
    assert first.headers["Location"] == "/login/totp"
    assert not _signed_in(client), "the password alone signed in"
    assert b'autocomplete="one-time-code"' in client.get("/login/totp").data
    second = client.post("/login/totp", data={"code": _code(totp)})
    assert second.status_code == 302 and second.headers["Location"] == "/"
    assert _signed_in(client)
    (event,) = _events(session, "login")
    assert '"second_factor":"totp"' in (event.new_values or "")


@pytest.mark.usefixtures("dispose_engines")
def test_a_wrong_code_is_refused_and_counts_towards_the_lockout(
    runner: Runner, client: FlaskClient, session: Session, users: Any
):
    totp = _enrol(runner, "stat1")
    login(client, "stat1")
    for attempt in range(4):
        response = client.post("/login/totp", data={"code": "000000"})
        assert response.status_code == 401, attempt
        assert b"That code is not valid" in response.data
    login(client, "stat1")  # the right password does not reset the count
    locked = client.post("/login/totp", data={"code": "000000"})
    assert locked.status_code == 302 and locked.headers["Location"] == "/login"
    assert client.post("/login/totp", data={"code": _code(totp)}).status_code == 302
    assert not _signed_in(client)
    refused = login(client, "stat1")
    assert refused.status_code == 401 and REFUSED in refused.data
    assert _events(session, "login.failed")[-1].reason == "account locked"


@pytest.mark.usefixtures("dispose_engines")
def test_the_code_step_expires(runner: Runner, client: FlaskClient, users: Any):
    totp = _enrol(runner, "stat1")
    login(client, "stat1")
    with client.session_transaction() as s:
        s["pending_sign_in"] = {**s["pending_sign_in"], "at": time.time() - 301}
    response = client.post("/login/totp", data={"code": _code(totp)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert not _signed_in(client)


def test_the_code_step_without_a_password_goes_back_to_sign_in(client: FlaskClient):
    response = client.post("/login/totp", data={"code": "123456"})
    assert response.status_code == 302 and response.headers["Location"] == "/login"


@pytest.mark.usefixtures("dispose_engines")
def test_a_code_is_accepted_once_and_within_one_step_of_drift(
    runner: Runner, session: Session, users: Any
):
    totp = _enrol(runner, "pharm1")
    user = _reload(session, "pharm1")
    now = time.time()
    assert not verify_totp(session, user, totp.generate(now - 60).decode(), now=now)
    assert verify_totp(session, user, totp.generate(now - 30).decode(), now=now)
    assert verify_totp(session, user, totp.generate(now).decode(), now=now)
    assert not verify_totp(session, user, totp.generate(now).decode(), now=now), "replayed"
    assert not verify_totp(session, user, totp.generate(now - 30).decode(), now=now)
    assert verify_totp(session, user, totp.generate(now + 30).decode(), now=now)
    for malformed in ("", "12345", "1234567", "abcdef", None, 123456):
        assert not verify_totp(session, user, malformed, now=now)
    session.rollback()


@pytest.mark.usefixtures("dispose_engines")
def test_the_e_signature_helper_checks_codes_of_enrolled_users_only(
    app: Flask, runner: Runner, session: Session, users: Any
):
    totp = _enrol(runner, "inv1")
    with app.test_request_context():
        enrolled, other = get_user(db.session, "inv1"), get_user(db.session, "inv2")
        assert verify_second_factor(enrolled, _code(totp))
        assert not verify_second_factor(other, _code(totp))
        db.session.rollback()


def test_a_secret_copied_to_another_user_does_not_open(session: Session, users: Any):
    enrol_totp(session, _reload(session, "inv1"))
    session.commit()
    inv1, inv2 = _reload(session, "inv1"), get_user(session, "inv2")
    inv2.totp_sealed = inv1.totp_sealed
    assert not verify_totp(session, inv2, "123456")
    session.rollback()


def test_second_factors_survive_a_master_key_rotation(session: Session, users: Any):
    uri = enrol_totp(session, _reload(session, "inv1"))
    session.commit()
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    totp = TOTP(base64.b32decode(secret), 6, SHA1(), 30, enforce_key_length=False)
    keys = secrets_of(session)
    old_id = keys.ring.current.key_id
    keys.ring = keys.ring.with_new_current()
    assert reseal_second_factors(session) == 1
    user = get_user(session, "inv1")
    assert user.totp_sealed is not None
    assert user.totp_sealed.startswith(keys.ring.current.key_id.encode() + b":")
    assert keys.ring.current.key_id != old_id
    assert verify_totp(session, user, totp.generate(time.time()).decode())
    session.rollback()


@pytest.mark.parametrize("app_config", [{"REQUIRE_TOTP_FOR_PRIVILEGED": True}])
@pytest.mark.parametrize(
    ("username", "allowed"),
    [("admin1", False), ("stat1", False), ("pharm1", False), ("inv1", True), ("assess1", True)],
)
def test_privileged_roles_without_a_second_factor_are_refused_when_required(
    client: FlaskClient, session: Session, users: Any, username: str, allowed: bool
):
    response = login(client, username)
    if allowed:
        assert response.status_code == 302
        return
    assert response.status_code == 403
    assert b"may only sign in with a second factor" in response.data
    assert not _signed_in(client)
    last = _events(session, "login.failed")[-1]
    assert (last.actor, last.reason) == (username, "second factor required but not enrolled")


@pytest.mark.usefixtures("dispose_engines")
@pytest.mark.parametrize("app_config", [{"REQUIRE_TOTP_FOR_PRIVILEGED": True}])
def test_privileged_roles_with_a_second_factor_sign_in_when_required(
    runner: Runner, client: FlaskClient, users: Any
):
    totp = _enrol(runner, "admin1")
    assert login(client, "admin1").headers["Location"] == "/login/totp"
    assert client.post("/login/totp", data={"code": _code(totp)}).status_code == 302
    assert _signed_in(client)


def test_the_password_is_never_stored_or_audited_in_clear(session: Session, users: Any):
    session.rollback()
    hashes = session.scalars(sa.select(User.password_hash)).all()
    session.rollback()
    assert all(h.startswith("argon2id$v=19$") and PASSWORD not in h for h in hashes)
    assert not any(PASSWORD in str(vars(e)) for e in _events(session))
    assert re.fullmatch(r"argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[^$]+\$[^$]+", hashes[0])


@pytest.mark.usefixtures("users")
def test_a_signed_in_user_visiting_login_goes_home(client: FlaskClient):
    login(client, "inv1")
    response = client.get("/login")
    assert response.status_code == 302 and response.headers["Location"] == "/"
