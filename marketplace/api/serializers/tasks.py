"""Wire format of tasks: submissions (with channel vouchers), listings and results."""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from escrow.models import Escrow
from marketplace.api.pagination import PAGE_SIZE_MAX
from marketplace.api.serializers.fields import (
    QueryIntegerField,
    StrictCharField,
    StrictIntegerField,
    amount_field,
    checked_output_schema,
    existing_agent,
)
from marketplace.contracts import input_shown
from marketplace.evaluators import evaluation_shown
from marketplace.models import Agent, Task
from marketplace.selectors.agents import agent_for_submission
from marketplace.submissions import MAX_BATCH


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
    input = serializers.JSONField(
        allow_null=True,
        help_text="Given to the agent on stdin. When the version has an input schema, any "
        "JSON value that matches it (given to the agent as compact JSON); otherwise a string.",
    )
    budget = amount_field(help_text="µCR held in escrow; the most the task can cost.")
    version = StrictIntegerField(
        required=False,
        help_text="The agent's binary version to run (its contract applies). Default: the "
        "current version.",
    )
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
    deadline_seconds = StrictIntegerField(
        min_value=1,
        max_value=settings.TASK_MAX_DEADLINE_SECONDS,
        required=False,
        help_text="A task not started this many seconds after submission is cancelled "
        "(`failure_reason: deadline_passed`) with a full refund. A running task finishes "
        "under its own timeout.",
    )

    evaluator = serializers.SlugField(
        max_length=64,
        required=False,
        help_text="An evaluator the agent accepts (its `accepted_evaluators`): it checks the "
        "output before the agent's earnings' hold starts, paid from the same budget; a "
        "rejection refunds the task's cost (SPEC §21).",
    )

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

    def validate_agent(self, value: str) -> Agent:
        requester = self.context.get("requester")
        if requester is None:
            return existing_agent(value)
        # Read once, with what the submission needs (the service does not read it again);
        # a batch reads each of its agents once (`agents`, by slug).
        read = self.context.get("agents")
        agent = read.get(value) if read is not None else None
        if agent is None:
            agent = agent_for_submission(requester_id=requester.pk, slug=value)
        if agent is None:
            raise serializers.ValidationError("No such agent.")
        if read is not None:
            read[value] = agent
        return agent

    def validate_output_schema(self, value: Any) -> Any:
        requester = self.context.get("requester")
        return checked_output_schema(value, user_id=requester.pk if requester else None)


class TaskBatchSerializer(serializers.Serializer):
    tasks = TaskSubmitSerializer(  # type: ignore[call-arg]  # `many` takes a ListSerializer's
        many=True,
        min_length=1,
        max_length=MAX_BATCH,
        help_text=f"1 to {MAX_BATCH} submissions, each as `POST /api/v1/tasks/` takes one "
        "(escrow payment only). All are submitted, or none.",
    )


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


class TaskEvaluationSerializer(serializers.Serializer):
    evaluator = serializers.CharField(help_text="The evaluator's slug.")
    status = serializers.ChoiceField(choices=["running", "decided"], allow_null=True)
    verdict = serializers.ChoiceField(choices=["accept", "reject"], allow_null=True)
    score = serializers.FloatField(allow_null=True, help_text="0..1, to four decimals.")
    reason = serializers.CharField(allow_null=True)
    cost = serializers.IntegerField(allow_null=True, help_text="µCR the evaluator's run cost.")
    run = serializers.UUIDField(allow_null=True, help_text="The evaluator's run (a task).")
    receipt = serializers.JSONField(allow_null=True, help_text="{payload, signature, key_id}")


class TaskSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug")
    version = serializers.IntegerField(
        source="binary.version", help_text="The agent's binary version this task runs."
    )
    input = serializers.SerializerMethodField()
    failure_reason = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    escrow = serializers.SerializerMethodField()
    evaluation = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id",
            "status",
            "agent",
            "version",
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
            "deadline_at",
            "evaluation",
        ]
        read_only_fields = fields

    @extend_schema_field(TaskEvaluationSerializer(allow_null=True))
    def get_evaluation(self, task: Task) -> dict[str, Any] | None:
        return evaluation_shown(task)

    @extend_schema_field(
        {
            "description": "The input as given: a JSON value when the version has an input "
            "schema, otherwise a string.",
        }
    )
    def get_input(self, task: Task) -> Any:
        return input_shown(task)

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
        # A task just submitted carries the escrow it opened: nothing is read back.
        escrow = getattr(task, "opened_escrow", None) or getattr(task, "escrow", None)
        # TaskEscrowSerializer's fields, without building them for every task.
        return None if escrow is None else {"id": escrow.pk, "status": escrow.status}


class TaskListResultSerializer(serializers.Serializer):
    exit_code = serializers.IntegerField(allow_null=True)
    fuel_used = serializers.IntegerField(allow_null=True)
    elapsed_ms = serializers.IntegerField(allow_null=True)
    output_sha256 = serializers.CharField(
        allow_null=True, help_text="Hex SHA-256 of the raw stdout bytes."
    )


class TaskListSerializer(TaskSerializer):
    """A task in a list: without its input and output (up to a MiB each), which the
    task's own endpoint has; `result` keeps the output's hash."""

    input = None  # type: ignore[assignment]

    class Meta(TaskSerializer.Meta):
        fields = [name for name in TaskSerializer.Meta.fields if name != "input"]
        read_only_fields = fields

    @extend_schema_field(TaskListResultSerializer(allow_null=True))
    def get_result(self, task: Task) -> dict[str, Any] | None:
        if task.status not in (Task.Status.SUCCEEDED, Task.Status.FAILED):
            return None
        return {
            "exit_code": task.exit_code,
            "fuel_used": task.fuel_used,
            "elapsed_ms": task.elapsed_ms,
            "output_sha256": task.output_sha256 or None,
        }


class TaskQuerySerializer(serializers.Serializer):
    ORDERINGS = {"-created_at": ("-created_at",), "created_at": ("created_at",)}

    status = serializers.ChoiceField(choices=Task.Status.choices, required=False)
    agent = serializers.SlugField(max_length=64, required=False, help_text="An agent's slug.")
    ordering = serializers.ChoiceField(choices=list(ORDERINGS), default="-created_at")
    page = QueryIntegerField(min_value=1, required=False)
    page_size = QueryIntegerField(min_value=1, max_value=PAGE_SIZE_MAX, required=False)
