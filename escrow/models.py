"""The double-entry ledger.

A `Transfer` moves `amount` µCR from `debit_account` (money leaves) to `credit_account`
(money arrives). Balances are a cache of the transfers, updated in the same transaction;
the sum of all balances is therefore always zero, with the `external` account negative by
what the outside world has paid in.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Account(models.Model):
    class Kind(models.TextChoices):
        WALLET = "wallet"
        ESCROW = "escrow"
        CHANNELS = "channels"
        PLATFORM_FEES = "platform_fees"
        EXTERNAL = "external"

    SYSTEM_KINDS = (Kind.ESCROW, Kind.CHANNELS, Kind.PLATFORM_FEES, Kind.EXTERNAL)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="wallet"
    )
    balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Only the outside world may owe money.
            models.CheckConstraint(
                condition=Q(kind="external") | Q(balance__gte=0), name="account_balance_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(kind="wallet", user__isnull=False)
                | (~Q(kind="wallet") & Q(user__isnull=True)),
                name="account_wallet_has_user",
            ),
            models.UniqueConstraint(
                fields=["kind"], condition=~Q(kind="wallet"), name="account_one_per_system_kind"
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.WALLET:
            return f"wallet of user {self.user_id}"
        return f"{self.kind} account"


class Escrow(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        FUNDED = "funded"
        RELEASED = "released"
        REFUNDED = "refunded"
        CANCELLED = "cancelled"
        COMPLETED = "completed"

    FINAL_STATUSES = (Status.RELEASED, Status.REFUNDED, Status.CANCELLED, Status.COMPLETED)

    class Payment(models.TextChoices):
        ESCROW = "escrow"
        CHANNEL = "channel"

    task = models.OneToOneField(
        "marketplace.Task", models.PROTECT, null=True, blank=True, related_name="escrow"
    )
    payer = models.ForeignKey(Account, models.PROTECT, related_name="escrows_paid")
    payee = models.ForeignKey(Account, models.PROTECT, related_name="escrows_received")
    amount = models.BigIntegerField()
    payment = models.CharField(max_length=16, choices=Payment.choices, default=Payment.ESCROW)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    cost = models.BigIntegerField(null=True, blank=True)
    fee = models.BigIntegerField(null=True, blank=True)
    refund = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    funded_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status"], name="escrow_status_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="escrow_amount_gt_0"),
            models.CheckConstraint(
                condition=~Q(status="released")
                | Q(
                    cost__gte=0,
                    fee__gte=0,
                    fee__lte=F("cost"),
                    cost__lte=F("amount"),
                    refund=F("amount") - F("cost"),
                ),
                name="escrow_release_adds_up",
            ),
            models.CheckConstraint(
                condition=~Q(status="refunded") | Q(cost=0, fee=0, refund=F("amount")),
                name="escrow_refund_is_whole",
            ),
            # A channel-paid escrow holds nothing; it can only complete or be cancelled.
            models.CheckConstraint(
                condition=Q(payment="escrow") | Q(status__in=["pending", "completed", "cancelled"]),
                name="escrow_channel_never_funded",
            ),
        ]

    def __str__(self) -> str:
        return f"escrow {self.pk} ({self.status}, {self.amount} µCR)"


class Transfer(models.Model):
    class Kind(models.TextChoices):
        DEPOSIT = "deposit"
        ESCROW_HOLD = "escrow_hold"
        ESCROW_PAYOUT = "escrow_payout"
        ESCROW_FEE = "escrow_fee"
        ESCROW_REFUND = "escrow_refund"
        CHANNEL_DEPOSIT = "channel_deposit"
        CHANNEL_PAYOUT = "channel_payout"
        CHANNEL_FEE = "channel_fee"
        CHANNEL_REFUND = "channel_refund"

    debit_account = models.ForeignKey(Account, models.PROTECT, related_name="debits")
    credit_account = models.ForeignKey(Account, models.PROTECT, related_name="credits")
    amount = models.BigIntegerField()
    kind = models.CharField(max_length=24, choices=Kind.choices)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    escrow = models.ForeignKey(
        Escrow, models.PROTECT, null=True, blank=True, related_name="transfers"
    )
    task = models.ForeignKey(
        "marketplace.Task", models.PROTECT, null=True, blank=True, related_name="transfers"
    )
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_gt_0"),
            models.CheckConstraint(
                condition=~Q(debit_account=F("credit_account")), name="transfer_distinct_accounts"
            ),
            # Each leg of an escrow (hold, payout, fee, refund) happens at most once.
            models.UniqueConstraint(
                fields=["escrow", "kind"],
                condition=Q(escrow__isnull=False),
                name="transfer_one_leg_per_escrow",
            ),
            models.CheckConstraint(
                condition=~Q(kind__startswith="escrow_") | Q(escrow__isnull=False),
                name="transfer_escrow_leg_has_escrow",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} µCR ({self.debit_account_id} → {self.credit_account_id})"
