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
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AGENTS = ROOT / "agents" / "dist"
PASSWORD = "a long enough passphrase"


class _Chromium:
    """One Chromium for a run of consecutive browser tests, closed after the last of them.

    Starting Chromium costs a second or two, so consecutive browser tests share one (each
    test gets its own context). Playwright's sync API keeps an event loop running in this
    thread; the ORM calls the tests make alongside it are still synchronous and safe, so
    DJANGO_ALLOW_ASYNC_UNSAFE is set while it runs, and only then: Chromium is closed (and
    the variable restored) as soon as the next test is not a browser test, so neither leaks
    into later tests or the processes they start (see pytest_runtest_teardown below).
    """

    def __init__(self) -> None:
        self.playwright: Any = None
        self.browser: Any = None
        self.previous_env: str | None = None

    def get(self) -> Any:
        if self.browser is not None:
            return self.browser
        if not CHROMIUM.exists():
            pytest.fail(
                f"Chromium is missing at {CHROMIUM}. Install it (as root on Debian) with "
                "`apt-get install -y chromium`, or run tests/browser/ensure_chromium.sh.",
                pytrace=False,
            )
        from playwright.sync_api import sync_playwright

        self.previous_env = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        try:
            self.playwright = sync_playwright().start()
            self.browser = self.playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
        except BaseException:
            self.close()
            raise
        return self.browser

    def close(self) -> None:
        try:
            if self.browser is not None:
                self.browser.close()
        finally:
            self.browser = None
            try:
                if self.playwright is not None:
                    self.playwright.stop()
            finally:
                self.playwright = None
                if self.previous_env is None:
                    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
                else:
                    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = self.previous_env


_chromium = _Chromium()


@pytest.fixture
def browser() -> Any:
    return _chromium.get()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # After the test's own fixtures are torn down (its contexts closed): close Chromium
    # unless the next test is a browser test too. (This conftest's hooks see only the
    # tests of this directory; under xdist they run one after another on one worker, see
    # tests/conftest.py.)
    try:
        return (yield)
    finally:
        if nextitem is None or not Path(nextitem.path).resolve().is_relative_to(HERE):
            _chromium.close()


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
    # What the page reported while the test ran; closing it aborts a poll that may be in
    # flight, which htmx reports too, and that is not the page's fault.
    errors = list(screen.errors)
    context.close()
    # A request cut short because the page moved on (a navigation, or a swap that replaced
    # the polling element) is reported by htmx as `htmx:sendAbort` with its
    # `htmx:afterRequest`; a failed response still shows as `htmx:responseError`.
    if any("htmx:sendAbort" in error for error in errors):
        errors = [e for e in errors if "htmx:sendAbort" not in e and "htmx:afterRequest" not in e]
    assert not errors, errors


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
