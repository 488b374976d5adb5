"""Reads of a user's wallet: its summary, its ledger lines and their running balances."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import BigIntegerField, Case, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce

from escrow.earnings import pending_earnings
from escrow.models import Account, Escrow, PaymentChannel, Transfer


@dataclass(frozen=True)
class WalletSummary:
    balance: int
    held_in_escrow: int
    in_channels: int
    pending_earnings: int = 0  # held for the user's agents' tasks until released
    next_release_at: datetime | None = None

    @property
    def total(self) -> int:
        return self.balance + self.held_in_escrow + self.in_channels


def wallet_of(user: Any) -> Account | None:
    return Account.objects.filter(kind=Account.Kind.WALLET, user=user).first()


def wallet_summary(user: Any) -> WalletSummary:
    # Without a wallet nothing can have been deposited, escrowed or put in a channel.
    account = wallet_of(user)
    if account is None:
        return WalletSummary(0, 0, 0)
    held = Escrow.objects.filter(payer=account, status=Escrow.Status.FUNDED).aggregate(
        held=Sum("amount")
    )["held"]
    pending = pending_earnings(wallet_id=account.pk)
    return WalletSummary(
        account.balance,
        held or 0,
        channels_holding(user),
        pending["pending"],
        pending["next_release_at"],
    )


def account_balance(account_id: int) -> int:
    """An account's balance as stored now (right after a deposit, say)."""
    return Account.objects.values_list("balance", flat=True).get(pk=account_id)


def channels_holding(user: Any) -> int:
    """µCR deposited in the user's channels that have not settled yet (less what was drawn
    to pay evaluators: that is held in their runs' escrows)."""
    held = (
        PaymentChannel.objects.filter(requester=user)
        .exclude(status=PaymentChannel.Status.SETTLED)
        .aggregate(held=Sum(F("deposit") - F("drawn")))["held"]
    )
    return held or 0


@dataclass(frozen=True)
class LedgerLine:
    transfer: Transfer
    amount: int  # signed: + into the wallet, − out of it
    balance_after: int

    @property
    def incoming(self) -> bool:
        return self.amount > 0


def _signed(wallet_id: int) -> Case:
    return Case(
        When(credit_account_id=wallet_id, then=F("amount")),
        default=-F("amount"),
        output_field=BigIntegerField(),
    )


def ledger_of(user: Any, *, kind: str | None = None) -> QuerySet[Transfer]:
    """The user's ledger lines, newest first, each annotated with `signed` (+ in, − out).

    `kind` keeps only the transfers of one `Transfer.Kind`.
    """
    account = wallet_of(user)
    wallet_id = account.pk if account is not None else -1
    lines = (
        Transfer.objects.filter(Q(debit_account_id=wallet_id) | Q(credit_account_id=wallet_id))
        .select_related("task__agent", "channel__agent")
        .annotate(signed=_signed(wallet_id))
        .order_by("-id")
    )
    return lines if kind is None else lines.filter(kind=kind)


def ledger_lines(user: Any, transfers: Iterable[Transfer]) -> list[LedgerLine]:
    """Ledger lines (newest first) with the wallet balance right after each one.

    A wallet starts at zero and changes only through its transfers, so the balance after
    a line is the sum of every line up to it: one aggregate for what came before the page.
    """
    page = list(transfers)
    if not page:
        return []
    account = wallet_of(user)
    assert account is not None
    oldest = page[-1].pk
    before = (
        Transfer.objects.filter(
            Q(debit_account_id=account.pk) | Q(credit_account_id=account.pk), pk__lt=oldest
        )
        .annotate(signed=_signed(account.pk))
        .aggregate(total=Coalesce(Sum("signed"), Value(0)))["total"]
    )
    lines: list[LedgerLine] = []
    running = before
    for transfer in reversed(page):
        running += transfer.signed  # type: ignore[attr-defined]
        lines.append(LedgerLine(transfer, transfer.signed, running))  # type: ignore[attr-defined]
    lines.reverse()
    return lines


def ledger_export(user: Any) -> Iterator[LedgerLine]:
    """Every ledger line, oldest first, with running balances (for the CSV export)."""
    running = 0
    for transfer in ledger_of(user).order_by("id").iterator(chunk_size=500):
        running += transfer.signed  # type: ignore[attr-defined]
        yield LedgerLine(transfer, transfer.signed, running)  # type: ignore[attr-defined]
