"""Submission, settlement, duplicates, stale attempts and recovery — the money paths of a task.

The run itself is replaced by the `Execution` it would produce; the sandbox has its own
tests, and the end-to-end tests run both together through real workers.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from hypothesis import given
from hypothesis import strategies as st

from escrow.errors import IdempotencyConflict, InsufficientFunds
from escrow.models import Account, Escrow, Transfer
from escrow.services import deposit_create, system_balance
from execution.engine.receipts import receipt_verify
from execution.runs import Execution, affordable_fuel, cost_for, fee_for
from execution.services import task_claim, task_settle, tasks_recover
from marketplace.errors import (
    AgentHasNoBinary,
    AgentUnavailable,
    BudgetTooLow,
    InputTooLarge,
    InvalidOutputSchema,
    LimitExceeded,
    TaskStateConflict,
)
from marketplace.models import Agent, Task
from marketplace.services import agent_update, task_cancel, task_submit
from reputation.models import AgentReputation, ReputationEvent
from tests.factories import AgentBinaryFactory, AgentFactory, UserFactory, held_for

D = Decimal


def balance(user) -> int:
    return Account.objects.get(user=user).balance


def submit(requester, agent, **options) -> Task:
    return task_submit(
        requester=requester,
        agent=agent,
        input=options.pop("input", "hi"),
        budget=options.pop("budget", 100_000),
        **options,
    )


def claimed(task: Task) -> int:
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    return claim[1]


# --- submission ---------------------------------------------------------------------------


def test_submission_funds_the_escrow_and_queues_the_task(
    requester, agent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task = submit(requester, agent, budget=250_000)
    assert task.status == Task.Status.QUEUED
    assert (task.binary_id, task.base_fee, task.fuel_price) == (
        agent.current_binary_id,
        1_000,
        2_000,
    )
    assert Escrow.objects.get(task=task).status == Escrow.Status.FUNDED
    assert balance(requester) == 10_000_000 - 250_000
    assert OrmQ.objects.count() == 1


def test_a_failed_submission_leaves_nothing_behind(
    alice, agent, django_capture_on_commit_callbacks
):
    deposit_create(user_id=alice.pk, amount=99_999)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(InsufficientFunds):
        submit(alice, agent, budget=100_000)
    assert (Task.objects.count(), Escrow.objects.count(), OrmQ.objects.count()) == (0, 0, 0)
    assert balance(alice) == 99_999


@pytest.mark.django_db(transaction=True)
def test_rollback_after_the_enqueue_leaves_nothing_queued(monkeypatch):
    """In the submission's transaction (channel payments, SQLite, a statement that refused
    itself), a failure after the task's message was sent takes the message back with it."""
    import marketplace.submissions as submissions

    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000_000)
    agent = AgentFactory.create(owner=bob)
    Agent.objects.filter(pk=agent.pk).update(current_binary=AgentBinaryFactory.create(agent=agent))
    agent.refresh_from_db()
    real_enqueue = submissions.task_enqueue

    def enqueue_then_fail(**kwargs):
        real_enqueue(**kwargs)
        raise RuntimeError("the database went away after the enqueue")

    monkeypatch.setattr(submissions, "_open_at_once", lambda batch: None)
    monkeypatch.setattr(submissions, "task_enqueue", enqueue_then_fail)
    with pytest.raises(RuntimeError):
        submit(alice, agent)
    assert (Task.objects.count(), OrmQ.objects.count(), Escrow.objects.count()) == (0, 0, 0)
    assert balance(alice) == 1_000_000


def test_submission_is_idempotent_per_key(requester, agent):
    first = submit(requester, agent, idempotency_key="k")
    again = submit(requester, agent, idempotency_key="k")
    assert again.pk == first.pk
    assert balance(requester) == 10_000_000 - 100_000
    with pytest.raises(IdempotencyConflict):
        submit(requester, agent, idempotency_key="k", budget=100_001)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"fuel_limit": 10**11}, LimitExceeded),
        ({"memory_limit_mb": 513}, LimitExceeded),
        ({"timeout_ms": 60_001}, LimitExceeded),
        ({"timeout_ms": 0}, LimitExceeded),
        ({"min_reputation": "101"}, LimitExceeded),
        ({"input": "x" * (1024 * 1024 + 1)}, InputTooLarge),
        ({"budget": 999}, BudgetTooLow),
        ({"output_schema": {"type": "nonsense"}}, InvalidOutputSchema),
    ],
)
def test_submission_refuses_bad_requests_without_a_trace(requester, agent, options, error):
    with pytest.raises(error):
        submit(requester, agent, **options)
    assert (Task.objects.count(), Escrow.objects.count()) == (0, 0)
    assert balance(requester) == 10_000_000


def test_submission_refuses_a_suspended_agent_or_one_without_binary(requester, agent, bob):
    Agent.objects.filter(pk=agent.pk).update(status="suspended")
    agent.refresh_from_db()
    with pytest.raises(AgentUnavailable):
        submit(requester, agent)
    bare = AgentFactory.create(owner=bob)
    with pytest.raises(AgentHasNoBinary):
        submit(requester, bare)


# --- settlement ---------------------------------------------------------------------------


def test_success_pays_for_what_was_used_and_refunds_the_rest(requester, agent, bob):
    task = submit(requester, agent, budget=250_000, fuel_limit=1_000_000)
    attempt = claimed(task)
    run = Execution(
        exit_code=0, stdout=b'{"ok": true}', fuel_used=123_457, fuel_limit=1_000_000, elapsed_ms=12
    )

    assert task_settle(task_id=task.pk, attempt=attempt, execution=run) is True

    # cost = 1_000 + ceil(123_457 * 2_000 / 1_000_000) = 1_000 + 247 = 1_247; fee = 5 % → 62
    task.refresh_from_db()
    assert (task.status, task.cost, task.fee, task.refund) == ("succeeded", 1_247, 62, 248_753)
    assert balance(requester) == 10_000_000 - 1_247
    assert (balance(bob), held_for(bob)) == (0, 1_247 - 62)  # the owner's share is held
    assert system_balance("platform_fees") == 62
    event = ReputationEvent.objects.get(task=task)
    # +2.0, + (1 − 123457/1e6) = 0.876543 → 0.8765, + 0.5 under a second
    assert event.delta == D("3.3765")
    receipt = json.loads(task.receipt.payload)
    assert receipt_verify(task.receipt.as_dict())
    assert (receipt["cost"], receipt["fee"], receipt["refund"], receipt["status"]) == (
        1_247,
        62,
        248_753,
        "succeeded",
    )
    assert receipt["output_sha256"] == task.output_sha256
    # Format 3: signed before the statement that scores the outcome, so without the delta,
    # which the task's reputation event holds.
    assert receipt["receipt_version"] == 3 and "reputation_delta" not in receipt


def test_cost_never_exceeds_the_budget(requester, agent):
    task = submit(requester, agent, budget=5_000)
    attempt = claimed(task)
    run = Execution(exit_code=0, fuel_used=10**12, fuel_limit=10**12, elapsed_ms=5_000)
    task_settle(task_id=task.pk, attempt=attempt, execution=run)
    task.refresh_from_db()
    assert (task.cost, task.fee, task.refund) == (5_000, 250, 0)
    assert balance(requester) == 10_000_000 - 5_000


@pytest.mark.parametrize(
    ("reason", "penalty"),
    [
        ("out_of_fuel", D("-5")),
        ("timeout", D("-5")),
        ("memory_limit", D("-5")),
        ("trap", D("-5")),
        ("exit_nonzero", D("-5")),
        ("output_too_large", D("-5")),
        ("invalid_output", D("-5")),
        ("validation_failed", D("0")),
        ("platform_error", D("0")),
    ],
)
def test_every_failure_refunds_everything_with_the_right_penalty(
    requester, agent, bob, reason, penalty
):
    # The budget buys the fuel the agent recommends, so running out of it is the agent's doing.
    agent_update(agent=agent, recommended_fuel=100_000_000)
    task = submit(requester, agent, budget=300_000)
    attempt = claimed(task)
    task_settle(task_id=task.pk, attempt=attempt, execution=Execution(reason=reason, fuel_used=999))
    task.refresh_from_db()
    assert (task.status, task.failure_reason, task.cost, task.fee, task.refund) == (
        "failed",
        reason,
        0,
        0,
        300_000,
    )
    assert balance(requester) == 10_000_000
    assert balance(bob) == 0
    assert Escrow.objects.get(task=task).status == "refunded"
    assert ReputationEvent.objects.get(task=task).delta == penalty
    assert AgentReputation.objects.get(agent=agent).score == D("50") + penalty
    assert receipt_verify(task.receipt.as_dict())


def test_a_second_delivery_of_the_same_attempt_changes_nothing(requester, agent, bob):
    task = submit(requester, agent)
    attempt = claimed(task)
    run = Execution(exit_code=0, fuel_used=1_000, fuel_limit=10_000, elapsed_ms=3)
    assert task_settle(task_id=task.pk, attempt=attempt, execution=run) is True
    before = (
        Transfer.objects.count(),
        balance(requester),
        balance(bob),
        ReputationEvent.objects.count(),
    )
    assert task_settle(task_id=task.pk, attempt=attempt, execution=run) is False
    assert (
        task_settle(task_id=task.pk, attempt=attempt, execution=Execution(reason="trap")) is False
    )
    assert task_claim(task_id=task.pk) is None
    after = (
        Transfer.objects.count(),
        balance(requester),
        balance(bob),
        ReputationEvent.objects.count(),
    )
    assert after == before


def test_a_stale_attempt_cannot_settle(requester, agent, bob):
    task = submit(requester, agent)
    first = claimed(task)
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks_recover()["requeued"] == 1
    second = claimed(task)
    assert second == first + 1
    lost_worker = Execution(exit_code=0, stdout=b"late", fuel_used=1, fuel_limit=10, elapsed_ms=1)
    assert task_settle(task_id=task.pk, attempt=first, execution=lost_worker) is False
    assert task_settle(task_id=task.pk, attempt=second, execution=Execution(reason="trap")) is True
    task.refresh_from_db()
    assert (task.status, task.attempts, task.refund) == ("failed", 2, 100_000)
    assert balance(bob) == 0


def test_recovery_fails_a_task_after_max_attempts_with_a_refund_and_no_penalty(
    requester, agent, settings
):
    settings.MAX_ATTEMPTS = 2
    task = submit(requester, agent)
    for expected in (
        {"requeued": 1, "failed": 0, "resent": 0, "errors": 0},
        {"requeued": 0, "failed": 1, "resent": 0, "errors": 0},
    ):
        claimed(task)
        Task.objects.filter(pk=task.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        assert tasks_recover() == expected
    task.refresh_from_db()
    assert (task.status, task.failure_reason, task.attempts, task.refund) == (
        "failed",
        "platform_error",
        2,
        100_000,
    )
    assert balance(requester) == 10_000_000
    assert AgentReputation.objects.get(agent=agent).score == D("50")


def test_recovery_resends_a_queued_task_whose_message_was_lost(
    requester, agent, settings, django_capture_on_commit_callbacks
):
    task = submit(requester, agent)
    OrmQ.objects.all().delete()
    Task.objects.filter(pk=task.pk).update(
        enqueued_at=timezone.now() - timedelta(seconds=settings.REQUEUE_AFTER_SECONDS + 1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks_recover()["resent"] == 1
        assert tasks_recover()["resent"] == 0
    assert OrmQ.objects.count() == 1


def test_cancel_refunds_a_queued_task_only(requester, agent):
    task = submit(requester, agent)
    cancelled = task_cancel(task=task)
    assert (cancelled.status, cancelled.refund) == ("cancelled", 100_000)
    assert balance(requester) == 10_000_000
    assert task_claim(task_id=task.pk) is None
    with pytest.raises(TaskStateConflict):
        task_cancel(task=task)
    running = submit(requester, agent)
    claimed(running)
    with pytest.raises(TaskStateConflict):
        task_cancel(task=running)
    task_settle(task_id=running.pk, attempt=1, execution=Execution(reason="platform_error"))


@given(
    base_fee=st.integers(0, 10**9),
    fuel_price=st.integers(0, 10**9),
    fuel_used=st.integers(0, 10**13),
    budget=st.integers(1, 10**12),
)
def test_cost_is_within_budget_and_fee_within_cost(base_fee, fuel_price, fuel_used, budget):
    cost = cost_for(base_fee=base_fee, fuel_price=fuel_price, fuel_used=fuel_used, budget=budget)
    assert 0 <= cost <= budget
    assert 0 <= fee_for(cost) <= cost


@given(
    budget=st.integers(1, 10**12), base_fee=st.integers(0, 10**6), fuel_price=st.integers(1, 10**6)
)
def test_the_fuel_a_run_gets_is_always_affordable(budget, base_fee, fuel_price):
    task = Task(budget=budget, base_fee=base_fee, fuel_price=fuel_price, fuel_limit=10**10)
    fuel = affordable_fuel(task)
    if budget >= base_fee:
        assert base_fee + -(-fuel * fuel_price // 1_000_000) <= budget


@given(fuel_used=st.integers(0, 10**13), fuel_price=st.integers(0, 10**9))
def test_cost_is_the_exact_ceiling_of_the_fuel_price(fuel_used, fuel_price):
    exact = math.ceil(Fraction(fuel_used * fuel_price, 1_000_000))
    cost = cost_for(base_fee=7, fuel_price=fuel_price, fuel_used=fuel_used, budget=10**30)
    assert cost == 7 + exact


def test_a_large_fuel_bill_is_not_rounded_through_a_float():
    used, price = 9_999_999_999_999, 999_999_999
    assert math.ceil(used * price / 1_000_000) == 9_999_999_989_999_000  # what a float gives
    assert cost_for(base_fee=0, fuel_price=price, fuel_used=used, budget=10**30) == (
        9_999_999_989_999_001
    )
