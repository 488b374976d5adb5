"""Evaluated settlement under attack (SPEC §21): every way we tried to make a µCR be lost,
created, paid twice or left stuck, or an agent's or evaluator's reputation be griefed,
through escrow-paid evaluated tasks. Each test is one attack and what stopped it.

Runs are replaced by the `Execution` they would produce (tests/test_evaluation.py's helpers);
the races run in real threads on PostgreSQL. The ledger and reputation audits run after each
test (tests/conftest.py).
"""

from __future__ import annotations

import pytest

from escrow.models import Earning
from execution.evaluation import evaluation_decide
from execution.services import task_claim, task_settle
from marketplace.models import Agent, Evaluation, Task
from marketplace.services import task_submit
from tests.factories import balance, held_for, make_agent
from tests.test_evaluation import (
    BUDGET,
    JUDGE_COST,
    JUDGE_FEE,
    judged,
    run_of,
    succeed,
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
