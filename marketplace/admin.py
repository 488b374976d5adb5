"""Agents, binaries and idempotency records in the admin. State changes go through services
(the actions). The Task admin lives in execution.admin: its actions are the executor's.

Every action that moves money or changes access needs a permission of its own (the
model's Meta `permissions`), never just the view permission: suspending or reactivating an
agent needs `marketplace.suspend_agent`. Superusers hold every permission."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django_q import admin as q_admin
from django_q.models import Failure, Success
from rest_framework.authtoken.models import TokenProxy

from marketplace.models import Agent, AgentBinary, IdempotencyRecord
from marketplace.services import AGENT_EDITABLE_FIELDS, agent_activate, agent_suspend, agent_update
from marketplace.templatetags.exchange import format_credits


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
        "requesters",
        "base_fee_cr",
        "fuel_price_cr",
        "recommended_fuel",
        "current_binary",
        "created_at",
    ]
    list_filter = ["status", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["slug", "name", "owner__username", "tags"]
    list_select_related = ["owner", "current_binary", "reputation"]
    # The output schema is the current version's contract: read-only, like every version's.
    readonly_fields = ["owner", "slug", "status", "current_binary", "output_schema", "created_at"]
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
        "recommended_fuel",
        "recommended_memory_mb",
        "recommended_timeout_ms",
        "accepted_evaluators",
        "current_binary",
        "created_at",
    ]
    filter_horizontal = ["accepted_evaluators"]
    actions = ["suspend", "activate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return (
            super()
            .get_queryset(request)
            .annotate(score=F("reputation__score"), requesters=F("reputation__requesters"))
        )

    @admin.display(description="reputation", ordering="score")
    def reputation(self, obj: Agent) -> Any:
        return getattr(obj, "score", None)

    @admin.display(description="requesters", ordering="requesters")
    def requesters(self, obj: Agent) -> Any:
        return getattr(obj, "requesters", None)

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

    def has_suspend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.suspend_agent")

    @admin.action(
        description="Suspend the selected agents (they take no new tasks)", permissions=["suspend"]
    )
    def suspend(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        done = sum(agent_suspend(agent=agent) for agent in queryset)
        self.message_user(
            request,
            f"Suspended {done} agent(s); their queued tasks will be refunded when they come up."
            + (f" {queryset.count() - done} already suspended." if queryset.count() > done else ""),
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.action(description="Activate the selected agents", permissions=["suspend"])
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
    # A version and its contract (SPEC §19) never change: shown, never edited.
    readonly_fields = [
        "agent",
        "version",
        "sha256",
        "size",
        "storage_name",
        "input_schema",
        "output_schema",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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


# The account token is its user's alone. DRF's admin for it lists every token in the clear
# and lets staff mint one for anybody, which is acting as them: it is taken out. Users
# rotate and revoke their own (the token page, the API); an operator who must cut one off
# changes the user's password or deactivates the account.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


# django-q2's job lists offer to run their jobs again (a task run, a payout), to anyone who
# may view them. Its models cannot take a permission of their own here, so resubmitting
# needs the model's change permission, as any other change would.
@admin.action(description="Resubmit the selected jobs to the queue", permissions=["change"])
def resubmit_jobs(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    q_admin.resubmit_task(model_admin, request, queryset)


class SuccessAdmin(q_admin.TaskAdmin):
    actions = [resubmit_jobs]


class FailureAdmin(q_admin.FailAdmin):  # resubmitting a failure also deletes it (q2's rule)
    actions = [resubmit_jobs]


for job_model, job_admin in ((Success, SuccessAdmin), (Failure, FailureAdmin)):
    if admin.site.is_registered(job_model):
        admin.site.unregister(job_model)
    admin.site.register(job_model, job_admin)

# API keys have an admin module of their own; importing it registers it.
from marketplace import apikey_admin  # noqa: E402, F401

# Disputes have an admin module of their own (its actions call the service).
from marketplace.dispute_admin import DisputeAdmin  # noqa: E402, F401
from marketplace.evaluation_admin import EvaluationAdmin  # noqa: E402, F401

# Webhooks have an admin module of their own; importing it registers it.
from marketplace.webhooks import admin as webhooks_admin  # noqa: E402, F401
