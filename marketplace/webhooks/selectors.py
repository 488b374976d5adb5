"""Reads of a user's webhook endpoints and their delivery log. An endpoint is its owner's
alone: anybody else is told it does not exist."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from marketplace.selectors.access import Refusal, page_not_found
from marketplace.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

NO_SUCH_WEBHOOK = page_not_found("No such webhook.")


def webhooks_of(user: Any) -> QuerySet[WebhookEndpoint]:
    """The user's endpoints, oldest first, each with how many events wait for it."""
    pending = Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.PENDING))
    return (
        WebhookEndpoint.objects.filter(owner=user).annotate(pending=pending).order_by("created_at")
    )


def webhook_of(
    user: Any, webhook_id: Any, *, missing: Refusal = NO_SUCH_WEBHOOK
) -> WebhookEndpoint:
    endpoint = webhooks_of(user).filter(pk=webhook_id).first()
    if endpoint is None:
        raise missing()
    return endpoint


def webhook_attempts(endpoint: WebhookEndpoint) -> QuerySet[WebhookAttempt]:
    """Every attempt to deliver to the endpoint, newest first, with its event."""
    return (
        WebhookAttempt.objects.filter(endpoint=endpoint)
        .select_related("delivery")
        .order_by("-attempted_at", "-id")
    )
