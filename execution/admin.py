"""Receipts in the admin: read-only, with their signature checked on display."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from execution.engine.receipts import receipt_verify
from execution.models import Receipt


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
