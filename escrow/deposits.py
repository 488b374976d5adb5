"""Crash-safe deposits: a pending row under its own key before the provider is asked.

1. `deposit_begin` commits a pending `Deposit` with a reference of its own (and the
   client's Idempotency-Key, unique per user, when there is one);
2. the caller asks the provider to collect, outside any transaction, with that reference;
3. `deposit_complete` moves pending → completed (conditional UPDATE) and posts
   external → wallet in one transaction, or `deposit_fail` moves it to failed.

A crash between 1 and 3 leaves a pending deposit; `deposits_recover` asks the provider what
became of its reference and completes or fails it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from escrow.errors import DomainError, FundingUnavailable, IdempotencyConflict, InvalidAmount
from escrow.funding import funding_provider
from escrow.models import Account, Transfer
from escrow.payout_models import Deposit
from escrow.services import (
    Leg,
    ledger_post,
    shard_for,
    system_account_id,
    validate_amount,
    wallet_id,
)

Status = Deposit.Status


def _reference_new() -> str:
    return f"dep_{uuid.uuid4().hex}"


def deposit_begin(
    *, user_id: int, amount: int, idempotency_key: str | None, provider: str
) -> Deposit:
    """The pending (or already finished) deposit for this request, committed."""
    validate_amount(amount)
    if amount > settings.MAX_DEPOSIT:
        raise InvalidAmount(f"A single deposit is at most {settings.MAX_DEPOSIT} µCR.")
    wallet_id(user_id=user_id)  # opened before the money can arrive
    fields = {"user_id": user_id, "amount": amount, "provider": provider}
    if idempotency_key is None:
        return Deposit.objects.create(**fields, reference=_reference_new())
    for _ in range(2):
        existing = Deposit.objects.filter(user_id=user_id, idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.amount != amount:
                raise IdempotencyConflict()
            if existing.status == Status.FAILED:
                # A refused collection moved no money: a retry asks again, under a new
                # reference (the provider would repeat its refusal for the old one).
                Deposit.objects.filter(pk=existing.pk, status=Status.FAILED).update(
                    status=Status.PENDING, failure="", reference=_reference_new()
                )
                existing.refresh_from_db()
            return existing
        try:
            with transaction.atomic():
                return Deposit.objects.create(
                    **fields, idempotency_key=idempotency_key, reference=_reference_new()
                )
        except IntegrityError:
            continue  # a concurrent twin inserted it first
    raise IdempotencyConflict()


def _transfer_key(deposit: Deposit) -> str:
    # Keyed deposits keep the key their transfers always had.
    if deposit.idempotency_key:
        return f"deposit:{deposit.user_id}:{deposit.idempotency_key}"
    return f"deposit:{deposit.reference}"


@transaction.atomic(durable=True)
def deposit_complete(*, deposit_id: int, provider_reference: str) -> Transfer:
    """pending → completed with its external → wallet transfer; the transfer if done.

    The row lock taken with the status condition picks the one caller that completes it
    (PostgreSQL re-checks the condition after waiting, like a conditional UPDATE)."""
    deposit = (
        Deposit.objects.select_for_update(no_key=True)
        .filter(pk=deposit_id, status=Status.PENDING)
        .first()
    )
    if deposit is None:
        done = Deposit.objects.get(pk=deposit_id)
        if done.transfer_id is None:
            raise FundingUnavailable(f"Deposit {deposit_id} is {done.status}.")
        return Transfer.objects.get(pk=done.transfer_id)
    [transfer] = ledger_post(
        [
            Leg(
                system_account_id(Account.Kind.EXTERNAL, shard_for(deposit.pk)),
                wallet_id(user_id=deposit.user_id),
                deposit.amount,
                Transfer.Kind.DEPOSIT,
                idempotency_key=_transfer_key(deposit),
                memo=provider_reference[:200],
            )
        ]
    )
    Deposit.objects.filter(pk=deposit_id, status=Status.PENDING).update(
        status=Status.COMPLETED,
        transfer=transfer,
        provider_reference=provider_reference[:200],
        completed_at=timezone.now(),
    )
    return transfer


def deposit_fail(*, deposit_id: int, failure: str) -> bool:
    """pending → failed (no money moved); True if this call moved it."""
    return bool(
        Deposit.objects.filter(pk=deposit_id, status=Status.PENDING).update(
            status=Status.FAILED, failure=failure[:200], completed_at=timezone.now()
        )
    )


def deposit_run(
    *, user_id: int, amount: int, idempotency_key: str | None = None, provider: str | None = None
) -> Transfer:
    """Bring money in from outside: external → the user's wallet, crash-safe."""
    name = provider or settings.FUNDING_PROVIDER
    deposit = deposit_begin(
        user_id=user_id, amount=amount, idempotency_key=idempotency_key, provider=name
    )
    if deposit.transfer is not None:  # completed before
        return deposit.transfer
    try:
        reference = funding_provider(name).collect(
            user_id=user_id, amount=amount, reference=deposit.reference
        )
    except DomainError as error:
        deposit_fail(deposit_id=deposit.pk, failure=error.message)
        raise
    return deposit_complete(deposit_id=deposit.pk, provider_reference=reference)


def deposits_recover(*, before: datetime) -> dict[str, int]:
    """Finish deposits left pending since before `before`, by asking the provider."""
    counts = {"completed": 0, "failed": 0, "pending": 0, "errors": 0}
    stale = Deposit.objects.filter(status=Status.PENDING, created_at__lt=before).order_by("pk")
    for deposit in list(stale[:500]):
        try:
            status = funding_provider(deposit.provider).status(deposit.reference)
            if status == "paid":
                deposit_complete(deposit_id=deposit.pk, provider_reference=deposit.reference)
                counts["completed"] += 1
            elif status == "pending":
                counts["pending"] += 1
            else:
                # Failed, or never received: no money came in.
                deposit_fail(deposit_id=deposit.pk, failure=f"recovered: provider said {status}")
                counts["failed"] += 1
        except Exception:
            counts["errors"] += 1
    return counts
