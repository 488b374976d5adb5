"""The operator console: every model listed and searchable, the ledger read-only, actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from escrow.models import Account, Escrow, RequesterKey, Transfer
from execution.services import task_claim
from marketplace.models import Agent, Task
from tests.views.conftest import balance, client_for, settle, submit

pytestmark = pytest.mark.django_db
APPS = {"marketplace", "escrow", "reputation", "execution"}


@pytest.fixture
def operator() -> Client:
    return client_for(User.objects.create_superuser("root", password="a long enough passphrase"))


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def action(client: Client, model, name: str, *pks):
    return client.post(
        changelist(model),
        {"action": name, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )


def our_models():
    return [model for model in admin.site._registry if model._meta.app_label in APPS]


def test_every_model_is_in_the_admin_with_columns_filters_and_search(operator, funded_alice, echo):
    settle(submit(funded_alice, echo))
    submit(funded_alice, echo)
    registered = {model._meta.label for model in our_models()}
    assert {
        "marketplace.Agent",
        "marketplace.AgentBinary",
        "marketplace.Task",
        "marketplace.IdempotencyRecord",
        "escrow.Account",
        "escrow.Transfer",
        "escrow.Escrow",
        "reputation.AgentReputation",
        "reputation.ReputationEvent",
        "execution.Receipt",
        "escrow.PaymentChannel",
        "escrow.Voucher",
        "escrow.RequesterKey",
    } <= registered
    for model in our_models():
        model_admin = admin.site._registry[model]
        assert len(model_admin.list_display) > 2, model
        assert model_admin.list_filter, model
        assert model_admin.search_fields, model
        assert operator.get(changelist(model)).status_code == 200, model
        assert operator.get(changelist(model), {"q": "echo"}).status_code == 200, model


def test_the_ledger_is_read_only(operator, funded_alice):
    transfer = Transfer.objects.get()
    account = Account.objects.get(user=funded_alice)
    for model, obj in ((Transfer, transfer), (Account, account)):
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        change = reverse(f"{name}_change", args=[obj.pk])
        assert operator.get(change).status_code == 200  # view only
        assert operator.post(change, {"amount": "1", "balance": "1"}).status_code == 403
        assert operator.get(reverse(f"{name}_add")).status_code == 403
        assert operator.post(reverse(f"{name}_delete", args=[obj.pk])).status_code == 403
    transfer.refresh_from_db()
    assert transfer.amount == 10_000_000 and balance(funded_alice) == 10_000_000


def test_custodial_voucher_keys_are_never_shown(operator, alice):
    from escrow.channels import custodial_key

    key = custodial_key(user_id=alice.pk)

    body = operator.get(reverse("admin:escrow_requesterkey_change", args=[key.pk])).content
    assert key.custodial_secret.encode() not in body
    listing = operator.get(changelist(RequesterKey)).content
    assert key.custodial_secret.encode() not in listing and key.key_id.encode() in listing


def test_a_task_page_in_the_admin_shows_its_output(operator, funded_alice, echo):
    task = settle(submit(funded_alice, echo))

    body = operator.get(reverse("admin:marketplace_task_change", args=[task.pk])).content

    assert b"<pre" in body and b"hello" in body


def test_suspending_and_activating_agents(operator, echo):
    done = action(operator, Agent, "suspend", echo.pk)
    echo.refresh_from_db()
    assert echo.status == "suspended"
    assert "Suspended 1 agent(s)" in " ".join(messages_of(done))

    again = action(operator, Agent, "suspend", echo.pk)
    assert "Suspended 0 agent(s)" in " ".join(messages_of(again))

    action(operator, Agent, "activate", echo.pk)
    echo.refresh_from_db()
    assert echo.status == "active"


def test_editing_an_agent_goes_through_the_service(operator, echo):
    url = reverse("admin:marketplace_agent_change", args=[echo.pk])
    data = {
        "name": "Echo II",
        "description": "",
        "tags": "text",
        "base_fee": "5000",
        "fuel_price": "2000",
        "output_schema": "null",
        "recommended_fuel": "2000000",
        "recommended_memory_mb": "64",
        "recommended_timeout_ms": "10000",
    }

    response = operator.post(url, data)

    assert response.status_code == 302, response.content.decode()[-2000:]
    echo.refresh_from_db()
    assert (echo.name, echo.base_fee, echo.tags, echo.status, echo.recommended_fuel) == (
        "Echo II",
        5_000,
        "text",
        "active",
        2_000_000,
    )


def test_refunding_a_stuck_queued_task_cancels_it(operator, funded_alice, echo):
    task = submit(funded_alice, echo)

    response = action(operator, Task, "refund", task.pk)

    task.refresh_from_db()
    assert (task.status, task.refund) == ("cancelled", task.budget)
    assert balance(funded_alice) == 10_000_000
    assert "cancelled, 0.250000 CR refunded" in " ".join(messages_of(response))


def test_refunding_a_stuck_running_task_fails_it_as_a_platform_error(
    operator, funded_alice, echo, bob
):
    task = submit(funded_alice, echo)
    task_claim(task_id=task.pk)

    action(operator, Task, "refund", task.pk)

    task.refresh_from_db()
    assert (task.status, task.failure_reason) == ("failed", "platform_error")
    assert task.failure_detail == "refunded by an operator"
    assert (task.cost, task.refund) == (0, task.budget)
    assert Escrow.objects.get(task=task).status == "refunded"
    assert balance(funded_alice) == 10_000_000 and balance(bob) == 0
    assert task.reputation_event.delta == 0  # not the agent's fault
    assert task.receipt is not None


def test_a_finished_task_cannot_be_refunded(operator, funded_alice, echo):
    task = settle(submit(funded_alice, echo))

    response = action(operator, Task, "refund", task.pk)

    text = " ".join(messages_of(response))
    assert "Only a queued or running task can be refunded" in text
    assert "Nothing was refunded." in text
    assert Task.objects.get(pk=task.pk).status == "succeeded"


def test_requeueing_moves_only_stuck_tasks_back_to_the_queue(operator, funded_alice, echo):
    stuck = submit(funded_alice, echo)
    alive = submit(funded_alice, echo)
    task_claim(task_id=stuck.pk)
    task_claim(task_id=alive.pk)
    Task.objects.filter(pk=stuck.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    response = action(operator, Task, "requeue", stuck.pk, alive.pk)

    stuck.refresh_from_db()
    alive.refresh_from_db()
    assert (stuck.status, stuck.lease_expires_at, stuck.attempts) == ("queued", None, 1)
    assert alive.status == "running"
    text = " ".join(messages_of(response))
    assert "Requeued 1 task(s)." in text and "Left 1 task(s) alone" in text
    # The requeued task runs again as the next attempt.
    claim = task_claim(task_id=stuck.pk)
    assert claim is not None and claim[1] == 2


def test_the_stuck_filter_finds_expired_leases(operator, funded_alice, echo):
    stuck = submit(funded_alice, echo)
    task_claim(task_id=stuck.pk)
    Task.objects.filter(pk=stuck.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    fine = submit(funded_alice, echo)

    body = operator.get(changelist(Task), {"lease": "expired"}).content.decode()

    assert str(stuck.pk) in body and str(fine.pk) not in body


def test_the_ledger_audit_runs_from_the_admin(operator, funded_alice, echo):
    settle(submit(funded_alice, echo))
    body = operator.get(changelist(Transfer)).content.decode()
    assert "Run the ledger audit" in body

    response = operator.post(reverse("admin:escrow_ledger_audit"), follow=True)

    text = " ".join(messages_of(response))
    assert "Ledger audit passed" in text and "5 transfers" in text
    assert operator.get(reverse("admin:escrow_ledger_audit")).status_code == 405


@pytest.mark.corrupts_ledger
def test_the_ledger_audit_reports_violations(operator, funded_alice):
    Account.objects.filter(user=funded_alice).update(balance=1)

    response = operator.post(
        reverse("admin:escrow_ledger_audit"), {"next": changelist(Account)}, follow=True
    )

    text = " ".join(messages_of(response))
    assert "Ledger audit FAILED" in text
    assert "holds 1 µCR but its transfers add up to 10000000 µCR" in text
    assert response.redirect_chain[-1][0] == changelist(Account)


def test_the_reputation_audit_runs_from_the_admin(operator, funded_alice, echo):
    settle(submit(funded_alice, echo))

    response = operator.post(reverse("admin:reputation_audit"), follow=True)

    assert "Reputation audit passed: 1 events" in " ".join(messages_of(response))


def test_users_who_are_not_staff_cannot_reach_the_admin(as_alice):
    for url in (changelist(Task), reverse("admin:escrow_ledger_audit")):
        response = as_alice.post(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
