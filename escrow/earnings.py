"""Releasing held earnings to the owners' wallets, in batches.

Lock order: earning rows (ascending id), then accounts (ascending id, in `ledger_post`) —
the same as a settlement's (which writes its earning rows before posting) and a dispute's
(which locks its task's earning row before posting). A dispute and the sweep decide an
earning by a conditional change of the same row: whichever locks it first wins, and the
other finds it no longer `held`. Frozen earnings are never selected.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q, Sum
from django.utils import timezone

from escrow.earning_models import Earning
from escrow.ledger import Leg, ledger_post
from escrow.models import Account, Transfer
from escrow.system_accounts import system_account_id

Status = Earning.Status


def earnings_release_batch(*, now: datetime, batch: int) -> int:
    """Release up to `batch` matured held earnings in one transaction; how many it did.

    One locking SELECT (skipping rows a dispute holds), one UPDATE marking them released,
    then one ledger posting with one transfer per owner.
    """
    with transaction.atomic(durable=True):
        rows = list(
            Earning.objects.select_for_update(no_key=True, skip_locked=True, of=("self",))
            .filter(status=Status.HELD, release_at__lte=now)
            .order_by("pk")
            .values_list("pk", "wallet_id", "amount", "task__escrow__shard")[:batch]
        )
        if not rows:
            return 0
        Earning.objects.filter(pk__in=[pk for pk, _, _, _ in rows]).update(
            status=Status.RELEASED, released_at=now
        )
        # Each share leaves the earnings shard its task's settlement put it in.
        owed: dict[tuple[int, int], int] = defaultdict(int)
        for _, wallet, amount, shard in rows:
            owed[(wallet, shard or 0)] += amount
        ledger_post(
            [
                Leg(
                    system_account_id(Account.Kind.EARNINGS, shard),
                    wallet,
                    amount,
                    Transfer.Kind.EARNINGS_RELEASE,
                    memo="held earnings",
                )
                for (wallet, shard), amount in sorted(owed.items())
            ]
        )
        return len(rows)


def earnings_release_due(*, now: datetime | None = None, batch: int | None = None) -> int:
    """Scheduled: release every matured, unfrozen earning, a batch per transaction."""
    now = now or timezone.now()
    batch = batch or settings.EARNINGS_RELEASE_BATCH
    released = 0
    while True:
        done = earnings_release_batch(now=now, batch=batch)
        released += done
        if done < batch:
            return released


def pending_earnings(*, wallet_id: int) -> dict[str, Any]:
    """What a wallet's owner is still owed: held and frozen µCR, and the next release."""
    unreleased = Earning.objects.filter(wallet_id=wallet_id, status__in=Earning.UNRELEASED)
    totals = unreleased.aggregate(
        pending=Sum("amount"),
        next_release_at=Min("release_at", filter=Q(status=Status.HELD)),
    )
    return {"pending": totals["pending"] or 0, "next_release_at": totals["next_release_at"]}
