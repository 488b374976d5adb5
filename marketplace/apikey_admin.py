"""API keys and what they spent, in the admin: read-only (keys are made by their users and
shown once), with revocation as the one action, through the service; it needs
`marketplace.revoke_apikey`, not just the view permission."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from marketplace.apikey_models import ApiKey, ApiKeyCharge
from marketplace.apikeys import api_key_revoke
from marketplace.templatetags.exchange import format_credits


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _credits(amount: int | None) -> str:
    return "—" if amount is None else format_credits(amount)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "user",
        "prefix",
        "scopes",
        "limits_cr",
        "spent_cr",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "created_at",
    ]
    list_filter = [
        ("revoked_at", admin.EmptyFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    exclude = ["secret_sha256"]
    actions = ["revoke"]

    @admin.display(description="limits")
    def limits_cr(self, key: ApiKey) -> str:
        named = [f"{name} {_credits(limit)}" for name, limit in key.limits().items() if limit]
        return ", ".join(named) or "none"

    @admin.display(description="spent in all", ordering="spent_total")
    def spent_cr(self, key: ApiKey) -> str:
        return _credits(key.spent_total)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.revoke_apikey")

    @admin.action(description="Revoke the selected keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        live = list(queryset.filter(revoked_at__isnull=True))
        for key in live:
            api_key_revoke(key=key)
        messages.success(request, f"Revoked {len(live)} key(s).")


@admin.register(ApiKeyCharge)
class ApiKeyChargeAdmin(ReadOnlyAdmin):
    list_display = ["key", "task", "channel", "amount", "given_back", "day", "month", "settled_at"]
    list_filter = [("settled_at", admin.EmptyFieldListFilter), "day"]
    search_fields = ["key__name", "key__prefix", "key__user__username"]
    list_select_related = ["key", "task", "channel"]
