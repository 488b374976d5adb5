"""Held earnings on real PostgreSQL: the sweep's batches and their statement count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from escrow.earnings import earnings_release_batch, earnings_release_due
from escrow.models import Earning, Transfer
from escrow.services import deposit_create
from execution.services import task_claim, task_settle
from marketplace.models import Agent
from marketplace.services import task_submit
from tests.factories import AgentBinaryFactory, AgentFactory, balance, held_for
from tests.test_earnings import RUN, SHARE

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TASKS = 1_000


@pytest.fixture
def agent(bob):
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1_000, fuel_price=2_000)
    Agent.objects.filter(pk=agent.pk).update(current_binary=AgentBinaryFactory.create(agent=agent))
    agent.refresh_from_db()
    return agent


def test_the_sweep_releases_a_thousand_tasks_in_one_batch_of_few_statements(
    alice, bob, agent, settings, capsys
):
    settings.EARNINGS_HOLD_SECONDS = 60
    deposit_create(user_id=alice.pk, amount=TASKS * 100_000)
    for n in range(TASKS):
        task = task_submit(requester=alice, agent=agent, input=str(n), budget=100_000)
        task_claim(task_id=task.pk)
        task_settle(task_id=task.pk, attempt=1, execution=RUN)
    assert (balance(bob), held_for(bob)) == (0, TASKS * SHARE)

    now = timezone.now() + timedelta(seconds=61)
    with CaptureQueriesContext(connection) as queries:
        released = earnings_release_batch(now=now, batch=TASKS)
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    with capsys.disabled():
        print(f"\nsweep of {TASKS} matured earnings: {len(statements)} statements {statements}")
    assert released == TASKS
    # SELECT earnings FOR NO KEY UPDATE SKIP LOCKED, UPDATE them, SELECT accounts FOR NO KEY
    # UPDATE, UPDATE balances, INSERT transfers: seven with BEGIN/COMMIT, whatever the batch.
    assert statements == ["BEGIN", "SELECT", "UPDATE", "SELECT", "UPDATE", "INSERT", "COMMIT"]
    assert (balance(bob), held_for(bob)) == (TASKS * SHARE, 0)
    assert Transfer.objects.filter(kind="earnings_release").count() == 1
    assert not Earning.objects.exclude(status="released").exists()
    assert earnings_release_due(now=now) == 0
