"""Reputation in the admin: scores and the append-only event log, read-only and auditable."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from reputation.audit import reputation_audit
from reputation.models import AgentReputation, ReputationEvent

MAX_VIOLATIONS_SHOWN = 20


def _never(self: admin.ModelAdmin, request: HttpRequest, obj: object = None) -> bool:
    return False


@admin.register(AgentReputation)
class AgentReputationAdmin(admin.ModelAdmin):
    # Scores change only through reputation_apply; the admin shows them, never edits them.
    has_add_permission = has_change_permission = has_delete_permission = _never
    change_list_template = "admin/reputation/reputation_change_list.html"
    list_display = [
        "agent",
        "score",
        "successes",
        "failures",
        "neutral",
        "requesters",
        "evidence_successes",
        "evidence_failures",
        "updated_at",
    ]
    list_filter = [("updated_at", admin.DateFieldListFilter)]
    search_fields = ["agent__slug", "agent__name"]
    list_select_related = ["agent"]
    ordering = ["-score"]

    def get_urls(self) -> list[URLPattern]:
        audit = path(
            "audit/",
            self.admin_site.admin_view(require_POST(self.audit_view)),
            name="reputation_audit",
        )
        return [audit, *super().get_urls()]

    def audit_view(self, request: HttpRequest) -> HttpResponseRedirect:
        """Replay every event through its policy and compare with the stored scores."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = reputation_audit()
        if report.ok:
            messages.success(
                request,
                f"Reputation audit passed: {report.events} events replay to the stored "
                f"scores of {report.agents} agents.",
            )
        else:
            messages.error(
                request, f"Reputation audit FAILED with {len(report.violations)} violation(s)."
            )
            for violation in report.violations[:MAX_VIOLATIONS_SHOWN]:
                messages.error(request, violation)
        return HttpResponseRedirect(reverse("admin:reputation_agentreputation_changelist"))


@admin.register(ReputationEvent)
class ReputationEventAdmin(admin.ModelAdmin):
    # Append-only, and replayed by the audit: an edited event would fail it.
    has_add_permission = has_change_permission = has_delete_permission = _never
    list_display = [
        "id",
        "agent",
        "outcome",
        "reason",
        "neutral_reason",
        "delta",
        "weight",
        "score_after",
        "requester",
        "settled_on",
        "task",
        "created_at",
    ]
    list_filter = [
        "outcome",
        "neutral_reason",
        "reason",
        "policy",
        ("settled_on", admin.DateFieldListFilter),
    ]
    search_fields = ["agent__slug", "task__id", "requester__username"]
    list_select_related = ["agent", "task", "requester"]
