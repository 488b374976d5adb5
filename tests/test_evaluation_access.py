"""Evaluated settlement through its doors (SPEC §21): an agent's accepted evaluators over the
API, the MCP run_agent `evaluator` argument, an API key's spending across the verdict, and a
dispute an operator rejects after an accept (the evaluator's verdict upheld)."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client
from rest_framework.authtoken.models import Token

from escrow.models import Earning
from execution.evaluation import evaluation_decide
from execution.services import task_claim, task_settle
from marketplace.apikeys import api_key_create
from marketplace.models import ApiKey, Evaluation, Task
from reputation.models import ReputationEvent
from tests.factories import RUN, balance
from tests.test_evaluation import BUDGET, COST, JUDGE_COST, judged, verdict
from tests.test_mcp_requests import call


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")


def settle_both(task: Task) -> Evaluation:
    task_claim(task_id=task.pk)
    task_settle(task_id=task.pk, attempt=1, execution=RUN)
    run = Task.objects.get(evaluates=task)
    task_claim(task_id=run.pk)
    task_settle(task_id=run.pk, attempt=1, execution=judged(verdict(True)))
    evaluation_decide(run_id=run.pk)
    return Evaluation.objects.get(task=task)


def test_an_owner_sets_the_evaluators_its_agent_accepts(agent, judge, bob, alice):
    owner = api(bob)
    url = f"/api/v1/agents/{agent.slug}/"
    body = {"accepted_evaluators": ["judge", "nobody"]}
    refused = owner.patch(url, body, content_type="application/json")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "evaluator_not_accepted"
    assert not agent.accepted_evaluators.exists()  # nothing half-written
    changed = owner.patch(url, {"accepted_evaluators": ["judge"]}, content_type="application/json")
    assert changed.status_code == 200 and changed.json()["accepted_evaluators"] == ["judge"]
    assert api(alice).get(url).json()["accepted_evaluators"] == ["judge"]
    # alice does not own it: she can't change whom it trusts.
    other = api(alice).patch(url, {"accepted_evaluators": []}, content_type="application/json")
    assert other.status_code in (403, 404)
    assert list(agent.accepted_evaluators.values_list("slug", flat=True)) == ["judge"]


def test_mcp_run_agent_names_an_evaluator(requester, agent, judge):
    _, raw = api_key_create(user=requester, name="llm", scopes=["tasks:read", "tasks:write"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    args: dict[str, Any] = {"slug": "echo", "input": "hi", "budget": BUDGET, "wait_seconds": 0}
    refused = call(client, "run_agent", {**args, "evaluator": "judge"})
    assert refused["isError"] and refused["structuredContent"]["error"]["code"] == (
        "evaluator_not_accepted"
    )
    assert not Task.objects.exists() and balance(requester) == 10_000_000
    agent.accepted_evaluators.add(judge)
    ran = call(client, "run_agent", {**args, "evaluator": "judge"})
    assert not ran["isError"], ran
    assert ran["structuredContent"]["evaluation"]["evaluator"] == "judge"
    task = Task.objects.get(pk=ran["structuredContent"]["task_id"])
    assert task.evaluator == judge
    described = call(client, "get_agent", {"slug": "echo"})["structuredContent"]
    assert described["accepted_evaluators"] == ["judge"]
    settle_both(task)
    shown = call(client, "get_task", {"id": str(task.pk)})["structuredContent"]
    assert (shown["evaluation"]["verdict"], shown["evaluation"]["cost"]) == ("accept", JUDGE_COST)


def test_an_api_keys_spending_counts_both_runs(requester, agent, judge):
    from marketplace.services import task_submit

    agent.accepted_evaluators.add(judge)
    key, _ = api_key_create(user=requester, name="llm", scopes=["tasks:write"])
    task = task_submit(
        requester=requester, agent=agent, input="hi", budget=BUDGET, api_key=key, evaluator="judge"
    )
    settle_both(task)
    assert ApiKey.objects.get(pk=key.pk).spent_total == COST + JUDGE_COST
    assert balance(requester) == 10_000_000 - COST - JUDGE_COST


def test_an_operator_rejecting_a_dispute_upholds_the_verdict(requester, agent, judge, bob):
    from marketplace.disputes import dispute_contest, dispute_decide, dispute_file
    from marketplace.services import task_submit

    agent.accepted_evaluators.add(judge)
    task = task_submit(
        requester=requester, agent=agent, input="hi", budget=BUDGET, evaluator="judge"
    )
    settle_both(task)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="hmm")
    dispute_contest(dispute_id=dispute.pk, user=bob, statement="it was right")
    dispute_decide(dispute_id=dispute.pk, refund=False, operator="ops")
    assert Evaluation.objects.get(task=task).upheld is True
    assert ReputationEvent.objects.get(agent=judge, reason="verdict_upheld").outcome == "success"
    assert Earning.objects.get(task=task).status == "held"
    assert balance(requester) == 10_000_000 - COST - JUDGE_COST
    receipt = Evaluation.objects.get(task=task).receipt
    assert receipt is not None and json.loads(receipt["payload"])["verdict"] == "accept"
