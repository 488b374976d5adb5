"""Money crossing the platform's edge: deposits in and withdrawals out.

Both are written (and committed) before the provider is asked, under a unique key, so a
crash between asking and recording leaves a row that recovery can finish by asking the
provider about that key. The daily reconciliation records where the provider's books and
ours disagree (`FundingDiscrepancy`). Imported by `escrow.models`.
"""

from __future__ import annotations

import uuid

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


def withdrawal_key_new() -> str:
    """A provider key no other database will ever send: random, not the row's id."""
    return f"wd_{uuid.uuid4().hex}"


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
    # Our idempotency key at the provider. Rows from before random keys keep the
    # `withdrawal:<id>` they were (maybe) paid under.
    provider_key = models.CharField(max_length=64, unique=True, default=withdrawal_key_new)
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
    # While a processing withdrawal's lease runs, its holder may be asking the provider:
    # nobody else asks about it until then (see escrow.withdrawals.withdrawal_lease).
    processing_until = models.DateTimeField(null=True, blank=True)
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
        return self.provider_key


class FundingDiscrepancy(models.Model):
    """Where the provider's records and ours disagree about money, for an operator to look
    into (found by `escrow.reconcile`). Only a collection that was never credited is fixed
    by the reconciliation itself; everything else is fixed by a person, never by moving
    the money again automatically."""

    class Kind(models.TextChoices):
        # Paid by the provider; here failed, cancelled, still pending, or no such withdrawal.
        PAYOUT_PAID_THERE = "payout_paid_there"
        # Paid here; failed at the provider, or unknown to it.
        PAYOUT_PAID_HERE = "payout_paid_here"
        # Collected by the provider with no deposit here to credit under that reference.
        COLLECT_UNMATCHED = "collect_unmatched"
        # Credited here; failed at the provider, or unknown to it.
        CREDIT_UNCOLLECTED = "credit_uncollected"
        # Both sides name the operation, for different amounts.
        AMOUNT_MISMATCH = "amount_mismatch"

    MISSING = "missing"  # our_status when we have no row under the provider's key

    kind = models.CharField(max_length=32, choices=Kind.choices)
    provider = models.CharField(max_length=32)
    # Our key at the provider: a deposit's reference or a withdrawal's provider key.
    reference = models.CharField(max_length=200)
    our_status = models.CharField(max_length=16)
    provider_status = models.CharField(max_length=16)
    our_amount = models.BigIntegerField(null=True, blank=True)
    provider_amount = models.BigIntegerField(null=True, blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    notes = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "funding discrepancies"
        ordering = ["-detected_at", "-id"]
        permissions = [("resolve_fundingdiscrepancy", "Can mark funding discrepancies resolved")]
        indexes = [
            models.Index(
                fields=["kind"],
                condition=Q(resolved_at__isnull=True),
                name="discrepancy_open_idx",
            )
        ]
        constraints = [
            # A drift is flagged once, however many runs see it.
            models.UniqueConstraint(
                fields=["provider", "reference", "kind"], name="discrepancy_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference}"
