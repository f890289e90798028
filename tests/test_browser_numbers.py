"""Numbers on the screening page in Debian's Chromium, typed as people write them: a
decimal comma on the Spanish page, a decimal point on the English one. UPC ratio 0,8 and
eGFR 39,5 fail two criteria, and the screen failure names both; a malformed number is
refused next to the field, named."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from randomizer.studydef import load_demo_study
from tests import browser as support
from tests.browser import DemoServer

demo_server = support.demo_server

OUTPUT = Path(__file__).parents[1] / "test-output" / "numbers"
DEFINITION, _TEXT = load_demo_study()
STUDY = DEFINITION.code
_numbers = itertools.count(1)
#: (language, browser locale, UPC ratio, eGFR, a malformed UPC ratio).
LANGUAGES = [("es", "es-CL", "0,8", "39,5", "0.8"), ("en", "en-GB", "0.8", "39.5", "0,8")]


@pytest.fixture(scope="module")
def investigator(browser: Any, demo_server: DemoServer) -> Iterator[Any]:
    """One signed-in investigator page for the whole module."""
    login = next(x for x in demo_server.logins if x.role == "investigator")
    context = browser.new_context(locale="es-CL", viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{demo_server.url}/login")
    page.fill("input[name=username]", login.username)
    page.fill("input[name=password]", login.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{demo_server.url}/")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    try:
        yield page
    finally:
        context.close()


def _open_form(page: Any, url: str, lang: str) -> None:
    page.goto(f"{url}/lang/{lang}")
    page.goto(f"{url}/studies/{STUDY}/participants/new")
    assert page.locator("html").get_attribute("lang") == lang


def _fill(page: Any, number: str, values: dict[str, str]) -> None:
    support.fill_screening_form(page, DEFINITION, number, values)


def _criterion_name(page: Any, code: str) -> str:
    """The criterion as the page names it (its label, without the kind in brackets)."""
    label = page.locator(f"label[for=criterion-{code}]").inner_text()
    return label.rsplit(" (", 1)[0].strip()


@pytest.mark.parametrize(("lang", "locale", "upc", "egfr", "malformed"), LANGUAGES)
def test_typed_decimals_give_a_screen_failure_naming_both_criteria(
    investigator: Any, demo_server: DemoServer, lang, locale, upc, egfr, malformed
):
    page = investigator
    _open_form(page, demo_server.url, lang)
    upc_name, egfr_name = _criterion_name(page, "upc_ratio"), _criterion_name(page, "egfr")
    _fill(page, f"NUM-{lang}-{next(_numbers)}", {"upc_ratio": upc, "egfr": egfr})
    page.click("form.once button[type=submit]")
    page.wait_for_url(f"{demo_server.url}/participants/*")
    page.screenshot(path=str(OUTPUT / f"screen-failure-{lang}.png"), full_page=True)
    flash = page.locator(".flash.error").inner_text()
    assert upc_name in flash and egfr_name in flash
    assert page.locator(".tag.status-screen_failed").count() == 1


@pytest.mark.parametrize(("lang", "locale", "upc", "egfr", "malformed"), LANGUAGES)
def test_a_malformed_number_is_refused_naming_the_field(
    investigator: Any, demo_server: DemoServer, lang, locale, upc, egfr, malformed
):
    page = investigator
    _open_form(page, demo_server.url, lang)
    upc_name = _criterion_name(page, "upc_ratio")
    _fill(page, f"BAD-{lang}-{next(_numbers)}", {"upc_ratio": malformed, "egfr": egfr})
    page.click("form.once button[type=submit]")
    page.wait_for_load_state()
    assert page.url.endswith(f"/studies/{STUDY}/participants/new")
    error = page.locator("#criterion-upc_ratio-error").inner_text()
    page.screenshot(path=str(OUTPUT / f"malformed-{lang}.png"), full_page=True)
    assert error.startswith(f"{upc_name}:") and malformed in error
    assert page.locator("#criterion-egfr-error").count() == 0
    assert page.input_value("input[name=criterion-upc_ratio]") == malformed
