"""Webhooks end to end against a real HTTP receiver on 127.0.0.1: the outbox written with
the change it reports, signed deliveries, retries with the same event and bytes, backoff,
and disabling an endpoint that keeps failing (on a frozen clock).

Deliveries run here, in the test process, exactly as the worker's q2 task runs them; the
real worker processes are in test_webhooks_worker.py.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from rest_framework.test import APIClient

from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent, Task
from marketplace.services import task_cancel, task_submit
from marketplace.webhooks import delivery
from marketplace.webhooks.keyring import secret_encrypt
from marketplace.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from marketplace.webhooks.outbox import webhook_create, webhook_event_record, webhook_ping
from tests.factories import AgentBinaryFactory, AgentFactory, UserFactory
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
Status = WebhookDelivery.Status


def readme_verify() -> Any:
    """`verify_signature` exactly as docs/api.md prints it for receivers."""
    text = (ROOT / "docs" / "api.md").read_text()
    [snippet] = [
        block
        for block in re.findall(r"```python\n(.*?)```", text, re.S)
        if "def verify_signature" in block
    ]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 (our own documentation)
    return namespace["verify_signature"]


@pytest.fixture
def people():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1_000, fuel_price=2_000)
    Agent.objects.filter(pk=agent.pk).update(current_binary=AgentBinaryFactory.create(agent=agent))
    agent.refresh_from_db()
    return alice, bob, agent


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


class Clock:
    """timezone.now() frozen at `now`, moved on by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = timezone.now()
        monkeypatch.setattr(timezone, "now", lambda: self.now)

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def to(self, moment: datetime) -> None:
        self.now = moment


def succeed(task: Task, *, fuel: int = 123_456) -> None:
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    ran = Execution(exit_code=0, stdout=b"hello", fuel_used=fuel, fuel_limit=task.fuel_limit)
    assert task_settle(task_id=task.pk, attempt=claim[1], execution=ran)


def submit(alice: Any, agent: Agent, **options: Any) -> Task:
    return task_submit(requester=alice, agent=agent, input="hello", budget=100_000, **options)


def the_delivery(**filters: Any) -> WebhookDelivery:
    return WebhookDelivery.objects.get(**filters)


def test_a_settled_task_is_delivered_once_signed_with_the_task_body(people, receiver):
    alice, _, agent = people
    endpoint = webhook_create(owner=alice, url=receiver.url, events=["task.succeeded"])
    task = submit(alice, agent)
    succeed(task)

    row = the_delivery()
    # The settlement wrote a small row; nothing was rendered inside its transaction.
    assert (row.type, row.object_id, row.status, row.attempts) == (
        "task.succeeded",
        str(task.pk),
        "pending",
        0,
    )
    assert not WebhookEvent.objects.exists()
    # …and handed it to the broker after the commit.
    sent = [(message.task["func"], message.task["args"]) for message in OrmQ.objects.all()]
    assert ("marketplace.webhooks.tasks.deliver_event", (row.event_id,)) in sent
    assert delivery.deliver_event(row.event_id).endswith("delivered")

    [got] = receiver.wait_for(1)
    event = json.loads(got.body)
    assert set(event) == {"id", "type", "created", "data"}
    assert (event["id"], event["type"]) == (row.event_id, "task.succeeded")
    assert re.fullmatch(r"evt_[0-9a-f]{24}", event["id"])
    assert abs(event["created"] - time.time()) < 60
    api = APIClient()
    api.force_authenticate(alice)
    assert event["data"] == {
        "task": api.get(f"/api/v1/tasks/{task.pk}/").json(),
        "links": {"task": f"/api/v1/tasks/{task.pk}/"},
    }
    assert got.headers["X-Exchange-Event"] == "task.succeeded"
    assert got.headers["Content-Type"] == "application/json"
    verify = readme_verify()
    assert verify(endpoint.secret, got.body, got.headers["X-Exchange-Signature"])
    assert not verify("whsec_wrong", got.body, got.headers["X-Exchange-Signature"])
    assert not verify(endpoint.secret, got.body + b" ", got.headers["X-Exchange-Signature"])

    row.refresh_from_db()
    assert (row.status, row.attempts, row.next_attempt_at) == ("delivered", 1, None)
    # The body is frozen once, for the event.
    assert WebhookEvent.objects.get(pk=row.event_id).body.encode() == got.body
    [attempt] = WebhookAttempt.objects.all()
    assert (attempt.number, attempt.status_code, attempt.succeeded, attempt.error) == (
        1,
        200,
        True,
        "",
    )
    endpoint.refresh_from_db()
    assert endpoint.last_success_at is not None and endpoint.consecutive_failures == 0
    # A second message for the same attempt finds it taken: still one request.
    assert "taken or finished" in delivery.deliver(row.pk, 0)
    assert len(receiver.received) == 1


def test_a_500_then_a_200_delivers_twice_with_the_same_event_id_and_body(people, monkeypatch):
    alice, _, agent = people
    clock = Clock(monkeypatch)
    with Receiver((500, 200)) as receiver:
        endpoint = webhook_create(owner=alice, url=receiver.url, events=["task.failed"])
        task = submit(alice, agent)
        claim = task_claim(task_id=task.pk)
        assert claim is not None
        crashed = Execution(reason="trap", detail="unreachable", fuel_limit=task.fuel_limit)
        task_settle(task_id=task.pk, attempt=claim[1], execution=crashed)
        row = the_delivery()
        delivery.deliver_event(row.event_id)

        row.refresh_from_db()
        assert (row.status, row.attempts) == ("pending", 1)
        # The first retry is due 30 s later, and q2 is asked to run it then.
        assert row.next_attempt_at == clock.now + timedelta(seconds=30)
        retry = Schedule.objects.get(func="marketplace.webhooks.tasks.deliver")
        assert (retry.schedule_type, retry.next_run, retry.args) == (
            Schedule.ONCE,
            row.next_attempt_at,
            f"({row.pk}, 1)",
        )
        # Not due yet: the minute's sweep leaves it alone.
        assert delivery.deliveries_sweep()["sent"] == 0
        clock.advance(seconds=30)
        assert delivery.deliveries_sweep()["sent"] == 1
        assert delivery.deliver(row.pk, 1).endswith("delivered")

        first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert json.loads(first.body)["id"] == json.loads(second.body)["id"] == row.event_id
    assert json.loads(first.body)["data"]["task"]["failure_reason"] == "trap"
    verify = readme_verify()
    for got in (first, second):
        assert verify(endpoint.secret, got.body, got.headers["X-Exchange-Signature"])
    log = list(WebhookAttempt.objects.order_by("number").values_list("number", "status_code"))
    assert log == [(1, 500), (2, 200)]
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("delivered", 2)
    endpoint.refresh_from_db()
    assert (endpoint.consecutive_failures, endpoint.failing_since) == (0, None)


def test_retries_back_off_over_about_a_day_then_stop(people, monkeypatch, settings):
    alice, _, _ = people
    clock = Clock(monkeypatch)
    with Receiver((500,) * 20) as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
        with transaction.atomic():
            webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="x")
        row = the_delivery()
        started = clock.now
        waits = []
        for attempt in range(settings.WEBHOOK_MAX_ATTEMPTS):
            delivery.deliver(row.pk, attempt)
            row.refresh_from_db()
            if row.next_attempt_at is None:
                break
            waits.append(row.next_attempt_at - clock.now)
            clock.to(row.next_attempt_at)
        receiver.wait_for(9)
    assert [w.total_seconds() for w in waits] == [30 * 3**n for n in range(8)]
    span = clock.now - started
    assert timedelta(hours=24) < span < timedelta(hours=30)
    assert (row.status, row.attempts) == ("failed", 9)
    assert WebhookAttempt.objects.count() == 9
    # A failed event is not tried again.
    assert delivery.deliveries_sweep()["sent"] == 0


def test_an_endpoint_failing_for_days_is_disabled_with_a_notice(people, monkeypatch, settings):
    alice, _, _ = people
    clock = Clock(monkeypatch)
    with Receiver((503,) * 100) as receiver:
        endpoint = webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])

        def fail_once(object_id: str) -> WebhookDelivery:
            with transaction.atomic():
                webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id=object_id)
            row = the_delivery(object_id=object_id)
            delivery.deliver(row.pk, 0)
            return row

        # Failing often, but for less than three days: still enabled.
        for hour in range(0, 71, 5):
            fail_once(f"early-{hour}")
            clock.advance(hours=5)
        endpoint.refresh_from_db()
        assert endpoint.disabled_at is None and endpoint.consecutive_failures == 15
        waiting = the_delivery(object_id="early-0")
        assert waiting.status == "pending"
        clock.advance(hours=2)  # 3 days and 2 h after the first failure
        fail_once("late")
    endpoint.refresh_from_db()
    assert endpoint.disabled_at == clock.now
    assert "every delivery failed for over 3 days" in endpoint.disabled_reason
    # Its waiting events are dropped, and new events no longer go to it.
    waiting.refresh_from_db()
    assert waiting.status == "skipped"
    assert not WebhookDelivery.objects.filter(status="pending").exists()
    with transaction.atomic():
        assert webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="y") is None
    # The API shows why.
    api = APIClient()
    api.force_authenticate(alice)
    shown = api.get(f"/api/v1/webhooks/{endpoint.pk}/").json()
    assert shown["disabled_at"] is not None and "3 days" in shown["disabled_reason"]
    assert api.post(f"/api/v1/webhooks/{endpoint.pk}/ping/").status_code == 409
    # Enabled again, it takes events with a clean record.
    enabled = api.post(f"/api/v1/webhooks/{endpoint.pk}/enable/").json()
    assert (enabled["disabled_at"], enabled["consecutive_failures"]) == (None, 0)
    with transaction.atomic():
        assert webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="z")


def test_each_subscribed_endpoint_gets_its_row_in_the_changes_transaction(people):
    alice, bob, agent = people
    url = "http://127.0.0.1:9/hooks"
    wants = webhook_create(owner=alice, url=url, events=["task.succeeded", "task.failed"])
    also = webhook_create(owner=alice, url=url + "2", events=["task.succeeded"])
    webhook_create(owner=alice, url=url + "3", events=["task.cancelled"])
    WebhookEndpoint.objects.create(
        owner=alice,
        url=url,
        events="task.succeeded",
        secret_encrypted=secret_encrypt("s"),
        disabled_at=timezone.now(),
    )
    webhook_create(owner=bob, url=url, events=["task.succeeded"])
    task = submit(alice, agent)
    succeed(task)
    rows = WebhookDelivery.objects.all()
    assert {row.endpoint_id for row in rows} == {wants.pk, also.pk}
    # One event, one id, whichever endpoint it goes to.
    assert len({row.event_id for row in rows}) == 1

    # A change that rolls back takes its event with it.
    with pytest.raises(RuntimeError), transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.succeeded", object_id="rolled back")
        raise RuntimeError
    assert not WebhookDelivery.objects.filter(object_id="rolled back").exists()


def test_cancelling_a_task_reports_task_cancelled(people, receiver):
    alice, _, agent = people
    webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
    task = task_cancel(task=submit(alice, agent))
    row = the_delivery()
    assert (row.type, row.object_id) == ("task.cancelled", str(task.pk))
    delivery.deliver_event(row.event_id)
    [got] = receiver.wait_for(1)
    body = json.loads(got.body)
    assert body["data"]["task"]["status"] == "cancelled"
    assert body["data"]["task"]["refund"] == 100_000


def test_a_ping_goes_to_that_endpoint_alone_whatever_it_subscribed_to(people, receiver):
    alice, _, _ = people
    endpoint = webhook_create(owner=alice, url=receiver.url, events=["dispute.opened"])
    webhook_create(owner=alice, url=receiver.url, events=["dispute.opened"])
    event_id = webhook_ping(endpoint=endpoint)
    row = the_delivery()
    assert (row.endpoint_id, row.type, row.event_id) == (endpoint.pk, "ping", event_id)
    delivery.deliver_event(event_id)
    [got] = receiver.wait_for(1)
    assert got.headers["X-Exchange-Event"] == "ping"
    assert json.loads(got.body)["data"]["webhook"] == {"id": str(endpoint.pk)}


def test_an_event_whose_message_was_lost_is_sent_by_the_sweep(people, receiver, monkeypatch):
    alice, _, _ = people
    clock = Clock(monkeypatch)
    webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="lost")
    OrmQ.objects.all().delete()  # the broker never got it
    row = the_delivery()
    assert delivery.deliveries_sweep()["sent"] == 0  # the first message may just be late
    clock.advance(seconds=21)
    assert delivery.deliveries_sweep()["sent"] == 1
    # Leased: the next sweep does not send it again while that message is on its way.
    assert delivery.deliveries_sweep()["sent"] == 0
    [message] = OrmQ.objects.all()
    assert (message.task["func"], message.task["args"]) == (
        "marketplace.webhooks.tasks.deliver",
        (row.pk, 0),
    )
    delivery.deliver(row.pk, 0)
    receiver.wait_for(1)
    row.refresh_from_db()
    assert row.status == "delivered"


def test_an_attempt_whose_worker_died_is_sent_again_after_its_lease(people, receiver, monkeypatch):
    alice, _, _ = people
    clock = Clock(monkeypatch)
    webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="died")
    row = the_delivery()
    # A worker claimed attempt 1 and died before recording anything.
    WebhookDelivery.objects.filter(pk=row.pk).update(
        attempts=1, next_attempt_at=clock.now + delivery.attempt_lease()
    )
    assert delivery.deliveries_sweep()["sent"] == 0
    clock.advance(seconds=delivery.attempt_lease().total_seconds() + 1)
    assert delivery.deliveries_sweep()["sent"] == 1
    assert delivery.deliver(row.pk, 1).endswith("delivered")
    [got] = receiver.wait_for(1)
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("delivered", 2)
    assert json.loads(got.body)["id"] == row.event_id


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(people, settings):
    alice, _, _ = people
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    with Receiver(hold=True) as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
        with transaction.atomic():
            webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="slow")
        row = the_delivery()
        started = time.monotonic()
        delivery.deliver(row.pk, 0)
        took = time.monotonic() - started
    assert 0.9 < took < 3
    [attempt] = WebhookAttempt.objects.all()
    assert (attempt.status_code, attempt.succeeded, attempt.error) == (None, False, "timed out")
    assert 900 <= attempt.duration_ms < 3000


def test_deleting_an_endpoint_mid_attempt_drops_the_attempt_quietly(people, receiver, monkeypatch):
    alice, _, _ = people
    endpoint = webhook_create(owner=alice, url=receiver.url, events=["task.cancelled"])
    with transaction.atomic():
        webhook_event_record(owner_id=alice.pk, type="task.cancelled", object_id="gone")
    row = the_delivery()
    real_post = delivery.transport.post

    def post_then_delete(*args: Any, **kwargs: Any) -> Any:
        outcome = real_post(*args, **kwargs)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()
        return outcome

    monkeypatch.setattr(delivery.transport, "post", post_then_delete)
    delivery.deliver(row.pk, 0)
    assert not WebhookDelivery.objects.exists() and not WebhookAttempt.objects.exists()


def test_delivery_refuses_to_run_inside_a_transaction(people):
    with (
        pytest.raises(RuntimeError, match="outside any database transaction"),
        transaction.atomic(),
    ):
        delivery.deliver(1, 0)
