from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

INITIAL_SCORE = Decimal("50.0000")


def score_field(**options) -> models.DecimalField:
    return models.DecimalField(max_digits=7, decimal_places=4, **options)


class AgentReputation(models.Model):
    agent = models.OneToOneField(
        "marketplace.Agent", models.PROTECT, primary_key=True, related_name="reputation"
    )
    score = score_field(default=INITIAL_SCORE, db_index=True)
    successes = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    neutral = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(score__gte=0, score__lte=100), name="reputation_score_in_range"
            )
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}: {self.score}"


class ReputationEvent(models.Model):
    """Append-only: one per settled task. Carries what the policy needs to be replayed."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"
        NEUTRAL = "neutral"

    agent = models.ForeignKey("marketplace.Agent", models.PROTECT, related_name="reputation_events")
    task = models.OneToOneField(
        "marketplace.Task", models.PROTECT, null=True, blank=True, related_name="reputation_event"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=32, blank=True)
    policy = models.CharField(max_length=200)
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
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.outcome} {self.delta:+}"
