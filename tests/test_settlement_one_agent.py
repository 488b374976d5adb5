"""One popular agent: many workers settle its tasks at once (SPEC §16), on real PostgreSQL.

Every settlement writes the agent's reputation row. Scored before its transaction and
written last by one conditional statement, a settlement that finds the standing moved
on scores again under the row's lock; either way each task gets exactly one event, the
receipt signs the delta that event recorded, and both audits replay exactly.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest
from django.db import connections

from escrow.audit import ledger_audit
from escrow.models import Escrow
from escrow.services import deposit_create, system_balance
from execution import settlement
from execution.engine.receipts import receipt_verify
from execution.models import Receipt
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent, Task
from marketplace.services import task_submit
from reputation.audit import reputation_audit
from reputation.models import AgentReputation, ReputationEvent
from tests.factories import AgentBinaryFactory, AgentFactory, UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _one_requester_submits_hundreds(settings):
    # These tests load one requester far past the abuse limit on purpose.
    settings.MAX_TASKS_IN_FLIGHT = 100_000


THREADS = 4
TASKS_EACH = 200
BUDGET = 50_000


def outcome(index: int) -> Execution:
    if index % 5 == 4:  # one in five fails, by the agent's fault
        return Execution(reason=Task.FailureReason.TRAP, fuel_limit=10_000)
    return Execution(exit_code=0, stdout=b"ok", fuel_used=1_000 + index, fuel_limit=10_000)


def popular_agent(owner) -> Agent:
    agent = AgentFactory.create(owner=owner, slug="popular", base_fee=1_000, fuel_price=2_000)
    Agent.objects.filter(pk=agent.pk).update(current_binary=AgentBinaryFactory.create(agent=agent))
    agent.refresh_from_db()
    return agent


def scored_under_lock(monkeypatch) -> list[int]:
    """A list that gets an item each time a settlement scores under the reputation lock."""
    calls: list[int] = []
    under_lock = settlement.reputation_score_locked

    def counted(**kwargs):
        calls.append(1)
        return under_lock(**kwargs)

    monkeypatch.setattr(settlement, "reputation_score_locked", counted)
    return calls


def test_four_workers_settling_one_agent_keep_both_audits_exact(bob, monkeypatch, capsys):
    rescored = scored_under_lock(monkeypatch)
    agent = popular_agent(bob)
    requesters = [UserFactory.create(username=f"r{i}") for i in range(THREADS)]
    for requester in requesters:
        deposit_create(user_id=requester.pk, amount=TASKS_EACH * BUDGET)
    tasks = {
        worker: [
            task_submit(requester=requester, agent=agent, input=str(i), budget=BUDGET).pk
            for i in range(TASKS_EACH)
        ]
        for worker, requester in enumerate(requesters)
    }
    errors: list[BaseException] = []
    settled: list[bool] = []
    barrier = threading.Barrier(THREADS)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for index, task_id in enumerate(tasks[worker]):
                claim = task_claim(task_id=task_id)
                assert claim is not None
                task, attempt = claim
                escrow = Escrow.objects.get(task_id=task_id)
                settled.append(
                    task_settle(
                        task_id=task_id,
                        attempt=attempt,
                        execution=outcome(index),
                        task=task,
                        escrow=escrow,
                    )
                )
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)

    assert errors == []
    total = THREADS * TASKS_EACH
    assert settled == [True] * total
    failures = THREADS * (TASKS_EACH // 5)
    assert Task.objects.filter(status="succeeded").count() == total - failures
    assert Task.objects.filter(status="failed").count() == failures
    rep = AgentReputation.objects.get(agent=agent)
    assert ReputationEvent.objects.filter(agent=agent).count() == total
    assert rep.successes + rep.failures + rep.neutral == total
    assert Escrow.objects.filter(status="funded").count() == 0
    assert system_balance("escrow") == 0
    # Every receipt signs the delta its task's event recorded, however it was scored.
    deltas = dict(ReputationEvent.objects.values_list("task_id", "delta"))
    receipts = list(Receipt.objects.all())
    assert len(receipts) == total
    for receipt in receipts:
        assert receipt_verify(receipt.as_dict())
        payload = json.loads(receipt.payload)
        assert Decimal(payload["reputation_delta"]) == deltas[receipt.task_id]
    with capsys.disabled():
        print(f"\none agent, {THREADS} workers: {len(rescored)} of {total} scored again")
    ledger = ledger_audit()
    assert ledger.ok, ledger.violations
    reputation = reputation_audit()
    assert reputation.ok, reputation.violations


@pytest.mark.parametrize(
    ("tries", "interleaved", "under_lock"),
    [
        # Its one statement refuses itself; in a transaction, its statement records all.
        (settlement.RESCORE_TRIES, 1, 0),
        # That statement records all but the reputation, which is scored again and
        # written without the lock, or (no tries left) under it. (The others settle
        # before each transaction begins: during it, they would wait on its rows.)
        (1, 2, 0),
        (0, 2, 1),
    ],
)
def test_a_standing_moved_on_before_the_statement_is_scored_again(
    bob, monkeypatch, settings, tries, interleaved, under_lock
):
    """Other settlements of the agent commit between a settlement's reads of the standing
    and its statements: nothing is written with a stale scoring; the outcome is scored
    again, and the receipt signs the delta the event recorded."""
    monkeypatch.setattr(settlement, "RESCORE_TRIES", tries)
    # One requester's successes move the agent by 5 a day at most: 3.4, then 1.6, then 0.
    settings.REPUTATION_DAILY_CAP_PER_REQUESTER = 5
    locked = scored_under_lock(monkeypatch)
    agent = popular_agent(bob)
    alice = UserFactory.create(username="alice")
    deposit_create(user_id=alice.pk, amount=(1 + interleaved) * BUDGET)
    tasks = [
        task_submit(requester=alice, agent=agent, input=str(i), budget=BUDGET)
        for i in range(1 + interleaved)
    ]
    first, others = tasks[0], tasks[1:]
    claims = {task.pk: task_claim(task_id=task.pk) for task in tasks}
    read = settlement.reputation_score
    waiting = list(others)

    def read_then_let_another_settle(**kwargs):
        scoring = read(**kwargs)
        if kwargs["task_id"] == first.pk and waiting:
            assert settle(waiting.pop(0).pk)
        return scoring

    def settle(task_id) -> bool:
        claim = claims[task_id]
        assert claim is not None
        task, attempt = claim
        escrow = Escrow.objects.get(task_id=task_id)
        success = Execution(exit_code=0, stdout=b"ok", fuel_used=1_000, fuel_limit=10_000)
        return task_settle(
            task_id=task_id, attempt=attempt, execution=success, task=task, escrow=escrow
        )

    monkeypatch.setattr(settlement, "reputation_score", read_then_let_another_settle)
    assert settle(first.pk) and waiting == []
    assert len(locked) == under_lock
    rep = AgentReputation.objects.get(agent=agent)
    assert rep.successes + rep.neutral == len(tasks) and rep.failures == 0
    events = {event.task_id: event for event in ReputationEvent.objects.filter(agent=agent)}
    assert set(events) == {task.pk for task in tasks}
    # Scored against the standing the last of the others left.
    assert events[first.pk].score_before == events[others[-1].pk].score_after
    if interleaved == 1:  # what was left of the cap: the receipt was signed again
        assert (events[others[0].pk].delta, events[first.pk].delta) == (
            Decimal("3.4"),
            Decimal("1.6"),
        )
    for task in tasks:
        receipt = Receipt.objects.get(task_id=task.pk)
        assert receipt_verify(receipt.as_dict())
        payload = json.loads(receipt.payload)
        assert Decimal(payload["reputation_delta"]) == events[task.pk].delta
        assert Task.objects.get(pk=task.pk).status == "succeeded"
    assert Escrow.objects.filter(status="released").count() == len(tasks)
    ledger = ledger_audit()
    assert ledger.ok, ledger.violations
    reputation = reputation_audit()
    assert reputation.ok, reputation.violations
