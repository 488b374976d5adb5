"""Login and sign-up limits in the browser: the refusal lands on the form, in place for the
htmx sign-up form, with no script error."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, Screen

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def refusals_only(screen: Screen) -> None:
    """The browser reports a 429 answer on its console: expected here, and nothing else."""
    expected = [error for error in screen.errors if "status of 429" in error]
    assert expected, screen.errors
    screen.errors[:] = [error for error in screen.errors if error not in expected]


def sign_up(screen: Screen, username: str) -> None:
    screen.go("/accounts/signup/")
    screen.page.get_by_label("Username").fill(username)
    screen.page.get_by_label("Password").fill(PASSWORD)
    screen.page.get_by_role("button", name="Sign up").click()


def test_a_refused_sign_up_says_so_on_the_form(screen: Screen, settings: Any):
    settings.SIGNUP_THROTTLE_RATE = "1/hour"
    page = screen.page
    sign_up(screen, "carol")
    expect(page.get_by_text("Welcome, carol!")).to_be_visible()
    page.context.clear_cookies()

    sign_up(screen, "dave")

    expect(page.get_by_role("alert")).to_contain_text("Too many new accounts from here.")
    expect(page.get_by_label("Username")).to_have_value("dave")
    assert page.url.endswith("/accounts/signup/")
    screen.shot("login-limits-signup-refused")
    refusals_only(screen)


def test_a_refused_login_says_so_on_the_form(screen: Screen, settings: Any):
    settings.LOGIN_THROTTLE_RATE = "1/minute"
    page = screen.page
    for password in ("wrong", PASSWORD):
        screen.go("/accounts/login/")
        page.get_by_label("Username").fill("nobody")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("alert")).to_contain_text("Too many login attempts from here.")
    screen.shot("login-limits-login-refused")
    refusals_only(screen)
