"""Webhooks can't be turned against anyone (SPEC §23): a large task sends and stores a small
body once, a delivery that fails in any way is a failed attempt on the normal schedule (a
non-ASCII URL included), pings are rate-limited, and secrets are encrypted at rest.

Deliveries run here, in the test process, as the worker's q2 task runs them, against a real
HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection, models, transaction
from django.urls import reverse
from django.utils import timezone

from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent
from marketplace.services import task_submit
from marketplace.webhooks import delivery
from marketplace.webhooks.keyring import secret_encrypt
from marketplace.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from marketplace.webhooks.outbox import webhook_create, webhook_event_record
from marketplace.webhooks.signing import signature_verify
from tests.api.conftest import client_for, error
from tests.factories import AgentBinaryFactory, AgentFactory, UserFactory
from tests.views.conftest import HTMX, fragment
from tests.views.conftest import client_for as browser_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

KIB = 1024
INPUT_BYTES = 1_000_000
REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def alice():
    alice = UserFactory.create(username="alice")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    return alice


@pytest.fixture
def echo():
    bob = UserFactory.create(username="bob")
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=0, fuel_price=0)
    Agent.objects.filter(pk=agent.pk).update(current_binary=AgentBinaryFactory.create(agent=agent))
    agent.refresh_from_db()
    return agent


def bodies_stored() -> list[str]:
    """Every event body the webhook tables hold, wherever they keep them."""
    found = []
    for model in apps.get_app_config("marketplace").get_models():
        if not model.__name__.startswith("Webhook"):
            continue
        for field in model._meta.concrete_fields:
            if field.name == "body" and isinstance(field, models.TextField):
                found += [
                    body
                    for body in model._default_manager.values_list("body", flat=True)
                    if body is not None
                ]
    return found


def deliver_all() -> None:
    for pk in WebhookDelivery.objects.filter(status="pending", attempts=0).values_list(
        "pk", flat=True
    ):
        delivery.deliver(pk, 0)


# --- amplification ---------------------------------------------------------------------------


def test_a_large_task_to_ten_endpoints_stores_one_small_body_and_sends_only_that(
    alice, echo, settings, capsys
):
    """1 MB in (every byte JSON-escaped to six), 1 MB out, ten endpoints of one requester."""
    text = "\x01" * INPUT_BYTES
    with Receiver() as receiver:
        endpoints = [
            webhook_create(owner=alice, url=f"{receiver.url}/{n}", events=["task.succeeded"])
            for n in range(10)
        ]
        task = task_submit(requester=alice, agent=echo, input=text, budget=100_000)
        claim = task_claim(task_id=task.pk)
        assert claim is not None
        ran = Execution(
            exit_code=0, stdout=text.encode(), fuel_used=1_000, fuel_limit=task.fuel_limit
        )
        assert task_settle(task_id=task.pk, attempt=claim[1], execution=ran)
        deliver_all()
        received = receiver.wait_for(10)

    stored = bodies_stored()
    sent = [len(got.body) for got in received]
    with capsys.disabled():
        print(
            f"\n1 MB task, 10 endpoints: {len(stored)} bodies stored, "
            f"{sum(len(b.encode()) for b in stored):,} bytes; "
            f"{max(sent):,} bytes sent per endpoint, {sum(sent):,} in all"
        )
    assert len(stored) == 1 and len(stored[0].encode()) < 20 * KIB
    assert max(sent) < 20 * KIB
    assert all(got.body == stored[0].encode() for got in received)

    event = json.loads(received[0].body)
    digest = hashlib.sha256(text.encode()).hexdigest()
    omitted = {"omitted": True, "bytes": INPUT_BYTES, "sha256": digest}
    assert event["data"]["task"]["input"] == omitted
    assert event["data"]["task"]["result"]["output"] == omitted
    assert event["data"]["task"]["result"]["output_sha256"] == digest
    # Where the whole of it is: the task's own API, which the requester can read.
    link = event["data"]["links"]["task"]
    assert link == f"/api/v1/tasks/{task.pk}/"
    full = client_for(alice).get(link).json()
    assert hashlib.sha256(full["input"].encode()).hexdigest() == digest
    for got, endpoint in zip(
        sorted(received, key=lambda r: r.path), sorted(endpoints, key=lambda e: e.url), strict=True
    ):
        header = got.headers["X-Exchange-Signature"]
        assert signature_verify(secret=endpoint.secret, body=got.body, header=header)


def test_a_small_task_is_sent_whole(alice, echo):
    with Receiver() as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.succeeded"])
        task = task_submit(requester=alice, agent=echo, input="hello", budget=100_000)
        claim = task_claim(task_id=task.pk)
        assert claim is not None
        ran = Execution(exit_code=0, stdout=b"hi", fuel_used=1_000, fuel_limit=task.fuel_limit)
        task_settle(task_id=task.pk, attempt=claim[1], execution=ran)
        deliver_all()
        [got] = receiver.wait_for(1)
    sent = json.loads(got.body)["data"]
    assert (sent["task"]["input"], sent["task"]["result"]["output"]) == ("hello", "hi")
    assert sent["links"] == {"task": f"/api/v1/tasks/{task.pk}/"}


def test_the_inline_limit_is_a_setting(alice, echo, settings):
    settings.WEBHOOK_MAX_INLINE_BYTES = 100
    with Receiver() as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
        task = task_submit(requester=alice, agent=echo, input="x" * 200, budget=100_000)
        from marketplace.services import task_cancel

        task_cancel(task=task)
        deliver_all()
        [got] = receiver.wait_for(1)
    shown = json.loads(got.body)["data"]["task"]
    assert shown["input"]["omitted"] is True and shown["input"]["bytes"] == 200
    assert shown["result"] is None


# --- loops -----------------------------------------------------------------------------------


@pytest.fixture
def dns(monkeypatch):
    names: dict[str, str] = {}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def test_a_non_ascii_url_is_stored_in_its_ascii_form(alice, dns):
    dns["xn--bcher-kva.example"] = "127.0.0.1"
    api = client_for(alice)
    made = api.post(
        "/api/v1/webhooks/",
        {"url": "http://Bücher.example:8080/café/ü?q=é ü&x=1#frag", "events": ["task.failed"]},
        format="json",
    )
    assert made.status_code == 201, made.json()
    expected = "http://xn--bcher-kva.example:8080/caf%C3%A9/%C3%BC?q=%C3%A9%20%C3%BC&x=1"
    assert made.json()["url"] == expected
    assert WebhookEndpoint.objects.get().url == expected
    # Already-encoded URLs are kept as they are.
    again = api.post(
        "/api/v1/webhooks/", {"url": expected, "events": ["task.failed"]}, format="json"
    )
    assert again.json()["url"] == expected


def test_a_host_that_is_no_valid_name_is_refused(alice):
    api = client_for(alice)
    response = api.post(
        "/api/v1/webhooks/",
        {"url": "http://" + "ü" * 70 + ".example/", "events": ["task.failed"]},
        format="json",
    )
    assert error(response) == (400, "webhook_url_refused")


def test_an_old_endpoint_with_a_non_ascii_path_is_delivered_to_its_ascii_form(alice):
    with Receiver() as receiver:
        # Written before URLs were normalised.
        WebhookEndpoint.objects.create(
            owner=alice,
            url=f"{receiver.url}/café",
            events="task.cancelled",
            secret_encrypted=secret_encrypt("whsec_t"),
        )
        with transaction.atomic():
            webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="x")
        row = WebhookDelivery.objects.get()
        result = delivery.deliver(row.pk, 0)
        [got] = receiver.wait_for(1)
    assert result.endswith("delivered")
    assert got.path == "/hooks/caf%C3%A9"


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = timezone.now()
        monkeypatch.setattr(timezone, "now", lambda: self.now)


def test_any_error_in_a_delivery_is_a_failed_attempt_retried_then_given_up(
    alice, monkeypatch, settings
):
    clock = Clock(monkeypatch)
    endpoint = WebhookEndpoint.objects.create(
        owner=alice,
        url="http://127.0.0.1:9/hooks",
        events="task.cancelled",
        secret_encrypted=secret_encrypt("whsec_t"),
    )
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="x")
    row = WebhookDelivery.objects.get()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise UnicodeEncodeError("ascii", "café", 3, 4, "ordinal not in range(128)")

    monkeypatch.setattr(delivery.transport, "post", broken)
    for attempt in range(settings.WEBHOOK_MAX_ATTEMPTS):
        assert "attempt" in delivery.deliver(row.pk, attempt)
        row.refresh_from_db()
        if row.next_attempt_at is None:
            break
        clock.now = row.next_attempt_at
    assert (row.status, row.attempts) == ("failed", settings.WEBHOOK_MAX_ATTEMPTS)
    log = list(WebhookAttempt.objects.order_by("number"))
    assert [a.number for a in log] == list(range(1, settings.WEBHOOK_MAX_ATTEMPTS + 1))
    assert all(not a.succeeded and a.status_code is None for a in log)
    assert "UnicodeEncodeError" in log[0].error and "can't encode" in log[0].error
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == settings.WEBHOOK_MAX_ATTEMPTS
    # Shown in the delivery log.
    shown = client_for(alice).get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/").json()
    assert "UnicodeEncodeError" in shown["results"][0]["error"]


def test_an_attempt_past_the_last_is_never_sent(alice, monkeypatch, settings):
    """A row whose attempts went past the limit (its outcome could not be recorded) is
    given up, not sent again."""
    with Receiver() as receiver:
        WebhookEndpoint.objects.create(
            owner=alice,
            url=receiver.url,
            events="task.cancelled",
            secret_encrypted=secret_encrypt("whsec_t"),
        )
        with transaction.atomic():
            webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="x")
        row = WebhookDelivery.objects.get()
        last = settings.WEBHOOK_MAX_ATTEMPTS
        WebhookDelivery.objects.filter(pk=row.pk).update(attempts=last)
        delivery.deliver(row.pk, last)
        assert receiver.received == []
    row.refresh_from_db()
    assert row.status == "failed"


# --- pings -----------------------------------------------------------------------------------


def test_pings_are_limited_to_ten_a_minute_per_endpoint(alice, settings):
    api = client_for(alice)
    one = webhook_create(owner=alice, url="http://127.0.0.1:9/a", events=["task.failed"])
    other = webhook_create(owner=alice, url="http://127.0.0.1:9/b", events=["task.failed"])
    answers = [api.post(f"/api/v1/webhooks/{one.pk}/ping/").status_code for _ in range(12)]
    assert answers == [202] * 10 + [429] * 2
    refused = api.post(f"/api/v1/webhooks/{one.pk}/ping/")
    assert error(refused) == (429, "throttled")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert WebhookDelivery.objects.filter(endpoint=one, type="ping").count() == 10
    # Per endpoint: another one still pings.
    assert api.post(f"/api/v1/webhooks/{other.pk}/ping/").status_code == 202


def test_the_ping_limit_is_a_setting_and_the_page_says_when_to_try_again(alice, settings):
    settings.WEBHOOK_PING_RATE = "2/minute"
    endpoint = webhook_create(owner=alice, url="http://127.0.0.1:9/a", events=["task.failed"])
    browser = browser_for(alice)
    url = reverse("webhook-ping", args=[endpoint.pk])
    for _ in range(2):
        assert "Ping evt_" in fragment(browser.post(url, **HTMX))
    body = fragment(browser.post(url, **HTMX))
    assert "Ping evt_" not in body
    assert "at most 2 pings a minute" in body and "Try again in" in body
    assert WebhookDelivery.objects.filter(type="ping").count() == 2


# --- secrets at rest ---------------------------------------------------------------------------


def raw_endpoint_rows() -> list[tuple[Any, ...]]:
    table = connection.ops.quote_name(WebhookEndpoint._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        return cursor.fetchall()


def test_the_database_holds_no_clear_secret(alice):
    created = client_for(alice).post(
        "/api/v1/webhooks/",
        {"url": "http://127.0.0.1:9/hooks", "events": ["task.failed"]},
        format="json",
    )
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    [row] = raw_endpoint_rows()
    assert not any(secret in str(value) for value in row)
    assert not any(secret[len("whsec_") :] in str(value) for value in row)


def test_after_a_rotation_deliveries_are_still_signed_with_the_secret(alice, settings):
    from cryptography.fernet import Fernet

    old_ring = list(settings.WEBHOOK_KEY_RING)
    with Receiver() as receiver:
        endpoint = webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
        secret = endpoint.secret
        before = raw_endpoint_rows()

        settings.WEBHOOK_KEY_RING = [Fernet.generate_key().decode(), *old_ring]
        call_command("rotate_webhook_secrets", stdout=open("/dev/null", "w"))  # noqa: SIM115
        assert raw_endpoint_rows() != before
        settings.WEBHOOK_KEY_RING = settings.WEBHOOK_KEY_RING[:1]  # the old key retired

        with transaction.atomic():
            webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="x")
        assert delivery.deliver(WebhookDelivery.objects.get().pk, 0).endswith("delivered")
        [got] = receiver.wait_for(1)
    header = got.headers["X-Exchange-Signature"]
    assert signature_verify(secret=secret, body=got.body, header=header)
