"""Settling a run: result, money, reputation and receipt in one short transaction.

Everything that can be is done before the transaction: the cost, the outcome scored
against the agent's standing, the receipt signed over all of it. Inside it, each row
is written by one statement, in the lock order (tasks, API keys, channels, escrows,
accounts) — except the agent's reputation row, written last: every settlement of one
agent writes it, so its lock is held for one statement and the commit.

Round trips (PostgreSQL): an escrow settlement takes at most 10 counting the standing's
read before BEGIN (tests/test_round_trips.py holds every path to its budget).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, cast

from django.db import OperationalError, connection, transaction
from django.db.models import Field
from django.utils import timezone

from escrow.channels import channel_finish_task, channel_is_due, channel_settle_if_due
from escrow.models import Escrow
from escrow.services import escrow_cancel, escrow_complete, escrow_refund, escrow_release
from execution.channel_finish import ChannelFinish, Recorded
from execution.engine.receipts import receipt_sign
from execution.escrow_finish import EscrowFinish
from execution.models import Receipt
from execution.scoring import task_outcome
from execution.services import Execution, affordable_fuel, cost_for, fee_for
from marketplace.apikeys import api_key_give_back
from marketplace.models import Task
from marketplace.quotes import fuel_sample_sql
from marketplace.webhooks.outbox import EventInsert, webhook_event_insert, webhook_event_send
from reputation.models import ReputationEvent
from reputation.policies import Outcome
from reputation.record_sql import AlsoWrite, reputation_record_sql, reputation_recorded
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

    def receipt(self, reputation_delta: Decimal) -> dict[str, str]:
        task, execution = self.task, self.execution
        return receipt_sign(
            {
                "task_id": str(task.pk),
                "agent": task.agent.slug,
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
                "reputation_delta": str(reputation_delta),
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
        scoring = reputation_score(
            agent_id=task.agent_id,
            task_id=task.pk,
            requester_id=task.requester_id,
            outcome=plan.outcome,
        )
        try:
            return _settle(plan, attempt=attempt, scoring=scoring)
        except OperationalError as exc:
            # Reputation is taken last (see _settle), against the lock order a dispute's
            # refund keeps: the rare deadlock between them is resolved by trying again.
            if getattr(exc.__cause__, "sqlstate", None) != "40P01" or tries == SETTLE_TRIES:
                raise
            log.warning("task %s: settlement deadlocked, trying again", task.pk)
    return False  # not reached


@transaction.atomic(durable=True)
def _settle(plan: Settlement, *, attempt: int, scoring: Scoring) -> bool:
    task, escrow = plan.task, plan.escrow
    signed = plan.receipt(scoring.delta)
    # Small rows only: the event's data is rendered at delivery, outside any transaction.
    webhook = webhook_event_insert(
        owner_id=task.requester_id,
        type="task.succeeded" if plan.succeeded else "task.failed",
        object_id=str(task.pk),
    )
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
        reputation=(scoring, sample) if finish is not None else None,
    )
    if recorded is None:
        return False
    if recorded.channel_due:  # the last task of a closing channel
        channel_settle_if_due(channel_id=escrow.channel_id)
    if finish is None:
        _settle_money(plan)
    # Reputation last: every settlement of one agent writes its row, so its lock is held
    # for the end of one statement and the commit. The fuel sample quotes are computed
    # from goes with the event, under the same lock.
    event = recorded.event or _reputation_write(plan, scoring, sample, tried=finish is not None)
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
    task = plan.task
    event = None if tried else reputation_record(scoring, sample)
    for _ in range(RESCORE_TRIES):
        if event is not None:
            return event
        scoring = reputation_score(
            agent_id=task.agent_id,
            task_id=task.pk,
            requester_id=task.requester_id,
            outcome=plan.outcome,
        )
        event = reputation_record(scoring, sample)
    if event is not None:
        return event
    _, event = reputation_score_locked(
        agent_id=task.agent_id,
        task_id=task.pk,
        requester_id=task.requester_id,
        outcome=plan.outcome,
        also=sample,
    )
    return event
    return True


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
    if task.api_key_id is not None or connection.vendor != "postgresql":
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
        api_key_give_back(task_id=task.pk, amount=task.budget - cost)
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
        escrow_release(escrow_id=escrow.pk, cost=cost, fee=fee, escrow=escrow)
    else:
        escrow_refund(escrow_id=escrow.pk, escrow=escrow)


# The result's field names → the UPDATE that records it, built once per process.
RESULT_SQL: dict[tuple[str, ...], tuple[str, list[Field[Any, Any]]]] = {}


def _result_update(task_id: Any, attempt: int, result: dict[str, Any]) -> tuple[str, list[Any]]:
    """running (this attempt) → the result: what the ORM's `update(**result)` on that
    filter compiles to (each value prepared by its field), with the SQL built once."""
    key = tuple(result)
    if key not in RESULT_SQL:
        fields = [cast("Field[Any, Any]", Task._meta.get_field(name)) for name in key]
        quote = connection.ops.quote_name
        sets = ", ".join(f"{quote(str(field.column))} = %s" for field in fields)
        sql = (
            f"UPDATE {quote(Task._meta.db_table)} SET {sets} "  # noqa: S608
            "WHERE id = %s AND status = %s AND attempts = %s"
        )
        RESULT_SQL[key] = (sql, fields)
    sql, columns = RESULT_SQL[key]
    params = [
        column.get_db_prep_save(value, connection)
        for column, value in zip(columns, result.values(), strict=True)
    ]
    params += [Task._meta.pk.get_db_prep_value(task_id, connection), Task.Status.RUNNING, attempt]
    return sql, params


def task_result_record(
    task_id: Any,
    *,
    attempt: int,
    result: dict[str, Any],
    receipt: dict[str, str],
    event: EventInsert | None = None,
    finish: ChannelFinish | EscrowFinish | None = None,
    reputation: tuple[Scoring, AlsoWrite | None] | None = None,
) -> Recorded | None:
    """running (this attempt) → final, the receipt and the webhook event (and with `finish`,
    the task's channel or escrow row and its money; with `reputation`, a Scoring and what
    goes with it, recorded last if the standing is unchanged): one statement on PostgreSQL.

    Recorded for the one caller whose attempt held the task; None, and nothing written,
    for another.
    """
    running = Task.objects.filter(pk=task_id, status=Task.Status.RUNNING, attempts=attempt)
    if connection.vendor != "postgresql":
        assert finish is None and reputation is None, "PostgreSQL only"
        if running.update(**result) != 1:
            return None
        Receipt.objects.create(task_id=task_id, **receipt)
        if event is not None:
            with connection.cursor() as cursor:
                cursor.execute(f"{event.into} {event.select}", event.params)
                if cursor.rowcount > 0:
                    webhook_event_send(event.event_id)
        return Recorded()
    update, params = _result_update(task_id, attempt, result)
    table = Task._meta.db_table
    receipts = Receipt._meta.db_table
    # The event only with the result: its rows are inserted if the task was settled here.
    events, event_params = (
        (
            f", events AS ({event.into} SELECT * FROM ({event.select}) AS event "  # noqa: S608
            "WHERE EXISTS (SELECT 1 FROM settled) RETURNING 1)",
            event.params,
        )
        if event is not None
        else ("", [])
    )
    counted = "(SELECT count(*) FROM events)" if event is not None else "0"
    finished, finish_params, finish_columns = finish.sql() if finish is not None else ("", [], "")
    scored, scored_params = (
        reputation_record_sql(*reputation, after="settled") if reputation else ("", [])
    )
    # Selected last, so that the agent's row is locked after every other row here.
    scored, scored_column = (
        (f", {scored}", ", (SELECT id FROM scored_event)") if scored else ("", "")
    )
    sql = (
        f"WITH settled AS ({update} RETURNING {table}.id), "  # noqa: S608
        f"receipt AS (INSERT INTO {receipts} (task_id, payload, signature, key_id, created_at) "
        f"SELECT id, %s, %s, %s, %s FROM settled RETURNING task_id){events}{finished}{scored} "
        f"SELECT task_id, {counted}{finish_columns}{scored_column} FROM receipt"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                *params,
                receipt["payload"],
                receipt["signature"],
                receipt["key_id"],
                timezone.now(),
                *event_params,
                *finish_params,
                *scored_params,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    event_id = row[-1] if reputation else None
    row = row[:-1] if reputation else row
    recorded = Recorded() if finish is None else finish.verdict(row[2:])
    if reputation and event_id is not None:
        recorded = replace(recorded, event=reputation_recorded(reputation[0], event_id))
    if event is not None and row[1] > 0:
        webhook_event_send(event.event_id)
    return recorded
