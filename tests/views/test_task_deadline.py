"""The task page shows a task's deadline, and why a task its deadline cancelled never ran."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from escrow.services import deposit_create
from execution.deadlines import tasks_cancel_overdue
from marketplace.models import Task
from tests.views.conftest import page, submit

pytestmark = pytest.mark.django_db


def test_the_task_page_shows_the_deadline_and_a_cancellation_for_it(as_alice, alice, echo):
    deposit_create(user_id=alice.pk, amount=1_000_000)
    task = submit(alice, echo, deadline_seconds=600)
    shown = timezone.localtime(task.deadline_at, UTC)

    body = page(as_alice.get(reverse("task-detail", args=[task.pk])))

    assert 'data-testid="deadline"' in body
    assert f"start by {shown:%Y-%m-%d %H:%M:%S} UTC" in body
    assert f'datetime="{shown.isoformat()}"' in body

    Task.objects.filter(pk=task.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert tasks_cancel_overdue()["cancelled"] == 1
    body = page(as_alice.get(reverse("task-detail", args=[task.pk])))

    assert "Cancelled: it had not started by its deadline" in body
    assert "was refunded in full" in body


def test_a_task_without_a_deadline_shows_none(as_alice, alice, echo):
    deposit_create(user_id=alice.pk, amount=1_000_000)
    task = submit(alice, echo)

    body = page(as_alice.get(reverse("task-detail", args=[task.pk])))

    assert 'data-testid="deadline"' not in body and "<dt>Deadline</dt>" not in body
