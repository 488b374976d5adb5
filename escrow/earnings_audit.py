"""The ledger audit's checks of held earnings and disputes (see escrow/audit.py)."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Sum

from escrow.dispute_audit import dispute_task_problems
from escrow.earning_models import Dispute, Earning
from escrow.models import Account, Transfer
from escrow.services import system_balance

Kind = Transfer.Kind


def earnings_problems() -> list[str]:
    """Held earnings = the earnings account; what went in came out by release or refund;
    every refunded dispute gave back exactly its task's share and fee; every disputed task's
    money adds up across settlement and dispute (escrow.dispute_audit)."""
    problems: list[str] = []
    balance = system_balance(Account.Kind.EARNINGS)
    by_status = {
        row["status"]: row["total"] or 0
        for row in Earning.objects.values("status").annotate(total=Sum("amount"))
    }
    unreleased = sum(by_status.get(status, 0) for status in Earning.UNRELEASED)
    if balance != unreleased:
        problems.append(
            f"the earnings account holds {balance} µCR but held earnings total {unreleased} µCR"
        )
    earnings_id = Account.objects.filter(kind=Account.Kind.EARNINGS).values_list("pk", flat=True)
    flows: dict[tuple[str, str], int] = defaultdict(int)
    for row in (
        Transfer.objects.filter(debit_account__in=earnings_id)
        .values("kind")
        .annotate(total=Sum("amount"))
    ):
        flows["out", row["kind"]] = row["total"]
    for row in (
        Transfer.objects.filter(credit_account__in=earnings_id)
        .values("kind")
        .annotate(total=Sum("amount"))
    ):
        flows["in", row["kind"]] = row["total"]
    held_in = flows["in", Kind.ESCROW_PAYOUT] + flows["in", Kind.CHANNEL_PAYOUT]
    if held_in != sum(by_status.values()):
        problems.append(f"{held_in} µCR of payouts were held but earnings total {by_status}")
    if flows["out", Kind.EARNINGS_RELEASE] != by_status.get(Earning.Status.RELEASED, 0):
        problems.append(
            f"{flows['out', Kind.EARNINGS_RELEASE]} µCR were released but released earnings "
            f"total {by_status.get(Earning.Status.RELEASED, 0)} µCR"
        )
    if flows["out", Kind.DISPUTE_REFUND] != by_status.get(Earning.Status.REFUNDED, 0):
        problems.append(
            f"{flows['out', Kind.DISPUTE_REFUND]} µCR of held earnings were refunded but "
            f"refunded earnings total {by_status.get(Earning.Status.REFUNDED, 0)} µCR"
        )
    problems.extend(_dispute_refunds())
    problems.extend(dispute_task_problems())
    return problems


def _dispute_refunds() -> list[str]:
    """Per task: a refunded dispute gave back its earning's share and fee from the ledger
    (or, on a channel not yet settled, lowered the channel instead); nothing else did."""
    problems: list[str] = []
    moved: dict[object, int] = defaultdict(int)
    for row in (
        Transfer.objects.filter(kind__in=[Kind.DISPUTE_REFUND, Kind.DISPUTE_FEE_REFUND])
        .values("task")
        .annotate(total=Sum("amount"))
    ):
        moved[row["task"]] = row["total"]
    refunded = Earning.objects.filter(status=Earning.Status.REFUNDED)
    rows = refunded.values_list("task", "amount", "fee")
    owed = {task: amount + fee for task, amount, fee in rows}
    if dict(moved) != {task: total for task, total in owed.items() if total}:
        problems.append(f"dispute refunds by task {dict(moved)} but refunded earnings {owed}")
    for dispute in Dispute.objects.filter(status__in=Dispute.REFUNDING):
        expected = owed.get(dispute.task_id)
        if expected is not None and dispute.refunded != expected:
            problems.append(
                f"dispute {dispute.pk} refunded {dispute.refunded} µCR; its task's earning and "
                f"fee were {expected} µCR"
            )
    return problems
