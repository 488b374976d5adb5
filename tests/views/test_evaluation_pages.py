"""Evaluated settlement in the browser UI (SPEC §21): the task form's evaluator, the verdict
on the task page, the agent's evaluators on its page and form, and the admin's list."""

from __future__ import annotations

from django.urls import reverse

from execution.evaluation import evaluation_decide
from execution.runs import Execution
from execution.services import task_claim, task_settle
from marketplace.models import Evaluation, Task
from tests.factories import balance
from tests.views.conftest import settle
from tests.views.test_tasks import detail, field_errors, post_task


def test_the_task_form_refuses_an_unaccepted_evaluator_next_to_its_field(
    as_alice, funded_alice, echo, judge
):
    response = post_task(as_alice, evaluator="judge")
    assert response.status_code == 200
    assert "accepts no active evaluator" in field_errors(response.content.decode(), "evaluator")
    assert not Task.objects.exists() and balance(funded_alice) == 10_000_000


def test_a_task_submitted_with_an_evaluator_shows_its_verdict(as_alice, funded_alice, echo, judge):
    echo.accepted_evaluators.add(judge)
    response = post_task(as_alice, evaluator="judge")
    task = Task.objects.get(evaluates__isnull=True)
    assert response.status_code == 302 and task.evaluator == judge
    settle(task)
    waiting = as_alice.get(detail(task))
    assert waiting.status_code == 200  # still polled: the verdict is to come
    assert "The evaluator is checking the output" in waiting.content.decode()
    run = Task.objects.get(evaluates=task)
    task_claim(task_id=run.pk)
    printed = b'{"accept": false, "score": 0.2, "reason": "off topic"}'
    task_settle(
        task_id=run.pk,
        attempt=1,
        execution=Execution(exit_code=0, stdout=printed, fuel_used=10, fuel_limit=10**9),
    )
    assert evaluation_decide(run_id=run.pk)
    shown = as_alice.get(detail(task))
    body = shown.content.decode()
    assert 'data-testid="verdict"' in body and "reject" in body and "off topic" in body
    assert Evaluation.objects.get(task=task).verdict == "reject"


def test_the_owner_sets_accepted_evaluators_on_the_agent_page(as_bob, echo, judge):
    page = reverse("agent-detail", args=[echo.slug])
    refused = as_bob.post(page, {"accepted_evaluators": "judge nobody"})
    assert refused.status_code == 200
    assert "nobody" in field_errors(refused.content.decode(), "accepted_evaluators")
    assert not echo.accepted_evaluators.exists()
    saved = as_bob.post(page, {"accepted_evaluators": "judge"})
    assert saved.status_code == 302
    assert list(echo.accepted_evaluators.values_list("slug", flat=True)) == ["judge"]
    assert 'href="/agents/judge/"' in as_bob.get(page).content.decode()


def test_a_new_agent_names_its_evaluators(as_bob, judge):
    response = as_bob.post(
        reverse("agent-new"),
        {
            "name": "Checked",
            "slug": "checked",
            "base_fee": "0.001",
            "fuel_price": "0.001",
            "accepted_evaluators": "judge",
        },
    )
    assert response.status_code == 302, response.content.decode()[:500]
    from marketplace.models import Agent

    agent = Agent.objects.get(slug="checked")
    assert list(agent.accepted_evaluators.values_list("slug", flat=True)) == ["judge"]


def test_operators_see_evaluations_in_the_admin(admin_client, requester, echo, judge):
    from marketplace.services import task_submit

    echo.accepted_evaluators.add(judge)
    task = task_submit(
        requester=requester, agent=echo, input="x", budget=100_000, evaluator="judge"
    )
    settle(task)
    response = admin_client.get(reverse("admin:marketplace_evaluation_changelist"))
    assert response.status_code == 200 and "judge" in response.content.decode()
    assert (
        admin_client.get(reverse("admin:marketplace_agent_change", args=[echo.pk])).status_code
        == 200
    )
