"""A walk through the real flows in Debian's Chromium, as the sites work: the admin
dispatches a shipment, the pharmacist receives it kit by kit, the investigator screens two
participants (one eligible, one failing), randomizes, prints the confirmation, asks for the
month-6 kit; the pharmacist dispenses the baseline kit by scanning it (an empty scan is
refused); the investigator withdraws the participant and unblinds them in an emergency; the
pharmacist's queue refuses the withdrawn participant's month-6 kit, which is set aside; the
admin reads the audit trail.

Once in Spanish and once in English, on a desktop (1280×800) and a phone (390×844). Every
step leaves a screenshot under ``test-output/walk/`` (git-ignored). No page of the Spanish
run may contain an English sentence of the catalogue (a msgid), nor a page of the English
run a Spanish one (a msgstr). On the phone, the queue, inventory, supply, receipt and audit
pages must not scroll sideways.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from randomizer.studydef import load_demo_study
from tests import browser as support
from tests.browser import CATALOGUES, DemoServer

demo_server = support.demo_server

OUTPUT = Path(__file__).parents[1] / "test-output" / "walk"
DEFINITION, _TEXT = load_demo_study()
STUDY = DEFINITION.code
_runs = itertools.count(1)
_PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]|%[sdif]|\{[^}]*\}")
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}
#: (language, browser locale, numbers of the eligible participant, of the failing one).
LANGUAGES = {
    "es": ("es-CL", {"upc_ratio": "1,5", "egfr": "62,5"}, {"upc_ratio": "0,8", "egfr": "39,5"}),
    "en": ("en-GB", {"upc_ratio": "1.5", "egfr": "62.5"}, {"upc_ratio": "0.8", "egfr": "39.5"}),
}


def _sentences(texts: Iterator[tuple[str, str]]) -> list[str]:
    """Fragments of four words or more between placeholders, from texts that differ in the
    other language (a fragment the two languages share proves nothing)."""
    found = set()
    for text, other in texts:
        for fragment in _PLACEHOLDER.split(text):
            fragment = " ".join(fragment.split()).strip(" .,:;")
            if len(fragment.split()) >= 4 and fragment not in other:
                found.add(fragment)
    return sorted(found)


def _catalogue_sentences() -> dict[str, list[str]]:
    with (CATALOGUES / "es" / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalogue = read_po(po)
    pairs = [(m.id, m.string) for m in catalogue if m.id and isinstance(m.id, str) and m.string]
    return {
        "es": _sentences((msgid, msgstr) for msgid, msgstr in pairs),  # English on a Spanish page
        "en": _sentences((msgstr, msgid) for msgid, msgstr in pairs),  # Spanish on an English one
    }


FOREIGN = _catalogue_sentences()


@dataclass
class Walk:
    """One run: the language, the viewport, the pages of each role, what each page showed."""

    lang: str
    viewport: str
    url: str
    folder: Path
    pages: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    foreign: list[tuple[str, str]] = field(default_factory=list)
    overflow: list[tuple[str, int]] = field(default_factory=list)

    def step(self, role: str, name: str, *, narrow_check: bool = False) -> Any:
        """Screenshot the role's page, and note foreign sentences and sideways scrolling."""
        page = self.pages[role]
        page.wait_for_load_state()
        self.steps += 1
        page.screenshot(path=str(self.folder / f"{self.steps:02d}-{role}-{name}.png"),
                        full_page=True)  # fmt: skip
        # The audit trail's values are what was recorded, in the words people read then
        # (a Spanish signer's meaning stays Spanish on an English page): not page wording.
        text = " ".join(page.evaluate(_PAGE_WORDING).split())
        self.foreign += [(name, s) for s in FOREIGN[self.lang] if s in text]
        if narrow_check:
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > page.viewport_size["width"]:
                self.overflow.append((name, width))
        return page


_PAGE_WORDING = """() => {
    const body = document.body.cloneNode(true);
    body.querySelectorAll("td.values").forEach((cell) => cell.remove());
    return body.textContent;
}"""


def _sign_in(walk: Walk, browser: Any, server: DemoServer, role: str) -> Any:
    login = next(x for x in server.logins if x.role == role)
    width, height = VIEWPORTS[walk.viewport]
    context = browser.new_context(
        locale=LANGUAGES[walk.lang][0], viewport={"width": width, "height": height}
    )
    page = context.new_page()
    page.goto(f"{server.url}/lang/{walk.lang}")
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", login.username)
    page.fill("input[name=password]", login.password)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    walk.pages[role] = page
    return page


@pytest.fixture(params=[(lang, vp) for lang in LANGUAGES for vp in VIEWPORTS],
                ids=lambda p: f"{p[0]}-{p[1]}")  # fmt: skip
def walk(request: Any, browser: Any, demo_server: DemoServer) -> Iterator[Walk]:
    lang, viewport = request.param
    folder = OUTPUT / f"{lang}-{viewport}"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    run = Walk(lang, viewport, demo_server.url, folder)
    for role in ("admin", "pharmacist", "investigator"):
        _sign_in(run, browser, demo_server, role)
    try:
        yield run
    finally:
        for page in run.pages.values():
            page.context.close()


def _password(server: DemoServer, role: str) -> str:
    return next(x.password for x in server.logins if x.role == role)


def _dispatch_a_shipment(walk: Walk) -> int:
    page = walk.pages["admin"]
    page.goto(f"{walk.url}/shipments/")
    form = page.locator(f"form[action$='/shipments/{STUDY}/new']")
    form.locator("select[name=site]").select_option("CUA")
    form.locator("input[name=count]").fill("2")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/shipments/[^/]+/\d+$"))
    shipment_id = int(page.url.rsplit("/", 1)[1])
    walk.step("admin", "shipment-proposed")
    page.locator("form[action$='/dispatch'] button[type=submit]").click()
    walk.step("admin", "shipment-dispatched")
    return shipment_id


def _receive_kit_by_kit(walk: Walk, shipment_id: int) -> None:
    page = walk.pages["pharmacist"]
    page.goto(f"{walk.url}/pharmacy/{STUDY}/shipments/{shipment_id}")
    codes = page.locator("table.shipment-lines td.code").all_inner_texts()
    assert len(codes) == 2
    walk.step("pharmacist", "receipt-open", narrow_check=True)
    for code in codes:
        page.fill("textarea[name=codes]", code)
        page.locator("form[action$='/receive'] button[type=submit]").click()
        page.wait_for_load_state()
        assert page.locator(".flash.success").count() == 1
    walk.step("pharmacist", "receipt-checked-in", narrow_check=True)
    page.locator("form[action$='/finish'] button[type=submit]").click()
    walk.step("pharmacist", "receipt-finished", narrow_check=True)


def _screen(walk: Walk, number: str, values: dict[str, str]) -> int:
    page = walk.pages["investigator"]
    page.goto(f"{walk.url}/studies/{STUDY}/participants/new")
    support.fill_screening_form(page, DEFINITION, number, values)
    walk.step("investigator", f"screening-{number}")
    page.click("form.once button[type=submit]")
    page.wait_for_url(re.compile(r".*/participants/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def _investigator_flows(walk: Walk, server: DemoServer, eligible: int, failing: int) -> str:
    page = walk.pages["investigator"]
    password = _password(server, "investigator")
    page.goto(f"{walk.url}/participants/{failing}")
    assert page.locator(".tag.status-screen_failed").count() == 1
    walk.step("investigator", "screen-failure")
    page.goto(f"{walk.url}/participants/{eligible}/randomize")
    assert page.locator("dl.recorded-answers dd").count() == len(DEFINITION.eligibility) + 1
    walk.step("investigator", "randomize-check-answers")
    page.fill("input[name=password]", password)
    page.click("form.once button[type=submit]")
    page.wait_for_url(f"{walk.url}/participants/{eligible}/confirmation")
    walk.step("investigator", "confirmation")
    page.emulate_media(media="print")
    walk.step("investigator", "confirmation-printed")
    page.emulate_media(media="screen")
    number = page.locator(".big-code").first.inner_text().strip()
    page.goto(f"{walk.url}/participants/{eligible}/dispense")
    page.select_option("select[name=visit]", "month_6")
    page.fill("textarea[name=override_reason]", "Infusion planned early (walk test).")
    page.fill("input[name=password]", password)
    page.click("form.once button[type=submit]")
    page.wait_for_url(f"{walk.url}/participants/{eligible}")
    assert page.locator(".flash.success").count() == 1
    walk.step("investigator", "month-6-kit")
    return number


def _pharmacist_dispenses_the_baseline_kit(walk: Walk, number: str) -> None:
    page = walk.pages["pharmacist"]
    page.goto(f"{walk.url}/pharmacy/{STUDY}/queue")
    cards = page.locator("li.queue-item", has_text=number)
    assert cards.count() == 2
    assert page.locator("li.queue-item.not-due", has_text=number).count() == 1  # month 6
    walk.step("pharmacist", "queue", narrow_check=True)
    card = page.locator("li.queue-item:not(.not-due)", has_text=number)
    code = card.locator("dd.code").inner_text().strip()
    card.locator("button[type=submit]").click()  # nothing scanned: refused, field named
    page.wait_for_load_state()
    card = page.locator("li.queue-item:not(.not-due)", has_text=number)
    assert card.locator("p.error").count() == 1
    walk.step("pharmacist", "queue-empty-scan-refused", narrow_check=True)
    card.locator("input[name$=kit_code]").fill(code)
    card.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator(".flash.success").count() == 1
    walk.step("pharmacist", "baseline-dispensed", narrow_check=True)


def _withdraw_and_unblind(walk: Walk, server: DemoServer, eligible: int, number: str) -> None:
    page = walk.pages["investigator"]
    password = _password(server, "investigator")
    page.goto(f"{walk.url}/participants/{eligible}/withdraw")
    page.fill("textarea[name=reason]", "Consent withdrawn (walk test).")
    page.click("form.once button[type=submit]")
    page.wait_for_url(f"{walk.url}/participants/{eligible}")
    assert page.locator(".tag.status-withdrawn").count() == 1
    walk.step("investigator", "withdrawn")
    page.goto(f"{walk.url}/participants/{eligible}/unblind")
    page.select_option("select[name=reason_category]", index=1)
    page.fill("textarea[name=reason]", "Severe reaction; the treating team needs the arm.")
    page.fill("input[name=confirm_number]", number)
    page.fill("input[name=password]", password)
    page.click("form button.danger")
    page.wait_for_load_state()
    assert page.locator(".arm-disclosed").count() == 1
    walk.step("investigator", "unblinded")


def _pharmacist_queue(walk: Walk, number: str) -> None:
    page = walk.pages["pharmacist"]
    page.goto(f"{walk.url}/pharmacy/{STUDY}/queue")
    card = page.locator("li.queue-item.blocked", has_text=number)
    assert card.count() == 1  # the month-6 kit, not dispensed
    assert card.locator("input[name$=kit_code]").count() == 0  # no way to dispense it
    walk.step("pharmacist", "queue-withdrawn", narrow_check=True)
    card.locator("form[action$='/set-aside'] button").click()
    page.wait_for_load_state()
    assert page.locator(".flash.success").count() == 1
    assert page.locator("li.queue-item", has_text=number).count() == 0
    walk.step("pharmacist", "queue-set-aside", narrow_check=True)
    page.goto(f"{walk.url}/pharmacy/{STUDY}/inventory")
    walk.step("pharmacist", "inventory", narrow_check=True)
    page.goto(f"{walk.url}/supply/{STUDY}")
    walk.step("pharmacist", "supply", narrow_check=True)


def _admin_reads_the_audit_trail(walk: Walk) -> None:
    page = walk.pages["admin"]
    page.goto(f"{walk.url}/audit")
    assert page.locator("small.code", has_text="kit.set_aside").count() >= 1
    walk.step("admin", "audit-trail", narrow_check=True)


def test_bedside_walk(walk: Walk, demo_server: DemoServer):
    run = next(_runs)
    shipment_id = _dispatch_a_shipment(walk)
    _receive_kit_by_kit(walk, shipment_id)
    numbers = LANGUAGES[walk.lang]
    eligible = _screen(walk, f"W{run}-{walk.lang}-OK", numbers[1])
    failing = _screen(walk, f"W{run}-{walk.lang}-NO", numbers[2])
    randomization_number = _investigator_flows(walk, demo_server, eligible, failing)
    _pharmacist_dispenses_the_baseline_kit(walk, randomization_number)
    _withdraw_and_unblind(walk, demo_server, eligible, randomization_number)
    _pharmacist_queue(walk, randomization_number)
    _admin_reads_the_audit_trail(walk)
    assert walk.overflow == [], f"pages wider than the screen: {walk.overflow}"
    assert walk.foreign == [], f"{len(walk.foreign)} sentences of the other language shown"
