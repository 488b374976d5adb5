"""Withdrawals, end to end: the request, the payout outside any transaction, recovery.

The money side (wallet → payouts → external or back) is `escrow.withdrawals`; this module
adds what escrow may not import: the worker's queue and the webhook events, each recorded
in the same transaction as the change it reports.

A worker runs `withdrawal_process(id)`: it claims the withdrawal (pending → processing
with a lease, committed), asks the provider to pay with the withdrawal's key, and records
the answer. Only a refusal (`PayoutFailed`) returns the money; any other error, a 503 that
may come after the money left included, leaves it processing and gives the lease back.
A crash anywhere leaves the withdrawal pending (re-enqueued by recovery) or processing.
Recovery takes a processing withdrawal only once its lease has run out, so a live worker's
call is never doubled, and asks the provider's `status(key)`: paid or failed settle it;
pending waits; unknown means the request never arrived, so it is sent again with the same
key, which can't pay twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from escrow.deposits import deposits_recover
from escrow.errors import DomainError
from escrow.funding import PayoutFailed, funding_provider
from escrow.models import Withdrawal
from escrow.withdrawals import (
    WithdrawalNotFound,
    withdrawal_cancel,
    withdrawal_claim,
    withdrawal_lease_release,
    withdrawal_lease_take,
    withdrawal_open,
    withdrawal_settle,
    withdrawals_due,
)
from marketplace.queues import service_send
from marketplace.webhooks.outbox import webhook_event_record

log = logging.getLogger(__name__)

PROCESS = "marketplace.withdrawals.withdrawal_process"


def _enqueue(withdrawal_id: int) -> None:
    service_send(PROCESS, withdrawal_id, task_name=f"withdrawal {withdrawal_id}")


@transaction.atomic(durable=True)
def withdrawal_request(
    *, user: User, amount: int, idempotency_key: str | None = None
) -> tuple[Withdrawal, bool]:
    """Take `amount` out of the user's wallet now and have a worker pay it out."""
    withdrawal, created = withdrawal_open(
        user_id=user.pk,
        amount=amount,
        idempotency_key=idempotency_key,
        provider=settings.FUNDING_PROVIDER,
    )
    if created:
        transaction.on_commit(lambda: _enqueue(withdrawal.pk))
    return withdrawal, created


@transaction.atomic(durable=True)
def withdrawal_cancel_request(*, user: User, withdrawal_id: int) -> Withdrawal:
    return withdrawal_cancel(user_id=user.pk, withdrawal_id=withdrawal_id)


def withdrawals_of(user: User) -> QuerySet[Withdrawal]:
    return Withdrawal.objects.filter(user=user).order_by("-created_at", "-id")


def withdrawal_of(user: User, withdrawal_id: int) -> Withdrawal:
    withdrawal = Withdrawal.objects.filter(user=user, pk=withdrawal_id).first()
    if withdrawal is None:
        raise WithdrawalNotFound()
    return withdrawal


@transaction.atomic(durable=True)
def _record(withdrawal_id: int, *, paid: bool, reference: str = "", failure: str = "") -> str:
    withdrawal = withdrawal_settle(
        withdrawal_id=withdrawal_id, paid=paid, reference=reference, failure=failure
    )
    if withdrawal is None:
        return "already settled"
    webhook_event_record(
        owner_id=withdrawal.user_id,
        type="withdrawal.paid" if paid else "withdrawal.failed",
        object_id=str(withdrawal.pk),
    )
    return withdrawal.status


def _pay(withdrawal: Withdrawal, *, lease: datetime) -> str:
    """Ask the provider (outside any transaction, holding the lease that ends at `lease`)
    and record a definite answer."""
    # (A test case's own wrapping transaction, which durable blocks ignore too, is allowed.)
    blocks = transaction.get_connection().atomic_blocks
    if any(not getattr(block, "_from_testcase", False) for block in blocks):
        raise RuntimeError("a payout is never asked inside a transaction")
    try:
        reference = funding_provider(withdrawal.provider).payout(withdrawal)
    except PayoutFailed as error:
        return _record(withdrawal.pk, paid=False, failure=error.message)
    except Exception as error:
        # No definite answer: the money may have left (a 503 after paying, a timeout).
        # Returning it could pay it twice; recovery asks the provider what happened, now.
        withdrawal_lease_release(withdrawal_id=withdrawal.pk, until=lease)
        if not isinstance(error, DomainError):
            raise
        log.warning("withdrawal %s: no answer from the provider: %s", withdrawal.pk, error)
        return Withdrawal.Status.PROCESSING
    return _record(withdrawal.pk, paid=True, reference=reference)


def withdrawal_process(withdrawal_id: int) -> str:
    """The worker's job: claim, pay, record. Another worker's claim makes it a no-op."""
    lease = withdrawal_claim(withdrawal_id=withdrawal_id)
    if lease is None:
        return "not pending"
    return _pay(Withdrawal.objects.get(pk=withdrawal_id), lease=lease)


def _recover_stuck(withdrawal_id: int) -> str:
    # Its lease ran out: whoever held it is out of the provider call. Taking a new one
    # keeps a second recovery (another host, a redelivered job) from asking at once.
    lease = withdrawal_lease_take(withdrawal_id=withdrawal_id)
    if lease is None:
        return "taken"
    withdrawal = Withdrawal.objects.get(pk=withdrawal_id)
    try:
        status = funding_provider(withdrawal.provider).status(withdrawal.key)
    except Exception:
        withdrawal_lease_release(withdrawal_id=withdrawal_id, until=lease)
        raise
    if status == "paid":
        return _record(withdrawal_id, paid=True, reference=withdrawal.key)
    if status == "failed":
        return _record(withdrawal_id, paid=False, failure="the provider reported a failure")
    if status == "pending":
        withdrawal_lease_release(withdrawal_id=withdrawal_id, until=lease)
        return "pending"
    # Unknown: the request never reached the provider; the same key can't pay twice.
    return _pay(withdrawal, lease=lease)


def withdrawals_recover() -> dict[str, int]:
    """Re-enqueue pending withdrawals whose message was lost; settle stuck processing ones
    by the provider's word. One failing withdrawal never stops the others."""
    before = timezone.now() - timedelta(seconds=settings.FUNDING_RECOVER_AFTER_SECONDS)
    pending, stuck = withdrawals_due(before=before)
    counts = {"requeued": 0, "paid": 0, "failed": 0, "waiting": 0, "errors": 0}
    for withdrawal_id in pending:
        _enqueue(withdrawal_id)
        counts["requeued"] += 1
    for withdrawal_id in stuck:
        try:
            outcome = _recover_stuck(withdrawal_id)
        except Exception:
            log.exception("could not recover withdrawal %s", withdrawal_id)
            counts["errors"] += 1
            continue
        key = outcome if outcome in ("paid", "failed") else "waiting"
        counts[key] += 1
    return counts


def funding_recover() -> dict[str, int]:
    """The scheduled job: stuck withdrawals, then deposits left pending."""
    before = timezone.now() - timedelta(seconds=settings.FUNDING_RECOVER_AFTER_SECONDS)
    counts = {f"withdrawals_{k}": v for k, v in withdrawals_recover().items()}
    counts |= {f"deposits_{k}": v for k, v in deposits_recover(before=before).items()}
    return counts
