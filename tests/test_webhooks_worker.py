"""Webhooks through real `qcluster` worker processes on PostgreSQL, to a real receiver:
delivered after a real settlement, and still delivered when the worker is SIGKILLed
between the settlement's commit and the delivery, or when the message is lost."""

from __future__ import annotations

import json

import pytest
from django_q.models import OrmQ

from execution.services import Execution, task_claim, task_settle
from marketplace.models import Task
from marketplace.services import task_submit
from marketplace.webhooks.delivery import deliveries_sweep
from marketplace.webhooks.models import WebhookAttempt, WebhookDelivery
from marketplace.webhooks.outbox import webhook_create
from marketplace.webhooks.signing import signature_verify
from tests.factories import echo_world
from tests.webhook_receiver import Receiver
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world():
    return echo_world()


def submit(alice, agent, text: str = "hello hooks") -> Task:
    return task_submit(requester=alice, agent=agent, input=text, budget=500_000)


def delivered(row: WebhookDelivery) -> bool:
    row.refresh_from_db()
    return row.status == WebhookDelivery.Status.DELIVERED


def test_a_task_a_real_worker_settles_is_delivered_signed(world):
    alice, agent = world
    with Receiver() as receiver:
        endpoint = webhook_create(owner=alice, url=receiver.url, events=["task.succeeded"])
        with Cluster() as cluster:
            task = submit(alice, agent)
            row = None

            def recorded() -> bool:
                nonlocal row
                row = WebhookDelivery.objects.filter(object_id=str(task.pk)).first()
                return row is not None and delivered(row)

            wait_for(recorded, timeout=30, message="the delivery", cluster=cluster)
        [got] = receiver.received
    event = json.loads(got.body)
    assert (event["type"], event["data"]["task"]["id"]) == ("task.succeeded", str(task.pk))
    assert event["data"]["task"]["result"]["output"] == "hello hooks"
    assert signature_verify(
        secret=endpoint.secret, body=got.body, header=got.headers["X-Exchange-Signature"]
    )
    assert WebhookAttempt.objects.get(delivery=row).status_code == 200


def test_a_worker_killed_between_commit_and_delivery_still_delivers_the_same_event(world):
    alice, agent = world
    # The receiver holds the first request unanswered: the worker has committed the
    # settlement and is inside the delivery when it dies.
    with Receiver(hold=True) as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.succeeded"])
        cluster = Cluster().start()
        try:
            task = submit(alice, agent)
            assert receiver.got_one.wait(30), cluster.output()
            cluster.kill()
        finally:
            cluster.stop()
        receiver.release()
        task.refresh_from_db()
        assert task.status == "succeeded"
        row = WebhookDelivery.objects.get()
        # The outbox row survived the crash; the attempt never got recorded.
        assert (row.status, row.attempts) == ("pending", 1)
        assert not WebhookAttempt.objects.exists()

        with Cluster() as cluster:
            # Recovery, like the scheduled minute's sweep: sent again once the lease ends.
            wait_for(
                lambda: bool(deliveries_sweep()) and delivered(row),
                timeout=60,
                every=0.5,
                message="the event to be delivered again",
                cluster=cluster,
            )
        first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert json.loads(second.body)["id"] == row.event_id
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("delivered", 2)
    assert list(WebhookAttempt.objects.values_list("number", "status_code")) == [(2, 200)]


def test_an_event_whose_message_was_lost_is_delivered_by_the_sweep(world):
    alice, agent = world
    with Receiver() as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.failed"])
        task = submit(alice, agent)
        claim = task_claim(task_id=task.pk)
        assert claim is not None
        # Settled here, with no worker running; then the broker loses every message.
        lost = Execution(reason="platform_error", detail="lost", fuel_limit=task.fuel_limit)
        assert task_settle(task_id=task.pk, attempt=claim[1], execution=lost)
        OrmQ.objects.all().delete()
        row = WebhookDelivery.objects.get()
        with Cluster() as cluster:
            wait_for(
                lambda: bool(deliveries_sweep()) and delivered(row),
                timeout=60,
                every=0.5,
                message="the sweep to deliver the event",
                cluster=cluster,
            )
        [got] = receiver.wait_for(1)
    assert json.loads(got.body)["data"]["task"]["failure_reason"] == "platform_error"


def test_the_first_retry_comes_within_a_minute(world):
    alice, agent = world
    with Receiver((500, 200)) as receiver:
        webhook_create(owner=alice, url=receiver.url, events=["task.succeeded"])
        with Cluster() as cluster:
            submit(alice, agent)
            try:
                first, second = receiver.wait_for(2, timeout=90)
            except AssertionError:
                raise AssertionError(cluster.output()) from None
    waited = second.at - first.at
    # Due 30 s after the failure; q2's scheduler looks at one-off schedules every 30 s.
    assert 30 <= waited <= 62, waited
    assert second.body == first.body
