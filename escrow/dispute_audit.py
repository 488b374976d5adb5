"""The ledger audit's per-task check of disputed tasks (see escrow/audit.py).

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

from django.db.models import Sum

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
