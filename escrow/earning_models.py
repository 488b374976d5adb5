"""Held earnings and disputes.

An owner's share of a settlement waits in the system `earnings` account as one `Earning`
per task until its `release_at`; the sweep then moves it to the owner's wallet. Until
then the task's requester may dispute it, which freezes it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Earning(models.Model):
    class Status(models.TextChoices):
        HELD = "held"
        FROZEN = "frozen"
        RELEASED = "released"
        REFUNDED = "refunded"
        # Its task's evaluator has not given its verdict yet (SPEC §21): neither swept nor
        # disputed; the verdict starts its hold, or refunds it.
        EVALUATING = "evaluating"

    UNRELEASED = (Status.HELD, Status.FROZEN, Status.EVALUATING)

    wallet = models.ForeignKey("escrow.Account", models.PROTECT, related_name="earnings")
    task = models.OneToOneField("marketplace.Task", models.PROTECT, related_name="earning")
    channel = models.ForeignKey(
        "escrow.PaymentChannel", models.PROTECT, null=True, blank=True, related_name="earnings"
    )
    amount = models.BigIntegerField(help_text="the owner's share: the task's cost − fee")
    fee = models.BigIntegerField(default=0, help_text="the platform's fee on the task")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.HELD)
    release_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["release_at", "id"]
        indexes = [models.Index(fields=["status", "release_at"], name="earning_due_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0, fee__gte=0), name="earning_amounts_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["held", "frozen", "evaluating"])
                | Q(released_at__isnull=False),
                name="earning_final_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"earning {self.pk} ({self.status}, {self.amount} µCR)"


class Dispute(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        CONTESTED = "contested"
        ACCEPTED = "accepted"
        REFUNDED = "refunded"
        REJECTED = "rejected"

    class Replay(models.TextChoices):
        """The platform's replay of the task's receipt (see execution/dispute_evidence.py)."""

        PENDING = "pending"
        MATCHED = "matched"  # the rerun printed the receipt's output, byte for byte
        MISMATCHED = "mismatched"  # it printed something else, or the task's data changed
        UNAVAILABLE = "unavailable"  # nothing to replay, or the replay could not run

    PENDING = (Status.OPEN, Status.CONTESTED)
    REFUNDING = (Status.ACCEPTED, Status.REFUNDED)

    task = models.ForeignKey("marketplace.Task", models.PROTECT, related_name="disputes")
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, related_name="disputes_opened"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, related_name="disputes_received"
    )
    reason = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    opened_at = models.DateTimeField()
    respond_by = models.DateTimeField()
    statement = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=200, blank=True)
    refunded = models.BigIntegerField(default=0, help_text="µCR given back to the requester")
    evidence = models.JSONField(default=dict, blank=True)
    replay_status = models.CharField(max_length=16, choices=Replay.choices, default=Replay.PENDING)
    replay_enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="when a worker was last asked to replay the receipt"
    )
    replay_attempts = models.PositiveSmallIntegerField(default=0)
    replayed_at = models.DateTimeField(null=True, blank=True)
    replay_output_sha256 = models.CharField(max_length=64, blank=True)
    replay_detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        # Deciding a contested dispute moves money; changing one is never allowed.
        permissions = [("decide_dispute", "Can decide contested disputes")]
        indexes = [
            models.Index(fields=["status", "respond_by"], name="dispute_due_idx"),
            models.Index(
                fields=["replay_enqueued_at"],
                condition=Q(replay_status="pending"),
                name="dispute_replay_due_idx",
            ),
        ]
        constraints = [
            # One dispute per task that can still move money.
            models.UniqueConstraint(
                fields=["task"],
                condition=~Q(status="rejected"),
                name="dispute_one_live_per_task",
            ),
            models.CheckConstraint(condition=Q(refunded__gte=0), name="dispute_refund_gte_0"),
            models.CheckConstraint(
                condition=Q(replay_status="pending") | Q(replayed_at__isnull=False),
                name="dispute_replay_done_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"dispute {self.pk} on task {self.task_id} ({self.status})"
