"""Wire format of API keys: what a key may do and spend, and what it has spent."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from marketplace.api.serializers.fields import StrictCharField, amount_field
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_spending
from marketplace.models import Agent

MAX_ALLOWED_AGENTS = 100


class LimitsSerializer(serializers.Serializer):
    per_task = amount_field(
        required=False, allow_null=True, help_text="µCR: the largest budget of one task."
    )
    daily = amount_field(
        required=False, allow_null=True, help_text="µCR per UTC day (from 00:00 UTC)."
    )
    monthly = amount_field(required=False, allow_null=True, help_text="µCR per UTC calendar month.")
    total = amount_field(required=False, allow_null=True, help_text="µCR over the key's life.")


class SpentSerializer(serializers.Serializer):
    daily = serializers.IntegerField(help_text="µCR counted in the current UTC day.")
    monthly = serializers.IntegerField(help_text="µCR counted in the current UTC month.")
    total = serializers.IntegerField(help_text="µCR counted over the key's life.")


class RemainingSerializer(serializers.Serializer):
    daily = serializers.IntegerField(allow_null=True)
    monthly = serializers.IntegerField(allow_null=True)
    total = serializers.IntegerField(allow_null=True)


class ApiKeyWriteSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiKey.Scope.choices),
        min_length=1,
        max_length=len(ApiKey.Scope.values),
    )
    limits = LimitsSerializer(
        required=False,
        help_text="µCR; each optional. On PATCH only the limits named change (null removes).",
    )
    agents = serializers.ListField(
        child=serializers.SlugField(max_length=64),
        required=False,
        allow_null=True,
        min_length=1,
        max_length=MAX_ALLOWED_AGENTS,
        help_text="Slugs of the only agents the key may use; null or left out: any agent.",
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="After this the key is refused (401)."
    )

    def validate_agents(self, value: list[str] | None) -> list[Agent] | None:
        if value is None:
            return None
        found = {agent.slug: agent for agent in Agent.objects.filter(slug__in=value)}
        missing = sorted(set(value) - set(found))
        if missing:
            raise serializers.ValidationError(f"No such agent: {', '.join(missing)}.")
        return [found[slug] for slug in dict.fromkeys(value)]


class ApiKeySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The start of the key, to tell keys apart.")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKey.Scope.choices))
    limits = serializers.SerializerMethodField()
    agents = serializers.SerializerMethodField(
        help_text="The only agents the key may use; null: any."
    )
    expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    spent = serializers.SerializerMethodField()
    remaining = serializers.SerializerMethodField(
        help_text="What each limit leaves (µCR); null where there is no limit."
    )

    @extend_schema_field(LimitsSerializer)
    def get_limits(self, key: ApiKey) -> dict[str, int | None]:
        return key.limits()

    @extend_schema_field(serializers.ListField(child=serializers.CharField(), allow_null=True))
    def get_agents(self, key: ApiKey) -> list[str] | None:
        slugs = sorted(agent.slug for agent in key.agents.all())
        return slugs or None

    @extend_schema_field(SpentSerializer)
    def get_spent(self, key: ApiKey) -> dict[str, int]:
        spending = api_key_spending(key)
        return {"daily": spending.daily, "monthly": spending.monthly, "total": spending.total}

    @extend_schema_field(RemainingSerializer)
    def get_remaining(self, key: ApiKey) -> dict[str, int | None]:
        return api_key_spending(key).remaining()


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.SerializerMethodField(
        help_text="The key itself. Shown this once: only its hash is kept."
    )

    def get_key(self, key: ApiKey) -> str:
        return str(self.context["key"])
