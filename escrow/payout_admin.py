"""Withdrawals, deposits and held earnings in the admin: filtered, searched, read-only
(registered by `escrow.admin`)."""

from __future__ import annotations

from django.contrib import admin

from escrow.admin import LedgerAdmin, credits
from escrow.models import Deposit, Earning, Withdrawal


@admin.register(Withdrawal)
class WithdrawalAdmin(LedgerAdmin):
    list_display = ["id", "user", "amount_cr", "status", "provider", "created_at", "paid_at"]
    list_filter = ["status", "provider", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "user__username", "idempotency_key", "provider_reference"]
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
