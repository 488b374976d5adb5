"""Where an owner's share of a settlement goes: into held earnings, one row per task.

Called inside the settlement's transaction, before its ledger posting (lock order: the
new earning rows, then the accounts). With `EARNINGS_HOLD_SECONDS` = 0 nothing is held:
the share goes straight to the owner's wallet and the task can't be disputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from escrow.earning_models import Dispute, Earning


@dataclass(frozen=True)
class Share:
    task_id: Any
    amount: int  # the owner's share: cost − fee
    fee: int


def holding() -> bool:
    return settings.EARNINGS_HOLD_SECONDS > 0


def release_time(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.EARNINGS_HOLD_SECONDS)


def earnings_hold(
    *,
    wallet_id: int,
    shares: list[Share],
    channel_id: Any = None,
    disputes: bool = True,
    awaiting_verdict: bool = False,
) -> int:
    """Write one held Earning per task that cost something; returns the µCR held.

    A task with a dispute already pending (a channel task disputed before its channel
    closed) starts frozen; `disputes=False` says none can be (a task settling right now).
    `awaiting_verdict`: the shares wait for an evaluator's verdict, which starts the hold.
    """
    shares = [share for share in shares if share.amount or share.fee]
    if not shares:
        return 0
    disputed = (
        set(
            Dispute.objects.filter(
                task_id__in=[share.task_id for share in shares], status__in=Dispute.PENDING
            ).values_list("task_id", flat=True)
        )
        if disputes
        else set()
    )
    release_at = release_time()
    Earning.objects.bulk_create(
        [
            Earning(
                wallet_id=wallet_id,
                task_id=share.task_id,
                channel_id=channel_id,
                amount=share.amount,
                fee=share.fee,
                release_at=release_at,
                status=Earning.Status.EVALUATING
                if awaiting_verdict
                else Earning.Status.FROZEN
                if share.task_id in disputed
                else Earning.Status.HELD,
            )
            for share in shares
        ]
    )
    return sum(share.amount for share in shares)
