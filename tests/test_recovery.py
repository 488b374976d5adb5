"""Recovery moves every lost task on, even when one of them cannot be moved (SPEC §13)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import DatabaseError, transaction
from django.utils import timezone
from django_q.models import OrmQ

from escrow.models import Account
from escrow.services import deposit_create
from execution import services
from execution.services import task_claim, tasks_recover
from marketplace.models import Task
from marketplace.services import task_submit

pytestmark = pytest.mark.django_db
FUNDS = 10_000_000
BUDGET = 100_000


def lost_running_task(requester, agent, *, attempts: int) -> Task:
    """A task whose worker vanished: claimed `attempts` times, its lease long expired."""
    task = task_submit(requester=requester, agent=agent, input="hi", budget=BUDGET)
    assert task_claim(task_id=task.pk) is not None
    Task.objects.filter(pk=task.pk).update(
        attempts=attempts, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    return task


def lost_queued_task(requester, agent, settings) -> Task:
    """A queued task whose message was lost: nobody picked it up for too long."""
    task = task_submit(requester=requester, agent=agent, input="hi", budget=BUDGET)
    # On PostgreSQL the message is written with the task: the broker loses every message.
    OrmQ.objects.all().delete()
    long_ago = timezone.now() - timedelta(seconds=settings.REQUEUE_AFTER_SECONDS + 1)
    Task.objects.filter(pk=task.pk).update(enqueued_at=long_ago)
    return task


def test_one_task_that_cannot_be_recovered_does_not_stop_the_others(
    alice, agent, settings, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    settings.MAX_ATTEMPTS = 2
    deposit_create(user_id=alice.pk, amount=FUNDS)
    broken_running = lost_running_task(alice, agent, attempts=1)
    requeue_me = lost_running_task(alice, agent, attempts=1)
    fail_me = lost_running_task(alice, agent, attempts=2)
    broken_queued = lost_queued_task(alice, agent, settings)
    resend_me = lost_queued_task(alice, agent, settings)
    real_requeue, real_enqueue = services.task_requeue, services.task_enqueue

    def requeue(*, task_id):
        if str(task_id) == str(broken_running.pk):
            # A database error in the task's own transaction, after it changed the row.
            with transaction.atomic(durable=True):
                Task.objects.filter(pk=task_id).update(status=Task.Status.QUEUED)
                raise DatabaseError("deadlock detected")
        return real_requeue(task_id=task_id)

    def enqueue(*, task_id):
        if str(task_id) == str(broken_queued.pk):
            raise DatabaseError("could not serialize access")
        real_enqueue(task_id=task_id)

    resent_before = Task.objects.get(pk=resend_me.pk).enqueued_at
    broken_before = Task.objects.get(pk=broken_queued.pk).enqueued_at
    monkeypatch.setattr(services, "task_requeue", requeue)
    monkeypatch.setattr(services, "task_enqueue", enqueue)
    with caplog.at_level(logging.ERROR, logger="execution.services"):
        counts = tasks_recover()

    assert counts == {"requeued": 1, "failed": 1, "resent": 1, "errors": 2}
    state = {
        name: Task.objects.values_list("status", "failure_reason", "refund").get(pk=task.pk)
        for name, task in {
            "broken_running": broken_running,
            "requeue_me": requeue_me,
            "fail_me": fail_me,
            "broken_queued": broken_queued,
            "resend_me": resend_me,
        }.items()
    }
    assert state == {
        "broken_running": ("running", "", None),  # its own transaction rolled back
        "requeue_me": ("queued", "", None),
        "fail_me": ("failed", "platform_error", BUDGET),
        "broken_queued": ("queued", "", None),
        "resend_me": ("queued", "", None),
    }
    enqueued = dict(Task.objects.values_list("pk", "enqueued_at"))
    assert enqueued[resend_me.pk] != resent_before  # resent: the clock starts again
    assert enqueued[broken_queued.pk] == broken_before  # its own transaction rolled back
    assert Account.objects.get(user=alice).balance == FUNDS - 4 * BUDGET
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert str(broken_running.pk) in logged and str(broken_queued.pk) in logged

    # Once the fault is gone, the next run picks the two up like any other.
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks_recover() == {"requeued": 1, "failed": 0, "resent": 1, "errors": 0}
