"""The ledger audit's checks of disputes (see escrow/audit.py): what each refunded dispute
moved, and every disputed task's money.

What a refunded dispute moved. A refund either comes from the ledger (the task's held share
and fee, in dispute refund lines) or, while the task's channel has not settled, off the
channel's redeemed amount and fees. The channel keeps no history of what it redeemed, but
the channel check ties its redeemed amount to its completed escrows' costs, and such a refund
zeroes the task's escrow's cost and fee: the channel's redeemed went down by exactly the cost
the task settled at, which the task keeps. So each refunded dispute must have refunded the
task's cost, and either its refund lines moved exactly that, or it has none and its escrow,
on a channel, counts nothing in the channel any more.

For every task a dispute touched, the task's ledger lines — its escrow's hold, payout,
fee and refund, and any dispute refund — are summed by party in one grouped query:

    requester's net loss = owner's net gain + the platform's net fee = what the task cost

to the µCR, where what it cost is the escrow's cost less what a refunded dispute gave back
from the ledger (a channel task's cost is part of its channel's legs, so only its dispute
refund is counted). No line of the task may leave money anywhere else: the escrow account
nets to zero, and no other account is touched.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from escrow.earning_models import Dispute, Earning
from escrow.models import Account, Escrow, Transfer

REQUESTER, OWNER, PLATFORM, ESCROW, OTHER = "requester", "owner", "platform", "escrow", "other"


def _party(account_id: int, kind: str, *, requester: Any, owner: Any) -> str:
    if account_id == requester:
        return REQUESTER
    if account_id == owner or kind == Account.Kind.EARNINGS:
        return OWNER  # the owner's share waits in the earnings account, by task
    if kind == Account.Kind.PLATFORM_FEES:
        return PLATFORM
    if kind == Account.Kind.ESCROW:
        return ESCROW
    return OTHER


REFUND_KINDS = (Transfer.Kind.DISPUTE_REFUND, Transfer.Kind.DISPUTE_FEE_REFUND)


def dispute_refund_problems() -> list[str]:
    """Each refunded dispute moved exactly its `refunded`, the task's cost (see above).

    One query, the check in its WHERE: only the disputes that fail it are read.
    """
    lines = (
        Transfer.objects.filter(task_id=OuterRef("task_id"), kind__in=REFUND_KINDS)
        .values("task_id")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    unknown = Value(-1)  # no task cost or no escrow: never equal to an amount
    disputes = Dispute.objects.filter(status__in=Dispute.REFUNDING).annotate(
        moved=Coalesce(Subquery(lines), 0),
        cost=Coalesce(F("task__cost"), unknown),
        channel=F("task__escrow__channel_id"),
        escrow_cost=Coalesce(F("task__escrow__cost"), unknown),
        escrow_fee=Coalesce(F("task__escrow__fee"), unknown),
    )
    from_ledger = Q(moved__gt=0, moved=F("refunded"))
    off_channel = Q(moved=0, channel__isnull=False, escrow_cost=0, escrow_fee=0)
    wrong = disputes.exclude(Q(refunded=F("cost")) & (from_ledger | off_channel)).order_by("pk")
    problems = []
    for row in wrong.values(
        "pk", "status", "refunded", "cost", "moved", "channel", "escrow_cost", "escrow_fee"
    ):
        problem = (
            f"dispute {row['pk']} ({row['status']}) refunded {row['refunded']} µCR of a task "
            f"that cost {row['cost']} µCR; its refund lines moved {row['moved']} µCR"
        )
        if row["channel"] is not None and not row["moved"]:
            problem += (
                f", and its escrow on channel {row['channel']} counts {row['escrow_cost']} µCR "
                f"(fee {row['escrow_fee']} µCR) in the channel's redeemed amount"
            )
        problems.append(problem)
    return problems


def dispute_task_problems() -> list[str]:
    disputes = list(Dispute.objects.values_list("task_id", "requester_id", "owner_id"))
    if not disputes:
        return []
    parties = {task: (requester, owner) for task, requester, owner in disputes}
    disputed = Dispute.objects.values("task_id")  # a subquery, not a list of ids
    users = {user for pair in parties.values() for user in pair}
    wallets = dict(
        Account.objects.filter(kind=Account.Kind.WALLET, user_id__in=users).values_list(
            "user_id", "pk"
        )
    )
    flows: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in (
        Transfer.objects.filter(task_id__in=disputed)
        .values(
            "task", "debit_account", "debit_account__kind", "credit_account", "credit_account__kind"
        )
        .annotate(total=Sum("amount"))
    ):
        if row["task"] not in parties:
            continue  # disputed since the first read (only outside the audit's snapshot)
        requester, owner = (wallets.get(user) for user in parties[row["task"]])
        flow = flows[row["task"]]
        debit = _party(
            row["debit_account"], row["debit_account__kind"], requester=requester, owner=owner
        )
        credit = _party(
            row["credit_account"], row["credit_account__kind"], requester=requester, owner=owner
        )
        flow[debit] -= row["total"]
        flow[credit] += row["total"]
    escrows: dict[Any, dict[str, Any]] = {
        row["task_id"]: dict(row)
        for row in Escrow.objects.filter(task_id__in=disputed).values(
            "task_id", "channel_id", "status", "cost"
        )
    }
    refunded = dict(
        Earning.objects.filter(task_id__in=disputed, status=Earning.Status.REFUNDED)
        .values_list("task_id")
        .annotate(total=Sum("amount") + Sum("fee"))
    )
    problems: list[str] = []
    for task_id in parties:
        escrow = escrows.get(task_id) or {}
        back = refunded.get(task_id, 0)
        cost = -back if escrow.get("channel_id") else (escrow.get("cost") or 0) - back
        flow = flows.get(task_id, {})
        loss = -flow.get(REQUESTER, 0)
        gain, fee = flow.get(OWNER, 0), flow.get(PLATFORM, 0)
        stray = {party: flow.get(party, 0) for party in (ESCROW, OTHER) if flow.get(party)}
        if not loss == gain + fee == cost or stray:
            problems.append(
                f"task {task_id}: the requester lost {loss} µCR, the owner gained {gain} µCR "
                f"and the platform {fee} µCR, and {stray or 'nothing'} went elsewhere; "
                f"it cost {cost} µCR after disputes"
            )
    return problems
