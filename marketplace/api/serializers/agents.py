"""Wire format of agents: listings, writes, binary uploads and reputation."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ParseError

from execution.engine.validation import WasmTooLarge
from marketplace.api.pagination import PAGE_SIZE_MAX
from marketplace.api.parsers import check_strings
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
from marketplace.binaries import KEEP
from marketplace.contracts import contract_of
from marketplace.errors import InvalidSchema
from marketplace.evaluators import MAX_EVALUATORS, accepted_slugs
from marketplace.models import Agent, AgentBinary
from reputation.models import ReputationEvent


class BinarySerializer(serializers.ModelSerializer):
    class Meta:
        model = AgentBinary
        fields = ["version", "sha256", "size"]


class ContractSerializer(serializers.Serializer):
    """A version's contract (SPEC §19)."""

    version = serializers.IntegerField()
    input_schema = serializers.JSONField(
        allow_null=True,
        help_text="JSON Schema of the input; with one, a task's `input` is a JSON value that "
        "must match it. null: the input is a string.",
    )
    output_schema = serializers.JSONField(
        allow_null=True, help_text="JSON Schema every output of this version must match."
    )


class VersionSerializer(serializers.ModelSerializer):
    """One binary version with its contract."""

    class Meta:
        model = AgentBinary
        fields = ["version", "sha256", "size", "input_schema", "output_schema", "created_at"]
        read_only_fields = fields


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
    contract = serializers.SerializerMethodField()
    accepted_evaluators = serializers.SerializerMethodField(
        help_text="Slugs of the evaluators whose verdict the agent accepts: a task may name "
        "one as its `evaluator` (SPEC §21)."
    )

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
            "contract",
            "output_schema",
            "recommended_fuel",
            "recommended_memory_mb",
            "recommended_timeout_ms",
            "accepted_evaluators",
            "created_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "output_schema": {
                "help_text": "The current version's output schema (read-only: see `contract`)."
            }
        }

    @extend_schema_field(ContractSerializer(allow_null=True))
    def get_contract(self, agent: Agent) -> dict[str, Any] | None:
        return contract_of(agent.current_binary)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_accepted_evaluators(self, agent: Agent) -> list[str]:
        return accepted_slugs(agent)


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
        required=False,
        allow_null=True,
        help_text="A JSON Schema every output must satisfy: the first version's output "
        "schema, unless its upload names one. Read-only afterwards: a version's contract is "
        "set by its upload.",
    )
    recommended_fuel = recommended_field("TASK_MAX_FUEL", "fuel limit")
    recommended_memory_mb = recommended_field("TASK_MAX_MEMORY_MB", "memory limit (MB)")
    recommended_timeout_ms = recommended_field("TASK_MAX_TIMEOUT_MS", "timeout (ms)")
    accepted_evaluators = serializers.ListField(
        child=serializers.SlugField(max_length=64),
        max_length=MAX_EVALUATORS,
        required=False,
        help_text="Slugs of the evaluator agents whose verdict this agent accepts (replaces "
        "the list).",
    )

    def validate_slug(self, value: str) -> str:
        if Agent.objects.filter(slug=value).exists():
            raise serializers.ValidationError("An agent with this slug already exists.")
        return value

    def validate_output_schema(self, value: Any) -> Any:
        return checked_output_schema(value, user_id=self.context.get("schema_user"))


class AgentUpdateSerializer(AgentWriteSerializer):
    slug = None  # type: ignore[assignment]
    output_schema = None  # type: ignore[assignment]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "output_schema" in self.initial_data:
            # A version's contract never changes (SPEC §19): it is a new version's upload.
            raise serializers.ValidationError(
                {
                    "output_schema": [
                        "Read-only: upload a new version with its output_schema to change it."
                    ]
                }
            )
        return attrs


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


class ContractSchemaField(serializers.CharField):
    """A schema in a multipart upload: JSON text. Left out: the current version's schema;
    empty or `null`: none. Anything but a JSON object or null is 400 `invalid_schema`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_blank=True, trim_whitespace=True, **kwargs)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # CharField answers a blank value itself, without to_internal_value.
        if isinstance(data, str) and not data.strip():
            return None
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> Any:
        text = super().to_internal_value(data)
        if text in ("", "null"):
            return None
        try:
            schema = json.loads(text, parse_constant=_no_constant)
            check_strings(schema)
        except (ValueError, RecursionError, ParseError) as exc:
            raise InvalidSchema(
                f"{self.field_name} is not JSON: {exc}", fields={self.field_name: ["not JSON"]}
            ) from None
        if not isinstance(schema, dict):
            raise InvalidSchema(
                f"{self.field_name} must be a JSON object (a JSON Schema) or null.",
                fields={self.field_name: ["a JSON object"]},
            )
        return schema


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class BinaryUploadSerializer(serializers.Serializer):
    wasm = serializers.FileField(allow_empty_file=True, help_text="The WASI command module.")
    input_schema = ContractSchemaField(
        help_text="The version's input schema, as JSON text (a JSON Schema object). Left "
        "out: the current version's; empty or `null`: none (the input is a string)."
    )
    output_schema = ContractSchemaField(
        help_text="The version's output schema, as JSON text. Left out: the current "
        "version's (for a first upload, the agent's); empty or `null`: none."
    )

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        values = super().to_internal_value(data)
        for name in ("input_schema", "output_schema"):
            values.setdefault(name, KEEP)
        return values

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
