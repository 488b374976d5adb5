"""Webhook deliveries don't wait behind task runs (SPEC §18): with 500 tasks queued, events
reach their receiver within 2 s (p95), through real worker processes on PostgreSQL."""

from __future__ import annotations

import time

import pytest

from escrow.services import deposit_create
from marketplace.binaries import binary_upload
from marketplace.models import Task
from marketplace.services import task_submit
from marketplace.webhooks.models import WebhookDelivery
from marketplace.webhooks.outbox import webhook_create, webhook_ping
from tests import wasm_modules as wasm
from tests.factories import AgentFactory, UserFactory
from tests.webhook_receiver import Receiver
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BACKLOG = 500


def test_webhooks_are_delivered_within_two_seconds_behind_a_backlog_of_500_tasks(settings, capsys):
    settings.MAX_TASKS_IN_FLIGHT = 1_000
    settings.WEBHOOK_PING_RATE = "100/minute"  # 20 pings here measure latency, not the limit
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    charlie = UserFactory.create(username="charlie")
    deposit_create(user_id=alice.pk, amount=100_000_000)
    agent = AgentFactory.create(owner=bob, slug="slow", base_fee=1_000, fuel_price=1)
    binary_upload(agent=agent, data=wasm.busy(60_000_000))  # about a tenth of a second a run
    agent.refresh_from_db()
    with Receiver() as receiver:
        webhook_create(owner=alice, url=receiver.url + "/alice", events=["task.succeeded"])
        pings = webhook_create(owner=charlie, url=receiver.url + "/charlie", events=["task.failed"])
        for i in range(BACKLOG):
            task_submit(requester=alice, agent=agent, input=str(i), budget=100_000)
        with Cluster(workers=1, MAX_TASKS_IN_FLIGHT="1000") as cluster:
            wait_for(
                lambda: Task.objects.filter(status="succeeded").count() >= 5,
                timeout=60,
                message="the backlog to be under way",
                cluster=cluster,
            )
            for _ in range(20):
                webhook_ping(endpoint=pings)
                time.sleep(0.25)
            queued_meanwhile = Task.objects.filter(status="queued").count()
            wait_for(
                lambda: len([r for r in receiver.received if r.path.endswith("/charlie")]) == 20,
                timeout=60,
                message="every ping to arrive",
                cluster=cluster,
            )
            time.sleep(1)  # the task events of the last settlements land
    received = {
        r.body.decode().split('"id":"', 1)[1].split('"', 1)[0]: r.at for r in receiver.received
    }
    latencies = sorted(
        received[row.event_id] - row.created_at.timestamp()
        for row in WebhookDelivery.objects.filter(status="delivered")
        if row.event_id in received
    )
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    with capsys.disabled():
        print(
            f"\n  {len(latencies)} webhooks delivered while {queued_meanwhile}+ tasks waited: "
            f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
    assert queued_meanwhile >= 350  # the backlog was there throughout
    assert len(latencies) >= 25
    assert p95 < 2.0
