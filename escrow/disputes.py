"""Disputes: a requester contests a succeeded task while its owner's share is still held.

Opening freezes the task's held earning (so the sweep never pays it); a refund gives the
requester back the task's cost — the owner's held share from the earnings account and
the fee from the platform's — and a rejection lets the earning be released again. A
channel task whose channel has not settled yet has no earning: its refund lowers the
channel's redeemed amount and fees instead (and its escrow row's cost), so the requester
gets it back when the channel settles.

Only money still held can be disputed: a held earning, or an unsettled channel's redeemed
amount while earnings are held at all (with `EARNINGS_HOLD_SECONDS` = 0 the channel pays
the owner's share straight into the wallet when it settles, so nothing would be left to
refund). The owner answers by `respond_by`; after it, only the refund remains.

Lock order: channel (when the task was paid by one) → dispute → (the caller's reputation
change) → earning → accounts, the same order as settlement. Opening and the sweep decide a
held earning by a conditional change of the same row, so a task's earning ends frozen or
released, never both.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from escrow.earning_models import Dispute, Earning
from escrow.errors import DomainError
from escrow.holds import holding
from escrow.ledger import Leg, ledger_post, wallet_id
from escrow.models import Account, Escrow, PaymentChannel, Transfer
from escrow.system_accounts import system_account_id

Status = Dispute.Status


class DisputeWindowClosed(DomainError):
    code = "dispute_window_closed"
    status = 409
    default_message = "The task's earnings were released (or there were none): too late to dispute."


class DisputeAlreadyOpen(DomainError):
    code = "dispute_open"
    status = 409
    default_message = "This task already has a dispute."


class DisputeStateError(DomainError):
    code = "dispute_state"
    status = 409
    default_message = "The dispute can't do that in its current state."


class DisputeAnswered(DisputeStateError):
    """The dispute left the statuses a refund may start from before the refund won it: the
    owner or an operator answered first. The overdue sweep expects this; any other refusal
    of a refund is a dispute the sweep could not resolve."""

    default_message = "The dispute is already answered."


def _lock_channel(channel_id: Any) -> PaymentChannel | None:
    if channel_id is None:
        return None
    return PaymentChannel.objects.select_for_update(no_key=True).get(pk=channel_id)


def _channel_of(task_id: Any) -> Any:
    return Escrow.objects.filter(task_id=task_id).values_list("channel_id", flat=True).first()


def dispute_open(*, task_id: Any, requester_id: int, owner_id: int, reason: str) -> Dispute:
    """Open a dispute and freeze the task's held earning; DisputeWindowClosed when there is
    none held any more (released, or the task cost nothing).

    Runs inside the caller's transaction (which also records the `dispute.opened` event).
    """
    with transaction.atomic():
        channel = _lock_channel(_channel_of(task_id))
        if Dispute.objects.filter(task_id=task_id, status__in=Dispute.PENDING).exists():
            raise DisputeAlreadyOpen()
        if channel is not None and channel.status != PaymentChannel.Status.SETTLED:
            cost = Escrow.objects.values_list("cost", flat=True).get(task_id=task_id)
            # Without a hold the channel's settlement pays the share out at once: a dispute
            # opened now would find nothing to refund once the channel settles.
            if not cost or not holding():
                raise DisputeWindowClosed()
        elif not Earning.objects.filter(task_id=task_id, status=Earning.Status.HELD).update(
            status=Earning.Status.FROZEN
        ):
            raise DisputeWindowClosed()
        now = timezone.now()
        try:
            with transaction.atomic():
                return Dispute.objects.create(
                    task_id=task_id,
                    requester_id=requester_id,
                    owner_id=owner_id,
                    reason=reason,
                    opened_at=now,
                    respond_by=now + timedelta(seconds=settings.DISPUTE_RESPONSE_SECONDS),
                )
        except IntegrityError:
            raise DisputeAlreadyOpen() from None


def dispute_contest(*, dispute_id: int, statement: str) -> Dispute:
    """open → contested, before `respond_by`: the owner hands it to an operator.

    The deadline is in the conditional UPDATE itself, so a contest and the overdue sweep's
    refund (which needs the dispute still open) can't both win.
    """
    now = timezone.now()
    won = Dispute.objects.filter(pk=dispute_id, status=Status.OPEN, respond_by__gt=now).update(
        status=Status.CONTESTED, statement=statement
    )
    if not won:
        if Dispute.objects.filter(pk=dispute_id, status=Status.OPEN).exists():
            raise DisputeWindowClosed(
                "The response deadline has passed: the dispute counts as accepted."
            )
        raise DisputeStateError("Only an open dispute can be contested.")
    return Dispute.objects.get(pk=dispute_id)


def dispute_refund(
    *,
    dispute_id: int,
    status: str,
    resolution: str,
    on_refund: Callable[[Dispute], None] | None = None,
    from_statuses: tuple[str, ...] = Dispute.PENDING,
) -> Dispute:
    """open|contested → accepted|refunded: the task's cost goes back to its requester.

    Must run inside the caller's transaction (which also records the resolution receipt).
    `on_refund(dispute)` runs once the dispute is won, after the channel's lock and before
    the earning, the escrow and the accounts are touched: the caller's reputation change
    goes there, in the lock order. The dispute is won only from `from_statuses`, checked by
    the conditional UPDATE (so against the row as committed now, not as the caller read it);
    otherwise DisputeAnswered.
    """
    assert status in Dispute.REFUNDING
    assert set(from_statuses) <= set(Dispute.PENDING)
    dispute = Dispute.objects.get(pk=dispute_id)
    channel = _lock_channel(_channel_of(dispute.task_id))
    now = timezone.now()
    won = Dispute.objects.filter(pk=dispute_id, status__in=from_statuses).update(
        status=status, resolved_at=now, resolution=resolution
    )
    if not won:
        current = Dispute.objects.values_list("status", flat=True).get(pk=dispute_id)
        raise DisputeAnswered(f"The dispute is already {current}.")
    if on_refund is not None:
        on_refund(dispute)
    if channel is not None and channel.status != PaymentChannel.Status.SETTLED:
        refunded = _refund_in_channel(channel, task_id=dispute.task_id)
    else:
        refunded = _refund_earning(dispute, now=now)
    Dispute.objects.filter(pk=dispute_id).update(refunded=refunded)
    dispute.refresh_from_db()
    return dispute


def _refund_earning(dispute: Dispute, *, now: Any) -> int:
    earning = Earning.objects.select_for_update(no_key=True).filter(task_id=dispute.task_id).first()
    if earning is None:
        # Opening refuses this; only a dispute opened on a channel that then settled with
        # no hold gets here, its share already in the owner's wallet. An operator decides.
        raise DisputeStateError(
            f"Nothing is held for task {dispute.task_id}: its share was paid out unheld."
        )
    if earning.status != Earning.Status.FROZEN:
        raise DisputeStateError(f"The task's earning is {earning.status}, not frozen.")
    Earning.objects.filter(pk=earning.pk).update(status=Earning.Status.REFUNDED, released_at=now)
    requester = wallet_id(user_id=dispute.requester_id)
    # The shards the task's settlement paid its share and its fee into.
    shard = Escrow.objects.values_list("shard", flat=True).get(task_id=dispute.task_id)
    legs = [
        Leg(
            system_account_id(Account.Kind.EARNINGS, shard),
            requester,
            earning.amount,
            Transfer.Kind.DISPUTE_REFUND,
            task_id=dispute.task_id,
            memo=f"dispute {dispute.pk}",
        ),
        Leg(
            system_account_id(Account.Kind.PLATFORM_FEES, shard),
            requester,
            earning.fee,
            Transfer.Kind.DISPUTE_FEE_REFUND,
            task_id=dispute.task_id,
            memo=f"dispute {dispute.pk}",
        ),
    ]
    ledger_post(legs)
    return earning.amount + earning.fee


def _refund_in_channel(channel: PaymentChannel, *, task_id: Any) -> int:
    """The channel has not paid out: take the task's cost and fee off what it redeemed."""
    escrow = Escrow.objects.get(task_id=task_id, channel=channel, status=Escrow.Status.COMPLETED)
    cost, fee = escrow.cost or 0, escrow.fee or 0
    PaymentChannel.objects.filter(pk=channel.pk).update(
        redeemed=F("redeemed") - cost, fees=F("fees") - fee
    )
    Escrow.objects.filter(pk=escrow.pk).update(cost=0, fee=0)
    return cost


def dispute_reject(*, dispute_id: int, resolution: str) -> Dispute:
    """contested → rejected: the earning is held again, and released when it matures."""
    dispute = Dispute.objects.get(pk=dispute_id)
    channel = _lock_channel(_channel_of(dispute.task_id))
    won = Dispute.objects.filter(pk=dispute_id, status=Status.CONTESTED).update(
        status=Status.REJECTED, resolved_at=timezone.now(), resolution=resolution
    )
    if not won:
        raise DisputeStateError("Only a contested dispute can be rejected.")
    if channel is None or channel.status == PaymentChannel.Status.SETTLED:
        Earning.objects.filter(task_id=dispute.task_id, status=Earning.Status.FROZEN).update(
            status=Earning.Status.HELD
        )
    dispute.refresh_from_db()
    return dispute
