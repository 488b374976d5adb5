"""Tasks, receipts and worker heartbeats in the admin.

Tasks change only through the executor's services (the refund and requeue actions, which
need `marketplace.refund_task` and `marketplace.requeue_task`, not just the view
permission); receipts are read-only, with their signature checked on display; heartbeats are
written by the workers.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from execution import liveness
from execution.engine.receipts import receipt_verify
from execution.health import broker_depth
from execution.models import Receipt, WorkerHeartbeat
from execution.services import task_refund, task_requeue
from marketplace.admin import credits
from marketplace.errors import TaskStateConflict
from marketplace.models import Task
from marketplace.templatetags.exchange import format_credits

PREVIEW_BYTES = 4096


class StuckFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("expired", "running, lease expired (stuck)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        if self.value() == "expired":
            return queryset.filter(status=Task.Status.RUNNING, lease_expires_at__lt=timezone.now())
        return queryset


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "agent",
        "requester",
        "status",
        "budget_cr",
        "cost_cr",
        "refund_cr",
        "failure_reason",
        "attempts",
        "lease_expires_at",
        "created_at",
    ]
    list_filter = [
        "status",
        StuckFilter,
        "failure_reason",
        "payment",
        ("agent", admin.RelatedOnlyFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["id", "agent__slug", "requester__username"]
    list_select_related = ["agent", "requester"]
    date_hierarchy = "created_at"
    actions = ["refund", "requeue"]
    exclude = ["stdout", "stderr"]

    # Money and state change only through services (and the actions that call them).
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = [f.name for f in Task._meta.fields if f.name not in ("stdout", "stderr")]
        return [*fields, "output", "diagnostics"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").endswith("changelist"):
            # The list never shows the (up to 1 MiB) outputs.
            queryset = queryset.defer("stdout", "stderr", "input")
        return queryset

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="task", ordering="id")
    def short_id(self, obj: Task) -> str:
        return format_html('<span class="mono" title="{}">{}…</span>', obj.pk, str(obj.pk)[:8])

    @admin.display(description="budget", ordering="budget")
    def budget_cr(self, obj: Task) -> str:
        return credits(obj.budget)

    @admin.display(description="cost", ordering="cost")
    def cost_cr(self, obj: Task) -> str:
        return credits(obj.cost)

    @admin.display(description="refund", ordering="refund")
    def refund_cr(self, obj: Task) -> str:
        return credits(obj.refund)

    @admin.display(description="output (stdout)")
    def output(self, obj: Task) -> str:
        return _preview(obj.stdout)

    @admin.display(description="diagnostics (stderr)")
    def diagnostics(self, obj: Task) -> str:
        return _preview(obj.stderr)

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.refund_task")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.requeue_task")

    @admin.action(
        description="Refund: fail the selected stuck tasks as platform error",
        permissions=["refund"],
    )
    def refund(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        done = 0
        for task_id in queryset.values_list("pk", flat=True):
            try:
                task = task_refund(task_id=task_id)
            except TaskStateConflict as exc:
                self.message_user(request, f"{task_id}: {exc.message}", messages.WARNING)
            else:
                done += 1
                self.message_user(
                    request,
                    f"{task_id}: {task.status}, {format_credits(task.refund or 0)} refunded.",
                    messages.SUCCESS,
                )
        if not done:
            self.message_user(request, "Nothing was refunded.", messages.WARNING)

    @admin.action(
        description="Requeue the selected stuck tasks (running, lease expired)",
        permissions=["requeue"],
    )
    def requeue(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        done, skipped = 0, 0
        for task_id in queryset.values_list("pk", flat=True):
            if task_requeue(task_id=task_id):
                done += 1
            else:
                skipped += 1
        if done:
            self.message_user(request, f"Requeued {done} task(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"Left {skipped} task(s) alone: only running tasks whose lease has expired "
                "can be requeued.",
                messages.WARNING,
            )


def _preview(data: Any) -> str:
    text = bytes(data or b"")[:PREVIEW_BYTES].decode("utf-8", "replace")
    if not text:
        return "—"
    more = "…" if len(bytes(data)) > PREVIEW_BYTES else ""
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}{}</pre>', text, more)


@admin.register(Receipt)
class ReceiptAdmin(admin.ModelAdmin):
    list_display = ["task", "key_id", "signature_valid", "created_at"]
    list_filter = ["key_id", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["task__id", "key_id"]
    readonly_fields = ["task", "payload", "signature", "key_id", "signature_valid", "created_at"]
    list_select_related = ["task"]

    @admin.display(boolean=True, description="signature valid")
    def signature_valid(self, obj: Receipt) -> bool:
        return receipt_verify(obj.as_dict())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    """The running clusters as their workers report them, by host; written by the workers only.

    The list's header shows the queue: queued tasks and the broker's waiting messages."""

    list_display = [
        "host",
        "cluster",
        "pid",
        "last_seen",
        "age",
        "stale",
        "progress_at",
        "stalled",
        "started_at",
        "stopped_at",
    ]
    list_filter = ["host", "cluster"]
    search_fields = ["host", "cluster", "sentinel"]
    readonly_fields = [
        "sentinel",
        "host",
        "pid",
        "cluster",
        "instance",
        "started_at",
        "last_seen",
        "age",
        "progress_at",
        "queue_waiting_since",
        "stalled",
        "stopped_at",
    ]
    ordering = ["host", "-last_seen"]
    change_list_template = "admin/execution/heartbeat_change_list.html"

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        try:
            broker: dict[str, int] | str = broker_depth()
        except Exception as exc:  # the page still shows the heartbeats
            broker = f"unavailable ({exc.__class__.__name__})"
        queue = {
            "tasks": Task.objects.filter(status=Task.Status.QUEUED).count(),
            "broker": broker,
            "stale_seconds": settings.WORKER_STALE_SECONDS,
            "stall_seconds": settings.WORKER_STALL_SECONDS,
        }
        return super().changelist_view(request, {**(extra_context or {}), "queue": queue})

    @admin.display(description="age")
    def age(self, obj: WorkerHeartbeat) -> str:
        return f"{int(_age(obj))} s"

    @admin.display(boolean=True, description="stale")
    def stale(self, obj: WorkerHeartbeat) -> bool:
        return _age(obj) > settings.WORKER_STALE_SECONDS or obj.stopped_at is not None

    @admin.display(boolean=True, description="stalled")
    def stalled(self, obj: WorkerHeartbeat) -> bool:
        return liveness.clusters_judge([obj])[0].stalled

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _age(obj: WorkerHeartbeat) -> float:
    return max(0.0, (timezone.now() - obj.last_seen).total_seconds())
