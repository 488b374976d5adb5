"""Event types, and what each event's `data` holds.

`data` is rendered at an event's first delivery attempt, outside any transaction, and then
frozen: the outbox row written by the change's own transaction stays small (a type and an
object id), and a retry sends exactly the bytes the first attempt did. A kind of object
renders through the function registered for its prefix (the part of the type before the
dot); another part of the product adds its own with `renderer_register`. A task's body is
bounded (`inline.task_bounded`): past `WEBHOOK_MAX_INLINE_BYTES` its input and output are
left out, and `data.links.task` says where to read them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from escrow.models import Dispute, Withdrawal
from marketplace.api.serializers.disputes import DisputeSerializer
from marketplace.api.serializers.tasks import TaskSerializer
from marketplace.api.serializers.withdrawals import WithdrawalSerializer
from marketplace.models import Task
from marketplace.webhooks.inline import task_bounded

TASK_EVENTS = ("task.succeeded", "task.failed", "task.cancelled", "task.evaluated")
EVENT_TYPES = (
    *TASK_EVENTS,
    "withdrawal.paid",
    "withdrawal.failed",
    "dispute.opened",
    "dispute.resolved",
)
# Sent to one endpoint on request, whatever it subscribed to.
PING = "ping"

Renderer = Callable[[str], dict[str, Any]]
_renderers: dict[str, Renderer] = {}


def renderer_register(prefix: str, render: Renderer) -> None:
    """`render(object_id)` → the event's `data` for every type `<prefix>.*`."""
    _renderers[prefix] = render


def event_data(type: str, object_id: str) -> dict[str, Any]:
    render = _renderers.get(type.split(".", 1)[0])
    if render is None:
        return {"object": {"id": object_id}}
    return render(object_id)


def _task(object_id: str) -> dict[str, Any]:
    """`data.task`: the body of GET /api/v1/tasks/{id}/ (bounded), and `data.links.task`
    its URL, where the requester reads it whole."""
    try:
        task = Task.objects.select_related("agent", "binary", "escrow").filter(pk=object_id).first()
    except ValidationError:  # not a task id
        task = None
    if task is None:
        return {"task": None}
    shown = task_bounded(TaskSerializer(task).data, settings.WEBHOOK_MAX_INLINE_BYTES)
    return {"task": shown, "links": {"task": reverse("api:task", args=[task.pk])}}


def _ping(object_id: str) -> dict[str, Any]:
    return {"webhook": {"id": object_id}, "message": "A test event from Agent Exchange."}


def _withdrawal(object_id: str) -> dict[str, Any]:
    """`data.withdrawal`: the body of GET /api/v1/wallet/withdrawals/{id}/."""
    withdrawal = (
        Withdrawal.objects.filter(pk=int(object_id)).first() if object_id.isdigit() else None
    )
    return {"withdrawal": None if withdrawal is None else WithdrawalSerializer(withdrawal).data}


def _dispute(object_id: str) -> dict[str, Any]:
    """`data.dispute`: the dispute as GET /api/v1/disputes/ lists it."""
    dispute = Dispute.objects.filter(pk=int(object_id)).first() if object_id.isdigit() else None
    return {"dispute": None if dispute is None else DisputeSerializer(dispute).data}


renderer_register("task", _task)
renderer_register("dispute", _dispute)
renderer_register("withdrawal", _withdrawal)
renderer_register(PING, _ping)
