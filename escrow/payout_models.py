"""Money crossing the platform's edge: deposits in and withdrawals out.

Both are written (and committed) before the provider is asked, under a unique key, so a
crash between asking and recording leaves a row that recovery can finish by asking the
provider about that key. Imported by `escrow.models`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Deposit(models.Model):
    """external → wallet, once the provider has collected the money."""

    class Status(models.TextChoices):
        PENDING = "pending"
        COMPLETED = "completed"
        FAILED = "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="deposits")
    amount = models.BigIntegerField()
    # The client's Idempotency-Key, when it sent one.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    # Our key at the provider: every deposit has its own.
    reference = models.CharField(max_length=64, unique=True)
    provider = models.CharField(max_length=32)
    provider_reference = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure = models.CharField(max_length=200, blank=True)
    transfer = models.OneToOneField(
        "Transfer", models.PROTECT, null=True, blank=True, related_name="deposit"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="deposit_status_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="deposit_amount_gt_0"),
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="deposit_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(status="completed", transfer__isnull=False)
                | (~Q(status="completed") & Q(transfer__isnull=True)),
                name="deposit_completed_iff_transfer",
            ),
        ]

    def __str__(self) -> str:
        return f"deposit {self.pk} ({self.status}, {self.amount} µCR)"


class Withdrawal(models.Model):
    """wallet → payouts when asked; payouts → external when paid, back when not."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        PAID = "paid"
        FAILED = "failed"
        CANCELLED = "cancelled"

    IN_FLIGHT = (Status.PENDING, Status.PROCESSING)
    RETURNED = (Status.FAILED, Status.CANCELLED)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="withdrawals")
    amount = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    provider = models.CharField(max_length=32)
    provider_reference = models.CharField(max_length=200, blank=True)
    failure = models.CharField(max_length=200, null=True, blank=True)
    hold = models.OneToOneField(
        "Transfer", models.PROTECT, null=True, blank=True, related_name="withdrawal_held"
    )
    settlement = models.OneToOneField(
        "Transfer", models.PROTECT, null=True, blank=True, related_name="withdrawal_settled"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    processing_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="withdrawal_status_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="withdrawal_amount_gt_0"),
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="withdrawal_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "processing"], settlement__isnull=True)
                | Q(status__in=["paid", "failed", "cancelled"], settlement__isnull=False),
                name="withdrawal_settled_iff_final",
            ),
            models.CheckConstraint(
                condition=~Q(status="paid") | Q(paid_at__isnull=False),
                name="withdrawal_paid_has_paid_at",
            ),
        ]

    def __str__(self) -> str:
        return f"withdrawal {self.pk} ({self.status}, {self.amount} µCR)"

    @property
    def key(self) -> str:
        """The provider's idempotency key for this payout."""
        return f"withdrawal:{self.pk}"
