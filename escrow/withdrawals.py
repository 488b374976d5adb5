"""Withdrawals: money leaving the platform, without ever paying twice or losing it.

- `withdrawal_open` moves the amount wallet → payouts in the caller's transaction, so it
  can't be spent again while the payout is under way.
- `withdrawal_claim` moves pending → processing by a conditional UPDATE, committed before
  the provider is asked (outside any transaction) with the withdrawal's key, and gives the
  claimer a lease (`processing_until`): until it runs out, the claimer may be inside the
  provider call, so nobody else asks the provider about this withdrawal. A claimer that got
  its answer (or an error) gives the lease back; recovery takes only expired ones
  (`withdrawal_lease_take`), so a payout is never sent twice at once.
- `withdrawal_settle` records the answer once: paid moves payouts → external, failed moves
  payouts → wallet. The conditional UPDATE processing → final picks the one caller that
  settles; the settlement transfer's unique idempotency key (`withdrawal:<id>:settle`) is
  the database's guarantee that a withdrawal settles at most once, either way.
- `withdrawal_cancel` returns a pending withdrawal's money.

All of them run inside the caller's transaction (the marketplace's durable services add the
webhook event to it); locks follow the project order: the withdrawal row's UPDATE, then the
accounts by id through `ledger_post`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from escrow.errors import DomainError, IdempotencyConflict
from escrow.funding import PROVIDER_CALL_TIMEOUT_SECONDS
from escrow.ledger import Leg, ledger_post, validate_amount, wallet_id
from escrow.models import Account, Transfer
from escrow.payout_models import Withdrawal
from escrow.system_accounts import shard_for, system_account_id

Kind = Transfer.Kind
Status = Withdrawal.Status


class WithdrawalTooSmall(DomainError):
    code = "withdrawal_too_small"
    status = 400
    default_message = "The amount is below the smallest withdrawal."


class WithdrawalNotFound(DomainError):
    code = "not_found"
    status = 404
    default_message = "No such withdrawal."


class WithdrawalStateError(DomainError):
    code = "withdrawal_state_conflict"
    status = 409
    default_message = "The withdrawal is no longer in a state that allows this."


def withdrawal_open(
    *, user_id: int, amount: int, idempotency_key: str | None = None, provider: str
) -> tuple[Withdrawal, bool]:
    """A new pending withdrawal with its money moved wallet → payouts; `(withdrawal,
    created)`. A repeated key returns the first (IdempotencyConflict for another amount)."""
    validate_amount(amount)
    if amount < settings.WITHDRAWAL_MIN:
        raise WithdrawalTooSmall(
            f"A withdrawal is at least {settings.WITHDRAWAL_MIN} µCR, got {amount}.",
            fields={"amount": [f"Must be at least {settings.WITHDRAWAL_MIN} µCR."]},
        )
    wallet = wallet_id(user_id=user_id)
    with transaction.atomic():
        if idempotency_key is not None:
            # Lock the wallet first: a concurrent twin waits here, then sees the first row.
            Account.objects.select_for_update(no_key=True).filter(pk=wallet).first()
            existing = Withdrawal.objects.filter(
                user_id=user_id, idempotency_key=idempotency_key
            ).first()
            if existing is not None:
                if existing.amount != amount:
                    raise IdempotencyConflict()
                return existing, False
        withdrawal = Withdrawal.objects.create(
            user_id=user_id, amount=amount, idempotency_key=idempotency_key, provider=provider
        )
        payouts = system_account_id(Account.Kind.PAYOUTS, shard_for(withdrawal.pk))
        [hold] = ledger_post(
            [
                Leg(
                    wallet,
                    payouts,
                    amount,
                    Kind.WITHDRAWAL,
                    idempotency_key=f"withdrawal:{withdrawal.pk}:hold",
                    memo=f"withdrawal {withdrawal.pk}",
                )
            ]
        )
        Withdrawal.objects.filter(pk=withdrawal.pk).update(hold=hold)
        withdrawal.hold = hold
        return withdrawal, True


def withdrawal_lease() -> timedelta:
    """How long a claimer may be inside the provider call. The call gives up after
    PROVIDER_CALL_TIMEOUT_SECONDS, and a worker stuck past Q_TIMEOUT is killed by django-q2;
    the margin covers recording the answer."""
    longest = max(PROVIDER_CALL_TIMEOUT_SECONDS, settings.Q_TIMEOUT)
    return timedelta(seconds=longest + settings.LEASE_MARGIN_SECONDS)


def withdrawal_claim(*, withdrawal_id: int) -> datetime | None:
    """pending → processing with a lease; the lease's end for the one caller that moved
    it, None for the others."""
    now = timezone.now()
    until = now + withdrawal_lease()
    won = Withdrawal.objects.filter(pk=withdrawal_id, status=Status.PENDING).update(
        status=Status.PROCESSING, processing_at=now, processing_until=until
    )
    return until if won else None


def withdrawal_lease_take(*, withdrawal_id: int) -> datetime | None:
    """A new lease on a processing withdrawal whose lease ran out (its holder died or gave
    it back); the lease's end for the one caller that took it, None for the others."""
    now = timezone.now()
    until = now + withdrawal_lease()
    won = Withdrawal.objects.filter(
        pk=withdrawal_id, status=Status.PROCESSING, processing_until__lt=now
    ).update(processing_until=until)
    return until if won else None


def withdrawal_lease_release(*, withdrawal_id: int, until: datetime) -> bool:
    """Give back the lease ending at `until`, once its holder is out of the provider call
    (with no definite answer), so recovery may ask the provider at once. A lease someone
    else took since is not ours to end."""
    return bool(
        Withdrawal.objects.filter(
            pk=withdrawal_id, status=Status.PROCESSING, processing_until=until
        ).update(processing_until=timezone.now())
    )


def withdrawal_settle(
    *, withdrawal_id: int, paid: bool, reference: str = "", failure: str = ""
) -> Withdrawal | None:
    """Record the provider's answer for a processing withdrawal: paid (payouts → external)
    or failed (payouts → wallet). None when another caller settled it already."""
    now = timezone.now()
    with transaction.atomic():
        fields: dict[str, object] = (
            {"status": Status.PAID, "paid_at": now, "provider_reference": reference[:200]}
            if paid
            else {"status": Status.FAILED, "failure": (failure or "payout failed")[:200]}
        )
        return _settle(
            Withdrawal.objects.filter(pk=withdrawal_id, status=Status.PROCESSING),
            to_external=paid,
            fields={"resolved_at": now, **fields},
        )


def withdrawal_cancel(*, user_id: int, withdrawal_id: int) -> Withdrawal:
    """pending → cancelled, the money back in the wallet."""
    with transaction.atomic():
        withdrawal = _settle(
            Withdrawal.objects.filter(pk=withdrawal_id, user_id=user_id, status=Status.PENDING),
            to_external=False,
            fields={"status": Status.CANCELLED, "resolved_at": timezone.now()},
        )
        if withdrawal is not None:
            return withdrawal
        current = Withdrawal.objects.filter(pk=withdrawal_id, user_id=user_id).first()
        if current is None:
            raise WithdrawalNotFound()
        raise WithdrawalStateError(
            f"Withdrawal {withdrawal_id} is {current.status}; only a pending one can be cancelled."
        )


def _settle(
    candidates: QuerySet[Withdrawal], *, to_external: bool, fields: dict[str, object]
) -> Withdrawal | None:
    """Settle the withdrawal `candidates` selects, if it is still in the state they name:
    the row lock re-checks the condition after waiting (PostgreSQL), so of two callers one
    settles and the other gets None. The money moves, then the state, in one transaction."""
    withdrawal = candidates.select_for_update(no_key=True).first()
    if withdrawal is None:
        return None
    # The payouts shard its hold went to (SYSTEM_ACCOUNT_SHARDS may have grown since).
    payouts = Transfer.objects.values_list("credit_account_id", flat=True).get(
        pk=withdrawal.hold_id or 0
    )
    target = (
        system_account_id(Account.Kind.EXTERNAL, shard_for(withdrawal.pk))
        if to_external
        else wallet_id(user_id=withdrawal.user_id)
    )
    [transfer] = ledger_post(
        [
            Leg(
                payouts,
                target,
                withdrawal.amount,
                Kind.WITHDRAWAL_PAYOUT if to_external else Kind.WITHDRAWAL_RETURN,
                idempotency_key=f"withdrawal:{withdrawal.pk}:settle",
                memo=f"withdrawal {withdrawal.pk} {fields['status']}",
            )
        ]
    )
    won = candidates.filter(pk=withdrawal.pk).update(settlement=transfer, **fields)
    if won != 1:  # can't happen under the lock; the constraint and the key back it anyway
        raise WithdrawalStateError(f"Withdrawal {withdrawal.pk} changed while settling.")
    withdrawal.refresh_from_db()
    return withdrawal


def withdrawals_due(*, before: datetime) -> tuple[list[int], list[int]]:
    """(pending, processing) withdrawal ids to recover: pending ones untouched since
    `before` (their message was lost), processing ones whose lease ran out."""
    pending = Withdrawal.objects.filter(status=Status.PENDING, created_at__lt=before)
    stuck = Withdrawal.objects.filter(status=Status.PROCESSING, processing_until__lt=timezone.now())
    return (
        list(pending.order_by("pk").values_list("pk", flat=True)[:500]),
        list(stuck.order_by("pk").values_list("pk", flat=True)[:500]),
    )
