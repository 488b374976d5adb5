"""What webhooks keep: one frozen body per event (pruned with the event's last delivery), and
secrets encrypted under WEBHOOK_KEY_RING, which production must be given and every host
must share. Existing rows migrate to both."""

from __future__ import annotations

import base64
import io
import secrets
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from marketplace.checks import check_shared_configuration
from marketplace.webhooks import delivery
from marketplace.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from marketplace.webhooks.outbox import webhook_create, webhook_event_record
from tests.factories import UserFactory
from tests.test_production_defaults import shell
from tests.test_settings import manage, production_keys
from tests.webhook_receiver import Receiver

BODIES = ("marketplace", "0015_webhook_events")
SECRETS = ("marketplace", "0016_webhook_secrets_encrypted")


def fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@pytest.mark.django_db(transaction=True)
def test_existing_bodies_and_secrets_migrate_and_back():
    executor = MigrationExecutor(connection)
    [before] = [p.key for p in executor.loader.graph.node_map[BODIES].parents]
    executor.migrate([before])
    old = executor.loader.project_state([before]).apps
    User = old.get_model("auth", "User")
    Endpoint = old.get_model("marketplace", "WebhookEndpoint")
    Delivery = old.get_model("marketplace", "WebhookDelivery")
    alice = User.objects.create(username="alice")
    now = timezone.now()
    hooks = [
        Endpoint.objects.create(
            owner_id=alice.pk, url=f"https://h.example/{n}", events="task.failed", secret=f"s{n}"
        )
        for n in range(3)
    ]
    for hook in hooks:  # one event to three endpoints, frozen three times
        Delivery.objects.create(
            event_id="evt_1", endpoint=hook, type="task.failed", object_id="t", created_at=now,
            status="delivered", body='{"id": "evt_1"}',
        )  # fmt: skip
    Delivery.objects.create(
        event_id="evt_2", endpoint=hooks[0], type="task.failed", object_id="u", created_at=now,
        status="pending",
    )  # fmt: skip

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    [event] = WebhookEvent.objects.all()
    assert (event.id, event.type, event.body) == ("evt_1", "task.failed", '{"id": "evt_1"}')
    assert WebhookDelivery.objects.count() == 4
    migrated = {e.url: e for e in WebhookEndpoint.objects.all()}
    for n in range(3):
        endpoint = migrated[f"https://h.example/{n}"]
        assert endpoint.secret == f"s{n}" and f"s{n}" not in endpoint.secret_encrypted

    executor.loader.build_graph()
    executor.migrate([before])
    back = executor.loader.project_state([before]).apps
    clear = back.get_model("marketplace", "WebhookEndpoint").objects.values_list("secret")
    assert sorted(clear) == [("s0",), ("s1",), ("s2",)]
    bodies = back.get_model("marketplace", "WebhookDelivery").objects.values_list("body")
    assert sorted(bodies, key=str) == [('{"id": "evt_1"}',)] * 3 + [(None,)]
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_an_events_body_is_pruned_with_its_last_delivery(monkeypatch):
    alice = UserFactory.create(username="alice")
    with Receiver() as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
        webhook_create(owner=alice, url=receiver.url + "2", events=["task.cancelled"])
        with transaction.atomic():
            event_id = webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="x")
        for pk in WebhookDelivery.objects.values_list("pk", flat=True):
            delivery.deliver(pk, 0)
        receiver.wait_for(2)
    assert WebhookEvent.objects.filter(pk=event_id).count() == 1
    assert delivery.deliveries_sweep()["pruned"] == 0
    later = timezone.now() + delivery.RETENTION + timedelta(minutes=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    delivery.deliveries_sweep()  # the deliveries (and their log), then the body
    assert not WebhookDelivery.objects.exists()
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rotation_moves_every_secret_to_the_first_key_and_reports_unreadable_ones(settings):
    alice = UserFactory.create(username="alice")
    first = webhook_create(owner=alice, url="http://127.0.0.1:9/a", events=["task.failed"])
    second = webhook_create(owner=alice, url="http://127.0.0.1:9/b", events=["task.failed"])
    clear = {first.pk: first.secret, second.pk: second.secret}
    old = settings.WEBHOOK_KEY_RING[0]
    new = fernet_key()
    settings.WEBHOOK_KEY_RING = [new, old]
    out = io.StringIO()
    call_command("rotate_webhook_secrets", stdout=out)
    assert "re-encrypted 2 webhook secrets" in out.getvalue()
    settings.WEBHOOK_KEY_RING = [new]
    for endpoint in WebhookEndpoint.objects.all():
        assert endpoint.secret == clear[endpoint.pk]
        assert (
            Fernet(new.encode()).decrypt(endpoint.secret_encrypted.encode()).decode()
            == (clear[endpoint.pk])
        )

    # A secret written under a key since dropped is left alone and named.
    settings.WEBHOOK_KEY_RING = [fernet_key()]
    with pytest.raises(CommandError, match=r"2 webhook secrets could not be decrypted"):
        call_command("rotate_webhook_secrets", stdout=io.StringIO())


def test_production_refuses_to_start_without_the_webhook_key_ring(tmp_path):
    env = {k: v for k, v in production_keys().items() if k != "WEBHOOK_KEY_RING"}
    result = manage("check", env={**env, "DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "WEBHOOK_KEY_RING must be set when DEBUG is off" in result.stderr
    assert "webhook_key_ring" not in {p.name for p in tmp_path.iterdir()}


def test_development_generates_the_ring_once_into_the_data_directory(tmp_path):
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path)}
    printed = "from django.conf import settings as s; print(s.WEBHOOK_KEY_RING)"
    first, again = shell(printed, env), shell(printed, env)
    assert first == again
    path = tmp_path / "webhook_key_ring"
    assert oct(path.stat().st_mode)[-3:] == "600"
    assert path.read_text().strip() in first
    Fernet(path.read_text().strip().encode())


@pytest.mark.django_db
def test_a_host_whose_ring_cannot_read_the_stored_secrets_refuses_to_start(settings):
    if connection.vendor != "postgresql":
        pytest.skip("hosts agree on keys only on a shared database")
    alice = UserFactory.create(username="alice")
    endpoint = webhook_create(owner=alice, url="http://127.0.0.1:9/a", events=["task.failed"])
    assert "hosts.E005" not in [m.id for m in check_shared_configuration()]
    settings.WEBHOOK_KEY_RING = [fernet_key()]
    [message] = [m for m in check_shared_configuration() if m.id == "hosts.E005"]
    assert f"webhook endpoint {endpoint.pk}" in message.msg
