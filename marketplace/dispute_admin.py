"""Disputes in the admin: listed, searched, never edited; an operator decides a contested
one with an action that goes through `marketplace.disputes.dispute_decide` (registered by
`marketplace.admin`, since escrow may not import the service). Deciding moves money, so it
needs `escrow.decide_dispute`, not the view permission."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from escrow.admin_base import credits, credits_text
from escrow.errors import DomainError
from escrow.models import Dispute
from marketplace.disputes import dispute_decide


@admin.register(Dispute)
class DisputeAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "task",
        "requester",
        "owner",
        "status",
        "opened_at",
        "respond_by",
        "refunded_cr",
        "resolved_at",
        "replay_status",
    ]
    list_filter = ["status", "replay_status", ("opened_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "task__id", "requester__username", "owner__username"]
    list_select_related = ["task", "requester", "owner"]
    date_hierarchy = "opened_at"
    readonly_fields = [
        "task",
        "requester",
        "owner",
        "status",
        "reason",
        "statement",
        "opened_at",
        "respond_by",
        "resolved_at",
        "resolution",
        "refunded",
        "replay_status",
        "replayed_at",
        "replay_output_sha256",
        "replay_detail",
        "replay_attempts",
        "evidence",
    ]
    actions = ["refund", "reject"]

    @admin.display(description="refunded", ordering="refunded")
    def refunded_cr(self, obj: Dispute) -> str:
        return credits(obj.refunded)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a dispute changes only through the actions

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("escrow.decide_dispute")

    @admin.action(description="Refund the requester (contested disputes)", permissions=["decide"])
    def refund(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> None:
        self._decide(request, queryset, refund=True)

    @admin.action(description="Reject (contested disputes)", permissions=["decide"])
    def reject(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> None:
        self._decide(request, queryset, refund=False)

    def _decide(self, request: HttpRequest, queryset: QuerySet[Dispute], *, refund: bool) -> None:
        operator = request.user.get_username()
        done, refunded = 0, 0
        for dispute in queryset.order_by("pk"):
            if dispute.status != Dispute.Status.CONTESTED:
                self.message_user(
                    request,
                    f"Dispute {dispute.pk} is {dispute.status}: only a contested dispute is "
                    "decided here.",
                    messages.WARNING,
                )
                continue
            try:
                decided = dispute_decide(dispute_id=dispute.pk, refund=refund, operator=operator)
            except DomainError as exc:  # decided by someone else in the meantime
                self.message_user(request, f"Dispute {dispute.pk}: {exc.message}", messages.ERROR)
                continue
            done += 1
            refunded += decided.refunded
        if not done:
            self.message_user(request, "No dispute was decided.", messages.WARNING)
        elif refund:
            self.message_user(
                request,
                f"Refunded {done} dispute(s): {credits_text(refunded)} back to the requesters.",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, f"Rejected {done} dispute(s).", messages.SUCCESS)
