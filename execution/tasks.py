"""django-q2 entry points: take ids, call a service."""

from __future__ import annotations

from escrow.channels import channels_settle_due
from escrow.earnings import earnings_release_due
from execution.services import task_execute, tasks_recover
from marketplace.disputes import disputes_resolve_overdue
from marketplace.withdrawals import funding_recover


def run_task(task_id: str) -> str:
    return task_execute(task_id=task_id)


def recover() -> dict[str, int]:
    return tasks_recover()


def settle_channels() -> dict[str, int]:
    return channels_settle_due()


def recover_funding() -> dict[str, int]:
    return funding_recover()


def sweep_earnings() -> dict[str, int]:
    # Overdue disputes first: one unanswered by its deadline is refunded, not released.
    accepted = disputes_resolve_overdue()
    return {"released": earnings_release_due(), "disputes_accepted": accepted}
