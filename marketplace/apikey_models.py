"""API keys: scoped credentials for programs and autonomous agents, with spending caps.

Imported by `marketplace.models`, so Django registers these models with the marketplace app.
Rows change only through `marketplace.apikeys`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class ApiKey(models.Model):
    """A key of one user: what it may do (scopes, agents) and spend (limits, in µCR).

    The secret is stored as its SHA-256: it is 32 random bytes, so a fast hash is enough
    (nobody can guess it back from the hash), and every request can afford to check it.
    The counters are this key's spending in its current UTC day and month and in all; the
    key's row is locked while a submission checks and counts its budget against them.
    """

    class Scope(models.TextChoices):
        TASKS_READ = "tasks:read", "Read tasks and receipts"
        TASKS_WRITE = "tasks:write", "Submit and cancel tasks"
        CHANNELS_WRITE = "channels:write", "Open, read and close payment channels"
        WALLET_READ = "wallet:read", "Read the wallet and its ledger"
        AGENTS_WRITE = "agents:write", "Create and change agents, upload binaries"

    LIMITS = ("per_task", "daily", "monthly", "total")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # Shown in lists and logs to tell keys apart; also how a presented key is looked up.
    prefix = models.CharField(max_length=16, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    # Empty: any agent. Otherwise tasks and channels only for these agents.
    agents = models.ManyToManyField("marketplace.Agent", blank=True, related_name="+")

    per_task_limit = models.BigIntegerField(null=True, blank=True)
    daily_limit = models.BigIntegerField(null=True, blank=True)
    monthly_limit = models.BigIntegerField(null=True, blank=True)
    total_limit = models.BigIntegerField(null=True, blank=True)

    spent_total = models.BigIntegerField(default=0)
    spent_daily = models.BigIntegerField(default=0)
    spent_daily_on = models.DateField(null=True, blank=True)  # the UTC day counted
    spent_monthly = models.BigIntegerField(default=0)
    spent_monthly_on = models.DateField(null=True, blank=True)  # the 1st of the UTC month

    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API key"
        permissions = [("revoke_apikey", "Can revoke users' API keys")]
        constraints = [
            models.CheckConstraint(
                condition=Q(spent_total__gte=0, spent_daily__gte=0, spent_monthly__gte=0),
                name="api_key_spent_gte_0",
            ),
            # What a window counted is part of what the key spent in all.
            models.CheckConstraint(
                condition=Q(spent_daily__lte=F("spent_total"), spent_monthly__lte=F("spent_total")),
                name="api_key_windows_within_total",
            ),
            models.CheckConstraint(
                condition=(Q(per_task_limit__isnull=True) | Q(per_task_limit__gt=0))
                & (Q(daily_limit__isnull=True) | Q(daily_limit__gt=0))
                & (Q(monthly_limit__isnull=True) | Q(monthly_limit__gt=0))
                & (Q(total_limit__isnull=True) | Q(total_limit__gt=0)),
                name="api_key_limits_gt_0",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def limits(self) -> dict[str, int | None]:
        return {name: getattr(self, f"{name}_limit") for name in self.LIMITS}


class ApiKeyCharge(models.Model):
    """What one submission or channel counted against its key, and what came back since.

    `day` and `month` are the windows the amount was counted in: a give-back lowers a
    window's counter only while the key is still counting that window.
    """

    key = models.ForeignKey(ApiKey, models.CASCADE, related_name="charges")
    task = models.OneToOneField(
        "marketplace.Task", models.CASCADE, null=True, blank=True, related_name="api_key_charge"
    )
    channel = models.OneToOneField(
        "escrow.PaymentChannel",
        models.CASCADE,
        null=True,
        blank=True,
        related_name="api_key_charge",
    )
    amount = models.BigIntegerField()
    given_back = models.BigIntegerField(default=0)
    day = models.DateField()
    month = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)
    # When the task or channel finished and gave back what it did not spend (at most once).
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0, given_back__gte=0, given_back__lte=F("amount")),
                name="api_key_charge_amounts",
            ),
            models.CheckConstraint(
                condition=Q(task__isnull=False, channel__isnull=True)
                | Q(task__isnull=True, channel__isnull=False),
                name="api_key_charge_task_or_channel",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} µCR on key {self.key_id}"
