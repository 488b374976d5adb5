"""Submitting tasks, the live task page, cancelling, receipts."""

from __future__ import annotations

import html
import json
import re
import uuid

import pytest
from django.urls import reverse

from escrow.models import Escrow
from execution.engine.receipts import receipt_verify
from execution.services import Execution, task_claim
from marketplace.models import Agent, Task
from marketplace.services import agent_suspend
from tests.views.conftest import HTMX, balance, fragment, make_agent, page, settle, submit

NEW = reverse("task-new")
KEY = "task-form-key-0123456789"

pytestmark = pytest.mark.django_db


def detail(task: Task) -> str:
    return reverse("task-detail", args=[task.pk])


def post_task(client, agent: str = "echo", budget: str = "0.25", key: str = KEY, **fields):
    data = {"agent": agent, "input": "hello", "budget": budget, "idempotency_key": key, **fields}
    return client.post(NEW, data)


def field_errors(body: str, field: str) -> str:
    parts = body.split(f'id="id_{field}_error"')
    assert len(parts) == 2, f"no errors shown for {field}"
    return html.unescape(parts[1].split("</ul>")[0])


# --- the form ---------------------------------------------------------------------------


def test_the_agent_picker_lists_name_price_and_reputation(as_alice, echo, bob):
    make_agent(bob, slug="idle", with_binary=False)
    suspended = make_agent(bob, slug="paused")
    agent_suspend(agent=suspended)

    body = page(as_alice.get(NEW))

    assert '<label for="id_agent">Agent' in body
    assert '<label for="id_input">Input' in body
    assert '<label for="id_budget">Budget' in body
    assert "Echo — 0.001000 CR + 0.002000 CR/M fuel · reputation 50.0" in body
    # Only agents that can take a task right now are offered.
    assert 'value="idle"' not in body and 'value="paused"' not in body
    assert "<details" in body and "Advanced limits" in body
    assert '<label for="id_fuel_limit">Fuel limit' in body


def test_the_agent_can_be_preselected(as_alice, echo):
    body = as_alice.get(NEW, {"agent": "echo"}).content.decode()

    assert '<option value="echo" selected>' in body


def test_with_no_agent_available_the_page_says_so(as_alice):
    assert "No agent can take tasks right now" in as_alice.get(NEW).content.decode()


def test_submitting_holds_the_budget_and_opens_the_task_page(as_alice, funded_alice, echo):
    response = post_task(as_alice, budget="0.25", input="hi there")

    task = Task.objects.get()
    assert response.status_code == 302
    assert response["Location"] == detail(task)
    assert (task.requester, task.agent, task.input, task.budget) == (
        funded_alice,
        echo,
        "hi there",
        250_000,
    )
    assert task.status == "queued"
    assert Escrow.objects.get(task=task).status == "funded"
    assert balance(funded_alice) == 10_000_000 - 250_000
    assert "Task submitted to Echo." in as_alice.get(detail(task)).content.decode()


def test_the_advanced_limits_reach_the_task(as_alice, funded_alice, echo):
    post_task(
        as_alice,
        fuel_limit="5000000",
        memory_limit_mb="16",
        timeout_ms="2500",
        min_reputation="40.5",
        output_schema='{"type": "object"}',
    )

    task = Task.objects.get()
    assert (task.fuel_limit, task.memory_limit_mb, task.timeout_ms) == (5_000_000, 16, 2_500)
    assert str(task.min_reputation) == "40.5000"
    assert task.output_schema == {"type": "object"}


def test_a_double_submission_creates_one_task(as_alice, funded_alice, echo):
    first = post_task(as_alice)
    again = post_task(as_alice)

    task = Task.objects.get()
    assert first["Location"] == again["Location"] == detail(task)
    assert balance(funded_alice) == 10_000_000 - 250_000


def test_a_reused_form_with_other_values_is_refused(as_alice, funded_alice, echo):
    post_task(as_alice)

    body = post_task(as_alice, budget="0.5").content.decode()

    assert "already submitted with other values" in body
    assert KEY not in body
    assert Task.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"budget": ""}, "budget", "This field is required."),
        ({"budget": "abc"}, "budget", "Enter an amount in credits"),
        ({"budget": "0"}, "budget", "greater than zero"),
        ({"budget": "0.0000001"}, "budget", "At most 6 decimal places"),
        ({"budget": "0.0005"}, "budget", "below the agent's base fee"),
        ({"budget": "11"}, "budget", "Your wallet cannot cover this budget"),
        ({"agent": "nobody"}, "agent", "Select a valid choice"),
        ({"agent": ""}, "agent", "This field is required."),
        ({"fuel_limit": "0"}, "fuel_limit", "greater than or equal to 1"),
        ({"fuel_limit": "99999999999"}, "fuel_limit", "less than or equal to"),
        ({"memory_limit_mb": "4096"}, "memory_limit_mb", "less than or equal to 512"),
        ({"timeout_ms": "x"}, "timeout_ms", "Enter a whole number."),
        ({"min_reputation": "101"}, "min_reputation", "less than or equal to 100"),
        ({"output_schema": "{nope"}, "output_schema", "Not valid JSON"),
        ({"output_schema": "[1]"}, "output_schema", "A JSON Schema is a JSON object."),
        ({"output_schema": '{"type": 5}'}, "output_schema", "not a valid JSON Schema"),
    ],
)
def test_errors_appear_next_to_their_field_and_nothing_moves(
    as_alice, funded_alice, echo, fields, field, message
):
    response = post_task(as_alice, **fields)

    assert response.status_code == 200
    assert message in field_errors(response.content.decode(), field)
    assert not Task.objects.exists()
    assert balance(funded_alice) == 10_000_000


def test_an_input_over_the_limit_is_refused(as_alice, funded_alice, echo, settings):
    settings.TASK_MAX_INPUT_BYTES = 10

    body = post_task(as_alice, input="x" * 11).content.decode()

    assert "the limit is 10" in field_errors(body, "input")


def test_an_agent_suspended_after_the_form_was_shown_is_refused(as_alice, funded_alice, echo, bob):
    make_agent(bob, slug="other")
    form = as_alice.get(NEW).content.decode()
    match = re.search(r'name="idempotency_key" value="([^"]+)"', form)
    assert match is not None
    key = match.group(1)
    Agent.objects.filter(pk=echo.pk).update(status="suspended")

    body = post_task(as_alice, key=key).content.decode()

    assert "Select a valid choice" in field_errors(body, "agent")


def test_an_htmx_submission_gets_errors_in_place_or_a_client_redirect(as_alice, funded_alice, echo):
    failed = as_alice.post(NEW, {"agent": "echo", "budget": "-1", "idempotency_key": KEY}, **HTMX)
    body = fragment(failed)
    assert body.lstrip().startswith('<form id="task-form"')
    assert "Enter a positive amount." in body

    done = as_alice.post(
        NEW, {"agent": "echo", "input": "x", "budget": "0.1", "idempotency_key": KEY}, **HTMX
    )
    assert done["HX-Redirect"] == detail(Task.objects.get())


# --- the task page ----------------------------------------------------------------------


def test_a_queued_task_page_polls_for_its_status(as_alice, funded_alice, echo):
    task = submit(funded_alice, echo)

    body = page(as_alice.get(detail(task)))

    assert 'data-testid="task-status"><span class="badge badge-queued">queued</span>' in body
    assert f'hx-get="{detail(task)}" hx-trigger="every 1s"' in body
    assert "Cancel and refund" in body
    assert "Issued when the task settles." in body


def test_htmx_polls_get_the_panel_until_the_task_is_final_then_stop(as_alice, funded_alice, echo):
    task = submit(funded_alice, echo)

    polling = as_alice.get(detail(task), **HTMX)
    assert polling.status_code == 200
    assert fragment(polling).lstrip().startswith('<div id="task-panel" hx-get=')
    assert "HX-Request" in polling["Vary"]

    task_claim(task_id=task.pk)
    running = as_alice.get(detail(task), **HTMX)
    assert running.status_code == 200
    assert "badge-running" in running.content.decode()

    Task.objects.filter(pk=task.pk).update(status="queued", attempts=0)
    settle(task)
    final = as_alice.get(detail(task), **HTMX)
    assert final.status_code == 286  # htmx stops polling and shows this last answer
    body = fragment(final)
    assert "hx-trigger" not in body.split(">")[0]
    assert "badge-succeeded" in body
    # A full page load of a final task is an ordinary 200 page.
    assert as_alice.get(detail(task)).status_code == 200


def test_a_succeeded_task_shows_output_costs_and_receipt(as_alice, funded_alice, echo):
    task = settle(
        submit(funded_alice, echo, budget=250_000),
        Execution(
            exit_code=0,
            stdout=b'{"words": 3}',
            fuel_used=123_457,
            fuel_limit=1_000_000,
            elapsed_ms=12,
        ),
    )

    body = page(as_alice.get(detail(task)))

    # cost = 1_000 + ceil(123_457 × 2_000 / 1e6) = 1_247; fee = 5 % → 62
    assert (task.cost, task.fee, task.refund) == (1_247, 62, 248_753)
    assert 'data-testid="cost">0.001247 CR<' in body
    assert 'data-testid="fee">0.000062 CR<' in body
    assert 'data-testid="refund" class="pos">0.248753 CR<' in body
    assert "0.001185 CR" in body  # paid to the agent
    assert "&quot;words&quot;: 3" in body
    assert "123,457 of 1,000,000" in body
    assert "Verify signature" in body and "Download JSON" in body


def test_a_failed_task_shows_its_reason_and_the_refund(as_alice, funded_alice, echo):
    task = settle(
        submit(funded_alice, echo, budget=250_000),
        Execution(reason="trap", stderr=b"boom", elapsed_ms=3, detail="unreachable executed"),
    )

    body = page(as_alice.get(detail(task)))

    failure = body.split('data-testid="failure">')[1].split("</div>")[0]
    assert "Trap: the agent crashed" in failure
    assert "Unreachable executed." in failure
    assert "Your budget of 0.250000 CR was refunded in full." in failure
    assert 'data-testid="refund" class="pos">0.250000 CR<' in body
    assert "boom" in body
    assert balance(funded_alice) == 10_000_000


def test_another_users_task_is_not_found(as_charlie, as_bob, funded_alice, echo):
    task = settle(submit(funded_alice, echo))

    for client in (as_charlie, as_bob):  # bob owns the agent, not the task
        assert client.get(detail(task)).status_code == 404
        assert client.get(detail(task), **HTMX).status_code == 404
        assert client.get(reverse("task-receipt", args=[task.pk])).status_code == 404
        assert client.post(reverse("task-verify", args=[task.pk])).status_code == 404
        assert client.post(reverse("task-cancel", args=[task.pk])).status_code == 404
    assert as_charlie.get(reverse("task-detail", args=[uuid.uuid4()])).status_code == 404


# --- cancel -------------------------------------------------------------------------------


def test_cancelling_a_queued_task_refunds_it(as_alice, funded_alice, echo):
    task = submit(funded_alice, echo)

    response = as_alice.post(reverse("task-cancel", args=[task.pk]))

    assert response["Location"] == detail(task)
    task.refresh_from_db()
    assert (task.status, task.refund) == ("cancelled", task.budget)
    assert balance(funded_alice) == 10_000_000
    body = as_alice.get(detail(task)).content.decode()
    assert "Task cancelled; 0.250000 CR refunded." in body
    assert "Cancelled before it ran." in body


def test_cancelling_over_htmx_swaps_the_panel(as_alice, funded_alice, echo):
    task = submit(funded_alice, echo)

    body = fragment(as_alice.post(reverse("task-cancel", args=[task.pk]), **HTMX))

    assert "badge-cancelled" in body
    assert "Task cancelled" in body  # the flash message, out of band


def test_a_running_task_cannot_be_cancelled(as_alice, funded_alice, echo):
    task = submit(funded_alice, echo)
    task_claim(task_id=task.pk)

    as_alice.post(reverse("task-cancel", args=[task.pk]))

    body = as_alice.get(detail(task)).content.decode()
    assert "Only a queued task can be cancelled; this one is running." in body
    assert Task.objects.get(pk=task.pk).status == "running"


def test_cancel_is_a_post(as_alice, funded_alice, echo):
    task = submit(funded_alice, echo)

    assert as_alice.get(reverse("task-cancel", args=[task.pk])).status_code == 405


# --- receipts -------------------------------------------------------------------------------


def test_the_receipt_downloads_as_json_that_verifies(as_alice, funded_alice, echo):
    task = settle(submit(funded_alice, echo))

    response = as_alice.get(reverse("task-receipt", args=[task.pk]))

    assert response["Content-Type"] == "application/json"
    assert f'filename="receipt-{task.pk}.json"' in response["Content-Disposition"]
    receipt = json.loads(response.content)
    assert receipt_verify(receipt)
    assert json.loads(receipt["payload"])["task_id"] == str(task.pk)


def test_no_receipt_before_the_task_settles(as_alice, funded_alice, echo):
    task = submit(funded_alice, echo)

    assert as_alice.get(reverse("task-receipt", args=[task.pk])).status_code == 404
    assert as_alice.post(reverse("task-verify", args=[task.pk])).status_code == 404


def test_the_verify_button_checks_the_signature(as_alice, funded_alice, echo):
    task = settle(submit(funded_alice, echo))
    verify = reverse("task-verify", args=[task.pk])

    htmx = fragment(as_alice.post(verify, **HTMX))
    assert htmx.lstrip().startswith('<span id="verification"')
    assert "✓ Valid signature" in htmx

    plain = as_alice.post(verify)
    assert plain["Location"] == detail(task) + "#receipt"
    assert "The receipt&#x27;s signature is valid" in as_alice.get(detail(task)).content.decode()


def test_a_tampered_receipt_does_not_verify(as_alice, funded_alice, echo):
    task = settle(submit(funded_alice, echo))
    from execution.models import Receipt

    Receipt.objects.filter(task=task).update(payload=task.receipt.payload.replace("1", "2", 1))

    assert (
        "does not verify"
        in as_alice.post(reverse("task-verify", args=[task.pk]), **HTMX).content.decode()
    )


# --- the task list ---------------------------------------------------------------------------


def test_the_task_list_shows_only_the_users_tasks_and_filters_by_status(
    as_alice, as_charlie, funded_alice, echo
):
    done = settle(submit(funded_alice, echo))
    queued = submit(funded_alice, echo)

    everything = page(as_alice.get(reverse("task-list")))
    assert detail(done) in everything and detail(queued) in everything
    only_queued = as_alice.get(reverse("task-list"), {"status": "queued"}).content.decode()
    assert detail(queued) in only_queued and detail(done) not in only_queued
    assert 'hx-trigger="every 1s"' in only_queued  # something is moving: poll fast
    assert "No tasks yet" in as_charlie.get(reverse("task-list")).content.decode()
    cancelled = as_alice.get(reverse("task-list"), {"status": "cancelled"})
    assert "No tasks with this status" in cancelled.content.decode()
    rows = fragment(as_alice.get(reverse("task-list"), **HTMX))
    assert rows.lstrip().startswith('<section class="card" id="task-rows"')
