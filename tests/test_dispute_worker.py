"""The receipt's replay through a real qcluster worker on real PostgreSQL: asked for when the
dispute commits, and asked again by recovery when the message was lost."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from escrow.models import Dispute
from escrow.services import deposit_create
from execution.dispute_evidence import dispute_replays_recover
from marketplace import disputes as dispute_flows
from marketplace.binaries import binary_upload
from marketplace.disputes import dispute_file
from marketplace.models import Task
from marketplace.services import task_submit
from tests.factories import AgentFactory, UserFactory
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"


def replayed(dispute: Dispute) -> bool:
    return Dispute.objects.get(pk=dispute.pk).replay_status != "pending"


def test_a_worker_replays_the_receipt_of_a_disputed_task(monkeypatch, settings):
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    echo = AgentFactory.create(owner=bob, slug="echo", base_fee=1_000, fuel_price=1_000)
    binary_upload(agent=echo, data=ECHO.read_bytes())
    echo.refresh_from_db()
    tasks = [
        task_submit(requester=alice, agent=echo, input=text, budget=100_000)
        for text in ("first", "second")
    ]

    with Cluster() as cluster:
        wait_for(
            lambda: Task.objects.filter(status="succeeded").count() == 2,
            timeout=30,
            message="tasks to succeed",
            cluster=cluster,
        )
        first = dispute_file(task_id=tasks[0].pk, user=alice, reason="wrong")
        wait_for(lambda: replayed(first), timeout=30, message="the replay", cluster=cluster)
        # The second dispute's message is lost: recovery asks again once it is overdue.
        with monkeypatch.context() as patch:
            patch.setattr(dispute_flows, "service_send", lambda *args, **kwargs: None)
            second = dispute_file(task_id=tasks[1].pk, user=alice, reason="wrong")
        assert dispute_replays_recover() == 0  # asked for just now
        later = timezone.now() + timedelta(seconds=settings.DISPUTE_REPLAY_RETRY_SECONDS + 1)
        assert dispute_replays_recover(now=later) == 1
        wait_for(
            lambda: replayed(second), timeout=30, message="the re-sent replay", cluster=cluster
        )

    for dispute, task in ((first, tasks[0]), (second, tasks[1])):
        dispute.refresh_from_db()
        task.refresh_from_db()
        assert (dispute.replay_status, dispute.replay_attempts) == ("matched", 1)
        assert dispute.replay_output_sha256 == task.output_sha256
        assert dispute.replay_detail == f"output hash {task.output_sha256}"
