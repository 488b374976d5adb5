"""Held earnings on real PostgreSQL: the sweep's statement count, and disputes racing it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from escrow.disputes import DisputeWindowClosed
from escrow.earnings import earnings_release_batch, earnings_release_due
from escrow.models import Dispute, Earning, Escrow, Transfer
from escrow.services import deposit_create
from execution.services import task_claim, task_settle
from marketplace.disputes import dispute_file
from marketplace.services import task_submit
from tests.concurrency import run_threads
from tests.factories import RUN, SHARE, balance, held_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TASKS = 1_000
RACERS = 24


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
    # SELECT earnings FOR NO KEY UPDATE SKIP LOCKED, UPDATE them, then one ledger statement
    # (lock and update the balances, insert the transfers): five with BEGIN/COMMIT.
    assert statements == ["BEGIN", "SELECT", "UPDATE", "WITH", "COMMIT"]
    assert (balance(bob), held_for(bob)) == (TASKS * SHARE, 0)
    # One transfer per earnings shard the tasks settled in.
    shards = set(Escrow.objects.values_list("shard", flat=True))
    assert Transfer.objects.filter(kind="earnings_release").count() == len(shards)
    assert not Earning.objects.exclude(status="released").exists()
    assert earnings_release_due(now=now) == 0


def test_a_dispute_racing_the_sweep_ends_frozen_or_released_never_both(alice, bob, agent, settings):
    settings.EARNINGS_HOLD_SECONDS = 60
    deposit_create(user_id=alice.pk, amount=RACERS * 100_000)
    tasks = []
    for n in range(RACERS):
        task = task_submit(requester=alice, agent=agent, input=str(n), budget=100_000)
        task_claim(task_id=task.pk)
        task_settle(task_id=task.pk, attempt=1, execution=RUN)
        tasks.append(task.pk)
    Earning.objects.update(release_at=timezone.now() - timedelta(seconds=1))  # all matured
    opened, closed = [], []

    def race(index: int) -> None:
        if index == 0:
            earnings_release_due(batch=1)  # one row per transaction: the most interleaving
            return
        try:
            dispute_file(task_id=tasks[index - 1], user=alice, reason="wrong")
            opened.append(tasks[index - 1])
        except DisputeWindowClosed:
            closed.append(tasks[index - 1])

    assert run_threads(RACERS + 1, race) == []

    statuses = dict(Earning.objects.values_list("task_id", "status"))
    disputed = set(Dispute.objects.values_list("task_id", flat=True))
    assert set(opened) == disputed and len(opened) + len(closed) == RACERS
    assert {task for task, status in statuses.items() if status == "frozen"} == disputed
    assert {task for task, status in statuses.items() if status == "released"} == set(closed)
    assert (balance(bob), held_for(bob)) == (len(closed) * SHARE, len(opened) * SHARE)
    released = Transfer.objects.filter(kind="earnings_release")
    assert sum(released.values_list("amount", flat=True)) == len(closed) * SHARE
