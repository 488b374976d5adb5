"""Evaluated settlement (SPEC §21): a second agent checks a task's output before its money
moves.

Imported by `marketplace.models`, so it belongs to the marketplace app and its migrations.
The evaluator's run is a task of its own (`Task.evaluates` names the task it checks), paid
from what the evaluated task's budget left; `Evaluation` is the verdict that run gave.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Evaluation(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"  # the evaluator's run is queued or running
        DECIDED = "decided"  # the verdict is settled: the earnings' hold started, or refunded

    class Verdict(models.TextChoices):
        ACCEPT = "accept"
        REJECT = "reject"

    # The reason a verdict gets when the evaluator failed to give one: it counts as accept.
    EVALUATOR_FAILED = "evaluator_failed"

    task = models.OneToOneField("marketplace.Task", models.PROTECT, related_name="evaluation")
    evaluator = models.ForeignKey("marketplace.Agent", models.PROTECT, related_name="evaluations")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    verdict = models.CharField(max_length=16, choices=Verdict.choices, blank=True)
    score = models.DecimalField(max_digits=5, decimal_places=4, null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    # The evaluator's run's money (its task's cost, fee and refund), copied at the verdict.
    cost = models.BigIntegerField(null=True, blank=True)
    fee = models.BigIntegerField(null=True, blank=True)
    refund = models.BigIntegerField(null=True, blank=True)
    # The verdict's signed receipt: {payload, signature, key_id}; it names the task's receipt.
    receipt = models.JSONField(null=True, blank=True)
    # Whether the verdict survived the task's first resolved dispute (None: none resolved);
    # set once, which is what scores the evaluator for it exactly once.
    upheld = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(status="running"), name="evaluation_running_idx"
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="running", verdict="")
                | Q(status="decided", verdict__in=["accept", "reject"], decided_at__isnull=False),
                name="evaluation_decided_has_verdict",
            ),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__gte=0, score__lte=1),
                name="evaluation_score_in_range",
            ),
        ]

    def __str__(self) -> str:
        state = self.verdict or self.status
        return f"evaluation of {self.task_id} by {self.evaluator_id} ({state})"
