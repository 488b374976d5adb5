"""Webhooks in the admin: endpoints (without their secrets), the outbox, the events' frozen
bodies and the attempt log, read-only; enabling a disabled endpoint is the one action,
through the service."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from marketplace.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from marketplace.webhooks.outbox import webhook_enable


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ["url", "owner", "events", "consecutive_failures", "disabled_at", "created_at"]
    list_filter = [("disabled_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["url", "owner__username", "=id"]
    # The secret signs deliveries; it is its owner's, shown to them once (and kept encrypted).
    exclude = ["secret_encrypted"]
    actions = ["enable"]

    def has_enable_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.enable_webhookendpoint")

    @admin.action(description="Enable the selected endpoints again", permissions=["enable"])
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        disabled = list(queryset.filter(disabled_at__isnull=False))
        for endpoint in disabled:
            webhook_enable(endpoint=endpoint)
        self.message_user(request, f"Enabled {len(disabled)} endpoint(s).", messages.SUCCESS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "endpoint", "status", "attempts", "next_attempt_at"]
    list_filter = ["status", "type", "created_at"]
    search_fields = ["=event_id", "=object_id", "endpoint__url", "endpoint__owner__username"]
    list_select_related = ["endpoint"]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "created_at"]
    list_filter = ["type", "created_at"]
    search_fields = ["=id"]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnlyAdmin):
    list_display = ["delivery", "number", "status_code", "duration_ms", "error", "attempted_at"]
    list_filter = ["succeeded", "attempted_at"]
    search_fields = ["=delivery__event_id", "endpoint__url", "error"]
    list_select_related = ["delivery"]
