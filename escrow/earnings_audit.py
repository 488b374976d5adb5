"""The ledger audit's checks of held earnings and disputes (see escrow/audit.py)."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Exists, OuterRef, Sum

from escrow.dispute_audit import dispute_refund_problems, dispute_task_problems
from escrow.earning_models import Earning
from escrow.evaluation_audit import evaluation_problems
from escrow.models import Account, Escrow, Transfer
from escrow.system_accounts import system_balance

# Mismatched earnings listed by name in the report; beyond this, only counted.
LISTED = 10

Kind = Transfer.Kind
# What gives a refunded earning back: a dispute's refund, or an evaluator's rejection's.
REFUND_KINDS = (
    Kind.DISPUTE_REFUND,
    Kind.DISPUTE_FEE_REFUND,
    Kind.EVALUATION_REFUND,
    Kind.EVALUATION_FEE_REFUND,
)


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
    # Refunded by a dispute, or by an evaluator's rejection (SPEC §21).
    refunded_out = flows["out", Kind.DISPUTE_REFUND] + flows["out", Kind.EVALUATION_REFUND]
    if refunded_out != by_status.get(Earning.Status.REFUNDED, 0):
        problems.append(
            f"{refunded_out} µCR of held earnings were refunded but "
            f"refunded earnings total {by_status.get(Earning.Status.REFUNDED, 0)} µCR"
        )
    problems.extend(_earning_fees())
    problems.extend(_dispute_refunds())
    problems.extend(dispute_refund_problems())
    problems.extend(dispute_task_problems())
    problems.extend(evaluation_problems())
    return problems


def _earning_fees() -> list[str]:
    """Every earning, whatever became of it, holds its escrow's share and fee: a dispute
    refunds the earning's fee, so a fee that is not the escrow's refunds the wrong amount.

    One anti-join finds the earnings without a matching escrow (no join through tasks);
    only those are read back with their escrow's figures.
    """
    matching = Escrow.objects.filter(
        task_id=OuterRef("task_id"),
        fee=OuterRef("fee"),
        cost=OuterRef("amount") + OuterRef("fee"),
    )
    wrong = list(
        Earning.objects.filter(~Exists(matching))
        .order_by("pk")
        .values_list("pk", "task_id", "status", "amount", "fee")[: LISTED + 1]
    )
    if not wrong:
        return []
    tasks = [task for _, task, _, _, _ in wrong]
    escrows = {
        task: (cost, fee)
        for task, cost, fee in Escrow.objects.filter(task_id__in=tasks).values_list(
            "task_id", "cost", "fee"
        )
    }
    problems = []
    for pk, task, status, amount, fee in wrong[:LISTED]:
        cost, escrow_fee = escrows.get(task, (None, None))
        share = None if cost is None or escrow_fee is None else cost - escrow_fee
        problems.append(
            f"earning {pk} ({status}) of task {task} holds a share of {amount} µCR and a fee "
            f"of {fee} µCR; its escrow's cost − fee and fee are {share} µCR and {escrow_fee} µCR"
        )
    if len(wrong) > LISTED:
        problems.append("and more earnings whose share or fee is not their escrow's")
    return problems


def _dispute_refunds() -> list[str]:
    """Per task: the dispute refund lines gave back exactly the refunded earnings' share and
    fee; nothing else did. (That each refunded dispute moved its `refunded`, from the ledger
    or off its channel, is escrow.dispute_audit's.)"""
    problems: list[str] = []
    moved: dict[object, int] = defaultdict(int)
    for row in (
        Transfer.objects.filter(kind__in=REFUND_KINDS).values("task").annotate(total=Sum("amount"))
    ):
        moved[row["task"]] = row["total"]
    refunded = Earning.objects.filter(status=Earning.Status.REFUNDED)
    rows = refunded.values_list("task", "amount", "fee")
    owed = {task: amount + fee for task, amount, fee in rows}
    if dict(moved) != {task: total for task, total in owed.items() if total}:
        problems.append(f"dispute refunds by task {dict(moved)} but refunded earnings {owed}")
    return problems
