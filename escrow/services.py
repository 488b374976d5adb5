"""Ledger and escrow services: the only code that changes balances.

Lock order, shared by every service in the project so that no two transactions can
wait on each other in a cycle: tasks → channels → agent reputation → escrows → accounts
(by primary key). Accounts come last because the system accounts are shared by every
settlement: their locks should be held for as short a time as possible.

Escrow state changes are conditional UPDATEs whose row count says whether this caller
won; database constraints back every rule up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import BigIntegerField, Case, F, Value, When
from django.utils import timezone

from escrow.errors import (
    EscrowStateError,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
)
from escrow.holds import Share, earnings_hold, holding
from escrow.models import Account, Escrow, Transfer

Kind = Transfer.Kind


@dataclass(frozen=True)
class Leg:
    """One transfer of a posting: `amount` from the debit account to the credit account."""

    debit_id: int
    credit_id: int
    amount: int
    kind: str
    escrow_id: int | None = None
    channel_id: Any = None
    task_id: Any = None
    idempotency_key: str | None = None
    memo: str = ""


def validate_amount(amount: object, *, allow_zero: bool = False) -> int:
    """`amount`, if it is a whole number of µCR above zero (or zero, when allowed);
    otherwise InvalidAmount."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmount(f"Amounts are integers of µCR, got {amount!r}.")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidAmount(f"Amount must be {'≥ 0' if allow_zero else '> 0'}, got {amount}.")
    return amount


# --- accounts --------------------------------------------------------------------------


_system_ids: dict[str, int] = {}


def system_account_id(kind: str) -> int:
    """The id of a system account, cached per process.

    The accounts are created by a migration and never inside a caller's transaction: an
    id cached from a row that later rolled back would point every thread at nothing.
    """
    if kind not in _system_ids:
        account = Account.objects.filter(kind=kind, user=None).first()
        if account is None:
            raise ImproperlyConfigured(f"The {kind} account is missing: run `manage.py migrate`.")
        _system_ids[kind] = account.pk
    return _system_ids[kind]


def system_accounts_ensure() -> None:
    """Create any missing system account (for databases emptied outside migrations)."""
    for kind in Account.SYSTEM_KINDS:
        Account.objects.get_or_create(kind=kind, user=None)
    _system_ids.clear()


def wallet_open(*, user_id: int) -> Account:
    """The user's wallet, created on first use (safe against concurrent first use)."""
    account = Account.objects.filter(kind=Account.Kind.WALLET, user_id=user_id).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return Account.objects.create(kind=Account.Kind.WALLET, user_id=user_id)
    except IntegrityError:
        return Account.objects.get(kind=Account.Kind.WALLET, user_id=user_id)


def wallet_id(*, user_id: int) -> int:
    return wallet_open(user_id=user_id).pk


# --- moving money ------------------------------------------------------------------------


def ledger_post(legs: Sequence[Leg]) -> list[Transfer]:
    """Post the legs to the ledger: lock every account they touch (in pk order), check that
    no balance goes negative, update the balances and record one Transfer per leg.

    Must run inside a transaction. Zero-amount legs are dropped; the rest change the
    balances by their net effect, so a settlement touches each account once.
    """
    legs = [leg for leg in legs if leg.amount]
    if not legs:
        return []
    ids = sorted({leg.debit_id for leg in legs} | {leg.credit_id for leg in legs})
    # NO KEY UPDATE: inserting a row that references an account (an escrow, a transfer)
    # takes KEY SHARE on it, which plain FOR UPDATE would conflict with — a deadlock between
    # a submission and a settlement. We never change keys, so this is the lock we need.
    accounts = {
        a.pk: a
        for a in Account.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")
    }
    if len(accounts) != len(ids):
        raise InvalidAmount("Unknown account in transfer.")
    delta: dict[int, int] = defaultdict(int)
    for leg in legs:
        delta[leg.debit_id] -= leg.amount
        delta[leg.credit_id] += leg.amount
    for account_id, change in delta.items():
        account = accounts[account_id]
        if account.kind != Account.Kind.EXTERNAL and account.balance + change < 0:
            raise InsufficientFunds(
                f"Needs {-change} µCR, the account holds {account.balance} µCR."
                if account.kind == Account.Kind.WALLET
                else f"The {account.kind} account cannot go below zero."
            )
    changed = {account_id: change for account_id, change in delta.items() if change}
    if changed:
        # One statement for every balance (a settlement moves up to four).
        Account.objects.filter(pk__in=changed).update(
            balance=F("balance")
            + Case(
                *(
                    When(pk=account_id, then=Value(change))
                    for account_id, change in changed.items()
                ),
                default=Value(0),
                output_field=BigIntegerField(),
            )
        )
    return Transfer.objects.bulk_create(
        [
            Transfer(
                debit_account_id=leg.debit_id,
                credit_account_id=leg.credit_id,
                amount=leg.amount,
                kind=leg.kind,
                escrow_id=leg.escrow_id,
                channel_id=leg.channel_id,
                task_id=leg.task_id,
                idempotency_key=leg.idempotency_key,
                memo=leg.memo,
            )
            for leg in legs
        ]
    )


def _existing_transfer(
    key: str, *, debit_id: int, credit_id: int, amount: int, kind: str
) -> Transfer | None:
    """The transfer already made under this idempotency key, if any; IdempotencyConflict if
    it moved other money than asked for now."""
    existing = Transfer.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    same = (existing.debit_account_id, existing.credit_account_id, existing.amount, existing.kind)
    if same != (debit_id, credit_id, amount, kind):
        raise IdempotencyConflict()
    return existing


def transfer_create(
    *,
    debit_account_id: int,
    credit_account_id: int,
    amount: int,
    kind: str,
    idempotency_key: str | None = None,
    memo: str = "",
) -> Transfer:
    """One transfer between two accounts; a repeated idempotency key returns the first."""
    validate_amount(amount)
    if debit_account_id == credit_account_id:
        raise InvalidAmount("A transfer needs two different accounts.")
    params: dict[str, Any] = {
        "debit_id": debit_account_id,
        "credit_id": credit_account_id,
        "amount": amount,
        "kind": kind,
    }
    with transaction.atomic():
        if idempotency_key is not None:
            # Lock first: a concurrent twin waits here, then sees the committed transfer.
            list(
                Account.objects.select_for_update(no_key=True)
                .filter(pk__in=[debit_account_id, credit_account_id])
                .order_by("pk")
            )
            existing = _existing_transfer(idempotency_key, **params)
            if existing is not None:
                return existing
        [transfer] = ledger_post([Leg(**params, idempotency_key=idempotency_key, memo=memo)])
        return transfer


def deposit_create(
    *, user_id: int, amount: int, idempotency_key: str | None = None, provider: str | None = None
) -> Transfer:
    """Bring money in from outside: external → the user's wallet (see `escrow.deposits`)."""
    # Imported here: escrow.deposits builds on this module.
    from escrow.deposits import deposit_run

    return deposit_run(
        user_id=user_id, amount=amount, idempotency_key=idempotency_key, provider=provider
    )


# --- escrow ---------------------------------------------------------------------------------


def _transition(
    escrow_id: int, *, source: str, target: str, payment: str, **fields: object
) -> Escrow:
    """Conditional UPDATE: exactly one caller moves the escrow out of `source`."""
    now = timezone.now()
    stamp = {"funded_at": now} if target == Escrow.Status.FUNDED else {"resolved_at": now}
    won = Escrow.objects.filter(pk=escrow_id, status=source, payment=payment).update(
        status=target, **stamp, **fields
    )
    escrow = Escrow.objects.get(pk=escrow_id)
    if won != 1:
        raise EscrowStateError(
            f"Escrow {escrow_id} is {escrow.status} ({escrow.payment}); "
            f"cannot go {source} → {target}."
        )
    return escrow


def escrow_create(
    *,
    payer_user_id: int,
    payee_user_id: int,
    amount: int,
    task_id: Any = None,
    channel_id: Any = None,
) -> Escrow:
    """A pending escrow; with a channel it holds nothing (the channel deposit is the hold)."""
    validate_amount(amount)
    return Escrow.objects.create(
        payer_id=wallet_id(user_id=payer_user_id),
        payee_id=wallet_id(user_id=payee_user_id),
        amount=amount,
        task_id=task_id,
        payment=Escrow.Payment.CHANNEL if channel_id else Escrow.Payment.ESCROW,
        channel_id=channel_id,
    )


def escrow_fund(*, escrow_id: int) -> Escrow:
    """pending → funded: the payer's wallet → the escrow account. 402 if the wallet is short."""
    with transaction.atomic():
        escrow = _transition(
            escrow_id, source=Escrow.Status.PENDING, target=Escrow.Status.FUNDED, payment="escrow"
        )
        ledger_post(
            [
                Leg(
                    escrow.payer_id,
                    system_account_id(Account.Kind.ESCROW),
                    escrow.amount,
                    Kind.ESCROW_HOLD,
                    escrow_id=escrow.pk,
                    task_id=escrow.task_id,
                )
            ]
        )
        return escrow


def escrow_release(*, escrow_id: int, cost: int, fee: int) -> Escrow:
    """funded → released: cost − fee to the payee, fee to the platform, the rest back."""
    validate_amount(cost, allow_zero=True)
    validate_amount(fee, allow_zero=True)
    if fee > cost:
        raise InvalidAmount(f"The fee ({fee}) cannot exceed the cost ({cost}).")
    with transaction.atomic():
        amount = Escrow.objects.values_list("amount", flat=True).get(pk=escrow_id)
        if cost > amount:
            raise InvalidAmount(f"The cost ({cost}) cannot exceed the escrowed amount ({amount}).")
        escrow = _transition(
            escrow_id,
            source=Escrow.Status.FUNDED,
            target=Escrow.Status.RELEASED,
            payment="escrow",
            cost=cost,
            fee=fee,
            refund=amount - cost,
        )
        hold = system_account_id(Account.Kind.ESCROW)
        platform = system_account_id(Account.Kind.PLATFORM_FEES)
        payee = escrow.payee_id
        if holding() and escrow.task_id is not None and cost:  # the owner's share waits
            earnings_hold(wallet_id=payee, shares=[Share(escrow.task_id, cost - fee, fee)])
            payee = system_account_id(Account.Kind.EARNINGS)
        payouts = [
            (payee, cost - fee, Kind.ESCROW_PAYOUT),
            (platform, fee, Kind.ESCROW_FEE),
            (escrow.payer_id, amount - cost, Kind.ESCROW_REFUND),
        ]
        ledger_post(
            [
                Leg(hold, to, share, kind, escrow_id=escrow.pk, task_id=escrow.task_id)
                for to, share, kind in payouts
            ]
        )
        return escrow


def escrow_refund(*, escrow_id: int) -> Escrow:
    """funded → refunded: the whole amount back to the payer."""
    with transaction.atomic():
        amount = Escrow.objects.values_list("amount", flat=True).get(pk=escrow_id)
        escrow = _transition(
            escrow_id,
            source=Escrow.Status.FUNDED,
            target=Escrow.Status.REFUNDED,
            payment="escrow",
            cost=0,
            fee=0,
            refund=amount,
        )
        ledger_post(
            [
                Leg(
                    system_account_id(Account.Kind.ESCROW),
                    escrow.payer_id,
                    amount,
                    Kind.ESCROW_REFUND,
                    escrow_id=escrow.pk,
                    task_id=escrow.task_id,
                )
            ]
        )
        return escrow


def escrow_cancel(*, escrow_id: int) -> Escrow:
    """pending → cancelled: nothing was held, nothing moves."""
    payment = Escrow.objects.values_list("payment", flat=True).get(pk=escrow_id)
    return _transition(
        escrow_id, source=Escrow.Status.PENDING, target=Escrow.Status.CANCELLED, payment=payment
    )


def escrow_complete(*, escrow_id: int, cost: int, fee: int) -> Escrow:
    """pending → completed for a channel-paid task: the channel redemption is the payment."""
    validate_amount(cost, allow_zero=True)
    validate_amount(fee, allow_zero=True)
    return _transition(
        escrow_id,
        source=Escrow.Status.PENDING,
        target=Escrow.Status.COMPLETED,
        payment="channel",
        cost=cost,
        fee=fee,
        refund=0,
    )
