"""A requester submits a task with an evaluator from the task form in real Chromium, and
watches its page, without a reload, go from the evaluator checking the output to the
evaluator's rejection with the task's cost refunded (SPEC §21)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from escrow.services import deposit_create
from execution.evaluation import evaluation_decide
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Task
from marketplace.services import user_create
from tests.browser.conftest import PASSWORD, Screen, sample_agent
from tests.factories import balance

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

START = 10_000_000
# cost = base fee 1_000 + 2_000_000 fuel × 1_000 µCR per million = 3_000 µCR.
RUN = Execution(exit_code=0, stdout=b"hello", fuel_used=2_000_000, fuel_limit=10**8, elapsed_ms=3)
# The evaluator (base fee 500, 1_000 µCR per million fuel) uses 1_000_000 fuel: 1_500 µCR.
VERDICT = Execution(
    exit_code=0,
    stdout=b'{"accept": false, "score": 0.1, "reason": "it did not greet"}',
    fuel_used=1_000_000,
    fuel_limit=10**9,
    elapsed_ms=2,
)


def test_a_rejected_task_shows_its_verdict_and_refund_live(screen: Screen, demo_owner: Any):
    requester = user_create(username="rita", password=PASSWORD)
    deposit_create(user_id=requester.pk, amount=START)
    echo = sample_agent(demo_owner, "echo", name="Echo")
    judge_owner = user_create(username="jules", password=PASSWORD)
    judge = sample_agent(judge_owner, "wordcount", name="Judge", base_fee=500)
    echo.accepted_evaluators.add(judge)

    page = screen.page
    screen.log_in_quickly(requester)
    screen.go("/tasks/new/?agent=echo")
    page.get_by_label("Input").fill("hello")
    page.get_by_label("Budget").fill("0.1")
    page.get_by_label("Evaluator").fill("wordcount")
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url("**/tasks/*/")
    task = Task.objects.get(requester=requester, evaluates__isnull=True)
    assert task.evaluator_id == judge.pk

    # A worker's settlement, as the worker would do it; the page follows it live.
    claim = task_claim(task_id=task.pk)
    assert claim is not None and task_settle(task_id=task.pk, attempt=claim[1], execution=RUN)
    section = page.get_by_test_id("evaluation")
    expect(section).to_contain_text("The evaluator is checking the output")
    page.evaluate("window.__not_reloaded = true")
    run = Task.objects.get(evaluates=task)
    claim = task_claim(task_id=run.pk)
    assert claim is not None and task_settle(task_id=run.pk, attempt=claim[1], execution=VERDICT)
    assert evaluation_decide(run_id=run.pk)

    expect(page.get_by_test_id("verdict")).to_contain_text("reject")
    expect(section).to_contain_text("it did not greet")
    expect(page.get_by_test_id("evaluation-cost")).to_contain_text("0.001500 CR")
    assert page.evaluate("window.__not_reloaded") is True
    screen.shot("evaluation-01-rejected")
    assert balance(requester) == START - 1_500
