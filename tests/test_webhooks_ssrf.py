"""Webhooks cannot be aimed inward (WEBHOOK_ALLOW_PRIVATE=false, as in production).

Each refused target is checked twice: at creation (the API answers 400) and at delivery,
where a real receiver listens on 127.0.0.1 and must get nothing — so a check that is
missing or comes after the connection shows up as a request that arrived.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
from django.db import transaction

from marketplace.webhooks import delivery, transport
from marketplace.webhooks.keyring import secret_encrypt
from marketplace.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from marketplace.webhooks.outbox import webhook_event_record
from tests.api.conftest import client_for, error
from tests.factories import UserFactory
from tests.test_production_defaults import shell
from tests.test_settings import production_keys
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

REAL_GETADDRINFO = socket.getaddrinfo
PUBLIC = "93.184.215.14"


@pytest.fixture(autouse=True)
def _production_rule(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False


@pytest.fixture
def dns(monkeypatch):
    """Names of our choosing resolve to addresses of our choosing; the rest as usual."""
    names: dict[str, str] = {}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            family = socket.AF_INET6 if ":" in names[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (an address refused, not bound)
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address):
    assert transport.address_refusal(address) is not None


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert transport.address_refusal(address) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://10.0.0.7:8080/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8000/",
        "http://localhost/",
        "http://2130706433/",  # 127.0.0.1 written as one number
        "http://internal.example.com/",  # resolves to 127.0.0.1, below
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "http://user:secret@hooks.example.com/",
        "http:///nohost",
        "http://does-not-resolve.invalid/",
    ],
)
def test_creating_an_endpoint_to_a_non_public_target_is_refused(url, dns):
    dns["internal.example.com"] = "127.0.0.1"
    dns["hooks.example.com"] = PUBLIC
    alice = UserFactory.create(username="alice")
    response = client_for(alice).post("/api/v1/webhooks/", {"url": url, "events": ["task.failed"]})
    assert error(response) == (400, "webhook_url_refused"), response.json()
    assert not WebhookEndpoint.objects.exists()


def test_a_public_name_is_accepted_and_nothing_is_contacted_at_creation(dns):
    dns["hooks.example.com"] = PUBLIC
    alice = UserFactory.create(username="alice")
    response = client_for(alice).post(
        "/api/v1/webhooks/", {"url": "https://hooks.example.com/x?y=1", "events": ["task.failed"]}
    )
    assert response.status_code == 201, response.json()
    assert response.json()["url"] == "https://hooks.example.com/x?y=1"


def _delivered_to(url: str) -> tuple[WebhookDelivery, WebhookAttempt]:
    """An endpoint (stored directly, as if created while the rule was off) and one attempt."""
    alice = UserFactory.create()
    WebhookEndpoint.objects.create(
        owner=alice, url=url, events="task.failed", secret_encrypted=secret_encrypt("whsec_t")
    )
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.failed", object_id="x")
    row = WebhookDelivery.objects.get(endpoint__owner=alice)
    delivery.deliver(row.pk, 0)
    row.refresh_from_db()
    return row, WebhookAttempt.objects.get(delivery=row)


def test_delivery_to_a_loopback_address_is_refused_before_connecting():
    with Receiver() as receiver:
        row, attempt = _delivered_to(receiver.url)
    assert receiver.received == []
    assert attempt.status_code is None and attempt.error.startswith("refused: ")
    assert "loopback" in attempt.error
    assert (row.status, row.attempts) == ("pending", 1)  # retried, like any failure


@pytest.mark.parametrize(
    "url", ["http://10.20.30.40:81/", "http://169.254.169.254/", "http://[::1]:81/"]
)
def test_delivery_to_private_link_local_and_ipv6_loopback_is_refused(url):
    _, attempt = _delivered_to(url)
    assert attempt.error.startswith("refused: ") and attempt.duration_ms < 1000


def test_a_name_that_now_resolves_to_loopback_is_refused_at_delivery(dns):
    # Public when the endpoint was added; DNS now answers 127.0.0.1, where a receiver
    # listens (DNS rebinding). The connection would reach it if the check were skipped.
    with Receiver() as receiver:
        dns["hooks.example.com"] = "127.0.0.1"
        _, attempt = _delivered_to(f"http://hooks.example.com:{receiver.port}/hooks")
    assert receiver.received == []
    assert (
        attempt.error == "refused: hooks.example.com resolves to 127.0.0.1 is a loopback address."
    )


def test_a_name_with_one_private_address_among_public_ones_is_refused(monkeypatch):
    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(transport.UrlRefused, match=re.escape("10.0.0.1 is a private address")):
        transport.url_check("https://mixed.example.com/")


def test_a_redirect_to_a_private_address_is_not_followed(monkeypatch):
    # The redirecting receiver counts as public here (only its exact address); the target
    # it points at is another loopback address, which must get nothing.
    with Receiver(host="127.0.0.2") as target, Receiver(redirect_to=target.url) as redirector:
        real_refusal = transport.address_refusal
        monkeypatch.setattr(
            transport,
            "address_refusal",
            lambda address: None if address == "127.0.0.1" else real_refusal(address),
        )
        row, attempt = _delivered_to(redirector.url)
        assert len(redirector.received) == 1
    assert target.received == []
    assert attempt.status_code == 302 and not attempt.succeeded
    assert attempt.error == f"redirect to {target.url} not followed"
    assert row.status == "pending"


def test_with_private_targets_allowed_a_local_receiver_gets_its_event(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with Receiver() as receiver:
        row, attempt = _delivered_to(receiver.url)
        receiver.wait_for(1)
    assert attempt.status_code == 200 and row.status == "delivered"


def test_the_connection_goes_to_the_checked_address_with_the_name_in_the_host_header(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with Receiver() as receiver:
        dns["hooks.example.com"] = "127.0.0.1"
        target = transport.url_parse(f"http://hooks.example.com:{receiver.port}/in?x=1")
        # Resolved once, before connecting; a later answer cannot move the connection.
        addresses = transport.resolve(target)
        dns["hooks.example.com"] = "10.9.9.9"
        outcome = transport._send(target, addresses[0], b"{}", {"X-Test": "1"})
        [got] = receiver.wait_for(1)
    assert outcome.status_code == 200
    assert got.path == "/in?x=1"
    assert got.headers["Host"] == f"hooks.example.com:{receiver.port}"


@pytest.mark.parametrize(
    ("env", "allowed"),
    [({}, "False"), ({"DEBUG": "true"}, "True"), ({"WEBHOOK_ALLOW_PRIVATE": "true"}, "True")],
)
def test_private_targets_are_allowed_in_development_only_unless_set(tmp_path, env, allowed):
    command = "from django.conf import settings as s; print(s.WEBHOOK_ALLOW_PRIVATE)"
    base = {**production_keys(), "DATA_DIR": str(tmp_path)}
    assert shell(command, {**base, **env}) == allowed
