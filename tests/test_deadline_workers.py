"""Deadlines (SPEC §19) with real qcluster workers on real PostgreSQL: the only task worker
is busy with a slow task, so the tasks queued behind it cannot start by their deadlines;
the sweep cancels them as deadline_passed within 5 s of their deadlines all the same, with
their budgets back to the µCR (escrow and channel), a `task.cancelled` webhook each and no
reputation event, and a request waiting on one of them (`Prefer: wait`) is woken by the
cancellation. The slow task had a deadline too, and was running by then: it finishes
under its own timeout. bob owns the agents, alice submits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from escrow.audit import ledger_audit
from escrow.channels import channel_open, key_register
from escrow.models import Escrow, PaymentChannel
from escrow.services import deposit_create
from marketplace.binaries import binary_upload
from marketplace.models import Agent, Task
from marketplace.services import task_submit
from marketplace.task_wait import listener_stop
from marketplace.webhooks.models import WebhookDelivery
from marketplace.webhooks.outbox import webhook_create
from reputation.models import ReputationEvent
from tests import wasm_modules as wasm
from tests.api.conftest import client_for
from tests.factories import KEY, AgentFactory, balance, public, sign
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
FUNDS = 50_000_000
BUDGET = 100_000
CHANNEL_DEPOSIT = 1_000_000
# The blocker spins until its timeout: 8 s, with the q2 limits that allows.
BLOCK_MS = 8_000
LONG_RUNS = {"TASK_MAX_TIMEOUT_MS": str(BLOCK_MS), "Q_TIMEOUT": "14", "Q_RETRY": "15"}


def cluster_for_long_runs() -> Cluster:
    return Cluster(workers=1, **LONG_RUNS)  # type: ignore[arg-type]  # env, not short_limits


@pytest.fixture(autouse=True)
def _no_listener_left():
    yield
    listener_stop()  # its connection would keep the test database from being dropped


def agent_with(owner: Any, slug: str, code: bytes, **fields: Any) -> Agent:
    agent = AgentFactory.create(owner=owner, slug=slug, base_fee=1_000, **fields)
    binary_upload(agent=agent, data=code)
    agent.refresh_from_db()
    return agent


def test_tasks_behind_a_busy_worker_are_cancelled_at_their_deadlines_with_full_refunds(alice, bob):
    deposit_create(user_id=alice.pk, amount=FUNDS)
    spin = agent_with(bob, "spin", wasm.SPIN, fuel_price=1)
    echo = agent_with(bob, "echo", ECHO.read_bytes(), fuel_price=1_000)
    endpoint = webhook_create(
        owner=alice, url="http://127.0.0.1:9/hooks", events=["task.cancelled"]
    )
    key_register(user_id=alice.pk, public_key=public(KEY))
    channel = channel_open(
        requester_user_id=alice.pk, agent_id=echo.pk, payee_user_id=bob.pk, deposit=CHANNEL_DEPOSIT
    )
    client = client_for(alice)

    with cluster_for_long_runs() as cluster:
        warm = task_submit(requester=alice, agent=echo, input="warm", budget=BUDGET)
        wait_for(
            lambda: Task.objects.filter(pk=warm.pk, status="succeeded").exists(),
            timeout=30,
            message="the cluster to run a first task",
            cluster=cluster,
        )
        # The worker is idle: this starts at once, so its deadline never touches it.
        blocker = task_submit(
            requester=alice,
            agent=spin,
            input="",
            budget=BUDGET,
            fuel_limit=10_000_000_000,
            timeout_ms=BLOCK_MS,
            deadline_seconds=3,
        )
        wait_for(
            lambda: Task.objects.filter(pk=blocker.pk, status="running").exists(),
            timeout=20,
            message="the blocker to start",
            cluster=cluster,
        )
        late = [
            task_submit(
                requester=alice, agent=echo, input="late", budget=BUDGET, deadline_seconds=2
            )
            for _ in range(3)
        ]
        by_channel = task_submit(
            requester=alice,
            agent=echo,
            input="late",
            budget=BUDGET,
            deadline_seconds=2,
            payment="channel",
            channel=str(channel.pk),
            voucher=sign(channel.pk, 1, BUDGET),
        )
        # And one through the API that waits for its answer.
        waited = client.post(
            "/api/v1/tasks/",
            {"agent": "echo", "input": "late", "budget": BUDGET, "deadline_seconds": 2},
            format="json",
            HTTP_PREFER="wait=20",
        )
        answered_at = timezone.now()

        assert waited.status_code == 201, (waited.content, cluster.output())
        body = waited.json()
        assert (body["status"], body["failure_reason"]) == ("cancelled", "deadline_passed")
        assert (body["cost"], body["refund"]) == (0, BUDGET)
        deadline = parse_datetime(body["deadline_at"])
        assert deadline is not None and answered_at - deadline < timedelta(seconds=5)
        through_api = Task.objects.get(pk=body["id"])
        everyone = [*late, by_channel, through_api]
        wait_for(
            lambda: (
                Task.objects.filter(pk__in=[t.pk for t in everyone], status="cancelled").count()
                == len(everyone)
            ),
            timeout=10,
            message="the late tasks to be cancelled",
            cluster=cluster,
        )
        # Cancelled while the only worker was still busy: by the sweep, not a claim.
        assert Task.objects.get(pk=blocker.pk).status == "running"
        for task in everyone:
            task.refresh_from_db()
            assert task.finished_at is not None and task.deadline_at is not None
            print(
                f"\ncancelled {(task.finished_at - task.deadline_at).total_seconds():.2f} s "
                "after its deadline"
            )
            assert (task.status, task.failure_reason) == ("cancelled", "deadline_passed")
            assert (task.cost, task.fee, task.refund) == (0, 0, BUDGET)
            assert task.started_at is None and task.attempts == 0
            assert task.finished_at - task.deadline_at < timedelta(seconds=5), task.pk
            assert task.finished_at >= task.deadline_at
        wait_for(
            lambda: Task.objects.filter(pk=blocker.pk, status__in=Task.FINAL_STATUSES).exists(),
            timeout=30,
            message="the blocker to finish",
            cluster=cluster,
        )

    # The blocker ran to its own end, whatever its deadline said.
    blocker.refresh_from_db()
    assert blocker.status in ("failed", "succeeded")
    assert blocker.failure_reason in ("timeout", "out_of_fuel", "")
    assert blocker.started_at is not None and (blocker.elapsed_ms or 0) >= 1_000
    # Every late budget came back: alice paid for the first task and the blocker alone.
    warm.refresh_from_db()
    assert warm.cost is not None
    assert balance(alice) == FUNDS - CHANNEL_DEPOSIT - warm.cost - (blocker.cost or 0)
    assert {Escrow.objects.get(task_id=t.pk).status for t in [*late, through_api]} == {"refunded"}
    assert Escrow.objects.get(task_id=by_channel.pk).status == "cancelled"
    channel = PaymentChannel.objects.get(pk=channel.pk)
    assert (channel.redeemed, channel.reserved, channel.in_flight) == (0, 0, 0)
    assert not ReputationEvent.objects.filter(task_id__in=[t.pk for t in everyone]).exists()
    hooked = WebhookDelivery.objects.filter(endpoint=endpoint, type="task.cancelled")
    assert set(hooked.values_list("object_id", flat=True)) == {str(t.pk) for t in everyone}
    assert ledger_audit().ok
