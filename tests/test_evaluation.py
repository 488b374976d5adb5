"""Evaluated settlement (SPEC §21): the money of every verdict to the µCR, submission checks,
reputation at the verdict, receipts, the API body and the webhook.

The runs are replaced by the `Execution` they would produce (as in test_executor_money.py);
tests/test_evaluation_runs.py runs real evaluator modules in the sandbox and on workers.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from escrow.earnings import earnings_release_due
from escrow.models import Earning, Transfer
from execution.engine.receipts import receipt_verify
from execution.evaluation import evaluation_decide, evaluations_recover
from execution.runs import Execution
from execution.services import task_claim, task_settle, tasks_recover
from marketplace.evaluators import BudgetTooSmall, EvaluatorNotAccepted
from marketplace.models import Agent, Evaluation, Task
from marketplace.services import agent_suspend, task_submit
from reputation.models import AgentReputation, ReputationEvent
from tests.factories import RUN, balance, held_for, make_agent

# The evaluated task's run: cost 3_470 (fee 173), as tests.factories.RUN.
COST, FEE = 3_470, 173
BUDGET = 100_000
# The evaluator `judge`: 500 µCR a run, 1_000 µCR per million fuel; its run uses 1e6 fuel.
JUDGE_COST, JUDGE_FEE = 1_500, 75


def verdict(accept: bool = True, score: Any = 0.9, reason: str = "looks right") -> bytes:
    return json.dumps({"accept": accept, "score": score, "reason": reason}).encode()


def judged(stdout: bytes, **changes: Any) -> Execution:
    fields = {"exit_code": 0, "fuel_used": 1_000_000, "fuel_limit": 10**8, "elapsed_ms": 2}
    return Execution(stdout=stdout, **{**fields, **changes})


def submit(requester, agent, **options) -> Task:
    options.setdefault("evaluator", "judge")
    return task_submit(requester=requester, agent=agent, input="hi", budget=BUDGET, **options)


def succeed(task: Task, execution: Execution = RUN) -> Task:
    assert task_claim(task_id=task.pk) is not None
    assert task_settle(task_id=task.pk, attempt=1, execution=execution)
    return Task.objects.get(pk=task.pk)


def run_of(task: Task) -> Task:
    return Task.objects.get(evaluates=task)


def evaluate(task: Task, execution: Execution) -> Evaluation:
    """The evaluator's run claimed, settled with `execution`, and its verdict decided."""
    run = run_of(task)
    assert task_claim(task_id=run.pk) is not None
    assert task_settle(task_id=run.pk, attempt=1, execution=execution)
    assert evaluation_decide(run_id=run.pk)
    return Evaluation.objects.get(task=task)


def lines(task: Task) -> list[tuple[str, str, int]]:
    """The ledger lines of the task and of its evaluator's run: (kind, debit → credit, µCR)."""
    found = Transfer.objects.filter(task__in=[task.pk, run_of(task).pk]).order_by("id")
    return [(t.kind, f"{t.debit_account} → {t.credit_account}", t.amount) for t in found]


# --- submission ---------------------------------------------------------------------------


def test_an_unaccepted_evaluator_is_refused_and_nothing_is_held(requester, agent, judge):
    with pytest.raises(EvaluatorNotAccepted) as refused:
        submit(requester, agent)
    assert refused.value.code == "evaluator_not_accepted"
    with pytest.raises(EvaluatorNotAccepted):
        submit(requester, agent, evaluator="no-such-agent")
    assert balance(requester) == 10_000_000
    assert not Task.objects.exists()


def test_a_suspended_evaluator_is_refused_at_submission(requester, evaluated_agent, judge):
    agent_suspend(agent=judge)
    with pytest.raises(EvaluatorNotAccepted):
        submit(requester, evaluated_agent)


def test_the_budget_must_cover_both_base_fees(requester, evaluated_agent):
    # Each one's least is its base fee and one µCR of fuel: 1_001 and 501.
    with pytest.raises(BudgetTooSmall) as refused:
        task_submit(
            requester=requester, agent=evaluated_agent, input="hi", budget=1_501, evaluator="judge"
        )
    assert refused.value.code == "budget_too_small"
    assert refused.value.fields == {"budget": ["at least 1502"]}
    task = task_submit(
        requester=requester, agent=evaluated_agent, input="hi", budget=1_502, evaluator="judge"
    )
    assert task.evaluator is not None and task.evaluator.slug == "judge"


# --- the money of each verdict ----------------------------------------------------------------


def test_accept_pays_both_and_starts_the_hold_at_the_verdict(
    requester, evaluated_agent, bob, charlie, django_capture_on_commit_callbacks
):
    task = succeed(submit(requester, evaluated_agent))
    assert (task.status, task.cost, task.fee, task.refund) == (
        "succeeded",
        COST,
        FEE,
        BUDGET - COST,
    )
    earning = Earning.objects.get(task=task)
    assert (earning.status, earning.amount, earning.fee) == ("evaluating", COST - FEE, FEE)
    # What the budget left is held again for the evaluator's run, queued with the settlement.
    run = run_of(task)
    assert (run.status, run.budget, run.agent.slug) == ("queued", BUDGET - COST, "judge")
    assert balance(requester) == 10_000_000 - BUDGET
    assert not ReputationEvent.objects.filter(task=task).exists()  # written at the verdict
    assert earnings_release_due(now=timezone.now() + timedelta(days=30)) == 0

    evaluation = evaluate(task, judged(verdict(True, 0.9)))
    assert (evaluation.verdict, evaluation.score, evaluation.reason) == (
        "accept",
        Decimal("0.9000"),
        "looks right",
    )
    assert (evaluation.cost, evaluation.fee) == (JUDGE_COST, JUDGE_FEE)
    assert balance(requester) == 10_000_000 - COST - JUDGE_COST
    assert held_for(bob) == COST - FEE
    assert held_for(charlie) == JUDGE_COST - JUDGE_FEE
    earning.refresh_from_db()
    assert evaluation.decided_at is not None
    assert earning.status == "held" and earning.release_at > evaluation.decided_at
    event = ReputationEvent.objects.get(task=task)
    assert event.outcome == "success" and event.delta > 0
    # The budget adds up: the task's cost, the evaluator's, and what came back.
    assert (evaluation.cost, evaluation.refund) == (JUDGE_COST, BUDGET - COST - JUDGE_COST)
    print("\naccepted evaluated task, ledger lines:")
    for line in lines(task):
        print("  ", *line)


def test_reject_refunds_the_task_cost_and_scores_a_failure(requester, evaluated_agent, bob):
    task = succeed(submit(requester, evaluated_agent))
    before = AgentReputation.objects.get(agent=evaluated_agent).score
    evaluation = evaluate(task, judged(verdict(False, 0.1, "wrong answer")))
    assert (evaluation.verdict, evaluation.reason) == ("reject", "wrong answer")
    # The requester pays only the evaluator's run.
    assert balance(requester) == 10_000_000 - JUDGE_COST
    assert held_for(bob) == 0
    assert Earning.objects.get(task=task).status == "refunded"
    task.refresh_from_db()
    assert task.cost == COST  # the task's cost stays the agent's own
    event = ReputationEvent.objects.get(task=task)
    assert (event.outcome, event.reason) == ("failure", "evaluator_rejected")
    assert event.score_after == before - 5
    refunds = Transfer.objects.filter(task=task, kind__startswith="evaluation_")
    assert sorted(refunds.values_list("kind", "amount")) == [
        ("evaluation_fee_refund", FEE),
        ("evaluation_refund", COST - FEE),
    ]
    print("\nrejected evaluated task, ledger lines:")
    for line in lines(task):
        print("  ", *line)


@pytest.mark.parametrize(
    "execution",
    [
        # With the fuel it recommends (the budget left more than that).
        pytest.param(
            judged(b"", reason="out_of_fuel", exit_code=None, fuel_limit=10**9), id="out-of-fuel"
        ),
        pytest.param(judged(b"", reason="timeout", exit_code=None), id="timeout"),
        pytest.param(judged(b"", reason="invalid_output"), id="not-a-verdict"),
    ],
)
def test_a_failed_evaluator_counts_as_accept_and_its_run_is_refunded(
    requester, evaluated_agent, bob, charlie, execution
):
    task = succeed(submit(requester, evaluated_agent))
    evaluation = evaluate(task, execution)
    assert (evaluation.verdict, evaluation.reason, evaluation.score) == (
        "accept",
        "evaluator_failed",
        None,
    )
    assert (evaluation.cost, evaluation.refund) == (0, BUDGET - COST)
    assert balance(requester) == 10_000_000 - COST
    assert held_for(bob) == COST - FEE and held_for(charlie) == 0
    earning = Earning.objects.get(task=task)
    assert evaluation.decided_at is not None
    assert earning.status == "held" and earning.release_at > evaluation.decided_at
    assert ReputationEvent.objects.get(task=task).outcome == "success"
    # The evaluator's own run is scored as its failure (it ran with its recommended limits).
    assert ReputationEvent.objects.get(task=run_of(task)).outcome == "failure"


@pytest.mark.parametrize(
    "printed",
    [
        b'{"accept": true, "score": 1.5, "reason": "x"}',
        b'{"accept": 1, "score": 0.5, "reason": "x"}',
        b'{"accept": true, "score": 0.5}',
        b'{"accept": true, "score": 0.5, "reason": "x", "extra": 1}',
        b"accept",
    ],
)
def test_anything_but_exactly_a_verdict_is_the_evaluator_failing(
    requester, evaluated_agent, printed
):
    task = succeed(submit(requester, evaluated_agent))
    # Even a run that (wrongly) settled as a success gives no verdict that is not one.
    evaluation = evaluate(task, judged(printed))
    assert (evaluation.verdict, evaluation.reason) == ("accept", "evaluator_failed")


def test_an_evaluator_suspended_before_its_run_fails_with_a_full_refund(
    requester, evaluated_agent, judge, bob
):
    from execution.services import task_execute

    task = succeed(submit(requester, evaluated_agent))
    agent_suspend(agent=judge)
    task_execute(task_id=run_of(task).pk)  # refused before it runs: validation_failed
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.status, evaluation.verdict, evaluation.reason) == (
        "decided",
        "accept",
        "evaluator_failed",
    )
    assert run_of(task).failure_reason == "validation_failed"
    assert balance(requester) == 10_000_000 - COST
    assert held_for(bob) == COST - FEE


def test_an_agent_cannot_spend_the_budget_past_its_evaluator(requester, evaluated_agent, judge):
    from execution.runs import affordable_fuel

    task = submit(requester, evaluated_agent)
    # Its fuel leaves the judge's least (500 + 1 µCR) in the budget, at 2_000 µCR/M fuel.
    fuel = affordable_fuel(task)
    assert fuel == (BUDGET - 1_000 - 501) * 1_000_000 // 2_000
    everything = judged(b"done", fuel_used=fuel, fuel_limit=fuel)
    task = succeed(task, everything)
    assert task.cost == BUDGET - 501
    assert run_of(task).budget == 501
    # The judge's price was pinned at submission: raising it now changes nothing here.
    Agent.objects.filter(pk=judge.pk).update(base_fee=400_000)
    assert (run_of(task).base_fee, run_of(task).fuel_price) == (500, 1_000)
    evaluation = evaluate(task, judged(verdict(True), fuel_used=1_000, fuel_limit=1_000))
    assert (evaluation.verdict, evaluation.cost) == ("accept", 501)
    assert balance(requester) == 10_000_000 - BUDGET


def test_nothing_left_for_the_evaluator_is_its_failure_decided_at_the_settlement(
    requester, bob, charlie
):
    # Free fuel on both sides and a budget of exactly the agent's base fee: nothing is left.
    agent = make_agent(bob, slug="flat", base_fee=1_000, fuel_price=0)
    free = make_agent(charlie, slug="free-judge", base_fee=0, fuel_price=0)
    agent.accepted_evaluators.add(free)
    task = task_submit(
        requester=requester, agent=agent, input="hi", budget=1_000, evaluator="free-judge"
    )
    task = succeed(task)
    assert task.cost == 1_000 and not Task.objects.filter(evaluates=task).exists()
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.status, evaluation.verdict, evaluation.reason, evaluation.cost) == (
        "decided",
        "accept",
        "evaluator_failed",
        0,
    )
    assert Earning.objects.get(task=task).status == "held"
    assert ReputationEvent.objects.get(task=task).outcome == "success"
    assert balance(requester) == 10_000_000 - 1_000


def test_an_evaluator_without_a_binary_is_refused(requester, agent, charlie):
    empty = make_agent(charlie, slug="empty", with_binary=False)
    agent.accepted_evaluators.add(empty)
    with pytest.raises(EvaluatorNotAccepted):
        task_submit(requester=requester, agent=agent, input="hi", budget=BUDGET, evaluator="empty")


def test_a_failed_task_is_never_evaluated(requester, evaluated_agent):
    task = submit(requester, evaluated_agent)
    task_claim(task_id=task.pk)
    task_settle(task_id=task.pk, attempt=1, execution=Execution(reason="trap", exit_code=None))
    assert not Task.objects.filter(evaluates=task).exists()
    assert not Evaluation.objects.exists()
    assert balance(requester) == 10_000_000


def test_a_verdict_settles_once(requester, evaluated_agent):
    task = succeed(submit(requester, evaluated_agent))
    evaluate(task, judged(verdict(False)))
    assert not evaluation_decide(run_id=run_of(task).pk)
    assert evaluations_recover() == {"decided": 0, "errors": 0}
    assert balance(requester) == 10_000_000 - JUDGE_COST


def test_recovery_decides_a_verdict_whose_worker_died(requester, evaluated_agent, bob):
    task = succeed(submit(requester, evaluated_agent))
    run = run_of(task)
    task_claim(task_id=run.pk)
    task_settle(task_id=run.pk, attempt=1, execution=judged(verdict(True)))  # then the crash
    assert Evaluation.objects.get(task=task).status == "running"
    assert Earning.objects.get(task=task).status == "evaluating"
    tasks_recover()
    assert Evaluation.objects.get(task=task).verdict == "accept"
    assert Earning.objects.get(task=task).status == "held"
    tasks_recover()  # nothing twice
    assert balance(requester) == 10_000_000 - COST - JUDGE_COST
    assert held_for(bob) == COST - FEE


def test_a_cancelled_evaluator_run_counts_as_failed(requester, evaluated_agent):
    from marketplace.services import task_cancel

    task = succeed(submit(requester, evaluated_agent))
    task_cancel(task=run_of(task))
    tasks_recover()
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.verdict, evaluation.reason) == ("accept", "evaluator_failed")
    assert balance(requester) == 10_000_000 - COST


# --- reputation ------------------------------------------------------------------------------


def test_a_requester_owning_the_evaluator_cannot_cost_the_agent_reputation(
    charlie, evaluated_agent
):
    from escrow.services import deposit_create

    deposit_create(user_id=charlie.pk, amount=1_000_000)
    before = AgentReputation.objects.get(agent=evaluated_agent).score
    task = succeed(submit(charlie, evaluated_agent))
    evaluate(task, judged(verdict(False, 0, "I own the judge")))
    event = ReputationEvent.objects.get(task=task)
    assert (event.outcome, event.neutral_reason) == ("neutral", "self_dealing")
    assert AgentReputation.objects.get(agent=evaluated_agent).score == before
    # The money still follows the verdict: charlie gets the task's cost back.
    assert balance(charlie) == 1_000_000 - JUDGE_COST
    assert held_for(charlie) == JUDGE_COST - JUDGE_FEE  # its own evaluator's share


def test_rejections_stay_inside_the_requesters_daily_cap(requester, evaluated_agent):
    for _ in range(3):
        evaluate(succeed(submit(requester, evaluated_agent)), judged(verdict(False)))
    moved = sum(
        abs(e.delta)
        for e in ReputationEvent.objects.filter(agent=evaluated_agent, requester=requester)
    )
    assert moved == Decimal("5.0000")


def test_a_dispute_after_accept_refunds_and_scores_the_evaluator(
    requester, evaluated_agent, judge, bob, charlie
):
    from marketplace.disputes import dispute_accept, dispute_file

    task = succeed(submit(requester, evaluated_agent))
    evaluate(task, judged(verdict(True)))
    judge_before = AgentReputation.objects.get(agent=judge).score
    dispute = dispute_file(task_id=task.pk, user=requester, reason="it was wrong")
    dispute_accept(dispute_id=dispute.pk, user=bob)
    # The task's cost back; the evaluator's run stays paid.
    assert balance(requester) == 10_000_000 - JUDGE_COST
    assert held_for(bob) == 0 and held_for(charlie) == JUDGE_COST - JUDGE_FEE
    assert Evaluation.objects.get(task=task).upheld is False
    overturned = ReputationEvent.objects.filter(agent=judge, reason="verdict_overturned").get()
    assert overturned.outcome == "failure" and overturned.score_before == judge_before


def test_a_dispute_cannot_be_opened_before_the_verdict(requester, evaluated_agent):
    from escrow.disputes import DisputeWindowClosed
    from marketplace.disputes import dispute_file

    task = succeed(submit(requester, evaluated_agent))
    with pytest.raises(DisputeWindowClosed, match="has not given its verdict"):
        dispute_file(task_id=task.pk, user=requester, reason="too early")


# --- receipts, the API and the webhook ----------------------------------------------------------


def test_the_verdict_has_a_receipt_naming_the_tasks(requester, evaluated_agent):
    task = succeed(submit(requester, evaluated_agent))
    evaluation = evaluate(task, judged(verdict(True)))
    receipt = evaluation.receipt
    assert receipt is not None and receipt_verify(receipt)
    payload = json.loads(receipt["payload"])
    assert payload["task_id"] == str(task.pk)
    assert payload["task_receipt_signature"] == task.receipt.signature
    assert payload["run_receipt_signature"] == run_of(task).receipt.signature
    assert (payload["verdict"], payload["cost"], payload["evaluator"]) == (
        "accept",
        JUDGE_COST,
        "judge",
    )


def test_the_api_shows_the_evaluation_and_keeps_the_tasks_own_cost(
    requester, evaluated_agent, client
):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=requester).key
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"}
    created = client.post(
        "/api/v1/tasks/",
        {"agent": evaluated_agent.slug, "input": "hi", "budget": BUDGET, "evaluator": "nope"},
        content_type="application/json",
        **headers,
    )
    assert created.status_code == 400
    assert created.json()["error"]["code"] == "evaluator_not_accepted"
    created = client.post(
        "/api/v1/tasks/",
        {"agent": evaluated_agent.slug, "input": "hi", "budget": BUDGET, "evaluator": "judge"},
        content_type="application/json",
        **headers,
    )
    assert created.status_code == 201, created.json()
    task = Task.objects.get(pk=created.json()["id"])
    assert created.json()["evaluation"]["verdict"] is None
    succeed(task)
    evaluation = evaluate(task, judged(verdict(False, 0.25, "no")))
    body = client.get(f"/api/v1/tasks/{task.pk}/", **headers).json()
    assert body["cost"] == COST
    shown = body["evaluation"]
    assert {k: shown[k] for k in ("evaluator", "verdict", "score", "reason", "cost")} == {
        "evaluator": "judge",
        "verdict": "reject",
        "score": 0.25,
        "reason": "no",
        "cost": JUDGE_COST,
    }
    assert shown["receipt"] == evaluation.receipt


def test_the_verdict_is_a_webhook_event(requester, evaluated_agent):
    from marketplace.webhooks.models import WebhookDelivery
    from marketplace.webhooks.outbox import webhook_create

    webhook_create(owner=requester, url="http://127.0.0.1:9/hooks", events=["task.evaluated"])
    task = succeed(submit(requester, evaluated_agent))
    evaluate(task, judged(verdict(True)))
    assert (
        WebhookDelivery.objects.filter(type="task.evaluated", object_id=str(task.pk)).count() == 1
    )
