"""One popular agent: many workers settle its tasks at once (SPEC §16, §20), on real
PostgreSQL.

Every settlement writes the agent's reputation row. Its one statement scores the outcome
in SQL under that row's lock, last, against the standing the settlement it waited for
left: each settlement is one round trip however busy the agent, each task gets exactly
one event, and both audits replay exactly.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from itertools import pairwise

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from escrow.audit import ledger_audit
from escrow.models import Escrow
from escrow.services import deposit_create, system_balance
from execution.engine.receipts import receipt_verify
from execution.models import Receipt
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent, Task
from marketplace.services import task_submit
from reputation.audit import reputation_audit
from reputation.models import AgentReputation, ReputationEvent
from reputation.policies import Outcome
from reputation.services import reputation_apply
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


def test_four_workers_settling_one_agent_keep_both_audits_exact(bob, capsys):
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
    round_trips: list[int] = []
    barrier = threading.Barrier(THREADS)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for index, task_id in enumerate(tasks[worker]):
                claim = task_claim(task_id=task_id)
                assert claim is not None
                task, attempt = claim
                escrow = Escrow.objects.get(task_id=task_id)
                with CaptureQueriesContext(connection) as captured:
                    settled.append(
                        task_settle(
                            task_id=task_id,
                            attempt=attempt,
                            execution=outcome(index),
                            task=task,
                            escrow=escrow,
                        )
                    )
                round_trips.append(len(captured.captured_queries))
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
    assert round_trips == [1] * total  # never read first, never scored again
    failures = THREADS * (TASKS_EACH // 5)
    assert Task.objects.filter(status="succeeded").count() == total - failures
    assert Task.objects.filter(status="failed").count() == failures
    rep = AgentReputation.objects.get(agent=agent)
    assert ReputationEvent.objects.filter(agent=agent).count() == total
    assert rep.successes + rep.failures + rep.neutral == total
    assert Escrow.objects.filter(status="funded").count() == 0
    assert system_balance("escrow") == 0
    # Every receipt verifies; the delta is its task's event's (format 3 signs none).
    receipts = list(Receipt.objects.all())
    assert len(receipts) == total
    for receipt in receipts:
        assert receipt_verify(receipt.as_dict())
        assert "reputation_delta" not in json.loads(receipt.payload)
    events = list(ReputationEvent.objects.filter(agent=agent).order_by("id"))
    assert all(a.score_after == b.score_before for a, b in pairwise(events))
    with capsys.disabled():
        print(f"\none agent, {THREADS} workers: {total} settlements of 1 round trip each")
    ledger = ledger_audit()
    assert ledger.ok, ledger.violations
    reputation = reputation_audit()
    assert reputation.ok, reputation.violations


def test_a_settlement_waiting_on_the_agent_scores_against_what_it_waited_for(bob, settings):
    """Another writer of the agent's reputation (here a dispute's event, scored in Python)
    holds the row when a settlement's statement reaches it: the statement waits, then
    scores against the standing and the requester's day that writer left, not the ones of
    its snapshot; nothing is written with a stale standing."""
    # One requester moves the agent by 5 a day at most: 3.4, then what is left, 1.6.
    settings.REPUTATION_DAILY_CAP_PER_REQUESTER = 5
    agent = popular_agent(bob)
    alice = UserFactory.create(username="alice")
    deposit_create(user_id=alice.pk, amount=BUDGET)
    task = task_submit(requester=alice, agent=agent, input="x", budget=BUDGET)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    claimed, attempt = claim
    escrow = Escrow.objects.get(task_id=task.pk)
    success = Execution(exit_code=0, stdout=b"ok", fuel_used=1_000, fuel_limit=10_000)
    holding, settled = threading.Event(), []

    def other_writer() -> None:
        try:
            with transaction.atomic():
                reputation_apply(
                    agent_id=agent.pk,
                    task_id=None,
                    requester_id=alice.pk,
                    outcome=Outcome(kind="success", fuel_used=1_000, fuel_limit=10_000),
                )
                holding.set()
                waiting_on_a_lock(seconds=10)
        finally:
            connections.close_all()

    def settle() -> None:
        try:
            holding.wait(10)
            settled.append(
                task_settle(
                    task_id=task.pk, attempt=attempt, execution=success, task=claimed, escrow=escrow
                )
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=other_writer), threading.Thread(target=settle)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert settled == [True]
    first, second = ReputationEvent.objects.filter(agent=agent).order_by("id")
    assert (first.task_id, second.task_id) == (None, task.pk)
    assert (first.delta, second.delta) == (Decimal("3.4"), Decimal("1.6"))
    assert second.score_before == first.score_after
    rep = AgentReputation.objects.get(agent=agent)
    assert (rep.score, rep.successes, rep.requesters) == (second.score_after, 2, 1)
    assert Task.objects.get(pk=task.pk).status == "succeeded"
    ledger = ledger_audit()
    assert ledger.ok, ledger.violations
    reputation = reputation_audit()
    assert reputation.ok, reputation.violations


def waiting_on_a_lock(*, seconds: float) -> None:
    """Return once another session waits on a lock (this one's), or after `seconds`."""
    deadline = time.monotonic() + seconds
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0] > 0:
                return
            time.sleep(0.02)
    raise AssertionError("the settlement never waited on the agent's row")
