"""Webhooks and quotes in the browser: add an endpoint, keep its secret, watch the delivery
log fill (real workers, a real receiver); the task form's live quote and budget."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from escrow.services import deposit_create
from marketplace.quotes import fuel_sample_record
from marketplace.services import task_submit, user_create
from marketplace.webhooks.models import WebhookEndpoint
from tests.browser.conftest import PASSWORD, Screen, sample_agent
from tests.webhook_receiver import Receiver
from tests.workers import Cluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DELIVERED = 30_000  # ms: a worker starts, then delivers


@pytest.mark.postgres
@pytest.mark.slow
def test_add_a_webhook_ping_it_and_see_the_log_fill(screen: Screen, demo_owner: Any):
    echo = sample_agent(demo_owner, "echo", name="Echo")
    dora = user_create(username="dora", password=PASSWORD)
    deposit_create(user_id=dora.pk, amount=5_000_000)
    page = screen.page
    screen.log_in_quickly(dora)
    with Receiver() as receiver, Cluster() as cluster:
        screen.go("/")
        page.get_by_role("link", name="Webhooks").click()
        page.get_by_label("Endpoint URL").fill(receiver.url)
        expect(page.get_by_label("task.succeeded")).to_be_checked()
        page.get_by_role("button", name="Add endpoint").click()

        # The secret is shown once, and it is the one deliveries are signed with.
        secret = page.get_by_test_id("webhook-secret")
        expect(secret).to_have_text(re.compile(r"^whsec_"))
        endpoint = WebhookEndpoint.objects.get(owner=dora)
        assert secret.inner_text() == endpoint.secret
        expect(page.locator("#webhook-table")).to_contain_text(receiver.url)
        screen.shot("webhooks-01-added")

        page.get_by_role("link", name=re.compile("Open its delivery log")).click()
        page.get_by_role("button", name="Send test ping").click()
        log = page.get_by_test_id("delivery-log")
        expect(log).to_contain_text("ping", timeout=DELIVERED)
        expect(log).to_contain_text("200")
        assert json.loads(receiver.received[0].body)["type"] == "ping", cluster.output()

        # A task finishes: its event joins the log.
        task = task_submit(requester=dora, agent=echo, input="hi", budget=100_000)
        receiver.wait_for(2, timeout=DELIVERED / 1000)
        page.reload()
        expect(log).to_contain_text("task.succeeded", timeout=10_000)
        screen.shot("webhooks-02-delivery-log")
    assert json.loads(receiver.received[1].body)["data"]["task"]["id"] == str(task.pk)


def test_the_task_form_shows_a_live_quote_and_fills_the_budget(screen: Screen, demo_owner: Any):
    echo = sample_agent(demo_owner, "echo", name="Echo", base_fee=1_000, fuel_price=1_000)
    assert echo.current_binary_id is not None
    for size in (10, 20):  # 2_000 fuel to start, then 100 per byte
        fuel_sample_record(
            binary_id=echo.current_binary_id, fuel_used=2_000 + 100 * size, input_bytes=size
        )
    dora = user_create(username="dora", password=PASSWORD)
    page = screen.page
    screen.log_in_quickly(dora)
    screen.go("/tasks/new/")
    quote = page.get_by_test_id("quote")
    expect(quote).to_contain_text("Choose an agent")
    page.get_by_label("Agent").select_option("echo")
    expect(quote).to_contain_text("0 bytes of input")
    # 29 bytes typed ("é" is two): 2_000 + 2_900 fuel, so 1_000 + 5 µCR.
    page.get_by_label("Input").press_sequentially("héllo, agent exchange, quote")
    expect(quote).to_contain_text("29 bytes of input")
    expect(page.get_by_test_id("quote-p50")).to_have_text("0.001005 CR")
    expect(quote).to_contain_text("last 2 successful runs")
    screen.shot("quote-01-live")
    page.get_by_test_id("use-budget").click()
    # 4_900 fuel × 1.25 = 6_125 fuel: 1_000 + 7 µCR.
    expect(page.get_by_label("Budget")).to_have_value("0.001007")
