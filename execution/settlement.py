"""Settling a run: result, money, reputation and receipt in one short transaction.

Everything that can be is done before the transaction: the cost, what the outcome counts
as, the receipt signed over all of it (format 3: without the reputation delta, which only
the transaction knows). Inside it, each row is written once, in the lock order (tasks,
API keys, channels, escrows, accounts) — except the agent's reputation row, written last:
every settlement of one agent writes it, so its lock is held as briefly as can be.

On PostgreSQL, without an API key, all of it is one statement that is its own
transaction: one round trip (tests/test_round_trips.py holds every path to its budget).
The outcome is scored inside it by the policy's SQL form (reputation.settle_sql), under
the agent's row lock, with nothing read before: settlements of one busy agent queue on
that row and none is ever scored again. A policy without an SQL form, and SQLite, score
in Python under the same lock.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from escrow.channel_evaluation import channel_finish_evaluated
from escrow.channels import channel_finish_task, channel_is_due, channel_settle_if_due
from escrow.models import Escrow
from escrow.services import escrow_cancel, escrow_complete, escrow_refund, escrow_release
from execution.channel_finish import ChannelFinish
from execution.engine.receipts import RECEIPT_VERSION, receipt_sign
from execution.escrow_finish import EscrowFinish
from execution.evaluation import evaluation_open
from execution.result_record import Refused, task_result_record
from execution.runs import Execution, affordable_fuel, cost_for, fee_for
from execution.scoring import task_outcome
from marketplace.apikeys import api_key_give_back
from marketplace.models import Task
from marketplace.quotes import QUOTE_SAMPLES, fuel_sample_record
from marketplace.webhooks.outbox import EventInsert, webhook_event_insert
from reputation.policies import Outcome
from reputation.services import reputation_apply
from reputation.settle_sql import FuelRun, ReputationWrite, reputation_settle, reputation_sql_form

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settlement:
    """What settling a run writes, all of it worked out before the transaction begins."""

    task: Task
    escrow: Escrow
    execution: Execution
    cost: int
    fee: int
    result: dict[str, Any]
    outcome: Outcome
    input_sha256: str

    @property
    def succeeded(self) -> bool:
        return self.execution.succeeded

    @property
    def evaluated(self) -> bool:
        """A success an evaluator checks (SPEC §21): scored at its verdict, not now."""
        return self.succeeded and self.task.evaluator_id is not None

    @property
    def scored(self) -> bool:
        """Whether this settlement writes the task's reputation event."""
        return not self.evaluated

    def receipt(self) -> dict[str, str]:
        task, execution = self.task, self.execution
        return receipt_sign(
            {
                "task_id": str(task.pk),
                "agent": task.agent.slug,
                "receipt_version": RECEIPT_VERSION,
                "agent_version": task.binary.version,
                "binary_sha256": task.binary.sha256,
                "input_sha256": self.input_sha256,
                "output_sha256": self.result["output_sha256"],
                "status": self.result["status"],
                "failure_reason": execution.reason or None,
                "fuel_used": execution.fuel_used,
                "fuel_limit": execution.fuel_limit or task.fuel_limit,
                "elapsed_ms": execution.elapsed_ms,
                "cost": self.cost,
                "fee": self.fee,
                "refund": task.budget - self.cost,
                "payment": task.payment,
                "settled_at": self.result["finished_at"].isoformat(),
            }
        )


def settlement_plan(task: Task, escrow: Escrow, execution: Execution) -> Settlement:
    succeeded = execution.succeeded
    cost = (
        cost_for(
            base_fee=task.base_fee,
            fuel_price=task.fuel_price,
            fuel_used=execution.fuel_used,
            budget=task.budget,
        )
        if succeeded
        else 0
    )
    fee = fee_for(cost)
    result = {
        "status": Task.Status.SUCCEEDED if succeeded else Task.Status.FAILED,
        "exit_code": execution.exit_code,
        "stdout": execution.stdout,
        "stderr": execution.stderr,
        "output_sha256": hashlib.sha256(execution.stdout).hexdigest(),
        "fuel_used": execution.fuel_used,
        "elapsed_ms": execution.elapsed_ms,
        "failure_reason": execution.reason,
        "failure_detail": execution.detail[:2000],
        "cost": cost,
        "fee": fee,
        "refund": task.budget - cost,
        "finished_at": timezone.now(),
        "lease_expires_at": None,
    }
    # The fuel judged is what the run got (the budget may have capped the task's limit).
    fuel = execution.fuel_limit or affordable_fuel(task)
    return Settlement(
        task=task,
        escrow=escrow,
        execution=execution,
        cost=cost,
        fee=fee,
        result=result,
        outcome=task_outcome(task, execution, cost=cost, fuel=fuel),
        input_sha256=task.input_sha256 or hashlib.sha256(task.input.encode()).hexdigest(),
    )


SETTLE_TRIES = 5


def task_settle(
    *,
    task_id: Any,
    attempt: int,
    execution: Execution,
    task: Task | None = None,
    escrow: Escrow | None = None,
) -> bool:
    """Result, money, reputation and receipt in one transaction, once per task.

    Everything that can be is done before it begins: the task and its escrow are the rows
    the worker already holds (or are read once, the task without its output), the cost,
    what the outcome counts as, and the receipt, signed. False (and nothing written) when
    this attempt no longer holds the task.
    """
    if task is None or task.pk != task_id:
        # Never the output; the input (up to TASK_MAX_INPUT_BYTES) only when a success's
        # fuel sample needs its size (a failure's receipt uses the hash stored with it).
        large = ("stdout", "stderr") if execution.succeeded else ("stdout", "stderr", "input")
        task = Task.objects.select_related("agent", "binary").defer(*large).get(pk=task_id)
    if escrow is None or escrow.task_id != task.pk:
        escrow = Escrow.objects.get(task_id=task.pk)
    plan = settlement_plan(task, escrow, execution)
    for tries in range(1, SETTLE_TRIES + 1):
        try:
            return _settle_planned(plan, attempt=attempt)
        except OperationalError as exc:
            # Reputation is taken last (see _settle), against the lock order a dispute's
            # refund keeps: the rare deadlock between them is resolved by trying again.
            if getattr(exc.__cause__, "sqlstate", None) != "40P01" or tries == SETTLE_TRIES:
                raise
            log.warning("task %s: settlement deadlocked, trying again", task.pk)
    return False  # not reached


def _settle_planned(plan: Settlement, *, attempt: int) -> bool:
    """On PostgreSQL, when everything goes in one statement (no API key, a policy with an
    SQL form) and no transaction is open, that statement alone is the transaction: one
    round trip. A task whose channel or escrow refused goes in a transaction (which then
    says why), and so does any other settlement."""
    finish = _finish_with_result(plan)
    reputation = _reputation_sql(plan)
    if finish is not None and reputation is not None and not connection.in_atomic_block:
        try:
            recorded = task_result_record(
                plan.task.pk,
                attempt=attempt,
                result=plan.result,
                receipt=plan.receipt(),
                event=_webhook(plan),
                finish=finish,
                reputation=reputation,
                refuse=True,
            )
        except Refused:
            return _settle(plan, attempt=attempt)
        if recorded is None:
            return False
        if recorded.channel_due:  # the last task of a closing channel (else the sweep's)
            channel_settle_if_due(channel_id=plan.escrow.channel_id)
        return True
    return _settle(plan, attempt=attempt)


def _webhook(plan: Settlement) -> EventInsert:
    # Small rows only: the event's data is rendered at delivery, outside any transaction.
    return webhook_event_insert(
        owner_id=plan.task.requester_id,
        type="task.succeeded" if plan.succeeded else "task.failed",
        object_id=str(plan.task.pk),
    )


@transaction.atomic(durable=True)
def _settle(plan: Settlement, *, attempt: int) -> bool:
    """The settlement in a transaction, the reputation last. An evaluated success opens
    its evaluation instead, whose verdict scores it."""
    task, escrow = plan.task, plan.escrow
    # The task's money goes in the statement that records its result on PostgreSQL (in the
    # lock order: the task, the channel or escrow, the accounts), and the reputation with
    # it, unless an API key comes between.
    finish = _finish_with_result(plan)
    reputation = _reputation_sql(plan)
    # The compare-and-set that makes settlement exactly-once per task, with its receipt
    # and its event.
    recorded = task_result_record(
        task.pk,
        attempt=attempt,
        result=plan.result,
        receipt=plan.receipt(),
        event=_webhook(plan),
        finish=finish,
        reputation=reputation if finish is not None else None,
    )
    if recorded is None:
        return False
    if recorded.channel_due:  # the last task of a closing channel
        channel_settle_if_due(channel_id=escrow.channel_id)
    if finish is None:
        _settle_money(plan)
        if plan.evaluated:  # what the budget left pays the evaluator's run, queued now
            evaluation_open(task=task, cost=plan.cost, output=plan.execution.stdout)
            return True
        # Reputation last: every settlement of one agent writes its row, so its lock is
        # held for one statement and the commit. The fuel sample quotes are computed from
        # goes with the event, under the same lock.
        if reputation is not None:
            reputation_settle(reputation)
    if reputation is None:
        _reputation_python(plan)
    return True


def _reputation_sql(plan: Settlement) -> ReputationWrite | None:
    """The outcome to score in SQL, with its fuel sample; None where it is scored in
    Python (SQLite, or a policy without an SQL form)."""
    if reputation_sql_form() is None:
        return None
    task = plan.task
    return ReputationWrite(
        agent_id=task.agent_id,
        task_id=task.pk,
        requester_id=task.requester_id,
        outcome=plan.outcome if plan.scored else None,
        sample=_fuel_run(plan),
    )


def _reputation_python(plan: Settlement) -> None:
    """The outcome scored in Python under the agent's row lock, then the fuel sample."""
    task = plan.task
    if plan.scored:
        reputation_apply(
            agent_id=task.agent_id,
            task_id=task.pk,
            requester_id=task.requester_id,
            outcome=plan.outcome,
        )
    sample = _fuel_run(plan)
    if sample is not None:
        fuel_sample_record(
            binary_id=sample.binary_id, fuel_used=sample.fuel_used, input_bytes=sample.input_bytes
        )


def _fuel_run(plan: Settlement) -> FuelRun | None:
    """A success's run, for the quotes' fuel samples of its binary."""
    if not plan.succeeded:
        return None
    task = plan.task
    size = len(task.input.encode())
    return FuelRun(task.binary_id, plan.execution.fuel_used, size, QUOTE_SAMPLES)


def _finish_with_result(plan: Settlement) -> ChannelFinish | EscrowFinish | None:
    task, escrow = plan.task, plan.escrow
    if task.api_key_id is not None or connection.vendor != "postgresql" or plan.evaluated:
        return None
    if escrow.channel_id is not None:
        args = (escrow.channel_id, escrow.pk, task.budget, plan.cost, plan.fee, plan.succeeded)
        return ChannelFinish(*args)
    return EscrowFinish(escrow, plan.cost, plan.fee, plan.succeeded)


def _settle_money(plan: Settlement) -> None:
    """The task's money in statements of its own: with an API key (given back first, in
    the lock order tasks, API keys, channels and money) or on SQLite."""
    task, escrow, cost, fee = plan.task, plan.escrow, plan.cost, plan.fee
    if task.api_key_id is not None:
        # An evaluated task's rest pays its evaluator: given back at the verdict.
        api_key_give_back(task_id=task.pk, amount=0 if plan.evaluated else task.budget - cost)
    if escrow.channel_id is not None and plan.evaluated:
        # In flight until its verdict; the rest pays the evaluator (evaluation_open).
        channel_finish_evaluated(
            channel_id=escrow.channel_id, budget=task.budget, cost=cost, fee=fee
        )
        escrow_complete(escrow_id=escrow.pk, cost=cost, fee=fee, escrow=escrow)
    elif escrow.channel_id is not None:
        # One channel row changes; the money moves when the channel settles.
        channel = channel_finish_task(
            channel_id=escrow.channel_id, budget=task.budget, cost=cost, fee=fee
        )
        if plan.succeeded:
            escrow_complete(escrow_id=escrow.pk, cost=cost, fee=fee, escrow=escrow)
        else:
            escrow_cancel(escrow_id=escrow.pk, escrow=escrow)
        if channel_is_due(channel):
            channel_settle_if_due(channel_id=channel.pk)
    elif plan.succeeded:
        escrow_release(
            escrow_id=escrow.pk, cost=cost, fee=fee, escrow=escrow, awaiting_verdict=plan.evaluated
        )
    else:
        escrow_refund(escrow_id=escrow.pk, escrow=escrow)
