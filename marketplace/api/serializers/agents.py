"""Wire format of agents: listings, writes, binary uploads and reputation."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from execution.engine.validation import WasmTooLarge
from marketplace.api.pagination import PAGE_SIZE_MAX
from marketplace.api.serializers.fields import (
    MAX_PRICE,
    MAX_TAGS,
    SLUG_PATTERN,
    TAG_PATTERN,
    QueryIntegerField,
    StrictIntegerField,
    amount_field,
    checked_output_schema,
)
from marketplace.models import Agent, AgentBinary
from reputation.models import ReputationEvent


class BinarySerializer(serializers.ModelSerializer):
    class Meta:
        model = AgentBinary
        fields = ["version", "sha256", "size"]


class AgentSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    tags = serializers.ListField(source="tag_list", child=serializers.CharField())
    reputation = serializers.DecimalField(
        source="score",
        max_digits=7,
        decimal_places=4,
        help_text="Score in [0, 100] as an exact decimal string.",
    )
    requesters = serializers.IntegerField(
        help_text="How many distinct requesters the score rests on (their runs were scored)."
    )
    current_binary = BinarySerializer(allow_null=True)

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "description",
            "tags",
            "owner",
            "base_fee",
            "fuel_price",
            "status",
            "reputation",
            "requesters",
            "current_binary",
            "output_schema",
            "recommended_fuel",
            "recommended_memory_mb",
            "recommended_timeout_ms",
            "created_at",
        ]
        read_only_fields = fields


def recommended_field(setting: str, what: str) -> StrictIntegerField:
    return StrictIntegerField(
        min_value=1,
        max_value=getattr(settings, setting),
        required=False,
        help_text=(
            f"The {what} the agent needs. A task that names none runs with it, and a failure "
            f"for lack of it counts against the agent only when the task had at least this "
            f"much. Default: the platform's default."
        ),
    )


class AgentWriteSerializer(serializers.Serializer):
    """Create takes every field; PATCH (partial) takes any of them except the slug."""

    slug = serializers.RegexField(
        SLUG_PATTERN,
        max_length=64,
        error_messages={"invalid": "Lowercase letters, digits, hyphens and underscores."},
    )
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    tags = serializers.ListField(
        child=serializers.RegexField(
            TAG_PATTERN,
            max_length=32,
            error_messages={"invalid": "Lowercase letters, digits and hyphens."},
        ),
        max_length=MAX_TAGS,
        required=False,
    )
    base_fee = amount_field(
        min_value=0, max_value=MAX_PRICE, help_text="µCR charged for every successful run."
    )
    fuel_price = amount_field(
        min_value=0, max_value=MAX_PRICE, help_text="µCR per million fuel units."
    )
    output_schema = serializers.JSONField(
        required=False, allow_null=True, help_text="A JSON Schema every output must satisfy."
    )
    recommended_fuel = recommended_field("TASK_MAX_FUEL", "fuel limit")
    recommended_memory_mb = recommended_field("TASK_MAX_MEMORY_MB", "memory limit (MB)")
    recommended_timeout_ms = recommended_field("TASK_MAX_TIMEOUT_MS", "timeout (ms)")

    def validate_slug(self, value: str) -> str:
        if Agent.objects.filter(slug=value).exists():
            raise serializers.ValidationError("An agent with this slug already exists.")
        return value

    def validate_output_schema(self, value: Any) -> Any:
        return checked_output_schema(value, user_id=self.context.get("schema_user"))


class AgentUpdateSerializer(AgentWriteSerializer):
    slug = None  # type: ignore[assignment]


class AgentQuerySerializer(serializers.Serializer):
    ORDERINGS = {
        "slug": ("slug",),
        "-reputation": ("-score", "slug"),
        "reputation": ("score", "slug"),
        "base_fee": ("base_fee", "slug"),
        "-base_fee": ("-base_fee", "slug"),
        "-created_at": ("-created_at", "slug"),
    }

    tag = serializers.RegexField(TAG_PATTERN, max_length=32, required=False)
    status = serializers.ChoiceField(choices=Agent.Status.choices, required=False)
    ordering = serializers.ChoiceField(choices=list(ORDERINGS), default="slug")
    page = QueryIntegerField(min_value=1, required=False)
    page_size = QueryIntegerField(min_value=1, max_value=PAGE_SIZE_MAX, required=False)


class BinaryUploadSerializer(serializers.Serializer):
    wasm = serializers.FileField(allow_empty_file=True, help_text="The WASI command module.")

    def validate_wasm(self, upload: Any) -> bytes:
        limit = settings.WASM_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise WasmTooLarge(
                f"The binary is {upload.size} bytes; the limit is {limit}.",
                fields={"size": upload.size, "limit": limit},
            )
        return upload.read()


class ReputationEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReputationEvent
        fields = [
            "outcome",
            "reason",
            "neutral_reason",
            "delta",
            "score_before",
            "score_after",
            "created_at",
        ]
        extra_kwargs = {
            "neutral_reason": {
                "help_text": "Why a neutral event was not scored (empty on older events)."
            }
        }


class ReputationSerializer(serializers.Serializer):
    score = serializers.DecimalField(max_digits=7, decimal_places=4)
    successes = serializers.IntegerField()
    failures = serializers.IntegerField()
    neutral = serializers.IntegerField()
    requesters = serializers.IntegerField(
        help_text="How many distinct requesters the score rests on (their runs were scored)."
    )
    events = ReputationEventSerializer(many=True, help_text="The latest events, newest first.")
