"""Reads of disputes for the pages: a task's dispute and whether its window is open, the
disputes an owner has to answer and those a requester opened.

Whether a dispute may be opened is decided by `escrow.disputes.dispute_open` under its
locks; the window read here only decides whether the page offers the button. A race
the page loses (the sweep released the earning meanwhile) ends in the service's 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from escrow.models import Dispute, Earning, PaymentChannel
from marketplace.models import Task

DISPUTES_SHOWN = 10


@dataclass(frozen=True)
class TaskDispute:
    dispute: Dispute | None  # the task's latest dispute, if any
    can_open: bool

    @property
    def pending(self) -> bool:
        return self.dispute is not None and self.dispute.status in Dispute.PENDING


def _window_open(task: Task) -> bool:
    """A succeeded task's money can still be disputed: its owner's share is held, or (paid
    through a channel that has not settled) the task cost something."""
    if task.status != Task.Status.SUCCEEDED:
        return False
    escrow = getattr(task, "escrow", None)
    channel_id = escrow.channel_id if escrow is not None else None
    if channel_id is not None:
        status = PaymentChannel.objects.filter(pk=channel_id).values_list("status", flat=True)
        if status.first() != PaymentChannel.Status.SETTLED:
            return bool(escrow.cost) if escrow is not None else False
    return Earning.objects.filter(task=task, status=Earning.Status.HELD).exists()


def task_dispute(task: Task) -> TaskDispute:
    """The dispute state a task's page shows its requester."""
    dispute = Dispute.objects.filter(task=task).order_by("-opened_at", "-id").first()
    if dispute is not None and dispute.status in Dispute.PENDING:
        return TaskDispute(dispute, can_open=False)
    return TaskDispute(dispute, can_open=_window_open(task))


def disputes_to_answer(user: Any) -> QuerySet[Dispute]:
    """Disputes on the user's agents' tasks still pending (open ones await the owner,
    contested ones an operator), the most urgent first."""
    return (
        Dispute.objects.filter(owner=user, status__in=Dispute.PENDING)
        .select_related("task__agent", "requester")
        .order_by("respond_by", "pk")
    )


def disputes_opened_by(user: Any) -> QuerySet[Dispute]:
    """The latest disputes the user opened as a requester, whatever their state."""
    return (
        Dispute.objects.filter(requester=user)
        .select_related("task__agent")
        .order_by("-opened_at", "-pk")[:DISPUTES_SHOWN]
    )


def has_pending(disputes: Any) -> bool:
    return any(dispute.status in Dispute.PENDING for dispute in disputes)
