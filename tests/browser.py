"""A real server on a demo instance, and Debian's Chromium driven by Playwright.

Never downloads a browser: tests that use ``browser`` are skipped, with the reason, when
``/usr/bin/chromium`` is absent. The server is ``randomizer run`` in a subprocess against a
temporary instance built by ``randomizer demo`` (SQLite), so these tests run once, not once
per database backend.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RANDOMIZER = Path(sys.executable).with_name("randomizer")
_LOGIN_LINE = re.compile(r"^\s+(\w+)\s+(\S+)\s+(\S+)\s+\((.*)\)$")
CATALOGUES = Path(__file__).parents[1] / "randomizer" / "translations"


@dataclass(frozen=True)
class DemoLogin:
    role: str
    username: str
    password: str


@dataclass(frozen=True)
class DemoServer:
    url: str
    logins: list[DemoLogin]
    instance: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _compile_catalogues(target: Path) -> Path:
    """Compile the catalogues in git into ``target`` (`make translations` not needed)."""
    for po_path in CATALOGUES.glob("*/LC_MESSAGES/messages.po"):
        locale = po_path.parent.parent.name
        out = target / locale / "LC_MESSAGES"
        out.mkdir(parents=True)
        with po_path.open("rb") as po, (out / "messages.mo").open("wb") as mo:
            write_mo(mo, read_po(po, locale=locale))
    return target


def _environment(instance: Path, translations: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env["RANDOMIZER_INSTANCE_PATH"] = str(instance)
    env["RANDOMIZER_BABEL_TRANSLATION_DIRECTORIES"] = str(translations)
    return env


def _wait_until_serving(url: str, server: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited early:\n{server.stderr and server.stderr.read()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer at {url} within {seconds} s")


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """``randomizer demo`` in a fresh instance, then ``randomizer run`` on a free port."""
    root = tmp_path_factory.mktemp("browser")
    instance = root / "instance"
    env = _environment(instance, _compile_catalogues(root / "translations"))
    demo = subprocess.run(
        [str(RANDOMIZER), "demo"], env=env, capture_output=True, text=True, timeout=300
    )
    assert demo.returncode == 0, demo.stderr
    logins = [
        DemoLogin(m[1], m[2], m[3]) for m in map(_LOGIN_LINE.match, demo.stdout.splitlines()) if m
    ]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(RANDOMIZER), "run", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_serving(url, server)
        yield DemoServer(url, logins, instance)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (skipped when it is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package to run this test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def fill_screening_form(page: Any, definition: Any, number: str, values: dict[str, str]) -> None:
    """Fill the screening form: first level of each factor, inclusions met, exclusions absent,
    and each number criterion from ``values`` (typed as given) or 40."""
    page.fill("input[name=screening_number]", number)
    for factor in definition.factors:
        page.select_option(f"select[name=factor-{factor.code}]", factor.levels[0])
    for criterion in definition.eligibility:
        name = f"criterion-{criterion.code}"
        if criterion.type == "boolean":
            answer = "yes" if criterion.kind == "inclusion" else "no"
            page.check(f"input[name={name}][value={answer}]")
        else:
            page.fill(f"input[name={name}]", values.get(criterion.code, "40"))
