"""The economic executor: claim → validate → run (outside any transaction) → settle (one).

Each step is guarded so that delivery can be at-least-once: the claim is a compare-and-set
on the task row, and settlement only happens for the (task, attempt) that holds the claim.
A second delivery, a stale attempt or a concurrent worker finds nothing to do.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from escrow.models import Escrow, Voucher
from execution.claiming import task_claim_returning
from execution.engine import outputs, sandbox
from execution.evaluation import evaluation_decide, evaluations_recover
from execution.metrics import recovery_record
from execution.runs import Execution, affordable_fuel
from execution.settlement import task_settle
from marketplace.binaries import binary_read
from marketplace.contracts import output_schema_of
from marketplace.errors import TaskStateConflict
from marketplace.models import Agent, Task
from marketplace.queues import broker_for
from marketplace.services import task_cancel, task_enqueue
from reputation.models import AgentReputation

log = logging.getLogger(__name__)
Reason = Task.FailureReason


# --- claim and checks ----------------------------------------------------------------------


def task_claim(*, task_id: Any = None) -> tuple[Task, int] | None:
    """queued → running with a lease. Returns the task and the attempt this caller holds.

    `task_id=None` claims the fairest queued task: the one the fair share between requesters
    picks (marketplace/fair_share.py), which is what a worker's message asks for.

    On PostgreSQL one conditional UPDATE … RETURNING (the task as claimed, its agent and
    binary); elsewhere a read, then the compare-and-set."""
    if connection.vendor == "postgresql":
        return task_claim_returning(
            task_id, now=timezone.now(), margin_seconds=settings.LEASE_MARGIN_SECONDS
        )
    if task_id is None:
        # One worker on the embedded default: another claim taking the head first is rare;
        # try the next one then.
        for _ in range(3):
            head = fairest_queued().values_list("pk", flat=True).first()
            if head is None:
                return None
            claim = task_claim(task_id=head)
            if claim is not None:
                return claim
        return None
    task = Task.objects.filter(pk=task_id).select_related("agent", "binary").first()
    if task is None or task.status != Task.Status.QUEUED:
        return None
    now = timezone.now()
    lease = now + timedelta(milliseconds=task.timeout_ms, seconds=settings.LEASE_MARGIN_SECONDS)
    won = Task.objects.filter(pk=task.pk, status=Task.Status.QUEUED, attempts=task.attempts).update(
        status=Task.Status.RUNNING,
        attempts=F("attempts") + 1,
        lease_expires_at=lease,
        started_at=now,
    )
    if won != 1:
        return None
    # The task as claimed, as PostgreSQL's UPDATE … RETURNING gives it.
    task.status, task.attempts = Task.Status.RUNNING, task.attempts + 1
    task.lease_expires_at, task.started_at = lease, now
    return task, task.attempts


def fairest_queued() -> Any:
    """The queued tasks in the order the workers take them."""
    return Task.objects.filter(status=Task.Status.QUEUED).order_by("fair_tag", "queued_at", "pk")


def task_refusal(task: Task, *, escrow: Escrow | None = None) -> str | None:
    """Why this task must not run, or None when it may. A refusal refunds, no penalty.

    `escrow`: the task's escrow row, when the caller read it already."""
    if escrow is None or escrow.task_id != task.pk:
        escrow = Escrow.objects.filter(task_id=task.pk).first()
    if escrow is None:
        return "the task has no escrow"
    if escrow.channel_id is None and escrow.status != Escrow.Status.FUNDED:
        return "the task's escrow is not funded"
    if escrow.channel_id is not None and (
        escrow.status != Escrow.Status.PENDING
        or not Voucher.objects.filter(task_id=task.pk, channel_id=escrow.channel_id).exists()
    ):
        return "the task holds no voucher on its channel"
    # The agent came with the task (the claim read them together a moment ago).
    if task.agent.status != Agent.Status.ACTIVE:
        return "the agent is suspended"
    score = (
        AgentReputation.objects.filter(agent_id=task.agent_id)
        .values_list("score", flat=True)
        .first()
    )
    if score is None or score < task.min_reputation:
        return (
            f"the agent's reputation ({score}) is below the task's minimum ({task.min_reputation})"
        )
    if task.budget < task.base_fee:
        return "the budget does not cover the base fee"
    if affordable_fuel(task) <= 0:
        return "the budget leaves no fuel to run with"
    return None


def check_output(task: Task, execution: Execution) -> Execution:
    """Quality gate: with an output schema, stdout must be JSON that validates.

    The check runs in the output checker's own process, under what is left of the task's
    timeout (at least `outputs.MIN_CHECK_SECONDS`), so no schema or output can hold the
    worker longer. A check that does not finish in time, or outgrows the checker's memory,
    fails the output like a mismatch would: whose fault that is follows from whose schema
    it was. A schema the checker cannot compile (one stored before submissions were
    checked with it) is nobody's fault here: the task is refunded as not runnable.
    """
    # The requester's own schema, else the contract of the version that ran (SPEC §19).
    schema = output_schema_of(task)
    if not execution.succeeded or not schema:
        return execution
    left_ms = max(task.timeout_ms - execution.elapsed_ms, 0)
    verdict = outputs.check_output(
        schema, execution.stdout, timeout_s=max(left_ms / 1000, outputs.MIN_CHECK_SECONDS)
    )
    if verdict.ok:
        return execution
    if verdict.kind == outputs.SCHEMA_INVALID:
        detail = f"the output schema does not compile: {verdict.message}"
        return replace(execution, reason=Reason.VALIDATION_FAILED, detail=detail)
    if verdict.kind in (outputs.TOO_SLOW, outputs.TOO_BIG):
        detail = f"output not checked against the schema: {verdict.message}"
        return replace(execution, reason=Reason.INVALID_OUTPUT, detail=detail)
    return replace(execution, reason=Reason.INVALID_OUTPUT, detail=verdict.message)


def run_in_sandbox(task: Task, *, fuel: int | None = None) -> Execution:
    fuel = affordable_fuel(task) if fuel is None else fuel
    result = sandbox.run(
        sha256=task.binary.sha256,
        load=lambda: binary_read(task.binary),
        stdin=task.input.encode(),
        limits=sandbox.Limits.for_task(
            fuel=fuel, memory_mb=task.memory_limit_mb, timeout_ms=task.timeout_ms
        ),
        argv=[task.agent.slug],
    )
    return Execution(
        reason=result.failure_reason,
        exit_code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr,
        fuel_used=result.fuel_used,
        fuel_limit=fuel,
        elapsed_ms=result.elapsed_ms,
        detail=result.detail,
    )


# --- the executor ------------------------------------------------------------------------------


def task_execute(*, task_id: Any = None) -> str:
    """Run one task end to end: `task_id`, or the fairest queued task when it is None (what
    a worker's message runs). Returns what happened, for the worker's log."""
    claim = task_claim(task_id=task_id)
    if claim is None:
        return "not queued: nothing to do"
    task, attempt = claim
    if task.deadline_at is not None and task.deadline_at <= timezone.now():
        # Claimed too late (the deadline sweep had not come by yet): it never runs.
        try:
            task_cancel(task=task, reason=Reason.DEADLINE_PASSED, attempt=attempt)
            outcome = f"attempt {attempt}: cancelled, its deadline passed"
        except TaskStateConflict:  # an operator moved it on meanwhile
            outcome = f"attempt {attempt}: past its deadline (stale)"
        return outcome if task_id is not None else f"task {task.pk} {outcome}"
    # Read once: checked before the run, and handed to the settlement after it.
    escrow = Escrow.objects.filter(task_id=task.pk).first()
    refusal = task_refusal(task, escrow=escrow)
    if refusal is not None:
        execution = Execution(reason=Reason.VALIDATION_FAILED, detail=refusal)
    else:
        try:
            execution = check_output(task, run_in_sandbox(task))
        except Exception:
            # Whatever broke is ours, not the agent's: refund and don't score it.
            log.exception("task %s attempt %s: platform error while running", task_id, attempt)
            execution = Execution(
                reason=Reason.PLATFORM_ERROR, detail="the platform failed to run the task"
            )
    settled = task_settle(
        task_id=task.pk, attempt=attempt, execution=execution, task=task, escrow=escrow
    )
    if settled and task.evaluates_id is not None:  # an evaluator's run: its verdict now
        evaluation_decide(run_id=task.pk)
    outcome = f"attempt {attempt}: {execution.reason or 'succeeded'}"
    outcome += "" if settled else " (stale)"
    return outcome if task_id is not None else f"task {task.pk} {outcome}"


# --- recovery ------------------------------------------------------------------------------------


def tasks_recover() -> dict[str, int]:
    """Find tasks a lost worker or a lost message left behind, and move them on.

    Expired leases go back to the queue until MAX_ATTEMPTS, then fail as platform_error
    (full refund, no penalty). Queued tasks nobody picked up are enqueued again; if the
    first message was only late, the duplicate loses the claim and does nothing.
    Each task moves on in its own transaction: one that fails is logged, counted in
    `errors` and left for the next run, and never stops the recovery of the others.
    """
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "resent": 0, "errors": 0}
    expired = Task.objects.filter(status=Task.Status.RUNNING, lease_expires_at__lt=now)
    for task_id, attempts in expired.values_list("pk", "attempts"):
        try:
            if attempts < settings.MAX_ATTEMPTS:
                counts["requeued"] += task_requeue(task_id=task_id)
                continue
            lost = Execution(
                reason=Reason.PLATFORM_ERROR,
                detail=f"the worker was lost {attempts} times; refunded",
            )
            counts["failed"] += task_settle(task_id=task_id, attempt=attempts, execution=lost)
        except Exception:  # whatever broke this task must not hold the others back
            log.exception("recovery could not move task %s on; it is retried next run", task_id)
            counts["errors"] += 1
    stale_before = now - timedelta(seconds=settings.REQUEUE_AFTER_SECONDS)
    stale = Task.objects.filter(status=Task.Status.QUEUED, enqueued_at__lt=stale_before)
    # Messages are interchangeable (each runs the fairest task), so only as many are sent
    # again as are missing: a long backlog whose messages all wait in the broker gets none.
    missing = task_messages_missing()
    resend = stale.order_by("enqueued_at").values_list("pk", "enqueued_at")
    for task_id, enqueued_at in resend[:missing] if missing is not None else resend:
        try:
            with transaction.atomic(durable=True):
                won = Task.objects.filter(
                    pk=task_id, status=Task.Status.QUEUED, enqueued_at=enqueued_at
                ).update(enqueued_at=now)
                if won:
                    task_enqueue(task_id=task_id)
            counts["resent"] += won
        except Exception:
            log.exception("recovery could not resend task %s; it is retried next run", task_id)
            counts["errors"] += 1
    # Verdicts whose worker died after the evaluator's run settled (SPEC §21).
    evaluated = evaluations_recover()
    counts["errors"] += evaluated["errors"]
    recovery_record({**counts, "evaluated": evaluated["decided"]})  # the totals /metrics reports
    return counts


def task_messages_missing() -> int | None:
    """How many queued tasks have no message that could still run them: the queued tasks,
    less the task queue's messages waiting in the broker and those taken but not yet
    running a task (the ORM broker's locked messages, less the running tasks that hold
    one). None when the broker can't be asked (then every stale task is sent again)."""
    try:
        broker = broker_for(settings.TASK_QUEUE)
        waiting = int(broker.queue_size())
        taken = broker.lock_size() if "orm" in settings.Q_CLUSTER else None
    except Exception:
        log.warning("recovery: the broker's queue size is unknown", exc_info=True)
        return None
    counts = dict(
        Task.objects.filter(status__in=[Task.Status.QUEUED, Task.Status.RUNNING])
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    prefetched = max(0, int(taken) - counts.get(Task.Status.RUNNING, 0)) if taken else 0
    return max(0, counts.get(Task.Status.QUEUED, 0) - waiting - prefetched)


# How receipt_replay begins its answer for a receipt that names no run to replay.
NOTHING_TO_REPLAY = "nothing to replay"


def receipt_replay(payload: dict[str, Any]) -> tuple[bool, str]:
    """Rerun the receipt's pinned binary on its task's input with the same fuel limit.

    A verdict's receipt (`kind: "evaluation"`) replays the evaluator's run it names
    (`run_task_id`), not the task it judged; one whose evaluator never ran, and a dispute's
    resolution receipt (a decision, not a run), answer NOTHING_TO_REPLAY."""
    kind, task_id = payload.get("kind"), payload.get("task_id")
    if kind == "evaluation":
        task_id = payload.get("run_task_id")
        if task_id is None:
            return False, f"{NOTHING_TO_REPLAY}: the evaluator never ran ({payload.get('reason')})"
    elif kind is not None:
        return False, f"{NOTHING_TO_REPLAY}: a {kind} receipt records a decision, not a run"
    task = Task.objects.select_related("agent", "binary").filter(pk=str(task_id)).first()
    if task is None:
        return False, "no such task on this platform"
    if hashlib.sha256(task.input.encode()).hexdigest() != payload.get("input_sha256"):
        return False, "the task's input does not match the receipt"
    if task.binary.sha256 != payload.get("binary_sha256"):
        return False, "the task's binary does not match the receipt"
    # A verdict's receipt has no fuel limit: its run got what its budget afforded.
    fuel = payload.get("fuel_limit") or (affordable_fuel(task) if kind else task.fuel_limit)
    rerun = run_in_sandbox(task, fuel=int(fuel))
    output_sha256 = hashlib.sha256(rerun.stdout).hexdigest()
    if output_sha256 != payload.get("output_sha256"):
        return False, f"output hash {output_sha256} differs from {payload.get('output_sha256')}"
    return True, f"output hash {output_sha256}"


# --- operator actions ------------------------------------------------------------------------


def task_requeue(*, task_id: Any) -> bool:
    """Put a stuck task back in the queue: running with an expired lease → queued.

    The same conditional UPDATE as recovery. A worker that is in fact still alive then holds
    a stale attempt, and its settlement finds nothing to settle. False when the task is not
    running or its lease has not expired.
    """
    now = timezone.now()
    with transaction.atomic(durable=True):
        won = Task.objects.filter(
            pk=task_id, status=Task.Status.RUNNING, lease_expires_at__lt=now
        ).update(status=Task.Status.QUEUED, lease_expires_at=None, enqueued_at=now, queued_at=now)
        if won:
            task_enqueue(task_id=task_id)
    return won == 1


def task_refund(*, task_id: Any, detail: str = "refunded by an operator") -> Task:
    """Give up on a stuck task with a full refund and no reputation penalty.

    A queued task is cancelled. A running one fails as platform_error, settled for the
    attempt that holds it, so its worker, if it ever finishes, finds nothing to settle.
    Raises TaskStateConflict for a task that is already final.
    """
    task = Task.objects.get(pk=task_id)
    if task.status == Task.Status.QUEUED:
        try:
            return task_cancel(task=task)
        except TaskStateConflict:
            task.refresh_from_db()  # a worker claimed it in the meantime
    if task.status == Task.Status.RUNNING:
        lost = Execution(reason=Reason.PLATFORM_ERROR, detail=detail)
        if task_settle(task_id=task.pk, attempt=task.attempts, execution=lost):
            return Task.objects.get(pk=task.pk)
        task.refresh_from_db()  # it settled (or moved on) in the meantime
    raise TaskStateConflict(
        f"Only a queued or running task can be refunded; this one is {task.status}."
    )
