"""Crash-safe deposits: a pending row under its own key before the provider is asked.

1. `deposit_begin` commits a pending `Deposit` with a reference of its own (and the
   client's Idempotency-Key, unique per user, when there is one);
2. the caller asks the provider to collect, outside any transaction, with that reference;
3. `deposit_complete` moves pending → completed (conditional UPDATE) and posts
   external → wallet in one transaction, or `deposit_fail` moves it to failed.

Only a refusal fails a deposit. Any other answer (a timeout, `pending`, `unknown`) means
the provider may still collect under that reference, so the deposit stays pending and
keeps it: recovery (`deposits_recover`) and a client's retry with the same Idempotency-Key
ask again with the same reference, and a collection that lands late is credited once,
by whichever of them (or the daily reconciliation) sees it first.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from escrow.errors import DomainError, FundingUnavailable, IdempotencyConflict, InvalidAmount
from escrow.funding import funding_provider
from escrow.ledger import Leg, ledger_post, validate_amount, wallet_id
from escrow.models import Account, Transfer
from escrow.payout_models import Deposit
from escrow.system_accounts import shard_for, system_account_id

Status = Deposit.Status
log = logging.getLogger(__name__)


class DepositPending(DomainError):
    code = "deposit_pending"
    status = 503
    retry_after = 30
    default_message = (
        "The payment provider has not confirmed this deposit yet. It stays pending and is "
        "credited once the provider confirms it; send the same request with the same "
        "Idempotency-Key to see its outcome."
    )


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
            return existing  # a failed one is for `deposit_run` to look into
        try:
            with transaction.atomic():
                return Deposit.objects.create(
                    **fields, idempotency_key=idempotency_key, reference=_reference_new()
                )
        except IntegrityError:
            continue  # a concurrent twin inserted it first
    raise IdempotencyConflict()


def deposit_reopen(*, deposit_id: int, new_reference: bool) -> Deposit:
    """failed → pending for a retry: under a new reference only when the provider refused
    the old one for good (it would only repeat the refusal); otherwise under the same one,
    which the provider may still collect."""
    fields: dict[str, object] = {"status": Status.PENDING, "failure": "", "completed_at": None}
    if new_reference:
        fields["reference"] = _reference_new()
    Deposit.objects.filter(pk=deposit_id, status=Status.FAILED).update(**fields)
    return Deposit.objects.get(pk=deposit_id)


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
    # A failed deposit too: only a refusal fails one, but a collection the provider made
    # anyway (found by reconciliation, or a row failed before that rule) is still owed.
    unfinished = (Status.PENDING, Status.FAILED)
    deposit = (
        Deposit.objects.select_for_update(no_key=True)
        .filter(pk=deposit_id, status__in=unfinished)
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
    Deposit.objects.filter(pk=deposit_id, status__in=unfinished).update(
        status=Status.COMPLETED,
        failure="",
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


def _collect(deposit: Deposit) -> Transfer:
    """Ask the provider to collect under the deposit's reference and record its answer:
    credited, or failed on a refusal. Anything else leaves the deposit pending and raises."""
    try:
        reference = funding_provider(deposit.provider).collect(
            user_id=deposit.user_id, amount=deposit.amount, reference=deposit.reference
        )
    except FundingUnavailable as refusal:  # what a provider raises to refuse a collection
        deposit_fail(deposit_id=deposit.pk, failure=refusal.message)
        raise
    except Exception as error:
        # No answer (a timeout, a 5xx, even one the provider's client reports as a domain
        # error): the provider may have collected, or may still collect, under this
        # reference, so the deposit stays pending for recovery, and the caller hears so.
        log.warning("deposit %s: no answer from the provider (%s)", deposit.pk, error)
        raise DepositPending() from error
    return deposit_complete(deposit_id=deposit.pk, provider_reference=reference)


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
    if deposit.status == Status.FAILED:
        # A retry of a failed deposit. What became of its reference decides: collected
        # after all, credit it; refused, a new reference; anything else, the provider may
        # still collect it, so ask again under the same one.
        status = funding_provider(deposit.provider).status(deposit.reference)
        if status == "paid":
            return deposit_complete(deposit_id=deposit.pk, provider_reference=deposit.reference)
        deposit = deposit_reopen(deposit_id=deposit.pk, new_reference=status == "failed")
    return _collect(deposit)


def deposits_recover(*, before: datetime) -> dict[str, int]:
    """Finish deposits left pending since before `before`, by the provider's word: credit
    what it collected, fail what it refused, wait for what is still under way, and ask again
    (same reference) for what it doesn't know."""
    counts = {"completed": 0, "failed": 0, "pending": 0, "errors": 0}
    stale = Deposit.objects.filter(status=Status.PENDING, created_at__lt=before).order_by("pk")
    for deposit in list(stale[:500]):
        try:
            status = funding_provider(deposit.provider).status(deposit.reference)
            if status == "paid":
                deposit_complete(deposit_id=deposit.pk, provider_reference=deposit.reference)
                counts["completed"] += 1
            elif status == "failed":
                deposit_fail(deposit_id=deposit.pk, failure="the provider refused it")
                counts["failed"] += 1
            elif status == "pending":
                counts["pending"] += 1
            else:
                # Unknown: never received, or not visible yet. The same reference collects
                # at most once, so asking again is safe; only a refusal fails it.
                counts[_ask_again(deposit)] += 1
        except Exception:
            log.exception("could not recover deposit %s", deposit.pk)
            counts["errors"] += 1
    return counts


def _ask_again(deposit: Deposit) -> str:
    try:
        _collect(deposit)
    except DepositPending:  # still no answer (logged): it stays pending, asked again next time
        return "pending"
    except FundingUnavailable:
        return "failed"
    return "completed"
