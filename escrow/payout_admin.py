"""Withdrawals and deposits in the admin: filtered, searched, read-only (registered by
`escrow.admin`)."""

from __future__ import annotations

from django.contrib import admin

from escrow.admin import LedgerAdmin, credits
from escrow.models import Deposit, Withdrawal


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
