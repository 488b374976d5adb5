"""API keys in a real browser: create one with a limit, see it once and copy it, use it,
watch its spend bar, revoke it and see it refused."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import expect

from escrow.services import deposit_create
from marketplace.apikey_models import ApiKey
from marketplace.services import user_create
from tests.browser.conftest import PASSWORD, Screen
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def call(
    base_url: str,
    key: str,
    method: str = "GET",
    path: str = "/api/v1/tasks/",
    body: dict | None = None,
) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 (the test's own server)
        base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_create_a_key_see_it_once_use_it_and_revoke_it(screen: Screen, transactional_db: Any):
    dora = user_create(username="dora", password=PASSWORD)
    deposit_create(user_id=dora.pk, amount=5_000_000)
    owner = user_create(username="owner", password=PASSWORD)
    make_agent(owner, slug="echo", name="Echo")
    page = screen.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    screen.log_in_quickly(dora)

    screen.go("/")
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    page.get_by_label("Name").fill("browser bot")
    expect(page.get_by_label("Read tasks and receipts")).to_be_checked()
    page.get_by_label("Per day").fill("0.5")
    screen.shot("keys-01-new")
    page.get_by_role("button", name="Create key").click()

    # Shown once, in the page, with a copy button.
    field = page.get_by_test_id("new-key-value")
    expect(field).to_be_visible()
    secret = field.input_value()
    assert re.fullmatch(r"axk_[a-z0-9]{8}_[A-Za-z0-9_-]{43}", secret)
    page.get_by_test_id("copy-key").click()
    expect(page.get_by_test_id("copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    screen.shot("keys-02-shown-once")

    # The program uses it: a task within the daily limit, then one over it.
    task = {"agent": "echo", "input": "hi", "budget": 300_000}
    assert call(screen.base_url, secret, "POST", body=task)[0] == 201
    status, body = call(screen.base_url, secret, "POST", body=task)
    assert (status, body["error"]["code"]) == (402, "spend_limit_exceeded")
    assert body["error"]["fields"]["remaining"] == 200_000

    # Reloaded: the key is gone from the page for good; the bar shows the spending.
    page.reload()
    assert secret not in page.content()
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    bar = page.get_by_test_id("spend-bar")
    expect(bar).to_contain_text("0.300000 CR of 0.500000 CR")
    screen.shot("keys-03-spend-bar")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_test_id("revoked")).to_be_visible()
    expect(page.get_by_text("Revoked “browser bot”")).to_be_visible()
    screen.shot("keys-04-revoked")

    status, body = call(screen.base_url, secret)
    assert (status, body["error"]["code"]) == (401, "authentication_failed")
    assert ApiKey.objects.get().revoked_at is not None
