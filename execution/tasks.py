"""django-q2 entry points: take ids, call a service."""

from __future__ import annotations

from escrow.channels import channels_settle_due
from escrow.earnings import earnings_release_due
from escrow.reconcile import funding_reconcile_recent
from execution.services import task_execute, tasks_recover
from marketplace.disputes import disputes_accept_overdue
from marketplace.schedule_lock import once_across_hosts
from marketplace.withdrawals import funding_recover


def run_task(task_id: str) -> str:
    # Messages are interchangeable: each runs the task the fair share picks now, which may
    # be another than the one it was sent for (marketplace/fair_share.py).
    return task_execute()


@once_across_hosts("task recovery")
def recover() -> dict[str, int]:
    return tasks_recover()


@once_across_hosts("channel expiry")
def settle_channels() -> dict[str, int]:
    return channels_settle_due()


@once_across_hosts("funding recovery")
def recover_funding() -> dict[str, int]:
    return funding_recover()


@once_across_hosts("earnings sweep")
def sweep_earnings() -> dict[str, int]:
    # Overdue disputes first: one unanswered by its deadline is refunded, not released.
    # Each is settled on its own, and one that fails is only counted: the release below
    # runs whatever became of the disputes (a frozen earning is never released anyway).
    disputes = disputes_accept_overdue()
    result = {"released": earnings_release_due(), "disputes_accepted": disputes["accepted"]}
    if disputes["failed"]:  # a healthy run reports just the two counts
        result["disputes_failed"] = disputes["failed"]
    return result


@once_across_hosts("funding reconciliation")
def reconcile_funding() -> dict[str, int]:
    return funding_reconcile_recent()
