"""What every admin of the ledger shares: amounts shown in CR, and read-only pages."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html


def credits_text(amount: int) -> str:
    sign = "−" if amount < 0 else ""
    whole, micro = divmod(abs(amount), 1_000_000)
    return f"{sign}{whole}.{micro:06d} CR"


def credits(amount: int | None) -> str:
    """An amount for a list column, kept on one line."""
    if amount is None:
        return "—"
    return format_html('<span style="white-space:nowrap">{}</span>', credits_text(amount))


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger changes only through services; the admin shows it, never edits it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class LedgerAdmin(ReadOnlyAdmin):
    # Each ledger changelist has a "Run the ledger audit" button.
    change_list_template = "admin/escrow/ledger_change_list.html"
