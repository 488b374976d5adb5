"""Webhook endpoints, their outbox of events, the events' frozen bodies, and the log of every
delivery attempt.

Imported by `marketplace.models`, so they belong to the marketplace app and its migrations.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from marketplace.webhooks.keyring import secret_decrypt, secret_encrypt


class WebhookEndpoint(models.Model):
    """A URL that receives a user's events, signed with the endpoint's own secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=2000)
    # Space-separated event types, sorted (matched with a word-boundary regex).
    events = models.CharField(max_length=400)
    # The signing secret under WEBHOOK_KEY_RING (see `secret`). Shown to the owner once.
    secret_encrypted = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    # The current streak of failed attempts; both reset by a delivered one.
    failing_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    # Set when the endpoint kept failing for days: it gets no events until enabled again.
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["owner", "created_at"], name="webhook_owner_idx")]
        # An operator's action: sending a user's events to a URL again.
        permissions = [("enable_webhookendpoint", "Can enable disabled webhook endpoints")]

    def __str__(self) -> str:
        return f"webhook {self.url} of user {self.owner_id}"

    @property
    def event_list(self) -> list[str]:
        return self.events.split()

    @property
    def secret(self) -> str:
        """The clear secret deliveries are signed with; only ever kept encrypted."""
        return secret_decrypt(self.secret_encrypted)

    @secret.setter
    def secret(self, clear: str) -> None:
        self.secret_encrypted = secret_encrypt(clear)


class WebhookEvent(models.Model):
    """An event's body, rendered and frozen at its first delivery attempt, stored once
    however many endpoints it goes to: deliveries reference it by its id. Large task inputs
    and outputs are left out of it (marketplace/webhooks/events.py), so its size is bounded.
    """

    id = models.CharField(primary_key=True, max_length=40)  # evt_…, the deliveries' event_id
    type = models.CharField(max_length=40)
    created_at = models.DateTimeField()
    body = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="webhook_event_age_idx")]

    def __str__(self) -> str:
        return f"{self.id} ({self.type})"


class WebhookDelivery(models.Model):
    """One event on its way to one endpoint: the outbox row, and its retry state.

    Written in the transaction of the change it reports. The body is rendered and frozen
    at the first attempt (outside any transaction) into the event's WebhookEvent, so every
    retry, to every endpoint, sends the same bytes under the same event id.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # every attempt failed
        SKIPPED = "skipped"  # the endpoint was disabled before it could be delivered

    event_id = models.CharField(max_length=40, db_index=True)
    endpoint = models.ForeignKey(WebhookEndpoint, models.CASCADE, related_name="deliveries")
    type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When a worker should try (again); while an attempt is in flight, when it is presumed lost.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_delivery_due_idx",
            ),
            models.Index(fields=["status", "created_at"], name="webhook_delivery_age_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_id"], name="webhook_delivery_event_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.type}) to {self.endpoint_id}: {self.status}"


class WebhookAttempt(models.Model):
    """One POST of a delivery, as the delivery log shows it."""

    delivery = models.ForeignKey(WebhookDelivery, models.CASCADE, related_name="attempt_log")
    # The endpoint again, so its log is one indexed read.
    endpoint = models.ForeignKey(WebhookEndpoint, models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField()

    class Meta:
        ordering = ["-attempted_at", "-id"]
        indexes = [
            models.Index(fields=["endpoint", "-attempted_at"], name="webhook_attempt_log_idx")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}: {self.status_code or self.error}"
