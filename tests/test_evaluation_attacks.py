"""Evaluated settlement under attack (SPEC §21): every way we tried to make a µCR be lost,
created, paid twice or left stuck, or an agent's or evaluator's reputation be griefed,
through escrow-paid evaluated tasks. Each test is one attack and what stopped it.

Runs are replaced by the `Execution` they would produce (tests/test_evaluation.py's helpers);
the races run in real threads on PostgreSQL. The ledger and reputation audits run after each
test (tests/conftest.py).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from escrow.models import Earning
from escrow.services import deposit_create
from execution.evaluation import evaluation_decide
from execution.services import task_claim, task_settle
from marketplace.models import Agent, Evaluation, Task
from marketplace.services import task_submit
from reputation.models import AgentReputation, ReputationEvent
from tests.factories import balance, held_for, make_agent
from tests.test_evaluation import (
    BUDGET,
    JUDGE_COST,
    JUDGE_FEE,
    evaluate,
    judged,
    run_of,
    succeed,
    verdict,
)

FUNDS = 10_000_000


@pytest.fixture
def judge(charlie) -> Agent:
    return make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000)


@pytest.fixture
def evaluated_agent(agent, judge) -> Agent:
    agent.accepted_evaluators.add(judge)
    return agent


def submit(requester, agent, **options) -> Task:
    options.setdefault("evaluator", "judge")
    return task_submit(requester=requester, agent=agent, input="hi", budget=BUDGET, **options)


def settle_run(task: Task, stdout: bytes) -> Task:
    """The evaluator's run claimed and settled with `stdout`, its verdict not decided yet."""
    run = run_of(task)
    assert task_claim(task_id=run.pk) is not None
    assert task_settle(task_id=run.pk, attempt=1, execution=judged(stdout))
    return run


# --- what the evaluator prints -------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [pytest.param("bad\u0000answer", id="nul"), pytest.param("bad\ud800answer", id="surrogate")],
)
def test_a_reason_the_database_cannot_store_does_not_hold_the_money_hostage(
    requester, evaluated_agent, bob, charlie, reason
):
    """Attack: the evaluator prints a well-formed verdict whose reason holds a NUL (or a lone
    surrogate, "\\ud800" in its JSON): text PostgreSQL can't store. If the verdict could not
    be written, the task's earnings would wait (`evaluating`) for ever, undisputable."""
    import json

    task = succeed(submit(requester, evaluated_agent))
    printed = json.dumps({"accept": False, "score": 0.1, "reason": reason}).encode()
    run = settle_run(task, printed)
    assert evaluation_decide(run_id=run.pk)
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.status, evaluation.verdict) == ("decided", "reject")
    assert evaluation.reason == "bad\ufffdanswer"
    assert balance(requester) == FUNDS - JUDGE_COST
    assert held_for(bob) == 0 and held_for(charlie) == JUDGE_COST - JUDGE_FEE
    assert Earning.objects.get(task=task).status == "refunded"


# --- reputation ----------------------------------------------------------------------------


def test_an_agents_owner_cannot_grief_the_evaluator_by_disputing_its_own_task(bob, judge):
    """Attack: bob owns the agent, submits a task to it himself naming charlie's judge, the
    judge accepts, bob disputes and (as the owner) accepts his own dispute: the verdict
    'overturned' by the one person who both asked and answered. Scoring that would let any
    agent owner sink an evaluator's score for the price of its run."""
    from marketplace.disputes import dispute_accept, dispute_file

    deposit_create(user_id=bob.pk, amount=FUNDS)
    own = make_agent(bob, slug="mine")
    own.accepted_evaluators.add(judge)
    task = succeed(submit(bob, own))
    evaluate(task, judged(verdict(True)))
    before = AgentReputation.objects.get(agent=judge).score
    dispute = dispute_file(task_id=task.pk, user=bob, reason="my own task")
    dispute_accept(dispute_id=dispute.pk, user=bob)
    event = ReputationEvent.objects.get(agent=judge, reason="verdict_overturned")
    assert (event.outcome, event.neutral_reason, event.delta) == (
        "neutral",
        "self_dealing",
        Decimal(0),
    )
    assert AgentReputation.objects.get(agent=judge).score == before
    # bob paid his own agent and got it back; the judge's run stays paid.
    assert balance(bob) == FUNDS - JUDGE_COST
