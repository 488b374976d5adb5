"""Agents, binaries and tasks in the admin. State changes go through services (the actions)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from execution.services import task_refund, task_requeue
from marketplace.errors import TaskStateConflict
from marketplace.models import Agent, AgentBinary, IdempotencyRecord, Task
from marketplace.services import AGENT_EDITABLE_FIELDS, agent_activate, agent_suspend, agent_update
from marketplace.templatetags.exchange import format_credits

PREVIEW_BYTES = 4096


def credits(amount: int | None) -> str:
    if amount is None:
        return "—"
    return format_html('<span style="white-space:nowrap">{}</span>', format_credits(amount))


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "owner",
        "status",
        "reputation",
        "base_fee_cr",
        "fuel_price_cr",
        "current_binary",
        "created_at",
    ]
    list_filter = ["status", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["slug", "name", "owner__username", "tags"]
    list_select_related = ["owner", "current_binary", "reputation"]
    readonly_fields = ["owner", "slug", "status", "current_binary", "created_at"]
    fields = [
        "slug",
        "owner",
        "status",
        "name",
        "description",
        "tags",
        "base_fee",
        "fuel_price",
        "output_schema",
        "current_binary",
        "created_at",
    ]
    actions = ["suspend", "activate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).annotate(score=F("reputation__score"))

    @admin.display(description="reputation", ordering="score")
    def reputation(self, obj: Agent) -> Any:
        return getattr(obj, "score", None)

    @admin.display(description="base fee", ordering="base_fee")
    def base_fee_cr(self, obj: Agent) -> str:
        return credits(obj.base_fee)

    @admin.display(description="fuel price (per M fuel)", ordering="fuel_price")
    def fuel_price_cr(self, obj: Agent) -> str:
        return credits(obj.fuel_price)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Owners list their agents; an operator has no owner to list one for.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        changes = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in AGENT_EDITABLE_FIELDS
        }
        if "tags" in changes:
            changes["tags"] = (changes["tags"] or "").split()
        if changes:
            agent_update(agent=obj, **changes)

    @admin.action(description="Suspend the selected agents (they take no new tasks)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        done = sum(agent_suspend(agent=agent) for agent in queryset)
        self.message_user(
            request,
            f"Suspended {done} agent(s); their queued tasks will be refunded when they come up."
            + (f" {queryset.count() - done} already suspended." if queryset.count() > done else ""),
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.action(description="Activate the selected agents")
    def activate(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        done = sum(agent_activate(agent=agent) for agent in queryset)
        self.message_user(
            request,
            f"Activated {done} agent(s)."
            + (f" {queryset.count() - done} already active." if queryset.count() > done else ""),
            messages.SUCCESS if done else messages.WARNING,
        )


@admin.register(AgentBinary)
class AgentBinaryAdmin(admin.ModelAdmin):
    list_display = ["agent", "version", "sha256", "size", "created_at"]
    list_filter = [("created_at", admin.DateFieldListFilter)]
    search_fields = ["agent__slug", "sha256"]
    list_select_related = ["agent"]
    readonly_fields = ["agent", "version", "sha256", "size", "storage_name", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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

    @admin.action(description="Refund: fail the selected stuck tasks as platform error")
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

    @admin.action(description="Requeue the selected stuck tasks (running, lease expired)")
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


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["key", "user", "status_code", "created_at"]
    list_filter = ["status_code", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["key", "user__username"]
    list_select_related = ["user"]
    readonly_fields = ["user", "key", "fingerprint", "status_code", "response_body", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
