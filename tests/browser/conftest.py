"""Browser tests: the system Chromium driven by Playwright against pytest-django's live server.

Playwright's own browser download does not work everywhere, so these tests use the
Debian `chromium` package at /usr/bin/chromium (tests/browser/ensure_chromium.sh installs
it). Without it they fail with that instruction rather than skip: a browser suite that
quietly does not run is worse than none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from marketplace.binaries import binary_upload
from marketplace.models import Agent
from marketplace.services import agent_create, user_create

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AGENTS = ROOT / "agents" / "dist"
PASSWORD = "a long enough passphrase"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}. Install it (as root on Debian) with "
            "`apt-get install -y chromium`, or run tests/browser/ensure_chromium.sh.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the ORM calls the
    # tests make alongside it are still synchronous and safe. Only for this module: the
    # variable must not leak into later tests (or the processes they start).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Screen:
    """A browser page bound to the live server, collecting script errors and screenshots."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )

    def go(self, path: str) -> Any:
        return self.page.goto(self.base_url + path)

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        # A full-page shot draws the sticky top bar where the page is scrolled to.
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def log_in(self, username: str, password: str = PASSWORD) -> None:
        self.go("/accounts/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(self.base_url + "/")

    def log_in_quickly(self, user: User) -> None:
        """Share a session made by the test client instead of typing the login form."""
        client = Client()
        client.force_login(user)
        cookie = client.cookies["sessionid"]
        self.page.context.add_cookies(
            [{"name": "sessionid", "value": cookie.value, "url": self.base_url}]
        )


@pytest.fixture
def screen(browser: Any, live_server: Any, settings: Any, tmp_path: Path) -> Iterator[Screen]:
    settings.MEDIA_ROOT = tmp_path / "media"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    screen = Screen(context.new_page(), live_server.url)
    yield screen
    context.close()
    assert not screen.errors, screen.errors


def sample_agent(owner: User, slug: str, **fields: Any) -> Agent:
    """One of the sample agents (agents/dist), listed and uploaded as the demo does."""
    fields.setdefault("name", slug.title())
    fields.setdefault("base_fee", 1_000)
    fields.setdefault("fuel_price", 1_000)
    agent = agent_create(owner=owner, slug=slug, **fields)
    binary_upload(agent=agent, data=(AGENTS / f"{slug}.wasm").read_bytes())
    agent.refresh_from_db()
    return agent


@pytest.fixture
def demo_owner(transactional_db: Any) -> User:
    return user_create(username="demo-owner", password=PASSWORD)
