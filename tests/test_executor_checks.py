"""Pre-execution checks: a task that must not run is refunded in full, with no penalty."""

from __future__ import annotations

from decimal import Decimal

import pytest

import execution.services as executor
from execution.services import task_execute
from marketplace.errors import BudgetTooLow
from marketplace.models import Agent, Task
from marketplace.services import agent_suspend, task_submit
from reputation.models import AgentReputation
from reputation.policies import Outcome
from reputation.services import reputation_apply
from tests.factories import balance, make_agent


@pytest.fixture
def echo(bob) -> Agent:
    return make_agent(bob, base_fee=1_000, fuel_price=2_000)


@pytest.fixture
def queued(funded_alice, echo) -> Task:
    return task_submit(requester=funded_alice, agent=echo, input="x", budget=100_000)


def assert_refunded_without_penalty(task: Task, reason: str, detail: str) -> None:
    task.refresh_from_db()
    assert (task.status, task.failure_reason) == ("failed", reason)
    assert detail in task.failure_detail
    assert (task.cost, task.fee, task.refund) == (0, 0, 100_000)
    assert balance(task.requester) == 10_000_000
    assert balance(task.agent.owner) == 0
    assert task.reputation_event.delta == 0
    assert task.reputation_event.outcome == "neutral"
    assert task.escrow.status == "refunded"


def test_a_task_for_an_agent_suspended_after_submission_is_refunded(queued, echo):
    assert agent_suspend(agent=echo)
    assert task_execute(task_id=queued.pk) == "attempt 1: validation_failed"
    assert_refunded_without_penalty(queued, "validation_failed", "suspended")


def test_a_task_whose_agent_fell_below_its_minimum_reputation_is_refunded(queued, echo):
    for _ in range(5):  # five failures elsewhere: 50 → 25, below the default minimum of 30
        reputation_apply(agent_id=echo.pk, task_id=None, outcome=Outcome("failure"))
    assert AgentReputation.objects.get(agent=echo).score == Decimal("25")
    task_execute(task_id=queued.pk)
    assert_refunded_without_penalty(queued, "validation_failed", "below the task's minimum")


def test_a_failure_of_the_platform_while_running_is_refunded(queued, monkeypatch):
    def broken(task, **kwargs):
        raise OSError("the disk went away")

    monkeypatch.setattr(executor, "run_in_sandbox", broken)
    assert task_execute(task_id=queued.pk) == "attempt 1: platform_error"
    assert_refunded_without_penalty(queued, "platform_error", "the platform failed")


def test_a_task_already_taken_is_not_run_again(queued, monkeypatch):
    monkeypatch.setattr(executor, "run_in_sandbox", lambda task, **kw: pytest.fail("ran twice"))
    Task.objects.filter(pk=queued.pk).update(status="running", attempts=1)
    assert task_execute(task_id=queued.pk) == "not queued: nothing to do"
    Task.objects.filter(pk=queued.pk).update(status="queued", attempts=0)


def test_a_budget_that_buys_no_fuel_is_refused_before_any_money_moves(funded_alice, echo):
    with pytest.raises(BudgetTooLow, match="at least 1001"):
        task_submit(requester=funded_alice, agent=echo, input="x", budget=1_000)
    assert balance(funded_alice) == 10_000_000
    assert not Task.objects.exists()
