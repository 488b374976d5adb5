"""The ledger audit's checks of evaluated tasks (SPEC §21; see escrow/earnings_audit.py).

An evaluated task's settlement refunds what its budget left and, in the same transaction,
holds it again in the escrow of its evaluator's run (a task whose `evaluates` names it); a
channel-paid task's settlement completes its escrow and draws the rest from the channel
instead (escrow.channel_evaluation; the channel check in escrow.audit ties the draws to the
channel). So on every path:
- the run's escrow holds exactly what the task's escrow refunded (on a channel: the task's
  budget less its cost);
- once the run is settled, the budget = the task's cost + the run's cost + the run's refund;
- the verdict copied the run's cost and refund;
- an earning waits (`evaluating`) only while its evaluation runs; a rejection refunded it.
The models are named by lookups, not imported: this app imports no other.
"""

from __future__ import annotations

from django.db.models import F, Q

from escrow.earning_models import Earning
from escrow.models import Escrow

LISTED = 10
SETTLED = (Escrow.Status.RELEASED, Escrow.Status.REFUNDED)


def evaluation_problems() -> list[str]:
    problems: list[str] = []
    runs = Escrow.objects.filter(task__evaluates__isnull=False)
    parent = "task__evaluates__escrow__"
    rest_held = Q(amount=F(f"{parent}refund"), **{f"{parent}status": Escrow.Status.RELEASED})
    # A channel task's escrow completes with no refund, and a rejection zeroes its cost.
    evaluated, on_channel = "task__evaluates__", {f"{parent}status": Escrow.Status.COMPLETED}
    rest_held |= Q(amount=F(f"{evaluated}budget") - F(f"{evaluated}cost"), **on_channel)
    for row in runs.exclude(rest_held).values("task_id", "amount", f"{parent}refund")[:LISTED]:
        problems.append(
            f"evaluator run {row['task_id']} holds {row['amount']} µCR, but the task it "
            f"evaluates refunded {row[f'{parent}refund']} µCR"
        )
    settled = runs.filter(status__in=SETTLED)
    adds_up = Q(**{f"{parent}amount": F(f"{parent}cost") + F("cost") + F("refund")})
    adds_up |= Q(
        **{f"{evaluated}budget": F(f"{evaluated}cost") + F("cost") + F("refund")}, **on_channel
    )
    for row in settled.exclude(adds_up).values("task_id", "cost", "refund")[:LISTED]:
        problems.append(
            f"evaluator run {row['task_id']}: the evaluated task's budget is not its cost + "
            f"the run's cost ({row['cost']} µCR) + the run's refund ({row['refund']} µCR)"
        )
    decided = settled.filter(task__evaluates__evaluation__status="decided")
    copied = Q(
        task__evaluates__evaluation__cost=F("cost"), task__evaluates__evaluation__refund=F("refund")
    )
    for task_id in decided.exclude(copied).values_list("task__evaluates", flat=True)[:LISTED]:
        problems.append(f"the verdict on task {task_id} does not copy its run's cost and refund")
    waiting = Earning.objects.filter(status=Earning.Status.EVALUATING).exclude(
        task__evaluation__status="running"
    )
    for task_id in waiting.values_list("task_id", flat=True)[:LISTED]:
        problems.append(f"task {task_id}'s earning waits for a verdict that is not running")
    rejected = Earning.objects.filter(task__evaluation__verdict="reject").exclude(
        status=Earning.Status.REFUNDED
    )
    for task_id in rejected.values_list("task_id", flat=True)[:LISTED]:
        problems.append(f"task {task_id} was rejected but its earning was not refunded")
    # A rejected channel task's cost came off its channel: its escrow counts nothing there.
    kept = Escrow.objects.filter(
        channel__isnull=False, task__evaluation__verdict="reject", cost__gt=0
    )
    for task_id in kept.values_list("task_id", flat=True)[:LISTED]:
        problems.append(f"task {task_id} was rejected but its channel still counts its cost")
    return problems
