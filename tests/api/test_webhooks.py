"""Webhook endpoints through the API. alice manages hers; charlie has no access to them;
an API key never manages webhooks, whatever its scopes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.apikeys import api_key_create
from marketplace.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from marketplace.webhooks.outbox import MAX_ENDPOINTS, webhook_event_record

from .conftest import client_for, error

URL = "/api/v1/webhooks/"
HOOK = "http://127.0.0.1:9/hooks"  # loopback is allowed in development (the test settings)


def create(client: APIClient, **body: Any) -> dict:
    body.setdefault("url", HOOK)
    body.setdefault("events", ["task.succeeded", "task.failed"])
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_creating_an_endpoint_shows_its_secret_once(as_alice):
    created = create(as_alice, events=["task.failed", "task.succeeded", "task.failed"])
    assert set(created) == {"id", "url", "events", "secret", "created_at"}
    assert created["url"] == HOOK
    assert created["events"] == ["task.failed", "task.succeeded"]
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert WebhookEndpoint.objects.get().secret == created["secret"]
    shown = as_alice.get(f"{URL}{created['id']}/").json()
    listed = as_alice.get(URL).json()
    assert "secret" not in shown and "secret" not in listed["results"][0]
    assert shown == {
        "id": created["id"],
        "url": HOOK,
        "events": ["task.failed", "task.succeeded"],
        "created_at": created["created_at"],
        "pending": 0,
        "last_success_at": None,
        "failing_since": None,
        "consecutive_failures": 0,
        "disabled_at": None,
        "disabled_reason": None,
    }
    assert listed["count"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": HOOK, "events": []}, "events"),
        ({"url": HOOK, "events": ["task.exploded"]}, "events"),
        ({"url": HOOK, "events": "task.failed"}, "events"),
        ({"url": HOOK, "events": ["ping"]}, "events"),
        ({"url": 42, "events": ["task.failed"]}, "url"),
        ({"events": ["task.failed"]}, "url"),
        ({"url": "http://x/" + "a" * 2000, "events": ["task.failed"]}, "url"),
    ],
)
def test_bad_input_is_a_validation_error_naming_the_field(as_alice, body, field):
    response = as_alice.post(URL, body, format="json")
    assert error(response) == (400, "validation_error")
    assert field in response.json()["error"]["fields"]
    assert not WebhookEndpoint.objects.exists()


def test_an_account_has_at_most_ten_endpoints(as_alice):
    for n in range(MAX_ENDPOINTS):
        create(as_alice, url=f"{HOOK}/{n}")
    assert error(as_alice.post(URL, {"url": HOOK, "events": ["task.failed"]}, format="json")) == (
        409,
        "webhook_limit_reached",
    )


def test_charlie_has_no_access_to_alices_endpoints(as_alice, as_charlie):
    created = create(as_alice)
    path = f"{URL}{created['id']}/"
    for response in (
        as_charlie.get(path),
        as_charlie.delete(path),
        as_charlie.get(f"{path}deliveries/"),
        as_charlie.post(f"{path}ping/"),
        as_charlie.post(f"{path}enable/"),
    ):
        assert error(response) == (404, "webhook_not_found")
    assert as_charlie.get(URL).json()["count"] == 0
    assert WebhookEndpoint.objects.count() == 1
    assert not WebhookDelivery.objects.exists()


def test_deleting_an_endpoint_takes_its_outbox_and_log_with_it(alice, as_alice):
    created = create(as_alice)
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.failed", object_id="t")
    assert as_alice.delete(f"{URL}{created['id']}/").status_code == 204
    assert error(as_alice.get(f"{URL}{created['id']}/")) == (404, "webhook_not_found")
    assert not WebhookDelivery.objects.exists()


def test_a_ping_is_queued_for_that_endpoint(as_alice):
    created = create(as_alice, events=["dispute.opened"])
    response = as_alice.post(f"{URL}{created['id']}/ping/")
    assert response.status_code == 202
    row = WebhookDelivery.objects.get()
    assert response.json() == {"event": row.event_id}
    assert (row.type, row.object_id, str(row.endpoint_id)) == ("ping", created["id"], created["id"])
    assert as_alice.get(f"{URL}{created['id']}/").json()["pending"] == 1


def test_the_delivery_log_lists_attempts_newest_first(alice, as_alice):
    created = create(as_alice)
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.failed", object_id="t")
    row = WebhookDelivery.objects.get()
    now = timezone.now()
    for number, status, error_text in ((1, 500, "HTTP 500"), (2, None, "timed out"), (3, 204, "")):
        WebhookAttempt.objects.create(
            delivery=row,
            endpoint_id=row.endpoint_id,
            number=number,
            attempted_at=now + timedelta(minutes=number),
            status_code=status,
            duration_ms=10 * number,
            error=error_text,
            succeeded=status == 204,
        )
    page = as_alice.get(f"{URL}{created['id']}/deliveries/?page_size=2").json()
    assert page["count"] == 3 and page["next"] is not None
    first = page["results"][0]
    assert {key: first[key] for key in first if key not in ("id", "attempted_at")} == {
        "event": row.event_id,
        "type": "task.failed",
        "attempt": 3,
        "status_code": 204,
        "duration_ms": 30,
        "error": "",
        "succeeded": True,
        "delivery_status": "pending",
    }
    assert [r["attempt"] for r in page["results"]] == [3, 2]
    assert page["results"][1]["status_code"] is None
    assert error(as_alice.get(f"{URL}{created['id']}/deliveries/?page=x")) == (
        400,
        "validation_error",
    )


def test_api_keys_cannot_manage_webhooks(alice, as_alice):
    created = create(as_alice)
    _, raw = api_key_create(
        user=alice,
        name="robot",
        scopes=["tasks:read", "tasks:write", "channels:write", "wallet:read", "agents:write"],
    )
    robot = APIClient()
    robot.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    path = f"{URL}{created['id']}/"
    for response in (
        robot.get(URL),
        robot.post(URL, {"url": HOOK, "events": ["task.failed"]}, format="json"),
        robot.get(path),
        robot.delete(path),
        robot.get(f"{path}deliveries/"),
        robot.post(f"{path}ping/"),
    ):
        assert error(response) == (403, "scope_required")
    assert WebhookEndpoint.objects.count() == 1 and not WebhookDelivery.objects.exists()


def test_anonymous_callers_are_refused(anon):
    assert error(anon.get(URL)) == (401, "not_authenticated")
    assert error(anon.post(URL, {"url": HOOK, "events": ["task.failed"]}, format="json"))[0] == 401


def test_a_session_user_adds_one_too(alice):
    browser = client_for(None)
    browser.force_login(alice)
    assert create(browser)["secret"].startswith("whsec_")
