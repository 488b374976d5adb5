"""The top bar fits every width from a desktop's 1280 px down to a phone's 390 px: every link
is on screen and can be clicked, none is clipped or scrolled out of sight, and the page never
scrolls sideways (SPEC §18). No page draws a glyph the system font may lack: the API keys
page's empty state used one, and showed an empty box."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from marketplace.services import user_create
from tests.browser.conftest import PASSWORD, Screen

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NAV_LINKS = ["Dashboard", "Agents", "Tasks", "Wallet", "Channels", "API keys", "Webhooks"]
# Desktop, small laptop, tablet, phone.
WIDTHS = [1280, 1024, 768, 390]

# Each visible control of the top bar: its box, and whether a click at its centre lands on
# it (it is not covered or clipped there); whether the nav hides links in a scrolled overflow,
# and whether the page itself is wider than the window.
TOP_BAR = """() => {
  const controls = [...document.querySelectorAll('.topbar a, .topbar button')]
    .filter((el) => el.getClientRects().length > 0)
    .map((el) => {
      const box = el.getBoundingClientRect();
      const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
      return {
        name: el.textContent.trim(), left: box.left, right: box.right,
        width: box.width, height: box.height, reachable: !!hit && el.contains(hit),
      };
    });
  const nav = document.querySelector('nav[aria-label="Main"]');
  return {
    controls,
    navOverflow: nav.scrollWidth - nav.clientWidth,
    pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
    width: window.innerWidth,
  };
}"""


def uncommon(text: str) -> set[str]:
    """Characters outside what every system font draws: Latin letters, ASCII and Latin-1
    symbols, and general punctuation (dashes, quotes, the ellipsis)."""
    return {c for c in text if not (c.isspace() or ord(c) < 0x250 or 0x2000 <= ord(c) <= 0x206F)}


@pytest.fixture
def operator(screen: Screen, transactional_db: Any) -> Screen:
    """The widest top bar: a staff member (the Admin link) with a long name."""
    user = user_create(username="alexandra-the-operator", password=PASSWORD)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    screen.log_in_quickly(user)
    return screen


@pytest.mark.parametrize("width", WIDTHS)
def test_every_link_of_the_top_bar_is_on_screen_and_clickable(operator: Screen, width: int):
    page = operator.page
    page.set_viewport_size({"width": width, "height": 900})

    for path in ("/", "/webhooks/"):
        operator.go(path)
        bar = page.evaluate(TOP_BAR)
        names = [control["name"] for control in bar["controls"]]

        assert [name for name in NAV_LINKS if name not in names] == [], (path, names)
        assert {"Log out", "Admin"} <= set(names), (path, names)
        for control in bar["controls"]:
            assert control["width"] > 0 and control["height"] > 0, (path, control)
            assert control["left"] >= 0 and control["right"] <= bar["width"], (path, control)
            assert control["reachable"], (path, control)
        assert bar["navOverflow"] <= 0, (path, bar["navOverflow"])
        assert bar["pageOverflow"] <= 0, (path, bar["pageOverflow"])
    operator.shot(f"nav-{width}")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()


def test_the_api_keys_page_draws_no_uncommon_glyph(operator: Screen):
    operator.go("/api-keys/")
    empty = operator.page.locator(".empty")
    expect(empty).to_contain_text("No keys yet")

    assert uncommon(empty.inner_text()) == set()
    assert uncommon(operator.page.locator("main").inner_text()) == set()
    operator.shot("api-keys-empty")
