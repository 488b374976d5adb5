"""Ledger and escrow services: the only code that changes balances (through the postings
of `escrow.ledger`).

Lock order, shared by every service in the project so that no two transactions can
wait on each other in a cycle: tasks → channels → agent reputation → escrows → accounts
(by primary key). The system accounts are sharded (`escrow.system_accounts`), so no one
row is shared by every settlement. A task's settlement writes its agent's reputation
row last instead, after the accounts (every settlement of one agent writes that row, so
its lock is held for one statement and the commit); the rare deadlock with a dispute's
refund, which keeps the order, is retried (`execution.settlement`).

Escrow state changes are conditional UPDATEs whose row count says whether this caller
won; database constraints back every rule up.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from escrow.deposits import deposit_run
from escrow.errors import EscrowStateError, IdempotencyConflict, InvalidAmount
from escrow.holds import Share, earnings_hold, holding
from escrow.ledger import Leg, ledger_post, validate_amount, wallet_id
from escrow.models import Account, Escrow, PaymentChannel, Transfer
from escrow.system_accounts import shard_for as shard_for
from escrow.system_accounts import system_account_id as system_account_id
from escrow.system_accounts import system_accounts_ensure as system_accounts_ensure
from escrow.system_accounts import system_balance as system_balance

Kind = Transfer.Kind


# --- moving money ------------------------------------------------------------------------


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
    return deposit_run(
        user_id=user_id, amount=amount, idempotency_key=idempotency_key, provider=provider
    )


# --- escrow ---------------------------------------------------------------------------------


def _transition(
    escrow_id: int,
    *,
    source: str,
    target: str,
    payment: str,
    escrow: Escrow | None = None,
    **fields: Any,
) -> Escrow | None:
    """Conditional UPDATE: exactly one caller moves the escrow out of `source`; None for
    the others (see `_state_error`).

    With `escrow` (the row as read before, whose parties and amount never change) nothing
    is read back: the returned row is that one, with the new state.
    """
    now = timezone.now()
    stamp = {"funded_at": now} if target == Escrow.Status.FUNDED else {"resolved_at": now}
    won = Escrow.objects.filter(pk=escrow_id, status=source, payment=payment).update(
        status=target, **stamp, **fields
    )
    if won != 1:
        return None
    if escrow is None:
        return Escrow.objects.get(pk=escrow_id)
    for name, value in {"status": target, **stamp, **fields}.items():
        setattr(escrow, name, value)
    return escrow


def _state_error(escrow_id: int, *, source: str, target: str) -> EscrowStateError:
    """Raised outside the atomic block: a lost transition broke nothing, and the caller's
    transaction (entered without a savepoint) stays usable."""
    current = Escrow.objects.get(pk=escrow_id)
    return EscrowStateError(
        f"Escrow {escrow_id} is {current.status} ({current.payment}); "
        f"cannot go {source} → {target}."
    )


def _escrow_row(escrow_id: int, escrow: Escrow | None) -> Escrow:
    if escrow is not None and escrow.pk == escrow_id:
        return escrow
    return Escrow.objects.get(pk=escrow_id)


def _escrow_shard(task_id: Any, channel_id: Any) -> int:
    if channel_id:
        channel_shard = (
            PaymentChannel.objects.filter(pk=channel_id).values_list("shard", flat=True).first()
        )
        if channel_shard is not None:
            return channel_shard
    return shard_for(task_id if task_id is not None else uuid.uuid4())


def escrow_create(
    *,
    payer_user_id: int,
    payee_user_id: int,
    amount: int,
    task_id: Any = None,
    channel_id: Any = None,
    shard: int | None = None,
    payer_id: int | None = None,
    payee_id: int | None = None,
) -> Escrow:
    """A pending escrow; with a channel it holds nothing (the channel deposit is the hold).

    Its shard is the channel's (given as `shard`, or read) or follows from the task id.
    """
    validate_amount(amount)
    return Escrow.objects.create(
        payer_id=payer_id or wallet_id(user_id=payer_user_id),
        payee_id=payee_id or wallet_id(user_id=payee_user_id),
        amount=amount,
        task_id=task_id,
        payment=Escrow.Payment.CHANNEL if channel_id else Escrow.Payment.ESCROW,
        channel_id=channel_id,
        shard=_escrow_shard(task_id, channel_id) if shard is None else shard,
    )


def _hold_leg(escrow: Escrow) -> Leg:
    return Leg(
        escrow.payer_id,
        system_account_id(Account.Kind.ESCROW, escrow.shard),
        escrow.amount,
        Kind.ESCROW_HOLD,
        escrow_id=escrow.pk,
        task_id=escrow.task_id,
    )


def escrow_open_funded(*, payer_id: int, payee_id: int, amount: int, task_id: Any) -> Escrow:
    """A new escrow for a new task, funded at once: the payer's wallet → the escrow account
    (402 if the wallet is short). Two statements: nobody else can know of the row yet, so
    it needs no pending state and no transition."""
    validate_amount(amount)
    with transaction.atomic(savepoint=False):
        escrow = Escrow.objects.create(
            payer_id=payer_id,
            payee_id=payee_id,
            amount=amount,
            task_id=task_id,
            status=Escrow.Status.FUNDED,
            funded_at=timezone.now(),
            shard=shard_for(task_id),
        )
        ledger_post([_hold_leg(escrow)])
        return escrow


def escrow_fund(*, escrow_id: int) -> Escrow:
    """pending → funded: the payer's wallet → the escrow account. 402 if the wallet is short."""
    # With a savepoint: a short wallet (402) must leave a caller's transaction usable.
    with transaction.atomic():
        escrow = _transition(
            escrow_id, source=Escrow.Status.PENDING, target=Escrow.Status.FUNDED, payment="escrow"
        )
        if escrow is not None:
            ledger_post([_hold_leg(escrow)])
    if escrow is None:
        raise _state_error(escrow_id, source=Escrow.Status.PENDING, target=Escrow.Status.FUNDED)
    return escrow


def escrow_release(
    *,
    escrow_id: int,
    cost: int,
    fee: int,
    escrow: Escrow | None = None,
    awaiting_verdict: bool = False,
) -> Escrow:
    """funded → released: cost − fee to the payee, fee to the platform, the rest back.

    `escrow`, the row its caller already read (before the transaction), saves reading it.
    `awaiting_verdict`: the task is evaluated (SPEC §21): the owner's share is held, even
    without a hold, and waits for the evaluator's verdict before its hold starts.
    """
    validate_amount(cost, allow_zero=True)
    validate_amount(fee, allow_zero=True)
    if fee > cost:
        raise InvalidAmount(f"The fee ({fee}) cannot exceed the cost ({cost}).")
    row = _escrow_row(escrow_id, escrow)  # its amount and parties never change
    amount = row.amount
    if cost > amount:
        raise InvalidAmount(f"The cost ({cost}) cannot exceed the escrowed amount ({amount}).")
    # No savepoint: every refusal is raised outside the block, which leaves a caller's
    # transaction usable; anything raised inside is a failure of the whole transaction.
    with transaction.atomic(savepoint=False):
        released = _transition(
            escrow_id,
            source=Escrow.Status.FUNDED,
            target=Escrow.Status.RELEASED,
            payment="escrow",
            escrow=row,
            cost=cost,
            fee=fee,
            refund=amount - cost,
        )
        if released is not None:
            _release_post(released, cost=cost, fee=fee, awaiting_verdict=awaiting_verdict)
    if released is None:
        raise _state_error(escrow_id, source=Escrow.Status.FUNDED, target=Escrow.Status.RELEASED)
    return released


def release_legs(
    row: Escrow, *, cost: int, fee: int, awaiting_verdict: bool = False
) -> tuple[list[Leg], bool]:
    """The released escrow's legs on its shard: the owner's share (to held earnings, or
    to the wallet), the fee, the refund; and whether the owner's share is held."""
    hold = system_account_id(Account.Kind.ESCROW, row.shard)
    platform = system_account_id(Account.Kind.PLATFORM_FEES, row.shard)
    payee = row.payee_id
    held = (holding() or awaiting_verdict) and row.task_id is not None and cost > 0
    if held:  # the owner's share waits
        payee = system_account_id(Account.Kind.EARNINGS, row.shard)
    payouts = [
        (payee, cost - fee, Kind.ESCROW_PAYOUT),
        (platform, fee, Kind.ESCROW_FEE),
        (row.payer_id, row.amount - cost, Kind.ESCROW_REFUND),
    ]
    legs = [
        Leg(hold, to, share, kind, escrow_id=row.pk, task_id=row.task_id)
        for to, share, kind in payouts
    ]
    return legs, held


def refund_leg(row: Escrow) -> Leg:
    """A refunded escrow's one leg: the whole amount back to the payer."""
    return Leg(
        system_account_id(Account.Kind.ESCROW, row.shard),
        row.payer_id,
        row.amount,
        Kind.ESCROW_REFUND,
        escrow_id=row.pk,
        task_id=row.task_id,
    )


def _release_post(row: Escrow, *, cost: int, fee: int, awaiting_verdict: bool = False) -> None:
    legs, held = release_legs(row, cost=cost, fee=fee, awaiting_verdict=awaiting_verdict)
    if held:
        # Nobody can dispute a task before it settles: no pending dispute to look for.
        share = Share(row.task_id, cost - fee, fee)
        earnings_hold(
            wallet_id=row.payee_id,
            shares=[share],
            disputes=False,
            awaiting_verdict=awaiting_verdict,
        )
    ledger_post(legs)


def escrow_refund(*, escrow_id: int, escrow: Escrow | None = None) -> Escrow:
    """funded → refunded: the whole amount back to the payer."""
    row = _escrow_row(escrow_id, escrow)
    with transaction.atomic(savepoint=False):
        refunded = _transition(
            escrow_id,
            source=Escrow.Status.FUNDED,
            target=Escrow.Status.REFUNDED,
            payment="escrow",
            escrow=row,
            cost=0,
            fee=0,
            refund=row.amount,
        )
        if refunded is not None:
            ledger_post([refund_leg(row)])
    if refunded is None:
        raise _state_error(escrow_id, source=Escrow.Status.FUNDED, target=Escrow.Status.REFUNDED)
    return refunded


def escrow_cancel(*, escrow_id: int, escrow: Escrow | None = None) -> Escrow:
    """pending → cancelled: nothing was held, nothing moves."""
    payment = (
        escrow.payment
        if escrow is not None and escrow.pk == escrow_id
        else Escrow.objects.values_list("payment", flat=True).get(pk=escrow_id)
    )
    cancelled = _transition(
        escrow_id,
        source=Escrow.Status.PENDING,
        target=Escrow.Status.CANCELLED,
        payment=payment,
        escrow=escrow,
    )
    if cancelled is None:
        raise _state_error(escrow_id, source=Escrow.Status.PENDING, target=Escrow.Status.CANCELLED)
    return cancelled


def escrow_complete(*, escrow_id: int, cost: int, fee: int, escrow: Escrow | None = None) -> Escrow:
    """pending → completed for a channel-paid task: the channel redemption is the payment."""
    validate_amount(cost, allow_zero=True)
    validate_amount(fee, allow_zero=True)
    completed = _transition(
        escrow_id,
        source=Escrow.Status.PENDING,
        target=Escrow.Status.COMPLETED,
        payment="channel",
        escrow=escrow,
        cost=cost,
        fee=fee,
        refund=0,
    )
    if completed is None:
        raise _state_error(escrow_id, source=Escrow.Status.PENDING, target=Escrow.Status.COMPLETED)
    return completed
