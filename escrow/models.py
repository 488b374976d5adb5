"""The double-entry ledger.

A `Transfer` moves `amount` µCR from `debit_account` (money leaves) to `credit_account`
(money arrives). Balances are a cache of the transfers, updated in the same transaction;
the sum of all balances is therefore always zero, with the `external` account negative by
what the outside world has paid in.
"""

from __future__ import annotations

import uuid

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
        EARNINGS = "earnings"
        PAYOUTS = "payouts"

    SYSTEM_KINDS = (
        Kind.ESCROW,
        Kind.CHANNELS,
        Kind.PLATFORM_FEES,
        Kind.EXTERNAL,
        Kind.EARNINGS,
        Kind.PAYOUTS,
    )

    kind = models.CharField(max_length=16, choices=Kind.choices)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="wallet"
    )
    balance = models.BigIntegerField(default=0)
    # A system account is split into SYSTEM_ACCOUNT_SHARDS rows of one kind, so that no row
    # is written by every settlement; its balance is the sum of its shards. Wallets: 0.
    shard = models.PositiveSmallIntegerField(default=0)
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
                fields=["kind", "shard"],
                condition=~Q(kind="wallet"),
                name="account_one_per_system_shard",
            ),
            models.CheckConstraint(
                condition=~Q(kind="wallet") | Q(shard=0), name="account_wallet_unsharded"
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.WALLET:
            return f"wallet of user {self.user_id}"
        return f"{self.kind} account (shard {self.shard})"


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
    channel = models.ForeignKey(
        "PaymentChannel", models.PROTECT, null=True, blank=True, related_name="escrows"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The shard of the system accounts (escrow, platform fees, earnings) its money moves
    # through: fixed at creation, so a change of SYSTEM_ACCOUNT_SHARDS never splits it.
    shard = models.PositiveSmallIntegerField(default=0)
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
            models.CheckConstraint(
                condition=Q(payment="escrow", channel__isnull=True)
                | Q(payment="channel", channel__isnull=False),
                name="escrow_channel_iff_channel_payment",
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
        WITHDRAWAL = "withdrawal"
        WITHDRAWAL_PAYOUT = "withdrawal_payout"
        WITHDRAWAL_RETURN = "withdrawal_return"
        EARNINGS_RELEASE = "earnings_release"
        DISPUTE_REFUND = "dispute_refund"
        DISPUTE_FEE_REFUND = "dispute_fee_refund"
        # An evaluator rejected the task (SPEC §21): its cost back, as a dispute refunds it.
        EVALUATION_REFUND = "evaluation_refund"
        EVALUATION_FEE_REFUND = "evaluation_fee_refund"

    debit_account = models.ForeignKey(Account, models.PROTECT, related_name="debits")
    credit_account = models.ForeignKey(Account, models.PROTECT, related_name="credits")
    amount = models.BigIntegerField()
    kind = models.CharField(max_length=24, choices=Kind.choices)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    escrow = models.ForeignKey(
        Escrow, models.PROTECT, null=True, blank=True, related_name="transfers"
    )
    channel = models.ForeignKey(
        "PaymentChannel", models.PROTECT, null=True, blank=True, related_name="transfers"
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
            # Each leg of a channel (deposit, payout, fee, refund) happens at most once.
            models.UniqueConstraint(
                fields=["channel", "kind"],
                condition=Q(channel__isnull=False),
                name="transfer_one_leg_per_channel",
            ),
            models.CheckConstraint(
                condition=~Q(kind__startswith="channel_") | Q(channel__isnull=False),
                name="transfer_channel_leg_has_channel",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} µCR ({self.debit_account_id} → {self.credit_account_id})"


class PaymentChannel(models.Model):
    """A requester's standing deposit for many tasks of one agent, paid by signed vouchers.

    The deposit sits in the channels account. Tasks reserve their budget against the latest
    voucher and redeem only their cost; no money moves until the channel settles, in one
    transaction: redeemed − fees to the owner, fees to the platform, the rest back.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSING = "closing"
        SETTLED = "settled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, related_name="payment_channels"
    )
    agent = models.ForeignKey("marketplace.Agent", models.PROTECT, related_name="channels")
    payer = models.ForeignKey(Account, models.PROTECT, related_name="channels_paid")
    payee = models.ForeignKey(Account, models.PROTECT, related_name="channels_received")
    deposit = models.BigIntegerField()
    # The latest accepted voucher: its nonce and the cumulative amount it authorizes.
    nonce = models.BigIntegerField(default=0)
    authorized = models.BigIntegerField(default=0)
    redeemed = models.BigIntegerField(default=0)
    fees = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    # What left the deposit to pay evaluators (SPEC §21): an evaluated task's budget rest,
    # moved at its settlement into its evaluator's run's escrow (escrow.channel_evaluation).
    drawn = models.BigIntegerField(default=0)
    in_flight = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    # The shard of the system accounts (channels, platform fees, earnings) it moves money
    # through, fixed at opening; its tasks' escrow rows carry the same one.
    shard = models.PositiveSmallIntegerField(default=0)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    expires_at = models.DateTimeField()
    closes_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "closes_at"], name="channel_due_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(deposit__gt=0), name="channel_deposit_gt_0"),
            models.CheckConstraint(
                condition=Q(redeemed__gte=0, reserved__gte=0, fees__gte=0, fees__lte=F("redeemed")),
                name="channel_amounts_non_negative",
            ),
            # Never redeem (or hold for tasks in flight) more than the requester signed for,
            # and never sign for more than the deposit.
            models.CheckConstraint(
                condition=Q(drawn__gte=0)
                & Q(redeemed__lte=F("authorized") - F("reserved") - F("drawn"))
                & Q(authorized__lte=F("deposit")),
                name="channel_within_voucher_and_deposit",
            ),
            models.CheckConstraint(
                condition=~Q(status="settled") | Q(in_flight=0, reserved=0),
                name="channel_settles_with_nothing_in_flight",
            ),
            models.UniqueConstraint(
                fields=["requester", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="channel_idempotency_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"channel {self.pk} ({self.status}, {self.redeemed}/{self.deposit} µCR)"


class Voucher(models.Model):
    """Every accepted voucher, in nonce order: the channel's payment history."""

    channel = models.ForeignKey(PaymentChannel, models.PROTECT, related_name="vouchers")
    nonce = models.BigIntegerField()
    cumulative_amount = models.BigIntegerField()
    signature = models.CharField(max_length=100)
    task = models.OneToOneField(
        "marketplace.Task", models.PROTECT, null=True, blank=True, related_name="voucher"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["channel", "nonce"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "nonce"], name="voucher_nonce_unique"),
            models.CheckConstraint(condition=Q(nonce__gt=0), name="voucher_nonce_gt_0"),
        ]

    def __str__(self) -> str:
        return f"voucher {self.nonce} for {self.cumulative_amount} µCR"


class RequesterKey(models.Model):
    """An Ed25519 public key that signs a requester's vouchers, until it is revoked.

    A custodial key is one the platform keeps for the browser UI: its private half is
    stored encrypted with the custodial key ring (`CUSTODIAL_KEY_RING`).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="voucher_keys")
    public_key = models.CharField(max_length=64)
    key_id = models.CharField(max_length=32)
    custodial_secret = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # A revoked key verifies no new voucher; vouchers it signed before stay accepted.
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "public_key"], name="requester_key_unique"),
            models.UniqueConstraint(
                fields=["user"],
                condition=~Q(custodial_secret="") & Q(revoked_at__isnull=True),
                name="one_custodial_key",
            ),
        ]

    def __str__(self) -> str:
        return f"key {self.key_id} of user {self.user_id}"


from escrow.earning_models import Dispute, Earning  # noqa: E402, F401  (registered with the app)
from escrow.payout_models import Deposit, Withdrawal  # noqa: E402, F401  (registered with the app)
