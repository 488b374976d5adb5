from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.deconstruct import deconstructible

# Slugs that are page names under /agents/.
RESERVED_SLUGS = frozenset({"new"})


def validate_not_reserved(value: str) -> None:
    if value in RESERVED_SLUGS:
        raise ValidationError(f"{value!r} is reserved; choose another slug.")


TAGS_VALIDATOR = RegexValidator(
    r"^([a-z0-9][a-z0-9-]{0,31})( [a-z0-9][a-z0-9-]{0,31})*$|^$",
    "Tags are lowercase words (letters, digits, hyphens) separated by spaces.",
)


@deconstructible
class WithinPlatformMaximum:
    """A positive limit no larger than the platform's maximum, read from settings when
    checked (so migrations do not depend on the environment they were made in)."""

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def __call__(self, value: int) -> None:
        maximum = getattr(settings, self.setting)
        if value is None or value < 1 or value > maximum:
            raise ValidationError(f"Between 1 and {maximum:,}.", code="limit")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WithinPlatformMaximum) and other.setting == self.setting

    def __hash__(self) -> int:
        return hash(self.setting)


def default_fuel() -> int:
    return settings.TASK_DEFAULT_FUEL


def default_memory_mb() -> int:
    return settings.TASK_DEFAULT_MEMORY_MB


def default_timeout_ms() -> int:
    return settings.TASK_DEFAULT_TIMEOUT_MS


class Agent(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="agents")
    slug = models.SlugField(max_length=64, unique=True, validators=[validate_not_reserved])
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    # Normalised, space-separated; filtered with a word-boundary regex on every backend.
    tags = models.CharField(max_length=400, blank=True, validators=[TAGS_VALIDATOR])
    base_fee = models.BigIntegerField(help_text="µCR charged for every successful run")
    fuel_price = models.BigIntegerField(help_text="µCR per million fuel units")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    current_binary = models.ForeignKey(
        "AgentBinary", models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The current version's output schema, kept in step with it by every upload (before
    # the first upload: the schema the first version gets unless it names one).
    output_schema = models.JSONField(null=True, blank=True)
    # The limits the owner says the agent needs: a task that names none runs with these,
    # and a resource failure counts against the agent only at or above them (SPEC §13).
    recommended_fuel = models.BigIntegerField(
        default=default_fuel, validators=[WithinPlatformMaximum("TASK_MAX_FUEL")]
    )
    recommended_memory_mb = models.PositiveIntegerField(
        default=default_memory_mb, validators=[WithinPlatformMaximum("TASK_MAX_MEMORY_MB")]
    )
    recommended_timeout_ms = models.PositiveIntegerField(
        default=default_timeout_ms, validators=[WithinPlatformMaximum("TASK_MAX_TIMEOUT_MS")]
    )
    # The evaluators whose verdict the owner accepts (SPEC §21): a task may name one of them.
    accepted_evaluators = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="evaluating_for"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        # Operators' actions: viewing or editing an agent does not let anyone suspend it.
        permissions = [("suspend_agent", "Can suspend and reactivate agents")]
        constraints = [
            models.CheckConstraint(condition=Q(base_fee__gte=0), name="agent_base_fee_gte_0"),
            models.CheckConstraint(condition=Q(fuel_price__gte=0), name="agent_fuel_price_gte_0"),
            models.CheckConstraint(
                condition=Q(
                    recommended_fuel__gt=0,
                    recommended_memory_mb__gt=0,
                    recommended_timeout_ms__gt=0,
                ),
                name="agent_recommended_limits_gt_0",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def tag_list(self) -> list[str]:
        return self.tags.split() if self.tags else []

    def recommended_limits(self) -> dict[str, int]:
        """The limits a task runs with when it names none, within today's platform maxima."""
        return {
            "fuel_limit": min(self.recommended_fuel, settings.TASK_MAX_FUEL),
            "memory_limit_mb": min(self.recommended_memory_mb, settings.TASK_MAX_MEMORY_MB),
            "timeout_ms": min(self.recommended_timeout_ms, settings.TASK_MAX_TIMEOUT_MS),
        }


class AgentBinary(models.Model):
    """One uploaded version of an agent's WASM; the bytes live content-addressed in storage."""

    agent = models.ForeignKey(Agent, models.PROTECT, related_name="binaries")
    version = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.PositiveIntegerField()
    storage_name = models.CharField(max_length=200)
    # The version's contract (SPEC §19), fixed at upload (marketplace.binaries): with an
    # input schema, a task's input is a JSON document that must match it; every output
    # must match the output schema. A new contract is a new version, never an edit.
    input_schema = models.JSONField(null=True, blank=True)
    output_schema = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "version"], name="binary_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} v{self.version} ({self.sha256[:12]})"


class StoredBinary(models.Model):
    """Bytes kept in the database by `marketplace.storage.DatabaseStorage`, by storage name:
    the binary store every host of a distributed deployment can read."""

    name = models.CharField(max_length=200, primary_key=True)
    data = models.BinaryField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class SharedSecretCheck(models.Model):
    """A keyed digest proving which shared secret the hosts of one deployment use, so a host
    started with another one refuses to start (see marketplace/checks.py)."""

    name = models.CharField(max_length=50, primary_key=True)
    digest = models.CharField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class Task(models.Model):
    class Status(models.TextChoices):
        PENDING_FUNDING = "pending_funding"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    # What counts against a requester's MAX_TASKS_IN_FLIGHT (SPEC §23).
    IN_FLIGHT_STATUSES = (Status.PENDING_FUNDING, Status.QUEUED, Status.RUNNING)

    class FailureReason(models.TextChoices):
        OUT_OF_FUEL = "out_of_fuel"
        TIMEOUT = "timeout"
        MEMORY_LIMIT = "memory_limit"
        TRAP = "trap"
        EXIT_NONZERO = "exit_nonzero"
        OUTPUT_TOO_LARGE = "output_too_large"
        INVALID_OUTPUT = "invalid_output"
        VALIDATION_FAILED = "validation_failed"
        PLATFORM_ERROR = "platform_error"
        # Cancelled, not failed: nobody had started it by its deadline (SPEC §19).
        DEADLINE_PASSED = "deadline_passed"

    class Payment(models.TextChoices):
        ESCROW = "escrow"
        CHANNEL = "channel"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="tasks")
    agent = models.ForeignKey(Agent, models.PROTECT, related_name="tasks")
    binary = models.ForeignKey(AgentBinary, models.PROTECT, related_name="tasks")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    input = models.TextField(blank=True)
    # Hex SHA-256 of the input's UTF-8 bytes, computed at submission (outside its
    # transaction) for the receipt; blank for tasks submitted before it was stored.
    input_sha256 = models.CharField(max_length=64, blank=True)
    budget = models.BigIntegerField()
    # The price is pinned at submission, like the binary: a later change applies to later tasks.
    base_fee = models.BigIntegerField(default=0)
    fuel_price = models.BigIntegerField(default=0)
    fuel_limit = models.BigIntegerField()
    memory_limit_mb = models.PositiveIntegerField()
    timeout_ms = models.PositiveIntegerField()
    min_reputation = models.DecimalField(
        max_digits=7,
        decimal_places=4,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    output_schema = models.JSONField(null=True, blank=True)
    payment = models.CharField(max_length=16, choices=Payment.choices, default=Payment.ESCROW)
    # Pinned at submission for the reputation verdict, so that a later edit of the agent
    # cannot change it: the agent's recommended limits then (None: the task predates them),
    # and whether the output schema was the requester's own rather than the agent's.
    recommended_fuel = models.BigIntegerField(null=True, blank=True)
    recommended_memory_mb = models.PositiveIntegerField(null=True, blank=True)
    recommended_timeout_ms = models.PositiveIntegerField(null=True, blank=True)
    requester_schema = models.BooleanField(default=False)
    # The API key that submitted it, if any: settling or cancelling gives back to that key.
    api_key = models.ForeignKey(
        "marketplace.ApiKey", models.SET_NULL, null=True, blank=True, related_name="tasks"
    )
    # Evaluated settlement (SPEC §21): the evaluator this task's output goes to before its
    # earnings' hold starts; and, on an evaluator's own run, the task it evaluates.
    evaluator = models.ForeignKey(
        Agent, models.PROTECT, null=True, blank=True, related_name="evaluated_tasks"
    )
    evaluates = models.OneToOneField(
        "self", models.PROTECT, null=True, blank=True, related_name="evaluation_run"
    )
    # The evaluator's price, pinned at submission like the agent's: its run is priced so,
    # and the agent's fuel is capped to leave its least (base fee and some fuel) in the
    # budget, so no agent can spend the budget past its evaluator.
    evaluator_base_fee = models.BigIntegerField(null=True, blank=True)
    evaluator_fuel_price = models.BigIntegerField(null=True, blank=True)

    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING_FUNDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    exit_code = models.IntegerField(null=True, blank=True)
    stdout = models.BinaryField(default=b"")
    stderr = models.BinaryField(default=b"")
    output_sha256 = models.CharField(max_length=64, blank=True)
    fuel_used = models.BigIntegerField(null=True, blank=True)
    elapsed_ms = models.PositiveIntegerField(null=True, blank=True)
    failure_reason = models.CharField(max_length=32, choices=FailureReason.choices, blank=True)
    failure_detail = models.TextField(blank=True)

    cost = models.BigIntegerField(null=True, blank=True)
    fee = models.BigIntegerField(null=True, blank=True)
    refund = models.BigIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # When its last message was sent (recovery re-sends a lost one and moves this on).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # When it last entered the queue (submission, or a requeue after a lost worker): how long
    # it has waited for a worker. A re-sent message leaves it alone.
    queued_at = models.DateTimeField(null=True, blank=True)
    # Its turn in the fair share of the workers between requesters (start-time fair
    # queueing, marketplace/fair_share.py): workers take the queued task with the lowest tag.
    fair_tag = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A task still queued at this moment is cancelled as deadline_passed (SPEC §19): by the
    # deadline sweep, or by the worker that claims it late. Null: no deadline.
    deadline_at = models.DateTimeField(null=True, blank=True)
    # Somebody waits for this task to be final (`Prefer: wait`, marketplace/task_wait.py):
    # becoming final then sends a NOTIFY (a trigger, PostgreSQL only). Only then, because
    # every notifying commit takes one lock for the whole database.
    wake_waiters = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        # Operators' actions on stuck tasks: a refund moves money, a requeue runs it again.
        permissions = [
            ("refund_task", "Can refund stuck tasks"),
            ("requeue_task", "Can requeue stuck tasks"),
        ]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="task_lease_idx"),
            # The workers' next task, and the fair share's floor (the lowest queued tag).
            models.Index(
                fields=["fair_tag", "queued_at"],
                condition=Q(status="queued"),
                name="task_fair_queue_idx",
            ),
            # A requester's tasks in flight (the in-flight limit), and its last queued tag.
            models.Index(
                fields=["requester", "fair_tag"],
                condition=Q(status__in=["pending_funding", "queued", "running"]),
                name="task_in_flight_idx",
            ),
            # The deadline sweep's queued tasks whose deadline has passed.
            models.Index(
                fields=["deadline_at"],
                condition=Q(status="queued", deadline_at__isnull=False),
                name="task_deadline_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(budget__gt=0), name="task_budget_gt_0"),
            models.CheckConstraint(condition=Q(fuel_limit__gt=0), name="task_fuel_limit_gt_0"),
            models.UniqueConstraint(
                fields=["requester", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="task_idempotency_key_unique",
            ),
            # A settled task's money adds up: what was paid plus what came back is the budget.
            models.CheckConstraint(
                condition=Q(cost__isnull=True) | Q(cost__gte=0, fee__gte=0, refund__gte=0),
                name="task_amounts_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(cost__isnull=True)
                | Q(payment="channel")
                | Q(cost__lte=models.F("budget"), refund=models.F("budget") - models.F("cost")),
                name="task_cost_plus_refund_is_budget",
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.id} ({self.agent_id}, {self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class IdempotencyRecord(models.Model):
    """A money-moving request's claim on its key, then its successful response, replayed
    for its repeats (see marketplace.idempotency).

    Keys are per user. The fingerprint (method, path, body) tells a repeat from a reuse of
    the key for another request, which is refused.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="+")
    key = models.CharField(max_length=100)
    fingerprint = models.CharField(max_length=64)
    # Both null while the request that claimed the key is still being answered.
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(encoder=DjangoJSONEncoder, null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_record_unique"),
        ]

    def __str__(self) -> str:
        return f"idempotency key {self.key!r} of user {self.user_id}"


# API keys live in a module of their own; imported here so that Django registers them.
from marketplace.apikey_models import ApiKey, ApiKeyCharge  # noqa: E402, F401
from marketplace.evaluation_models import Evaluation  # noqa: E402, F401

# Webhooks, and the runs quotes are computed from, live in modules of their own;
# imported here so that Django registers them.
from marketplace.quote_models import FuelSample  # noqa: E402, F401
from marketplace.webhooks.models import (  # noqa: E402, F401
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
