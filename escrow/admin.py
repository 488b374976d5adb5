from django.contrib import admin
from django.http import HttpRequest

from escrow.models import Account, Escrow, Transfer


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger changes only through services; the admin shows it, never edits it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "user", "balance", "created_at"]
    list_filter = ["kind"]
    search_fields = ["user__username"]


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "amount",
        "debit_account",
        "credit_account",
        "escrow",
        "task",
        "created_at",
    ]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "memo", "task__id"]
    list_select_related = ["debit_account", "credit_account"]


@admin.register(Escrow)
class EscrowAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "status",
        "payment",
        "amount",
        "cost",
        "fee",
        "refund",
        "task",
        "created_at",
    ]
    list_filter = ["status", "payment"]
    search_fields = ["task__id"]
