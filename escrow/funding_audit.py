"""The ledger audit's checks of deposits and withdrawals (called by `escrow.audit`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Sum

from escrow.models import Account, Transfer
from escrow.payout_models import Deposit, Withdrawal
from escrow.system_accounts import system_balance

Kind = Transfer.Kind
SETTLEMENT: dict[str, str] = {
    Withdrawal.Status.PAID: Kind.WITHDRAWAL_PAYOUT,
    Withdrawal.Status.FAILED: Kind.WITHDRAWAL_RETURN,
    Withdrawal.Status.CANCELLED: Kind.WITHDRAWAL_RETURN,
}


def funding_problems() -> list[str]:
    """payouts account = withdrawals in flight; each withdrawal's transfers match its state
    (one hold; one payout when paid, one return when failed or cancelled, none before);
    each completed deposit has its transfer, and no other deposit has one."""
    problems: list[str] = []
    # The system accounts are sharded: a leg is checked against the kind it moved through.
    system = dict(Account.objects.exclude(kind=Account.Kind.WALLET).values_list("pk", "kind"))
    payouts_id, external_id = Account.Kind.PAYOUTS, Account.Kind.EXTERNAL
    balance = system_balance(Account.Kind.PAYOUTS)
    in_flight = (
        Withdrawal.objects.filter(status__in=Withdrawal.IN_FLIGHT).aggregate(s=Sum("amount"))["s"]
        or 0
    )
    if balance != in_flight:
        problems.append(
            f"the payouts account holds {balance} µCR but withdrawals in flight total "
            f"{in_flight} µCR"
        )
    wallets = dict(Account.objects.filter(kind=Account.Kind.WALLET).values_list("user_id", "pk"))
    legs: dict[int, list[tuple[str, Any, Any, int]]] = defaultdict(list)
    kinds = (Kind.WITHDRAWAL, Kind.WITHDRAWAL_PAYOUT, Kind.WITHDRAWAL_RETURN)
    for key, kind, debit, credit, amount in Transfer.objects.filter(kind__in=kinds).values_list(
        "idempotency_key", "kind", "debit_account", "credit_account", "amount"
    ):
        withdrawal_id = int((key or "withdrawal:0:").split(":")[1])
        legs[withdrawal_id].append(
            (kind, system.get(debit, debit), system.get(credit, credit), amount)
        )
    for w in Withdrawal.objects.all().only("pk", "user_id", "status", "amount"):
        wallet = wallets.get(w.user_id)
        want: list[tuple[str, Any, Any, int]] = [(Kind.WITHDRAWAL, wallet, payouts_id, w.amount)]
        if w.status in SETTLEMENT:
            target = external_id if w.status == Withdrawal.Status.PAID else wallet
            want.append((SETTLEMENT[w.status], payouts_id, target, w.amount))
        if sorted(legs.pop(w.pk, []), key=str) != sorted(want, key=str):
            problems.append(f"withdrawal {w.pk} ({w.status}) has transfers {legs.get(w.pk)}")
    for orphan in legs:
        problems.append(f"withdrawal transfers name withdrawal {orphan}, which does not exist")
    completed = Deposit.objects.filter(status=Deposit.Status.COMPLETED)
    for deposit in completed.select_related("transfer"):
        transfer = deposit.transfer
        if (
            transfer is None
            or transfer.kind != Kind.DEPOSIT
            or transfer.amount != deposit.amount
            or transfer.credit_account_id != wallets.get(deposit.user_id)
        ):
            problems.append(f"deposit {deposit.pk} is completed without its transfer")
    unfinished = Deposit.objects.exclude(status=Deposit.Status.COMPLETED).exclude(transfer=None)
    for deposit_id in unfinished.values_list("pk", flat=True):
        problems.append(f"deposit {deposit_id} has a transfer but is not completed")
    return problems
