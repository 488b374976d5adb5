"""Withdrawals, deposits and held earnings in the admin: filtered, searched, read-only;
funding discrepancies, which an operator allowed to may mark resolved (registered by
`escrow.admin`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from escrow.admin_base import LedgerAdmin, credits
from escrow.models import Deposit, Earning, Withdrawal
from escrow.payout_models import FundingDiscrepancy
from escrow.reconcile import discrepancies_resolve


@admin.register(Withdrawal)
class WithdrawalAdmin(LedgerAdmin):
    list_display = ["id", "user", "amount_cr", "status", "provider", "created_at", "paid_at"]
    list_filter = ["status", "provider", ("created_at", admin.DateFieldListFilter)]
    search_fields = [
        "=id",
        "user__username",
        "idempotency_key",
        "=provider_key",
        "provider_reference",
    ]
    list_select_related = ["user"]
    date_hierarchy = "created_at"

    @admin.display(description="amount", ordering="amount")
    def amount_cr(self, obj: Withdrawal) -> str:
        return credits(obj.amount)


@admin.register(Deposit)
class DepositAdmin(LedgerAdmin):
    list_display = ["id", "user", "amount_cr", "status", "provider", "reference", "created_at"]
    list_filter = ["status", "provider", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "user__username", "reference", "idempotency_key", "provider_reference"]
    list_select_related = ["user"]

    @admin.display(description="amount", ordering="amount")
    def amount_cr(self, obj: Deposit) -> str:
        return credits(obj.amount)


@admin.register(Earning)
class EarningAdmin(LedgerAdmin):
    """Owners' shares held before release; frozen while a dispute is pending."""

    list_display = [
        "id",
        "task",
        "owner",
        "amount_cr",
        "fee_cr",
        "status",
        "release_at",
        "released_at",
    ]
    list_filter = ["status", ("release_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "task__id", "wallet__user__username"]
    list_select_related = ["task", "wallet__user"]

    @admin.display(description="owner", ordering="wallet__user__username")
    def owner(self, obj: Earning) -> str:
        return str(obj.wallet.user)

    @admin.display(description="amount", ordering="amount")
    def amount_cr(self, obj: Earning) -> str:
        return credits(obj.amount)

    @admin.display(description="fee", ordering="fee")
    def fee_cr(self, obj: Earning) -> str:
        return credits(obj.fee)


class OpenFilter(admin.SimpleListFilter):
    title = "resolved"
    parameter_name = "resolved"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Open"), ("yes", "Resolved")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[FundingDiscrepancy]
    ) -> QuerySet[FundingDiscrepancy]:
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(FundingDiscrepancy)
class FundingDiscrepancyAdmin(admin.ModelAdmin):
    """Where the provider's records and ours disagree (the daily `reconcile_funding`).
    Viewing them needs the view permission; marking them resolved, and writing the notes
    that say how, needs `escrow.resolve_fundingdiscrepancy`. No money moves from here."""

    list_display = [
        "id",
        "kind",
        "reference",
        "our_status",
        "provider_status",
        "our_amount_cr",
        "provider_amount_cr",
        "provider",
        "detected_at",
        "resolved_at",
    ]
    list_filter = [OpenFilter, "kind", "provider", ("detected_at", admin.DateFieldListFilter)]
    search_fields = ["=reference", "notes"]
    date_hierarchy = "detected_at"
    readonly_fields = [
        "kind",
        "provider",
        "reference",
        "our_status",
        "provider_status",
        "our_amount",
        "provider_amount",
        "detected_at",
        "resolved_at",
        "resolved_by",
    ]
    fields = [*readonly_fields, "notes"]
    actions = ["mark_resolved"]

    @admin.display(description="our amount", ordering="our_amount")
    def our_amount_cr(self, obj: FundingDiscrepancy) -> str:
        return credits(obj.our_amount)

    @admin.display(description="provider's amount", ordering="provider_amount")
    def provider_amount_cr(self, obj: FundingDiscrepancy) -> str:
        return credits(obj.provider_amount)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # only the reconciliation finds them

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the record of a drift stays, resolved or not

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_resolve_permission(request)  # the notes, nothing else

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("escrow.resolve_fundingdiscrepancy")

    @admin.action(description="Mark resolved", permissions=["resolve"])
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[FundingDiscrepancy]) -> None:
        resolved = discrepancies_resolve(
            ids=list(queryset.values_list("pk", flat=True)), user_id=request.user.pk
        )
        if resolved:
            self.message_user(request, f"Marked {resolved} discrepancy(ies) resolved.")
        else:
            self.message_user(request, "They were resolved already.", messages.WARNING)
