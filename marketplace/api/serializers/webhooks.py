"""Wire format of webhook endpoints and their delivery log."""

from __future__ import annotations

from rest_framework import serializers

from marketplace.api.pagination import PAGE_SIZE_MAX
from marketplace.api.serializers.fields import QueryIntegerField, StrictCharField
from marketplace.webhooks.events import EVENT_TYPES
from marketplace.webhooks.models import WebhookAttempt, WebhookEndpoint
from marketplace.webhooks.transport import MAX_URL_LENGTH


class WebhookCreateSerializer(serializers.Serializer):
    url = StrictCharField(
        max_length=MAX_URL_LENGTH,
        help_text="An http(s) URL on the public internet; it must resolve to public addresses.",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES),
        min_length=1,
        max_length=len(EVENT_TYPES),
        help_text="The event types to receive.",
    )


class WebhookSerializer(serializers.ModelSerializer):
    events = serializers.ListField(source="event_list", child=serializers.CharField())
    pending = serializers.IntegerField(help_text="Events waiting to be delivered.")
    disabled_reason = serializers.SerializerMethodField()

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "events",
            "created_at",
            "pending",
            "last_success_at",
            "failing_since",
            "consecutive_failures",
            "disabled_at",
            "disabled_reason",
        ]
        read_only_fields = fields

    def get_disabled_reason(self, endpoint: WebhookEndpoint) -> str | None:
        return endpoint.disabled_reason or None


class WebhookCreatedSerializer(serializers.ModelSerializer):
    events = serializers.ListField(source="event_list", child=serializers.CharField())
    secret = serializers.CharField(
        help_text="Signs every delivery (X-Exchange-Signature). Shown this once: keep it."
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "secret", "created_at"]
        read_only_fields = fields


class WebhookAttemptSerializer(serializers.ModelSerializer):
    event = serializers.CharField(source="delivery.event_id", help_text="The event's `id`.")
    type = serializers.CharField(source="delivery.type")
    attempt = serializers.IntegerField(source="number", help_text="1 for the first try.")
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The receiver's HTTP status; null when none came back."
    )
    delivery_status = serializers.CharField(
        source="delivery.status",
        help_text="Where the event stands now: pending, delivered, failed or skipped.",
    )

    class Meta:
        model = WebhookAttempt
        fields = [
            "id",
            "event",
            "type",
            "attempt",
            "attempted_at",
            "status_code",
            "duration_ms",
            "error",
            "succeeded",
            "delivery_status",
        ]
        read_only_fields = fields


class WebhookPingSerializer(serializers.Serializer):
    event = serializers.CharField(help_text="The id of the `ping` event on its way.")


class PageQuerySerializer(serializers.Serializer):
    page = QueryIntegerField(min_value=1, required=False)
    page_size = QueryIntegerField(min_value=1, max_value=PAGE_SIZE_MAX, required=False)
