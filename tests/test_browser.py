"""The whole service once in a real browser: every demo login through the form, and back out;
an admin creates a user who changes the temporary password and enrols TOTP."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from randomizer.services.demo import DEMO_USERS
from tests import browser as support
from tests.browser import DemoServer

# The shared fixtures: a demo instance served by `randomizer run`, and Debian's Chromium.
demo_server = support.demo_server

FULL_NAMES = {username: full for username, _role, _sites, full, _password in DEMO_USERS}
ROLE_LABELS_ES = {
    "admin": "Administrador/a",
    "statistician": "Estadístico/a no cegado/a",
    "pharmacist": "Químico/a farmacéutico/a no cegado/a",
    "investigator": "Investigador/a",
    "assessor": "Evaluador/a de resultados",
}


def _new_page(browser: Any, locale: str = "es-CL") -> tuple[Any, Any, list[str]]:
    context = browser.new_context(locale=locale)
    page = context.new_page()
    problems: list[str] = []
    # A blocked style sheet or a script error shows up here (the CSP allows only 'self').
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return context, page, problems


def test_the_demo_prints_one_login_per_role(demo_server: DemoServer):
    assert sorted(login.role for login in demo_server.logins) == sorted(ROLE_LABELS_ES)


@pytest.mark.parametrize("role", sorted(ROLE_LABELS_ES))
def test_each_demo_login_signs_in_through_the_form_and_out_again(
    browser: Any, demo_server: DemoServer, role: str
):
    login = next(x for x in demo_server.logins if x.role == role)
    context, page, problems = _new_page(browser)
    try:
        page.goto(f"{demo_server.url}/")
        assert page.url == f"{demo_server.url}/login?next=%2F"
        assert page.locator("h1").inner_text() == "Iniciar sesión"
        page.fill("input[name=username]", login.username)
        page.fill("input[name=password]", login.password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{demo_server.url}/")
        home = page.locator(f"[data-role={role}]")
        assert home.is_visible()
        assert FULL_NAMES[login.username] in page.locator("h1").inner_text()
        assert ROLE_LABELS_ES[role] in page.locator(".who").inner_text()
        assert page.locator(".action-grid a.action").count() >= 1, (
            "the home page lists nothing to do"
        )
        assert page.evaluate("getComputedStyle(document.body).margin") == "0px", "no style sheet"
        page.click("text=Cerrar sesión")
        page.wait_for_url(f"{demo_server.url}/login")
        assert "Cerró su sesión." in page.locator(".flash").inner_text()
        page.goto(f"{demo_server.url}/")
        assert "/login" in page.url, "still signed in after signing out"
        assert problems == []
    finally:
        context.close()


def test_a_wrong_password_is_refused_in_the_browser(browser: Any, demo_server: DemoServer):
    context, page, problems = _new_page(browser, locale="en-GB")
    try:
        page.goto(f"{demo_server.url}/login")
        page.fill("input[name=username]", "inv")
        page.fill("input[name=password]", "not-the-password")
        page.click("button[type=submit]")
        assert "Unknown username or wrong password." in page.locator(".error").inner_text()
        assert page.url == f"{demo_server.url}/login"
        page.click("text=ES")
        assert page.locator("h1").inner_text() == "Iniciar sesión"
        refusal = "the server responded with a status of 401"
        assert [p for p in problems if refusal not in p] == []
    finally:
        context.close()


# --- accounts: an admin creates a user, who changes the password and enrols TOTP ---------

FIRST = "quebrada del ají y el cóndor"
SECOND = "otra frase larga para el cambio"


def _page(browser: Any) -> tuple[Any, Any]:
    context = browser.new_context(locale="en-GB")
    return context, context.new_page()


def _sign_in(page: Any, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")


def _change_password(page: Any, old: str, new: str) -> None:
    page.fill("input[name=old_password]", old)
    page.fill("input[name=new_password]", new)
    page.fill("input[name=confirm]", new)
    page.click("main button[type=submit]")


def _create_user(browser: Any, server: DemoServer, username: str) -> str:
    admin = next(x for x in server.logins if x.role == "admin")
    context, page = _page(browser)
    try:
        _sign_in(page, server.url, admin.username, admin.password)
        page.wait_for_url(f"{server.url}/")
        page.goto(f"{server.url}/users/new")
        page.fill("input[name=username]", username)
        page.fill("input[name=full_name]", "Inés Núñez")
        page.select_option("select[name=role]", "investigator")
        page.check("input[name=sites][value=CUA]")
        page.click("main button[type=submit]")
        return str(page.locator("#temporary-password").inner_text())
    finally:
        context.close()


def _code(secret: str, steps_ahead: int = 0) -> str:
    totp = TOTP(base64.b32decode(secret), 6, SHA1(), 30, enforce_key_length=False)
    return totp.generate(time.time() + 30 * steps_ahead).decode()


def test_a_new_user_changes_the_password_enrols_totp_and_signs_in_with_a_code(
    browser: Any, demo_server: DemoServer
) -> None:
    url, username = demo_server.url, "ines.nunez"
    temporary = _create_user(browser, demo_server, username)
    context, page = _page(browser)
    other_context, other = _page(browser)
    try:
        _sign_in(page, url, username, temporary)
        page.wait_for_url(f"{url}/account/password")
        _change_password(page, temporary, FIRST)
        page.wait_for_url(f"{url}/")
        _sign_in(other, url, username, FIRST)
        other.wait_for_url(f"{url}/")
        page.goto(f"{url}/account/password")
        _change_password(page, FIRST, SECOND)
        page.wait_for_url(f"{url}/")
        other.goto(f"{url}/")
        assert "/login" in other.url, "another session survived the password change"
        page.goto(f"{url}/account/totp")
        assert page.locator(".qr svg").is_visible()
        secret = page.locator("#totp-secret").inner_text()
        page.fill("input[name=code]", _code(secret))
        page.click("main button[type=submit]")
        assert page.locator(".recovery-codes li").count() == 10
        page.click("text=Sign out")
        page.wait_for_url(f"{url}/login")
        _sign_in(page, url, username, SECOND)
        page.wait_for_url(f"{url}/login/totp")
        page.fill("input[name=code]", _code(secret, steps_ahead=1))
        page.click("main button[type=submit]")
        page.wait_for_url(f"{url}/")
        assert "Inés Núñez" in page.locator(".who").inner_text()
    finally:
        context.close()
        other_context.close()
