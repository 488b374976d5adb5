"""The API's wire format: request parsing, input validation and output representations.

Serializers here only check the shape of input and render output; every decision about
money or state is made by a service.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jsonschema
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError
from rest_framework.pagination import PageNumberPagination

from escrow.models import Escrow, PaymentChannel, Transfer
from marketplace.errors import InputTooLarge
from marketplace.models import Agent, AgentBinary, Task
from reputation.models import ReputationEvent

# Amounts are µCR in a signed 64-bit column; anything larger is refused as input.
MAX_AMOUNT = 2**63 - 1
# Agents set their prices within the largest possible single deposit.
MAX_PRICE = 10**15
MAX_TAGS = 20
TAG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}\Z"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
PAGE_SIZE_MAX = 200


# --- parsing ---------------------------------------------------------------------------


def _check_strings(value: Any) -> None:
    """Refuse text no database can store: NUL characters and lone UTF-16 surrogates."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ParseError("JSON strings may not contain NUL characters.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ParseError("JSON strings may not contain lone surrogates.") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: no NaN/Infinity, bounded nesting, storable strings only."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        _check_strings(data)
        return data


class WasmUploadParser(parsers.MultiPartParser):
    """Multipart with the size checked before anything is spooled to disk."""

    def parse(self, stream, media_type=None, parser_context=None):
        from execution.engine.validation import WasmTooLarge

        request = (parser_context or {}).get("request")
        meta = request.META if request is not None else {}
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.WASM_MAX_UPLOAD_BYTES
        # Multipart framing adds a few hundred bytes; 64 KiB leaves room for any client.
        if length > limit + 64 * 1024:
            raise WasmTooLarge(
                f"The request is {length} bytes; binaries are at most {limit} bytes.",
                fields={"size": length, "limit": limit},
            )
        return super().parse(stream, media_type, parser_context)


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = PAGE_SIZE_MAX


# --- fields ---------------------------------------------------------------------------


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, floats or booleans, so amounts are never guessed at."""

    default_error_messages = {"invalid": "A whole number (JSON integer) is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string: numbers are not silently turned into text."""

    default_error_messages = {"invalid": "A string is required."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def amount_field(*, min_value: int = 1, max_value: int = MAX_AMOUNT, **kwargs: Any):
    return StrictIntegerField(min_value=min_value, max_value=max_value, **kwargs)


class QueryIntegerField(serializers.IntegerField):
    """Integers in query strings are text; accept only plain digits."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not data.isascii() or not data.isdigit() or len(data) > 9:
            self.fail("invalid")
        return super().to_internal_value(data)


def _check_json_schema(schema: Any) -> Any:
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise serializers.ValidationError("Must be a JSON object (a JSON Schema).")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise serializers.ValidationError(f"Not a valid JSON Schema: {exc.message}") from None
    return schema


# --- errors ---------------------------------------------------------------------------

# The envelope every failure uses; also published as the `Error` schema component.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code."},
                "message": {"type": "string", "description": "What went wrong, for people."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Per-field details (validation messages, limits).",
                },
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}


# --- auth ---------------------------------------------------------------------------


class RegisterSerializer(serializers.Serializer):
    username = serializers.RegexField(
        r"^[\w.@+-]+\Z",
        max_length=150,
        error_messages={"invalid": "Letters, digits and @/./+/-/_ only."},
    )
    password = serializers.CharField(max_length=128, trim_whitespace=False, write_only=True)

    def validate_username(self, value: str) -> str:
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("This username is taken.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            validate_password(attrs["password"], User(username=attrs["username"]))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class RegisteredSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    token = serializers.CharField()


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False, write_only=True)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


# --- wallet ---------------------------------------------------------------------------


class WalletSerializer(serializers.Serializer):
    balance = serializers.IntegerField(help_text="µCR available to spend.")
    held_in_escrow = serializers.IntegerField(help_text="µCR held for your tasks in flight.")
    in_channels = serializers.IntegerField(help_text="µCR deposited in open payment channels.")


class DepositRequestSerializer(serializers.Serializer):
    amount = amount_field(max_value=settings.MAX_DEPOSIT, help_text="µCR to add to the wallet.")


class DepositSerializer(serializers.Serializer):
    transfer_id = serializers.IntegerField()
    amount = serializers.IntegerField()
    balance = serializers.IntegerField(help_text="The wallet balance right after the deposit.")


class TransferSerializer(serializers.ModelSerializer):
    """One ledger line of the user's wallet; `amount` is signed: + in, − out."""

    direction = serializers.SerializerMethodField()
    amount = serializers.SerializerMethodField(help_text="µCR; positive in, negative out.")
    task = serializers.UUIDField(source="task_id", allow_null=True)
    escrow = serializers.IntegerField(source="escrow_id", allow_null=True)

    class Meta:
        model = Transfer
        fields = ["id", "kind", "direction", "amount", "task", "escrow", "memo", "created_at"]

    def _incoming(self, transfer: Transfer) -> bool:
        return transfer.credit_account_id == self.context["wallet_id"]

    @extend_schema_field(serializers.ChoiceField(choices=["in", "out"]))
    def get_direction(self, transfer: Transfer) -> str:
        return "in" if self._incoming(transfer) else "out"

    @extend_schema_field(OpenApiTypes.INT64)
    def get_amount(self, transfer: Transfer) -> int:
        return transfer.amount if self._incoming(transfer) else -transfer.amount


class TransferQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Transfer.Kind.choices, required=False)
    page = QueryIntegerField(min_value=1, required=False)
    page_size = QueryIntegerField(min_value=1, max_value=PAGE_SIZE_MAX, required=False)


# --- agents ---------------------------------------------------------------------------


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
            "current_binary",
            "output_schema",
            "created_at",
        ]
        read_only_fields = fields


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

    def validate_slug(self, value: str) -> str:
        if Agent.objects.filter(slug=value).exists():
            raise serializers.ValidationError("An agent with this slug already exists.")
        return value

    def validate_output_schema(self, value: Any) -> Any:
        return _check_json_schema(value)


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
        from execution.engine.validation import WasmTooLarge

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
        fields = ["outcome", "reason", "delta", "score_before", "score_after", "created_at"]


class ReputationSerializer(serializers.Serializer):
    score = serializers.DecimalField(max_digits=7, decimal_places=4)
    successes = serializers.IntegerField()
    failures = serializers.IntegerField()
    neutral = serializers.IntegerField()
    events = ReputationEventSerializer(many=True, help_text="The latest events, newest first.")


# --- tasks ---------------------------------------------------------------------------


class VoucherSerializer(serializers.Serializer):
    nonce = StrictIntegerField(min_value=1, max_value=2**63 - 1)
    cumulative_amount = StrictIntegerField(min_value=0, max_value=2**63 - 1)
    signature = StrictCharField(
        max_length=100,
        help_text="base64 Ed25519 signature over the UTF-8 bytes of "
        "`agent-exchange/voucher/v1`, the channel id, the nonce and the cumulative amount, "
        "joined by newlines.",
    )


class TaskSubmitSerializer(serializers.Serializer):
    agent = serializers.SlugField(max_length=64, help_text="The agent's slug.")
    input = StrictCharField(
        allow_blank=True, trim_whitespace=False, help_text="Given to the agent on stdin."
    )
    budget = amount_field(help_text="µCR held in escrow; the most the task can cost.")
    fuel_limit = StrictIntegerField(min_value=1, max_value=settings.TASK_MAX_FUEL, required=False)
    memory_limit_mb = StrictIntegerField(
        min_value=1, max_value=settings.TASK_MAX_MEMORY_MB, required=False
    )
    timeout_ms = StrictIntegerField(
        min_value=1, max_value=settings.TASK_MAX_TIMEOUT_MS, required=False
    )
    min_reputation = serializers.DecimalField(
        max_digits=7, decimal_places=4, min_value=0, max_value=100, required=False
    )
    output_schema = serializers.JSONField(required=False, allow_null=True)
    payment = serializers.ChoiceField(
        choices=Task.Payment.choices,
        default=Task.Payment.ESCROW,
        help_text="`escrow` holds the budget from your wallet; `channel` holds it against "
        "a payment channel, authorized by `voucher`.",
    )
    channel = serializers.UUIDField(required=False, help_text="The channel paying (`channel`).")
    voucher = VoucherSerializer(required=False, help_text="Authorizes redeemed + budget.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        channel_fields = ("channel", "voucher")
        if attrs.get("payment") == Task.Payment.CHANNEL:
            problems = {
                n: ["Required for channel payments."] for n in channel_fields if n not in attrs
            }
        else:
            problems = {n: ["Only for channel payments."] for n in channel_fields if n in attrs}
        if problems:
            raise serializers.ValidationError(problems)
        return attrs

    def validate_input(self, value: str) -> str:
        size = len(value.encode())
        if size > settings.TASK_MAX_INPUT_BYTES:
            raise InputTooLarge(
                f"The input is {size} bytes; the limit is {settings.TASK_MAX_INPUT_BYTES}."
            )
        return value

    def validate_agent(self, value: str) -> Agent:
        agent = Agent.objects.filter(slug=value).first()
        if agent is None:
            raise serializers.ValidationError("No such agent.")
        return agent

    def validate_output_schema(self, value: Any) -> Any:
        return _check_json_schema(value)


class TaskResultSerializer(serializers.Serializer):
    exit_code = serializers.IntegerField(allow_null=True)
    output = serializers.CharField(help_text="stdout as UTF-8 (invalid bytes replaced).")
    stderr = serializers.CharField(help_text="stderr as UTF-8 (invalid bytes replaced).")
    fuel_used = serializers.IntegerField(allow_null=True)
    elapsed_ms = serializers.IntegerField(allow_null=True)
    output_sha256 = serializers.CharField(help_text="Hex SHA-256 of the raw stdout bytes.")


class TaskEscrowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Escrow
        fields = ["id", "status"]


def _text(raw: bytes | memoryview | None) -> str:
    return bytes(raw or b"").decode("utf-8", errors="replace")


class TaskSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug")
    failure_reason = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    escrow = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id",
            "status",
            "agent",
            "input",
            "budget",
            "cost",
            "fee",
            "refund",
            "failure_reason",
            "failure_detail",
            "result",
            "escrow",
            "payment",
            "fuel_limit",
            "memory_limit_mb",
            "timeout_ms",
            "min_reputation",
            "output_schema",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(choices=Task.FailureReason.choices, allow_null=True)
    )
    def get_failure_reason(self, task: Task) -> str | None:
        return task.failure_reason or None

    @extend_schema_field(TaskResultSerializer(allow_null=True))
    def get_result(self, task: Task) -> dict[str, Any] | None:
        if task.status not in (Task.Status.SUCCEEDED, Task.Status.FAILED):
            return None
        return {
            "exit_code": task.exit_code,
            "output": _text(task.stdout),
            "stderr": _text(task.stderr),
            "fuel_used": task.fuel_used,
            "elapsed_ms": task.elapsed_ms,
            "output_sha256": task.output_sha256 or hashlib.sha256(bytes(task.stdout)).hexdigest(),
        }

    @extend_schema_field(TaskEscrowSerializer(allow_null=True))
    def get_escrow(self, task: Task) -> dict[str, Any] | None:
        escrow = getattr(task, "escrow", None)
        return None if escrow is None else TaskEscrowSerializer(escrow).data


class TaskQuerySerializer(serializers.Serializer):
    ORDERINGS = {"-created_at": ("-created_at",), "created_at": ("created_at",)}

    status = serializers.ChoiceField(choices=Task.Status.choices, required=False)
    agent = serializers.SlugField(max_length=64, required=False, help_text="An agent's slug.")
    ordering = serializers.ChoiceField(choices=list(ORDERINGS), default="-created_at")
    page = QueryIntegerField(min_value=1, required=False)
    page_size = QueryIntegerField(min_value=1, max_value=PAGE_SIZE_MAX, required=False)


# --- receipts ---------------------------------------------------------------------------


class ReceiptSerializer(serializers.Serializer):
    payload = StrictCharField(
        max_length=64 * 1024,
        trim_whitespace=False,
        help_text="Canonical JSON (sorted keys, no spaces) of the settled task.",
    )
    signature = StrictCharField(
        max_length=1024, trim_whitespace=False, help_text="Base64 Ed25519 signature."
    )
    key_id = StrictCharField(max_length=64, trim_whitespace=False)


class VerificationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()


class PublicKeySerializer(serializers.Serializer):
    public_key = serializers.CharField(help_text="Base64 of the raw 32-byte Ed25519 public key.")
    key_id = serializers.CharField()


def add_error_component(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular hook: publish the error envelope every error response refers to."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    return result


class ChannelOpenSerializer(serializers.Serializer):
    agent = serializers.SlugField(max_length=64, help_text="The agent's slug.")
    deposit = amount_field(help_text="µCR moved from your wallet into the channel.")

    def validate_agent(self, value: str) -> Agent:
        agent = Agent.objects.filter(slug=value).first()
        if agent is None:
            raise serializers.ValidationError("No such agent.")
        return agent


class ChannelSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent = serializers.CharField(source="agent.slug")
    deposit = serializers.IntegerField()
    redeemed = serializers.IntegerField(help_text="µCR redeemed by finished tasks.")
    reserved = serializers.IntegerField(help_text="µCR held for tasks in flight.")
    authorized = serializers.IntegerField(help_text="Cumulative amount of the latest voucher.")
    nonce = serializers.IntegerField(
        help_text="The latest voucher's nonce; the next must be higher."
    )
    in_flight = serializers.IntegerField()
    status = serializers.ChoiceField(choices=PaymentChannel.Status.choices)
    expires_at = serializers.DateTimeField()
    closes_at = serializers.DateTimeField(allow_null=True)
    settled_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class KeyRegisterSerializer(serializers.Serializer):
    public_key = StrictCharField(max_length=64, help_text="base64 of the raw 32-byte Ed25519 key.")


class KeySerializer(serializers.Serializer):
    public_key = serializers.CharField()
    key_id = serializers.CharField()
    created_at = serializers.DateTimeField()
