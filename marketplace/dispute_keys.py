"""A refunded dispute gives the refunded cost back to the API key that paid for the task.

The key that paid is the one the task was submitted with, whoever opened the channel it ran
on: its charge is the task's own (a key counts a task on a channel it did not open, the
session's or another key's). Only a task submitted without a key on a channel a key opened
was paid by that key's deposit: the channel's charge. The refund is given back to the charge
now, lowering the key's day and month counters only while they still count the window it
was charged in (see marketplace/apikeys/spending.py) — with one exception: a channel's charge
refunded on a channel that has not settled. That refund lowers the channel's redeemed
amount, which comes back to the opener's key with the rest of the channel's change when
the channel settles: nothing to do here. An evaluator's run (SPEC §21) was paid from the
budget of the task it evaluates: by that task's charge.

Exactly once: it runs in the refund's own transaction, which a dispute wins only once.
Lock order: the key's row is locked before the channel, the reputation and the money.
"""

from __future__ import annotations

from typing import Any

from django.db.models import BigIntegerField, Case, F, Value, When
from django.db.models.functions import Least
from django.utils import timezone

from escrow.channel_evaluation import channel_returned
from escrow.earning_models import Earning
from escrow.models import Escrow, PaymentChannel
from marketplace.apikey_models import ApiKey, ApiKeyCharge


def dispute_key_lock(*, task_id: Any) -> ApiKeyCharge | None:
    """The charge of the key that paid for the task, its key's row locked; None if no key."""
    charge = ApiKeyCharge.objects.filter(task_id=task_id).first()
    if charge is None:  # an evaluator's run: the charge of the task it evaluates
        charge = ApiKeyCharge.objects.filter(task__evaluation_run=task_id).first()
    if charge is None:
        channel_id = (
            Escrow.objects.filter(task_id=task_id).values_list("channel_id", flat=True).first()
        )
        if channel_id is None:
            return None
        charge = ApiKeyCharge.objects.filter(channel_id=channel_id).first()
        if charge is None:
            return None
    ApiKey.objects.select_for_update(no_key=True).values_list("pk", flat=True).get(pk=charge.key_id)
    return charge


def dispute_key_give_back(charge: ApiKeyCharge, *, task_id: Any, refunded: int) -> int:
    """After the refund, with the key locked: give `refunded` back to the charge's key.
    Returns what the key's lifetime counter went down by."""
    if not refunded:
        return 0
    if charge.task_id is None:
        from_ledger = Earning.objects.filter(task_id=task_id, status=Earning.Status.REFUNDED)
        if not from_ledger.exists():
            return 0  # off an unsettled channel's redeemed amount: its settlement gives back
    charge = ApiKeyCharge.objects.select_related("channel").get(pk=charge.pk)
    amount = refunded
    channel = charge.channel
    if charge.settled_at is None and channel and channel.status == PaymentChannel.Status.SETTLED:
        # The channel's own change had not been given back to the key yet: both go now.
        amount += channel_returned(channel)
    amount = max(0, min(amount, charge.amount - charge.given_back))
    if not amount:
        return 0
    ApiKeyCharge.objects.filter(pk=charge.pk).update(
        given_back=F("given_back") + amount, settled_at=charge.settled_at or timezone.now()
    )
    back = Value(amount, output_field=BigIntegerField())
    total = F("spent_total") - back
    # A window that has moved on keeps its count, which reads as zero once it has passed;
    # a refund days later must still leave it within the lower total (a constraint).
    ApiKey.objects.filter(pk=charge.key_id).update(
        spent_total=total,
        spent_daily=Case(
            When(spent_daily_on=charge.day, then=F("spent_daily") - back),
            default=Least(F("spent_daily"), total),
            output_field=BigIntegerField(),
        ),
        spent_monthly=Case(
            When(spent_monthly_on=charge.month, then=F("spent_monthly") - back),
            default=Least(F("spent_monthly"), total),
            output_field=BigIntegerField(),
        ),
    )
    return amount
