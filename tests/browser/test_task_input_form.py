"""The task form generated from an agent's input schema, in a real Chromium (SPEC §19):
a schema with every supported type, its errors next to the right fields, and a run from it
with a real worker; and the same form with JavaScript turned off."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from escrow.audit import ledger_audit
from escrow.models import Account, Escrow
from escrow.services import deposit_create
from marketplace.binaries import binary_upload
from marketplace.models import Agent, Task
from marketplace.services import agent_create, user_create
from tests.browser.conftest import AGENTS, PASSWORD, Screen, sample_agent
from tests.workers import Cluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TASK_SETTLES = 30_000  # ms
FUNDS = 2_000_000
# Every type the form draws: a string, an enum, an integer, a number, a boolean, arrays of
# strings and of enum values, a nested object, and a part only JSON can say (oneOf).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["message", "count"],
    "properties": {
        "message": {"type": "string", "title": "Message", "description": "What to send."},
        "tone": {"enum": ["calm", "loud"], "title": "Tone", "default": "calm"},
        "count": {"type": "integer", "title": "Repeat", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number", "title": "Ratio", "maximum": 1},
        "urgent": {"type": "boolean", "title": "Urgent"},
        "tags": {"type": "array", "title": "Tags", "items": {"type": "string"}},
        "colours": {"type": "array", "title": "Colours", "items": {"enum": ["red", "green"]}},
        "options": {
            "type": "object",
            "title": "Options",
            "required": ["code"],
            "properties": {
                "code": {"type": "string", "title": "Code", "pattern": "^[a-z]+$"},
                "depth": {"type": "integer", "title": "Depth", "default": 2},
            },
        },
        "extra": {"title": "Extra", "oneOf": [{"type": "object"}, {"type": "string"}]},
    },
}
EXPECTED = {
    "message": "héllo form",
    "tone": "loud",
    "count": 3,
    "ratio": 0.5,
    "urgent": True,
    "tags": ["a", "b c"],
    "colours": ["red", "green"],
    "options": {"code": "abc", "depth": 2},
    "extra": {"k": [1, 2]},
}


def typed_agent(owner: User) -> Agent:
    """The echo sample (it answers its input) with SCHEMA as its version's input schema."""
    agent = agent_create(
        owner=owner, slug="typed", name="Typed echo", base_fee=1_000, fuel_price=1_000
    )
    binary_upload(agent=agent, data=(AGENTS / "echo.wasm").read_bytes(), input_schema=SCHEMA)
    agent.refresh_from_db()
    return agent


def field(page: Any, pointer: str) -> Any:
    """The field (its box with the label, the input and its errors) for a JSON pointer."""
    return page.locator(f'.field[data-pointer="{pointer}"]')


def fill_the_form(page: Any) -> None:
    page.get_by_label("Message").fill(EXPECTED["message"])
    page.get_by_label("Tone").select_option(label="loud")
    page.get_by_label("Repeat").fill("0")  # out of range: refused next to it
    page.get_by_label("Ratio").fill("0.5")
    page.get_by_label("Urgent").check()
    page.get_by_label("Tags").fill("a\nb c\n")
    colours = field(page, "/colours")
    colours.get_by_label("red").check()
    colours.get_by_label("green").check()
    page.get_by_label("Code").fill("ABC")  # breaks the pattern: the contract check says so
    expect(page.get_by_label("Depth")).to_have_value("2")  # the default
    page.get_by_label("Extra").fill('{"k": [1, 2]}')
    page.get_by_label("Budget").fill("0.5")


def quoted_bytes(text: str) -> int:
    found = re.search(r"Quote for ([\d,]+) bytes? of input", text)
    assert found, text
    return int(found.group(1).replace(",", ""))


@pytest.mark.postgres
@pytest.mark.slow
def test_a_generated_form_shows_errors_in_place_and_runs_the_task(screen: Screen, demo_owner: Any):
    sample_agent(demo_owner, "echo", name="Echo")
    typed_agent(demo_owner)
    dora = user_create(username="dora", password=PASSWORD)
    deposit_create(user_id=dora.pk, amount=FUNDS)
    screen.log_in_quickly(dora)
    page = screen.page
    screen.go("/tasks/new/")
    page.evaluate("window.notReloaded = true")

    # Choosing the agent swaps its fields in for the text area, in place.
    page.get_by_label("Agent").select_option("echo")
    expect(page.locator("textarea#id_input")).to_be_visible()
    page.get_by_label("Agent").select_option("typed")
    expect(page.get_by_test_id("input-fields")).to_be_visible()
    expect(page.locator("textarea#id_input")).to_have_count(0)
    expect(page.locator("fieldset#id_input\\/options legend")).to_contain_text("Options")
    expect(field(page, "/message")).to_contain_text("What to send.")
    expect(field(page, "/count").locator("abbr.required-mark")).to_be_visible()
    # The quote is for the document the fields hold, measured again as they change (once
    # the page has settled: a quote asked for during the swap would pass by chance).
    quote = page.get_by_test_id("quote")
    expect(quote).to_contain_text(re.compile(r"Quote for \d+ bytes of input"))
    page.wait_for_load_state("networkidle")
    before = quoted_bytes(quote.inner_text())
    fill_the_form(page)
    # Each field asks 300 ms after its last keystroke; the last answer has every field.
    expect(quote).to_contain_text(re.compile(r"Quote for [\d,]+ bytes"))
    page.wait_for_timeout(1_000)
    assert quoted_bytes(quote.inner_text()) > before + len("héllo form") + 20  # the message
    screen.shot("input-form-01-filled")

    # The form's own check: the count out of range, next to its field; nothing held.
    page.get_by_role("button", name="Submit task").click()
    expect(field(page, "/count").locator(".errors")).to_have_text("Enter a number at least 1.")
    assert not Task.objects.exists()
    # Then the contract check's: the code breaks its pattern, shown at /options/code.
    page.get_by_label("Repeat").fill("3")
    page.get_by_role("button", name="Submit task").click()
    expect(field(page, "/options/code").locator(".errors")).to_contain_text("ABC")
    expect(field(page, "/count").locator(".errors")).to_have_count(0)
    assert not Task.objects.exists() and not Escrow.objects.exists()
    assert Account.objects.get(user=dora).balance == FUNDS
    # What was typed is still there.
    expect(page.get_by_label("Message")).to_have_value(EXPECTED["message"])
    expect(field(page, "/colours").get_by_label("green")).to_be_checked()
    screen.shot("input-form-02-errors")
    assert page.evaluate("window.notReloaded") is True

    page.get_by_label("Code").fill("abc")
    with Cluster() as cluster:
        page.get_by_role("button", name="Submit task").click()
        page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
        expect(page.get_by_test_id("task-status")).to_have_text("succeeded", timeout=TASK_SETTLES)
        cluster.kill()

    task = Task.objects.get()
    assert json.loads(task.input) == EXPECTED
    # The echo agent answers its input: the run got exactly the document the form made.
    assert json.loads(page.get_by_test_id("output").inner_text()) == EXPECTED
    screen.shot("input-form-03-succeeded")
    assert task.cost is not None
    assert Account.objects.get(user=dora).balance == FUNDS - task.cost
    assert ledger_audit().ok


def test_without_javascript_the_generated_form_works_by_plain_posts(
    browser: Any, live_server: Any, demo_owner: Any, settings: Any, tmp_path: Any
):
    settings.MEDIA_ROOT = tmp_path / "media"
    sample_agent(demo_owner, "echo", name="Echo")
    typed_agent(demo_owner)
    erin = user_create(username="erin", password=PASSWORD)
    deposit_create(user_id=erin.pk, amount=FUNDS)
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(10_000)
    try:
        screen = Screen(context.new_page(), live_server.url)
        screen.log_in_quickly(erin)
        page = screen.page
        screen.go("/tasks/new/?agent=echo")
        expect(page.locator("textarea#id_input")).to_be_visible()

        # Another agent: its fields come with the button (or with a submit), nothing runs.
        page.get_by_label("Agent").select_option("typed")
        page.get_by_role("button", name="Show the chosen agent's input fields").click()
        expect(page.get_by_test_id("input-fields")).to_be_visible()
        fill_the_form(page)
        page.get_by_label("Repeat").fill("ten")
        page.get_by_role("button", name="Submit task").click()
        expect(field(page, "/count").locator(".errors")).to_have_text("Enter a whole number.")
        page.get_by_label("Repeat").fill("3")
        page.get_by_label("Code").fill("abc")
        screen.shot("input-form-04-no-javascript")
        page.get_by_role("button", name="Submit task").click()
        page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
        expect(page.get_by_text("Task submitted to Typed echo.")).to_be_visible()

        task = Task.objects.get()
        assert json.loads(task.input) == EXPECTED
        assert Escrow.objects.get(task=task).status == "funded"
        assert Account.objects.get(user=erin).balance == FUNDS - 500_000
        assert ledger_audit().ok
        assert not screen.errors, screen.errors
    finally:
        context.close()
