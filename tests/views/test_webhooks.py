"""The Webhooks pages, and the live quote on the task form."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from marketplace.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from marketplace.webhooks.outbox import webhook_create, webhook_event_record
from tests.views.conftest import HTMX, client_for, fragment, page

pytestmark = pytest.mark.django_db

LIST = reverse("webhook-list")
HOOK = "http://127.0.0.1:9/hooks"


def test_the_nav_links_to_webhooks(as_alice):
    assert f'href="{LIST}"' in page(as_alice.get(reverse("dashboard")))


def test_adding_an_endpoint_shows_its_secret_once(as_alice):
    response = as_alice.post(LIST, {"url": HOOK, "events": ["task.succeeded", "task.failed"]})
    body = page(response)
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == "task.failed task.succeeded"
    assert endpoint.secret in body
    # Only that once: the list and the endpoint's page never show it.
    assert endpoint.secret not in page(as_alice.get(LIST))
    assert endpoint.secret not in page(as_alice.get(reverse("webhook-detail", args=[endpoint.pk])))


def test_adding_with_htmx_answers_with_the_secret_and_the_new_table(as_alice):
    body = fragment(as_alice.post(LIST, {"url": HOOK, "events": ["task.failed"]}, **HTMX))
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret in body
    assert 'id="webhook-table" hx-swap-oob="true"' in body and HOOK in body


def test_a_refused_url_is_shown_on_the_form(as_alice, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = as_alice.post(LIST, {"url": "http://10.0.0.1/", "events": ["task.failed"]})
    assert response.status_code == 400
    assert "10.0.0.1 is a private address" in html.unescape(response.content.decode())
    assert not WebhookEndpoint.objects.exists()


def test_the_delivery_log_shows_each_attempt(alice, as_alice):
    endpoint = webhook_create(owner=alice, url=HOOK, events=["task.failed"])
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.failed", object_id="t")
    row = WebhookDelivery.objects.get()
    WebhookAttempt.objects.create(
        delivery=row,
        endpoint=endpoint,
        number=1,
        attempted_at=timezone.now(),
        status_code=500,
        duration_ms=1_234,
        error="HTTP 500",
        succeeded=False,
    )
    body = page(as_alice.get(reverse("webhook-detail", args=[endpoint.pk])))
    assert row.event_id in body and "HTTP 500" in body and "1,234 ms" in body
    # An event still waiting: the log refreshes itself.
    assert re.search(r'id="webhook-log" hx-get="[^"]+" hx-trigger="every 1s"', body)


def test_a_ping_from_the_page_is_queued_and_the_log_polls(alice, as_alice):
    endpoint = webhook_create(owner=alice, url=HOOK, events=["task.failed"])
    url = reverse("webhook-ping", args=[endpoint.pk])
    body = fragment(as_alice.post(url, **HTMX))
    assert WebhookDelivery.objects.get().type == "ping"
    assert 'hx-trigger="every 1s"' in body and "Ping evt_" in body


def test_a_disabled_endpoint_shows_why_and_can_be_enabled(alice, as_alice):
    endpoint = webhook_create(owner=alice, url=HOOK, events=["task.failed"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        disabled_at=timezone.now(), disabled_reason="Every delivery failed for over 3 days."
    )
    body = page(as_alice.get(reverse("webhook-detail", args=[endpoint.pk])))
    assert "Every delivery failed for over 3 days." in body and "Enable again" in body
    as_alice.post(reverse("webhook-enable", args=[endpoint.pk]))
    endpoint.refresh_from_db()
    assert endpoint.disabled_at is None


def test_charlie_cannot_see_or_touch_alices_endpoint(alice, as_charlie):
    endpoint = webhook_create(owner=alice, url=HOOK, events=["task.failed"])
    for name in ("webhook-ping", "webhook-enable", "webhook-delete"):
        assert as_charlie.post(reverse(name, args=[endpoint.pk])).status_code == 404
    assert as_charlie.get(reverse("webhook-detail", args=[endpoint.pk])).status_code == 404
    assert WebhookEndpoint.objects.count() == 1 and not WebhookDelivery.objects.exists()


def test_removing_an_endpoint(alice, as_alice):
    endpoint = webhook_create(owner=alice, url=HOOK, events=["task.failed"])
    response = as_alice.post(reverse("webhook-delete", args=[endpoint.pk]))
    assert response.status_code == 302 and not WebhookEndpoint.objects.exists()


# --- the quote on the task form ------------------------------------------------------------


def test_the_task_form_fetches_a_quote_as_agent_input_and_fuel_change(as_alice, echo):
    body = page(as_alice.get(reverse("task-new") + "?agent=echo"))
    quote_url = reverse("task-quote")
    # Typing asks on input, not again on change (when the field loses focus): a click
    # just after typing must not meet a swap of the same quote.
    triggers = {
        "agent": "change",
        "input": "input changed delay:300ms",
        "fuel_limit": "input changed delay:300ms",
    }
    for field, trigger in triggers.items():
        tag = re.search(rf'<[^>]+id="id_{field}"[^>]*>', body)
        assert tag is not None, field
        assert f'hx-get="{quote_url}"' in tag.group(0)
        assert f'hx-trigger="{trigger}"' in tag.group(0)
    # The page opens with the chosen agent's quote.
    assert 'data-testid="quote"' in body and "Suggested budget" in body


def test_the_quote_fragment_prices_the_input_size_and_suggests_a_budget(as_alice, echo):
    query = {"agent": "echo", "input_bytes": "10", "fuel_limit": "1000000"}
    body = fragment(as_alice.get(reverse("task-quote"), query, **HTMX))
    # No runs yet: the budget that covers the fuel limit, 1_000 + 2_000 µCR.
    assert "0.003000 CR" in body and "No successful run" in body
    assert "document.getElementById('id_budget').value = '0.003'" in body
    empty = fragment(as_alice.get(reverse("task-quote"), {"agent": ""}, **HTMX))
    assert "Choose an agent" in empty


# --- the admin ---------------------------------------------------------------------------


def test_operators_see_endpoints_without_their_secret_and_can_enable_them(alice):
    operator = client_for(User.objects.create_superuser("root", password="a long passphrase"))
    endpoint = webhook_create(owner=alice, url=HOOK, events=["task.failed"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(disabled_at=timezone.now())
    listing = reverse("admin:marketplace_webhookendpoint_changelist")
    for url in (listing, reverse("admin:marketplace_webhookendpoint_change", args=[endpoint.pk])):
        body = page(operator.get(url))
        assert HOOK in body and endpoint.secret not in body
    operator.post(listing, {"action": "enable", "_selected_action": [str(endpoint.pk)]})
    endpoint.refresh_from_db()
    assert endpoint.disabled_at is None
