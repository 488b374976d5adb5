from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

INITIAL_SCORE = Decimal("50.0000")


def score_field(**options) -> models.DecimalField:
    return models.DecimalField(max_digits=7, decimal_places=4, **options)


def weight_field(**options) -> models.DecimalField:
    """A share of an outcome, in [0, 1], to 8 places: a capped event counts only in part."""
    return models.DecimalField(max_digits=9, decimal_places=8, **options)


def evidence_field(**options) -> models.DecimalField:
    return models.DecimalField(max_digits=20, decimal_places=8, default=0, **options)


class AgentReputation(models.Model):
    agent = models.OneToOneField(
        "marketplace.Agent", models.PROTECT, primary_key=True, related_name="reputation"
    )
    score = score_field(default=INITIAL_SCORE, db_index=True)
    successes = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    neutral = models.PositiveIntegerField(default=0)
    # Successes and failures weighted by the share of each that counted (an event cut short
    # by a requester's daily cap counts in part); the Beta policy scores from these.
    evidence_successes = evidence_field()
    evidence_failures = evidence_field()
    # Distinct requesters with at least one scored (not neutral) event: what the score rests on.
    requesters = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(score__gte=0, score__lte=100), name="reputation_score_in_range"
            ),
            models.CheckConstraint(
                condition=Q(evidence_successes__gte=0, evidence_failures__gte=0),
                name="reputation_evidence_gte_0",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}: {self.score}"


class ReputationEvent(models.Model):
    """Append-only: one per settled task, and one per refunded dispute. Carries what the
    policy and the daily cap need to be replayed: the outcome, who asked for the task, the
    UTC day and the cap in force."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"
        NEUTRAL = "neutral"

    class NeutralReason(models.TextChoices):
        """Why a neutral event was not scored. Events older than these reasons have none."""

        PLATFORM = "platform", "the platform failed"
        VALIDATION = "validation", "the task failed its checks"
        REQUESTER_LIMITS = "requester_limits", "below the agent's recommended limits"
        REQUESTER_SCHEMA = "requester_schema", "the requester's own output schema"
        SELF_DEALING = "self_dealing", "the requester owns the agent"
        ZERO_COST = "zero_cost", "the run cost nothing"
        DAILY_CAP = "daily_cap", "the requester's daily cap was used up"

    agent = models.ForeignKey("marketplace.Agent", models.PROTECT, related_name="reputation_events")
    task = models.OneToOneField(
        "marketplace.Task", models.PROTECT, null=True, blank=True, related_name="reputation_event"
    )
    # A refunded dispute's event (the task's own event is the settlement's): at most one.
    dispute = models.OneToOneField(
        "escrow.Dispute", models.PROTECT, null=True, blank=True, related_name="reputation_event"
    )
    # Who asked for the task; None for events no requester caused (they are never capped).
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=32, blank=True)
    neutral_reason = models.CharField(max_length=32, choices=NeutralReason.choices, blank=True)
    policy = models.CharField(max_length=200)
    # The UTC day the event was scored on, and the points one requester could move the agent
    # by that day (None: no cap, as for events older than the cap).
    settled_on = models.DateField(null=True, blank=True)
    daily_cap = score_field(null=True, blank=True)
    # The share of the outcome that counted: 1, less when the cap cut it short, 0 if neutral.
    weight = weight_field(default=1)
    fuel_used = models.BigIntegerField(default=0)
    fuel_limit = models.BigIntegerField(default=0)
    elapsed_ms = models.PositiveIntegerField(default=0)
    delta = score_field()
    score_before = score_field()
    score_after = score_field()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(score_after__gte=0, score_after__lte=100), name="event_score_in_range"
            ),
            models.CheckConstraint(
                condition=Q(outcome="neutral") | Q(neutral_reason=""),
                name="event_neutral_reason_only_if_neutral",
            ),
            models.CheckConstraint(
                condition=Q(weight__gte=0, weight__lte=1), name="event_weight_in_range"
            ),
            # A dispute's event is not the task's: that one is the settlement's.
            models.CheckConstraint(
                condition=Q(dispute__isnull=True) | Q(task__isnull=True),
                name="event_task_or_dispute",
            ),
        ]
        indexes = [
            # The daily cap sums a requester's moves of an agent on one day: only the events
            # that moved it, so a requester past the cap (whose events all score 0) costs
            # the sum nothing however many tasks it settles that day.
            models.Index(
                fields=["agent", "requester", "settled_on"],
                condition=~Q(delta=0),
                name="event_moved_day_idx",
            ),
            # Whether a requester's outcomes ever scored for an agent (it counts the agent's
            # distinct requesters): found at the first such event.
            models.Index(
                fields=["agent", "requester"],
                condition=~Q(outcome="neutral"),
                name="event_scored_requester_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.outcome} {self.delta:+}"
