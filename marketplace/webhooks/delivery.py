"""The worker side: send an outbox row, record the attempt, retry with backoff.

Delivery is at-least-once, like the broker under it. Each attempt first claims the row
with a compare-and-set on its attempt count (so two messages for the same attempt send it
once) and leases it: an attempt whose worker died is sent again by the sweep once the
lease runs out. The network is only ever touched outside a transaction.

Whatever goes wrong in an attempt (rendering, decrypting the secret, signing, sending) is
recorded as a failed attempt with its error and takes the normal retry schedule, so no
error can make an event retry for ever unseen; and an attempt past `WEBHOOK_MAX_ATTEMPTS`
is never sent.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import schedule
from rest_framework.renderers import JSONRenderer

from marketplace.queues import service_send
from marketplace.webhooks import transport
from marketplace.webhooks.events import event_data
from marketplace.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from marketplace.webhooks.signing import EVENT_HEADER, SIGNATURE_HEADER, signature_header

log = logging.getLogger(__name__)
Status = WebhookDelivery.Status

DELIVER = "marketplace.webhooks.tasks.deliver"
# Due rows one sweep hands out; the next sweep (a minute later) takes the rest.
SWEEP_BATCH = 500
# Finished deliveries (and then their events' frozen bodies) are kept this long for the log.
RETENTION = timedelta(days=30)
PRUNE_BATCH = 1_000
# An endpoint is disabled only after at least this many failures in a row …
DISABLE_MIN_FAILURES = 5


def attempt_lease() -> timedelta:
    """How long an attempt may take before it is presumed lost: the POST's own deadline
    (DNS aside) twice over, plus a margin."""
    return timedelta(seconds=2 * settings.WEBHOOK_TIMEOUT_SECONDS + 10)


def retry_delay(failed_attempts: int) -> timedelta:
    """How long to wait after the n-th failed attempt: 30 s, 90 s, 4.5 min, … (×3)."""
    return timedelta(seconds=settings.WEBHOOK_FIRST_RETRY_SECONDS * 3 ** (failed_attempts - 1))


def _outside_transactions() -> None:
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("webhooks are delivered outside any database transaction")


def deliver_event(event_id: str) -> str:
    """First attempt at every endpoint of a new event: this one inline, the others each
    in a message of its own, so one slow receiver does not delay another."""
    rows = WebhookDelivery.objects.filter(event_id=event_id, status=Status.PENDING, attempts=0)
    ids = list(rows.order_by("pk").values_list("pk", flat=True))
    if not ids:
        return f"{event_id}: nothing to deliver"
    for pk in ids[1:]:
        service_send(DELIVER, pk, 0, task_name=f"webhook {event_id} #{pk}")
    return deliver(ids[0], 0)


def deliver(delivery_id: int, attempts: int) -> str:
    """Attempt number `attempts + 1` of one outbox row; a no-op if another message got it."""
    _outside_transactions()
    number = attempts + 1
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=Status.PENDING, attempts=attempts
    ).update(attempts=number, next_attempt_at=timezone.now() + attempt_lease())
    if claimed != 1:
        return f"delivery {delivery_id} attempt {number}: taken or finished"
    if number > settings.WEBHOOK_MAX_ATTEMPTS:
        # The last attempt's outcome was never recorded (its worker died, or the record
        # failed): the event has had its tries.
        WebhookDelivery.objects.filter(pk=delivery_id, attempts=number).update(
            status=Status.FAILED, next_attempt_at=None
        )
        return f"delivery {delivery_id}: out of attempts, failed"
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if endpoint.disabled_at is not None:
        WebhookDelivery.objects.filter(pk=delivery_id, attempts=number).update(
            status=Status.SKIPPED, next_attempt_at=None
        )
        return f"delivery {delivery_id}: endpoint disabled, skipped"
    attempted_at = timezone.now()
    try:
        outcome = _attempt(delivery, endpoint)
    except Exception as exc:
        # Ours, not the receiver's: logged, shown in the delivery log, and retried like any
        # failed attempt.
        log.exception("webhook delivery %s attempt %s failed on our side", delivery_id, number)
        elapsed = int((timezone.now() - attempted_at).total_seconds() * 1000)
        outcome = transport.Outcome(None, f"{type(exc).__name__}: {exc}"[:500], max(0, elapsed))
    retry_at = _record(delivery, number, outcome, attempted_at)
    if retry_at is not None and number == 1:
        # The first retry comes within a minute: the minute's sweep alone could take
        # up to ninety seconds, q2's scheduler looks at one-off schedules every thirty.
        schedule(
            DELIVER,
            delivery_id,
            number,
            schedule_type=Schedule.ONCE,
            next_run=retry_at,
        )
    verdict = "delivered" if outcome.succeeded else (outcome.error or f"HTTP {outcome.status_code}")
    return f"delivery {delivery_id} attempt {number}: {verdict}"


def _attempt(delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> transport.Outcome:
    body = _frozen(delivery).encode()
    signature = signature_header(secret=endpoint.secret, body=body, timestamp=int(time.time()))
    return transport.post(
        endpoint.url,
        body=body,
        headers={EVENT_HEADER: delivery.type, SIGNATURE_HEADER: signature},
    )


def _frozen(delivery: WebhookDelivery) -> str:
    """The event's body: rendered once, at the first attempt to any of its endpoints, and
    stored once, in its WebhookEvent; every later attempt sends those bytes."""
    event = WebhookEvent.objects.filter(pk=delivery.event_id).values_list("body", flat=True)
    frozen = event.first()
    if frozen is not None:
        return frozen
    payload: dict[str, Any] = {
        "id": delivery.event_id,
        "type": delivery.type,
        "created": int(delivery.created_at.timestamp()),
        "data": event_data(delivery.type, delivery.object_id),
    }
    rendered = JSONRenderer().render(payload).decode()
    # Another endpoint's first attempt may freeze it at the same moment: the first wins.
    WebhookEvent.objects.bulk_create(
        [
            WebhookEvent(
                id=delivery.event_id,
                type=delivery.type,
                created_at=delivery.created_at,
                body=rendered,
            )
        ],
        ignore_conflicts=True,
    )
    return event.get()


def _record(
    delivery: WebhookDelivery, number: int, outcome: transport.Outcome, attempted_at: Any
) -> Any:
    """Log the attempt and move the row on. Returns when to retry, or None."""
    now = timezone.now()
    retry_at = None
    if outcome.succeeded:
        changes: dict[str, Any] = {
            "status": Status.DELIVERED,
            "delivered_at": now,
            "next_attempt_at": None,
        }
    elif number >= settings.WEBHOOK_MAX_ATTEMPTS:
        changes = {"status": Status.FAILED, "next_attempt_at": None}
    else:
        retry_at = now + retry_delay(number)
        changes = {"next_attempt_at": retry_at}
    with transaction.atomic():
        moved = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=Status.PENDING, attempts=number
        ).update(**changes)
        if moved != 1:  # the endpoint was deleted meanwhile (or the lease lapsed)
            return None
        WebhookAttempt.objects.create(
            delivery_id=delivery.pk,
            endpoint_id=delivery.endpoint_id,
            number=number,
            attempted_at=attempted_at,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error[:500],
            succeeded=outcome.succeeded,
        )
        _streak(delivery.endpoint_id, succeeded=outcome.succeeded, now=now)
    return retry_at


def _streak(endpoint_id: Any, *, succeeded: bool, now: Any) -> None:
    endpoints = WebhookEndpoint.objects.filter(pk=endpoint_id)
    if succeeded:
        endpoints.update(failing_since=None, consecutive_failures=0, last_success_at=now)
        return
    endpoints.update(
        consecutive_failures=F("consecutive_failures") + 1,
        failing_since=Coalesce("failing_since", Value(now)),
    )
    days = timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    disabled = endpoints.filter(
        disabled_at__isnull=True,
        failing_since__lte=now - days,
        consecutive_failures__gte=DISABLE_MIN_FAILURES,
    ).update(
        disabled_at=now,
        disabled_reason=(
            f"Disabled on {now:%Y-%m-%d %H:%M} UTC: every delivery failed for over "
            f"{days.days or days.total_seconds() / 3600:g} "
            f"{'days' if days.days else 'hours'}. Fix the receiver, then enable it again."
        ),
    )
    if disabled:
        log.warning("webhook endpoint %s disabled after failing since %s", endpoint_id, now - days)
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=Status.PENDING).update(
            status=Status.SKIPPED, next_attempt_at=None
        )


def deliveries_sweep() -> dict[str, int]:
    """Every minute: send what is due (retries, and events whose first message was lost or
    whose attempt died with its worker), and forget finished deliveries past retention."""
    now = timezone.now()
    due = WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=now)
    sent = 0
    for pk, attempts, at in due.order_by("next_attempt_at").values_list(
        "pk", "attempts", "next_attempt_at"
    )[:SWEEP_BATCH]:
        # Leased before it is sent, so the next sweep does not send it again meanwhile.
        won = WebhookDelivery.objects.filter(
            pk=pk, status=Status.PENDING, attempts=attempts, next_attempt_at=at
        ).update(next_attempt_at=now + attempt_lease())
        if won:
            service_send(DELIVER, pk, attempts, task_name=f"webhook retry #{pk}")
            sent += 1
    old = WebhookDelivery.objects.filter(created_at__lt=now - RETENTION).exclude(
        status=Status.PENDING
    )
    stale = list(old.values_list("pk", flat=True)[:PRUNE_BATCH])
    pruned = WebhookDelivery.objects.filter(pk__in=stale).delete()[0] if stale else 0
    # An event's body goes with the last of its deliveries.
    orphans = WebhookEvent.objects.filter(created_at__lt=now - RETENTION).exclude(
        Exists(WebhookDelivery.objects.filter(event_id=OuterRef("pk")))
    )
    gone = list(orphans.values_list("pk", flat=True)[:PRUNE_BATCH])
    if gone:
        pruned += WebhookEvent.objects.filter(pk__in=gone).delete()[0]
    return {"sent": sent, "pruned": pruned}
