"""Settling a run: result, money, reputation and receipt in one short transaction.

Everything that can be is done before the transaction: the cost, the outcome scored
against the agent's standing, the receipt signed over all of it. Inside it, each row
is written once, in the lock order (tasks, API keys, channels, escrows, accounts) —
except the agent's reputation row, written last: every settlement of one agent writes
it, so its lock is held as briefly as can be.

On PostgreSQL, without an API key, all of it is one statement that is its own
transaction (see `_settle_scored`): 2 round trips with the standing's read
(tests/test_round_trips.py holds every path to its budget).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from escrow.channels import channel_finish_task, channel_is_due, channel_settle_if_due
from escrow.models import Escrow
from escrow.services import escrow_cancel, escrow_complete, escrow_refund, escrow_release
from execution.channel_finish import ChannelFinish
from execution.engine.receipts import RECEIPT_VERSION, receipt_sign
from execution.escrow_finish import EscrowFinish
from execution.evaluation import evaluation_open
from execution.models import Receipt
from execution.result_record import Refused, StandingMoved, task_result_record
from execution.runs import Execution, affordable_fuel, cost_for, fee_for
from execution.scoring import task_outcome
from marketplace.apikeys import api_key_give_back
from marketplace.models import Task
from marketplace.quotes import fuel_sample_sql
from marketplace.webhooks.outbox import EventInsert, webhook_event_insert
from reputation.models import ReputationEvent
from reputation.policies import Outcome
from reputation.record_sql import AlsoWrite
from reputation.services import (
    Scoring,
    reputation_record,
    reputation_score,
    reputation_score_locked,
)

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

    def receipt(self, reputation_delta: Decimal | None) -> dict[str, str]:
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
                "reputation_delta": None if reputation_delta is None else str(reputation_delta),
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
    the outcome scored against the agent's standing, and the receipt, signed. False (and
    nothing written) when this attempt no longer holds the task.
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
            return _settle_scored(plan, attempt=attempt)
        except OperationalError as exc:
            # Reputation is taken last (see _settle), against the lock order a dispute's
            # refund keeps: the rare deadlock between them is resolved by trying again.
            if getattr(exc.__cause__, "sqlstate", None) != "40P01" or tries == SETTLE_TRIES:
                raise
            log.warning("task %s: settlement deadlocked, trying again", task.pk)
    return False  # not reached


def _settle_scored(plan: Settlement, *, attempt: int) -> bool:
    """Score the outcome against the standing as it is now, then settle.

    On PostgreSQL, when everything goes in one statement and no transaction is open, that
    statement alone is the transaction: the read, then one round trip. It refuses itself
    if the standing moved on meanwhile; the agent then counts as contended for
    CONTENDED_SECONDS, and its settlements go in a transaction, whose statement writes all
    but the reputation whatever the standing, the reputation being scored again after it
    if need be. So does a task whose channel or escrow refused (the transaction then says
    why), and any settlement elsewhere."""
    agent_id = plan.task.agent_id
    if plan.evaluated:  # its reputation event waits for the verdict (execution.evaluation)
        return _settle(plan, attempt=attempt, scoring=None)
    if _finish_with_result(plan) is None or connection.in_atomic_block:
        return _settle(plan, attempt=attempt, scoring=_score(plan))
    if not _contended(agent_id):
        try:
            return _settle_at_once(plan, attempt=attempt, scoring=_score(plan))
        except StandingMoved:
            _contention_seen(agent_id)
        except Refused:
            return _settle(plan, attempt=attempt, scoring=_score(plan))
    # Others settle this agent right now: the statement writes everything but the
    # reputation in any case, and a standing that moved on is scored again after it.
    return _settle(plan, attempt=attempt, scoring=_score(plan))


# Agents whose settlements met others' lately, in this process: agent id → when (monotonic).
_CONTENDED: dict[int, float] = {}
CONTENDED_SECONDS = 1.0


def _contended(agent_id: int) -> bool:
    seen = _CONTENDED.get(agent_id)
    return seen is not None and time.monotonic() - seen < CONTENDED_SECONDS


def _contention_seen(agent_id: int) -> None:
    _CONTENDED[agent_id] = time.monotonic()


def _score(plan: Settlement) -> Scoring:
    task = plan.task
    return reputation_score(
        agent_id=task.agent_id,
        task_id=task.pk,
        requester_id=task.requester_id,
        outcome=plan.outcome,
    )


def _settle_at_once(plan: Settlement, *, attempt: int, scoring: Scoring) -> bool:
    """The whole settlement as one statement in autocommit: the result, its money, and the
    reputation, all or nothing (StandingMoved: nothing written)."""
    task = plan.task
    recorded = task_result_record(
        task.pk,
        attempt=attempt,
        result=plan.result,
        receipt=plan.receipt(scoring.delta),
        event=_webhook(plan),
        finish=_finish_with_result(plan),
        reputation=(scoring, _fuel_sample(plan) if plan.succeeded else None),
        scored_or_refused=True,
    )
    if recorded is None:
        return False
    if recorded.channel_due:  # the last task of a closing channel (else the sweep's)
        channel_settle_if_due(channel_id=plan.escrow.channel_id)
    return True


def _webhook(plan: Settlement) -> EventInsert:
    # Small rows only: the event's data is rendered at delivery, outside any transaction.
    return webhook_event_insert(
        owner_id=plan.task.requester_id,
        type="task.succeeded" if plan.succeeded else "task.failed",
        object_id=str(plan.task.pk),
    )


@transaction.atomic(durable=True)
def _settle(plan: Settlement, *, attempt: int, scoring: Scoring | None) -> bool:
    """The settlement in a transaction, the reputation last: as scored before it if the
    standing has not moved on, else scored again. An evaluated success (no `scoring`)
    opens its evaluation instead, whose verdict scores it."""
    task, escrow = plan.task, plan.escrow
    signed = plan.receipt(scoring.delta if scoring is not None else None)
    webhook = _webhook(plan)
    # The task's money goes in the statement that records its result on PostgreSQL (in the
    # lock order: the task, the channel or escrow, the accounts), unless an API key comes
    # between.
    finish = _finish_with_result(plan)
    sample = _fuel_sample(plan) if plan.succeeded else None
    # The compare-and-set that makes settlement exactly-once per task, with its receipt
    # and its event; with its money there, the reputation too, last (see below).
    recorded = task_result_record(
        task.pk,
        attempt=attempt,
        result=plan.result,
        receipt=signed,
        event=webhook,
        finish=finish,
        reputation=(scoring, sample) if finish is not None and scoring is not None else None,
    )
    if recorded is None:
        return False
    if recorded.channel_due:  # the last task of a closing channel
        channel_settle_if_due(channel_id=escrow.channel_id)
    if finish is None:
        _settle_money(plan)
    if scoring is None:  # what the budget left pays the evaluator's run, queued now
        evaluation_open(task=task, cost=plan.cost, output=plan.execution.stdout)
        return True
    # Reputation last: every settlement of one agent writes its row, so its lock is held
    # for the end of one statement and the commit. The fuel sample quotes are computed
    # from goes with the event, under the same lock.
    event = recorded.event
    if event is None:
        if finish is not None:  # the statement found the standing moved on
            _contention_seen(task.agent_id)
        event = _reputation_write(plan, scoring, sample, tried=finish is not None)
    if event.delta != scoring.delta:  # the receipt, signed again with what was scored
        Receipt.objects.filter(task_id=task.pk).update(**plan.receipt(event.delta))
    return True


# Times a settlement scores again without the lock when another event came first, before
# it takes the lock to score: each try holds the row for one statement, not three.
RESCORE_TRIES = 3


def _reputation_write(
    plan: Settlement, scoring: Scoring, sample: AlsoWrite | None, *, tried: bool
) -> ReputationEvent:
    """Write the outcome scored before the transaction (unless that was `tried` already);
    if another event came first, score it again against the standing as it now is (a
    statement of its own, whose snapshot sees that event) and write that, a few times;
    then under the row's lock."""
    event = None if tried else reputation_record(scoring, sample)
    for _ in range(RESCORE_TRIES):
        if event is not None:
            return event
        event = reputation_record(_score(plan), sample)
    if event is not None:
        return event
    task = plan.task
    _, event = reputation_score_locked(
        agent_id=task.agent_id,
        task_id=task.pk,
        requester_id=task.requester_id,
        outcome=plan.outcome,
        also=sample,
    )
    return event


def _fuel_sample(plan: Settlement) -> AlsoWrite:
    task = plan.task
    size = len(task.input.encode())

    def sample(after: str | None) -> tuple[str, list[Any]]:
        fuel = plan.execution.fuel_used
        binary = task.binary_id
        return fuel_sample_sql(binary_id=binary, fuel_used=fuel, input_bytes=size, after=after)

    return sample


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
    if escrow.channel_id is not None:
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
