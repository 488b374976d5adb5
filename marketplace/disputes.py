"""Dispute flows: who may do what, and the signed receipt every resolution writes.

The money moves in `escrow.disputes`; this module checks the caller (only the task's
requester opens, only the agent's owner answers, operators decide contested ones) and
signs a `dispute_refund` (or `dispute_rejection`) receipt that names the task's receipt
by its signature, in the same transaction as the money.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from escrow import disputes as money
from escrow.earning_models import Dispute
from escrow.errors import DomainError
from execution.engine.receipts import receipt_sign
from marketplace.dispute_keys import dispute_key_give_back, dispute_key_lock
from marketplace.evaluators import evaluation_dispute_scored
from marketplace.exceptions import TaskNotFound
from marketplace.models import Evaluation, Task
from marketplace.queues import service_send
from marketplace.webhooks.outbox import webhook_event_record
from reputation.disputes import reputation_apply_dispute

DISPUTE_OPENED = "dispute.opened"
DISPUTE_RESOLVED = "dispute.resolved"
# The worker's replay of the task's receipt (execution may not be imported from here).
REPLAY = "execution.dispute_evidence.dispute_replay"

log = logging.getLogger(__name__)


def dispute_replay_enqueue(dispute_id: int) -> None:
    service_send(REPLAY, dispute_id, task_name=f"dispute {dispute_id} replay")


class DisputeNotFound(DomainError):
    code = "not_found"
    status = 404
    default_message = "No such dispute."


def _report(dispute: Dispute, type: str) -> None:
    """Record the webhook event in the caller's transaction. `dispute.opened` goes to the
    agent's owner (who has to answer; the requester opened it and got the answer in the
    response); `dispute.resolved` goes to both parties, whose money it decides."""
    users = [dispute.owner_id]
    if type == DISPUTE_RESOLVED and dispute.requester_id != dispute.owner_id:
        users.append(dispute.requester_id)
    for owner_id in users:
        webhook_event_record(owner_id=owner_id, type=type, object_id=str(dispute.pk))


@transaction.atomic(durable=True)
def dispute_file(*, task_id: Any, user: Any, reason: str) -> Dispute:
    """The requester disputes a succeeded task; 404 for anybody else."""
    task = Task.objects.select_related("agent").filter(pk=task_id, requester=user).first()
    if task is None:
        raise TaskNotFound()
    if task.status != Task.Status.SUCCEEDED:
        raise money.DisputeWindowClosed("Only a succeeded task that cost something is disputed.")
    if Evaluation.objects.filter(task_id=task.pk, status=Evaluation.Status.RUNNING).exists():
        raise money.DisputeWindowClosed(
            "The task's evaluator has not given its verdict yet: its earnings are not held "
            "for a dispute until then."
        )
    dispute = money.dispute_open(
        task_id=task.pk, requester_id=user.pk, owner_id=task.agent.owner_id, reason=reason
    )
    receipt = getattr(task, "receipt", None)
    now = timezone.now()
    if receipt is not None:  # the platform's own evidence; a worker replays it after commit
        Dispute.objects.filter(pk=dispute.pk).update(
            evidence={"receipt": receipt.as_dict()}, replay_enqueued_at=now
        )
        transaction.on_commit(lambda: dispute_replay_enqueue(dispute.pk))
    else:
        Dispute.objects.filter(pk=dispute.pk).update(
            replay_status=Dispute.Replay.UNAVAILABLE,
            replayed_at=now,
            replay_detail="the task has no receipt to replay",
        )
    dispute.refresh_from_db()
    _report(dispute, DISPUTE_OPENED)
    return dispute


def _owned(dispute_id: int, user: Any) -> Dispute:
    dispute = Dispute.objects.filter(pk=dispute_id, owner=user).first()
    if dispute is None:
        raise DisputeNotFound()
    return dispute


def _sign(dispute: Dispute, kind: str) -> Dispute:
    task_receipt = (dispute.evidence or {}).get("receipt") or {}
    signed = receipt_sign(
        {
            "kind": kind,
            "dispute_id": dispute.pk,
            "task_id": str(dispute.task_id),
            "task_receipt_signature": task_receipt.get("signature"),
            "status": dispute.status,
            "refunded": dispute.refunded,
            "resolution": dispute.resolution,
            "resolved_at": dispute.resolved_at.isoformat() if dispute.resolved_at else None,
        }
    )
    evidence = {**(dispute.evidence or {}), "resolution_receipt": signed}
    Dispute.objects.filter(pk=dispute.pk).update(evidence=evidence)
    dispute.evidence = evidence
    return dispute


def _resolved(dispute: Dispute, kind: str) -> Dispute:
    """Every resolution: its signed receipt and its `dispute.resolved` event."""
    dispute = _sign(dispute, kind)
    _report(dispute, DISPUTE_RESOLVED)
    return dispute


def _score(dispute: Dispute) -> None:
    """A refund costs the agent like its own failure (reputation.disputes), and the
    evaluator that accepted the task, if one did, its verdict (marketplace.evaluators)."""
    agent_id = Task.objects.values_list("agent_id", flat=True).get(pk=dispute.task_id)
    reputation_apply_dispute(
        agent_id=agent_id,
        dispute_id=dispute.pk,
        requester_id=dispute.requester_id,
        owner_id=dispute.owner_id,
    )
    evaluation_dispute_scored(
        task_id=dispute.task_id, requester_id=dispute.requester_id, upheld=False
    )


def _refund(
    *,
    dispute_id: int,
    status: str,
    resolution: str,
    from_statuses: tuple[str, ...] = Dispute.PENDING,
) -> Dispute:
    """Every refund, in the caller's transaction and the lock order: the API key that paid
    for the task (if one did), then the channel and the dispute, the agent's reputation,
    the earning and the accounts; the key gets the refunded cost back, once, as the dispute
    is won once (from `from_statuses` only)."""
    task_id = Dispute.objects.values_list("task_id", flat=True).get(pk=dispute_id)
    charge = dispute_key_lock(task_id=task_id)
    dispute = money.dispute_refund(
        dispute_id=dispute_id,
        status=status,
        resolution=resolution,
        on_refund=_score,
        from_statuses=from_statuses,
    )
    if charge is not None:
        dispute_key_give_back(charge, task_id=task_id, refunded=dispute.refunded)
    return _resolved(dispute, "dispute_refund")


@transaction.atomic(durable=True)
def dispute_accept(*, dispute_id: int, user: Any) -> Dispute:
    """The owner accepts: the task's whole cost goes back to the requester."""
    _owned(dispute_id, user)
    return _refund(
        dispute_id=dispute_id, status=Dispute.Status.ACCEPTED, resolution="accepted by the owner"
    )


def dispute_contest(*, dispute_id: int, user: Any, statement: str) -> Dispute:
    _owned(dispute_id, user)
    return money.dispute_contest(dispute_id=dispute_id, statement=statement)


@transaction.atomic(durable=True)
def dispute_decide(*, dispute_id: int, refund: bool, operator: str) -> Dispute:
    """An operator decides a contested dispute: refund, or reject."""
    if refund:
        return _refund(
            dispute_id=dispute_id,
            status=Dispute.Status.REFUNDED,
            resolution=f"refunded by operator {operator}",
        )
    dispute = money.dispute_reject(dispute_id=dispute_id, resolution=f"rejected by {operator}")
    evaluation_dispute_scored(
        task_id=dispute.task_id, requester_id=dispute.requester_id, upheld=True
    )
    return _resolved(dispute, "dispute_rejection")


def disputes_accept_overdue(*, now: Any = None) -> dict[str, int]:
    """Scheduled: an open dispute unanswered by its respond_by counts as accepted.

    Each dispute is refunded in its own transaction, and only if it is still open when its
    refund wins the row: one contested (or decided) since the list was read is left alone.
    One that fails for any other reason is rolled back, logged, counted in `failed` and
    tried again next run; it never holds back the others, nor the earnings sweep after it.
    """
    now = now or timezone.now()
    counts = {"accepted": 0, "failed": 0}
    overdue = Dispute.objects.filter(status=Dispute.Status.OPEN, respond_by__lte=now)
    for dispute_id in overdue.values_list("pk", flat=True):
        try:
            with transaction.atomic(durable=True):
                _refund(
                    dispute_id=dispute_id,
                    status=Dispute.Status.ACCEPTED,
                    resolution="unanswered by the owner: accepted",
                    from_statuses=(Dispute.Status.OPEN,),
                )
        except money.DisputeAnswered:
            continue  # answered in the meantime: nothing to do
        except Exception:  # whatever broke this dispute must not hold the others back
            log.exception("dispute %s could not be accepted at its deadline", dispute_id)
            counts["failed"] += 1
            continue
        counts["accepted"] += 1
    return counts


def disputes_resolve_overdue(*, now: Any = None) -> int:
    """How many overdue disputes were accepted (`disputes_accept_overdue`, failures logged)."""
    return disputes_accept_overdue(now=now)["accepted"]


def disputes_of(user: Any) -> QuerySet[Dispute]:
    """The disputes where the user is the requester or the owner, newest first."""
    return Dispute.objects.filter(Q(requester=user) | Q(owner=user)).order_by("-opened_at", "-id")
