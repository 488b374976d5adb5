"""django-q2 entry points: take ids, call the delivery functions."""

from __future__ import annotations

from marketplace.schedule_lock import once_across_hosts
from marketplace.webhooks import delivery


def deliver_event(event_id: str) -> str:
    return delivery.deliver_event(event_id)


def deliver(delivery_id: int, attempts: int) -> str:
    return delivery.deliver(delivery_id, attempts)


@once_across_hosts("webhook sweep")
def sweep() -> dict[str, int]:
    return delivery.deliveries_sweep()
