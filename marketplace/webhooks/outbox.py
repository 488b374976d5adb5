"""Writes: recording events in the outbox, and the endpoints users manage.

`webhook_event_record` is what any service calls, inside its own transaction, to report a
change; it costs that transaction one INSERT … SELECT, whether or not anybody listens, and
never renders the event's data (that happens at delivery, outside any transaction).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from cryptography.fernet import InvalidToken
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from escrow.errors import DomainError
from marketplace.queues import service_send_on_commit
from marketplace.webhooks.events import EVENT_TYPES, PING
from marketplace.webhooks.keyring import secret_reencrypt
from marketplace.webhooks.models import WebhookDelivery, WebhookEndpoint
from marketplace.webhooks.pings import ping_allow
from marketplace.webhooks.signing import secret_new
from marketplace.webhooks.transport import url_check, url_normalise

DELIVER_EVENT = "marketplace.webhooks.tasks.deliver_event"
# Endpoints per user: bounds what one event fans out to.
MAX_ENDPOINTS = 10
# If the message sent after the commit is lost (a worker killed in between), the sweep
# sends the event this long after it was recorded.
RESEND_AFTER_SECONDS = 20


class WebhookLimitReached(DomainError):
    code = "webhook_limit_reached"
    status = 409
    default_message = f"An account has at most {MAX_ENDPOINTS} webhook endpoints."


class WebhookDisabled(DomainError):
    code = "webhook_disabled"
    status = 409
    default_message = "This webhook endpoint is disabled; enable it first."


class InvalidEventTypes(DomainError):
    code = "invalid_event_types"
    default_message = "Choose at least one known event type."


def event_id_new() -> str:
    return "evt_" + secrets.token_hex(12)


def webhook_event_record(
    *, owner_id: int, type: str, object_id: str, endpoint_id: Any = None
) -> str | None:
    """Put an event in the outbox of each of `owner_id`'s enabled endpoints subscribed to
    `type` (or of `endpoint_id` alone), in the caller's transaction, and have it delivered
    after the commit. Returns the event id, or None when no endpoint takes it.
    """
    event = webhook_event_insert(
        owner_id=owner_id, type=type, object_id=object_id, endpoint_id=endpoint_id
    )
    # One statement, so that reporting a change never costs its transaction a round trip
    # to find out who listens first.
    with connection.cursor() as cursor:
        cursor.execute(f"{event.into} {event.select}", event.params)
        written = cursor.rowcount
    if written <= 0:
        return None
    webhook_event_send(event.event_id)
    return event.event_id


class EventInsert(NamedTuple):
    """An event's id and its INSERT (`into`) … SELECT (`select`, with `params`)."""

    event_id: str
    into: str
    select: str
    params: list[Any]


def webhook_event_insert(
    *, owner_id: int, type: str, object_id: str, endpoint_id: Any = None
) -> EventInsert:
    """The statement that records the event, for a caller that runs it within a statement
    of its own (then calls `webhook_event_send` if it wrote rows)."""
    event_id = event_id_new()
    now = timezone.now()
    by_endpoint = endpoint_id is not None
    key = (connection.vendor, by_endpoint)
    if key not in EVENT_SQL:
        EVENT_SQL[key] = _event_sql(by_endpoint)
    into, select = EVENT_SQL[key]
    when = connection.ops.adapt_datetimefield_value
    params: list[Any] = [event_id, type, object_id, when(now), WebhookDelivery.Status.PENDING, 0]
    params += [when(now + timedelta(seconds=RESEND_AFTER_SECONDS)), owner_id]
    if by_endpoint:
        params.append(WebhookEndpoint._meta.pk.get_db_prep_value(endpoint_id, connection))
    else:
        params.append(rf"(^| ){re.escape(type)}( |$)")
    return EventInsert(event_id, into, select, params)


# (vendor, for one endpoint) → the INSERT and its SELECT, built once per process.
EVENT_SQL: dict[tuple[str, bool], tuple[str, str]] = {}


def _event_sql(by_endpoint: bool) -> tuple[str, str]:
    """An event's rows: one per endpoint of the owner's that takes the type (or for the
    one endpoint), each with the values in the order of the columns."""
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(column)
        for column in (
            "event_id",
            "endpoint_id",
            "type",
            "object_id",
            "created_at",
            "status",
            "attempts",
            "next_attempt_at",
        )
    )
    if by_endpoint:
        which = "id = %s"
    else:  # the endpoint's events are its types, space-separated
        which = "events::text ~ %s" if connection.vendor == "postgresql" else "events REGEXP %s"
    select = (
        "SELECT %s, id, %s, %s, %s, %s, %s, %s "  # noqa: S608
        f"FROM {quote(WebhookEndpoint._meta.db_table)} "
        f"WHERE owner_id = %s AND disabled_at IS NULL AND {which}"
    )
    return f"INSERT INTO {quote(WebhookDelivery._meta.db_table)} ({columns})", select


def webhook_event_send(event_id: str) -> None:
    """Deliver a recorded event once the caller's transaction commits."""
    service_send_on_commit(DELIVER_EVENT, event_id, task_name=f"webhook {event_id}")


def event_types_clean(events: list[str]) -> str:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown or not events:
        message = f"Unknown event types: {', '.join(unknown)}." if unknown else None
        raise InvalidEventTypes(message, fields={"events": [f"one or more of {EVENT_TYPES}"]})
    return " ".join(sorted(set(events)))


def webhook_create(*, owner: User, url: str, events: list[str]) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (`endpoint.secret`, shown to the owner once; the
    row keeps it encrypted). The URL is stored in its ASCII form, resolved and checked here
    (outside any transaction), and again at every delivery."""
    subscribed = event_types_clean(events)
    url = url_normalise(url)
    url_check(url)
    with transaction.atomic():
        # The owner's row serializes this user's creations, so the limit holds.
        User.objects.select_for_update().filter(pk=owner.pk).first()
        if WebhookEndpoint.objects.filter(owner=owner).count() >= MAX_ENDPOINTS:
            raise WebhookLimitReached()
        endpoint = WebhookEndpoint(owner=owner, url=url, events=subscribed)
        endpoint.secret = secret_new()  # kept encrypted
        endpoint.save(force_insert=True)
        return endpoint


def webhook_delete(*, endpoint: WebhookEndpoint) -> None:
    """Remove the endpoint with its outbox and log; an attempt in flight finds nothing."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def webhook_enable(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Take a disabled endpoint back: it gets new events again, with a clean record."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        disabled_at=None, disabled_reason="", failing_since=None, consecutive_failures=0
    )
    return WebhookEndpoint.objects.get(pk=endpoint.pk)


def webhook_ping(*, endpoint: WebhookEndpoint) -> str:
    """Send a `ping` event to this endpoint, delivered like any other. Returns its id.
    At most `WEBHOOK_PING_RATE` of them per endpoint (429 `throttled` beyond it)."""
    if endpoint.disabled_at is not None:
        raise WebhookDisabled()
    ping_allow(endpoint_id=endpoint.pk)
    with transaction.atomic():
        event_id = webhook_event_record(
            owner_id=endpoint.owner_id,
            type=PING,
            object_id=str(endpoint.pk),
            endpoint_id=endpoint.pk,
        )
    if event_id is None:  # disabled or deleted in the meantime
        raise WebhookDisabled()
    return event_id


@dataclass
class Rotation:
    rotated: int = 0
    unreadable: list[str] = field(default_factory=list)  # endpoint ids


def webhook_secrets_rotate() -> Rotation:
    """Re-encrypt every endpoint's secret with WEBHOOK_KEY_RING's first key, after which
    the older keys can leave the ring. Row by row, each a conditional UPDATE, so it can run
    while deliveries go on and can be run again; secrets no key of the ring can read are
    left alone and reported."""
    rotation = Rotation()
    rows = WebhookEndpoint.objects.values_list("pk", "secret_encrypted")
    for pk, encrypted in rows.iterator(chunk_size=500):
        try:
            fresh = secret_reencrypt(encrypted)
        except InvalidToken:
            rotation.unreadable.append(str(pk))
            continue
        rotation.rotated += WebhookEndpoint.objects.filter(
            pk=pk, secret_encrypted=encrypted
        ).update(secret_encrypted=fresh)
    return rotation
