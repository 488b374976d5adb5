"""Deadlines (SPEC §19): a task not started by its deadline is cancelled as deadline_passed,
with the refund of any cancellation, a `task.cancelled` webhook and no reputation event, by
the sweep or by the worker that claims it late; a running task is left to its own timeout.

These run the services in this process on either database; tests/test_deadlines_workers.py
does it with real workers behind a blocked queue. bob owns the agent, alice submits. The
ledger and reputation audits also run after every test (tests/conftest.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from escrow.audit import ledger_audit
from escrow.channels import channel_open, key_register
from escrow.models import Escrow, PaymentChannel
from escrow.services import deposit_create
from execution.deadlines import deadlines_sweep, tasks_cancel_overdue
from execution.models import Receipt
from execution.services import Execution, task_claim, task_execute, task_settle
from marketplace.apikey_models import ApiKeyCharge
from marketplace.apikeys import api_key_create, api_key_spending
from marketplace.errors import LimitExceeded
from marketplace.models import Task
from marketplace.services import task_submit
from marketplace.webhooks.models import WebhookDelivery
from marketplace.webhooks.outbox import webhook_create
from reputation.models import ReputationEvent
from tests.factories import KEY, balance, make_agent, public, sign

pytestmark = pytest.mark.django_db(transaction=True)

FUNDS = 10_000_000
BUDGET = 100_000


@pytest.fixture
def people(alice, bob):
    deposit_create(user_id=alice.pk, amount=FUNDS)
    return alice, make_agent(bob, slug="echo")


def submit(alice: Any, agent: Any, **options: Any) -> Task:
    options.setdefault("deadline_seconds", 30)
    return task_submit(requester=alice, agent=agent, input="hi", budget=BUDGET, **options)


def overdue(task: Task, by: float = 1.0) -> None:
    """Move the task's deadline into the past, as if its seconds had gone by."""
    Task.objects.filter(pk=task.pk).update(deadline_at=timezone.now() - timedelta(seconds=by))


def assert_cancelled_for_its_deadline(task: Task) -> Task:
    task.refresh_from_db()
    assert (task.status, task.failure_reason) == ("cancelled", "deadline_passed")
    assert (task.cost, task.fee, task.refund) == (0, 0, BUDGET)
    assert task.started_at is None and task.finished_at is not None
    assert not ReputationEvent.objects.filter(task_id=task.pk).exists()
    assert not Receipt.objects.filter(task_id=task.pk).exists()
    return task


def test_a_submission_stores_its_deadline(people):
    alice, agent = people
    before = timezone.now()
    task = submit(alice, agent, deadline_seconds=90)
    assert task.deadline_at is not None
    assert (
        before + timedelta(seconds=90) <= task.deadline_at <= timezone.now() + timedelta(seconds=90)
    )
    assert submit(alice, agent, deadline_seconds=None).deadline_at is None


@pytest.mark.parametrize("seconds", [0, -1, 86_401, True, 1.5, "10"])
def test_a_deadline_out_of_range_is_refused_before_anything_moves(people, seconds):
    alice, agent = people
    with pytest.raises(LimitExceeded):
        submit(alice, agent, deadline_seconds=seconds)
    assert Task.objects.count() == 0
    assert balance(alice) == FUNDS


def test_the_sweep_cancels_a_task_past_its_deadline_with_a_full_refund_and_a_webhook(people):
    alice, agent = people
    endpoint = webhook_create(
        owner=alice, url="http://127.0.0.1:9/hooks", events=["task.cancelled"]
    )
    late, on_time = submit(alice, agent), submit(alice, agent, deadline_seconds=3600)
    overdue(late)
    assert balance(alice) == FUNDS - 2 * BUDGET

    assert tasks_cancel_overdue() == {"cancelled": 1, "errors": 0}

    assert_cancelled_for_its_deadline(late)
    assert Escrow.objects.get(task_id=late.pk).status == "refunded"
    assert balance(alice) == FUNDS - BUDGET  # late's budget back to the µCR
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.type, delivery.object_id) == ("task.cancelled", str(late.pk))
    on_time.refresh_from_db()
    assert on_time.status == "queued"
    assert tasks_cancel_overdue() == {"cancelled": 0, "errors": 0}  # nothing twice
    assert ledger_audit().ok


def test_a_sweep_with_nothing_overdue_is_one_read(people, django_assert_num_queries):
    alice, agent = people
    submit(alice, agent, deadline_seconds=3600)
    submit(alice, agent, deadline_seconds=None)
    with django_assert_num_queries(1):
        assert deadlines_sweep() == {"cancelled": 0, "errors": 0}


def test_a_worker_that_claims_a_task_past_its_deadline_cancels_it_instead_of_running_it(people):
    alice, agent = people
    task = submit(alice, agent)
    overdue(task)

    outcome = task_execute(task_id=task.pk)

    assert "cancelled" in outcome
    task = assert_cancelled_for_its_deadline(task)
    assert task.attempts == 1 and task.lease_expires_at is None
    assert balance(alice) == FUNDS
    assert Escrow.objects.get(task_id=task.pk).status == "refunded"


def test_a_running_task_is_not_cancelled_by_its_deadline(people):
    alice, agent = people
    task = submit(alice, agent)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    overdue(task)

    assert tasks_cancel_overdue() == {"cancelled": 0, "errors": 0}

    task.refresh_from_db()
    assert task.status == "running"
    ran = Execution(exit_code=0, stdout=b"hi", fuel_used=1_000_000, fuel_limit=task.fuel_limit)
    assert task_settle(task_id=task.pk, attempt=claim[1], execution=ran)
    task.refresh_from_db()
    assert (task.status, task.cost) == ("succeeded", 3_000)  # 1,000 base + 2,000 for 1 M fuel
    assert balance(alice) == FUNDS - 3_000


def test_a_channel_paid_task_past_its_deadline_releases_its_reservation(people, bob):
    alice, agent = people
    key_register(user_id=alice.pk, public_key=public(KEY))
    channel = channel_open(
        requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=1_000_000
    )
    task = submit(
        alice,
        agent,
        payment="channel",
        channel=str(channel.pk),
        voucher=sign(channel.pk, 1, BUDGET),
    )
    channel.refresh_from_db()
    assert (channel.reserved, channel.in_flight) == (BUDGET, 1)
    overdue(task)

    assert tasks_cancel_overdue() == {"cancelled": 1, "errors": 0}

    assert_cancelled_for_its_deadline(task)
    channel = PaymentChannel.objects.get(pk=channel.pk)
    assert (channel.redeemed, channel.reserved, channel.in_flight) == (0, 0, 0)
    assert Escrow.objects.get(task_id=task.pk).status == "cancelled"
    assert balance(alice) == FUNDS - 1_000_000  # the deposit stays in the open channel
    assert ledger_audit().ok


def test_an_api_key_gets_its_budget_back_when_the_deadline_cancels_its_task(people):
    alice, agent = people
    key, _ = api_key_create(user=alice, name="robot", scopes=["tasks:write"])
    task = submit(alice, agent, api_key=key)
    key.refresh_from_db()
    assert api_key_spending(key).total == BUDGET
    overdue(task)

    assert tasks_cancel_overdue() == {"cancelled": 1, "errors": 0}

    assert_cancelled_for_its_deadline(task)
    key.refresh_from_db()
    assert api_key_spending(key).total == 0
    assert ApiKeyCharge.objects.get(task_id=task.pk).given_back == BUDGET
