"""Disputes resolved under concurrency, on real PostgreSQL: the owner's accepts race the
overdue sweep while the same key submits and settles new tasks of the same agent. Every
dispute is refunded exactly once — one refund, one reputation event, one give-back to the
key — and nothing deadlocks (the shared lock order: key, channel, dispute, reputation,
earning, accounts). The ledger and reputation audits run after the test (tests/conftest.py).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from escrow.disputes import DisputeStateError
from escrow.models import Dispute, Transfer
from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_create
from marketplace.disputes import dispute_accept, dispute_file, disputes_resolve_overdue
from marketplace.models import Task
from marketplace.services import task_submit
from reputation.models import ReputationEvent
from tests.concurrency import run_threads
from tests.factories import UserFactory, make_agent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DISPUTES = 6
NEW_TASKS = 4
BUDGET = 100_000
RUN = Execution(exit_code=0, fuel_used=1_000_000, fuel_limit=10**8, elapsed_ms=3)
COST = 3_000  # 1 000 µCR base fee + 1 000 000 fuel at 2 000 µCR per million


def run(requester, agent, key) -> Task:
    task = task_submit(requester=requester, agent=agent, input="x", budget=BUDGET, api_key=key)
    task_claim(task_id=task.pk)
    task_settle(task_id=task.pk, attempt=1, execution=RUN)
    return task


def test_racing_resolutions_refund_each_dispute_exactly_once():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=100_000_000)
    agent = make_agent(bob, slug="echo")
    key, _ = api_key_create(user=alice, name="bot", scopes=["tasks:write"])
    disputes = [
        dispute_file(task_id=run(alice, agent, key).pk, user=alice, reason="wrong")
        for _ in range(DISPUTES)
    ]
    Dispute.objects.update(respond_by=timezone.now() - timedelta(seconds=1))
    assert ApiKey.objects.get(pk=key.pk).spent_total == DISPUTES * COST
    refused: list[int] = []
    swept: list[int] = []
    lock = threading.Lock()

    def body(index: int) -> None:
        if index < DISPUTES:
            try:
                dispute_accept(dispute_id=disputes[index].pk, user=bob)
            except DisputeStateError:
                with lock:
                    refused.append(index)
        elif index < DISPUTES + 2:
            done = disputes_resolve_overdue()
            with lock:
                swept.append(done)
        else:
            run(alice, agent, key)

    errors = run_threads(DISPUTES + 2 + NEW_TASKS, body)

    assert errors == []
    assert DISPUTES - len(refused) + sum(swept) == DISPUTES  # each resolved by one of them
    assert Dispute.objects.filter(status="accepted", refunded=COST).count() == DISPUTES
    for dispute in disputes:
        assert ReputationEvent.objects.filter(dispute=dispute).count() == 1
        legs = Transfer.objects.filter(task=dispute.task_id, kind__startswith="dispute_")
        assert sorted(legs.values_list("amount", flat=True)) == [150, COST - 150]
    # The key counts the new tasks' cost alone: each refund was given back once.
    assert ApiKey.objects.get(pk=key.pk).spent_total == NEW_TASKS * COST
