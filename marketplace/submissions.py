"""Writing a submission: the task (already queued), its key's charge, its escrow (already
funded) and the hold, all or nothing — for one task (`task_open`) or a batch (`tasks_open`).

On PostgreSQL an escrow submission is one statement in autocommit (`_open_at_once`): the
requester's tasks are admitted under their limit of tasks in flight (one count for the whole
batch, marketplace.fair_share) and inserted with their fair-share tags, then come the key's
row and charges, the escrows and the holds, in the lock order (tasks → API keys → escrows →
accounts), and on the ORM broker the tasks' messages. With the agent's read before it, an
escrow submission takes two round trips (three on another broker, whose message follows the
commit); a batch of a hundred, the same. A statement that refuses itself (a check of the
key's) is made again in a transaction (`_open_in_transaction`), whose services say why; so
are channel payments, and everything on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone
from django_q.models import OrmQ

from escrow.channels import channel_reserve
from escrow.errors import DomainError, IdempotencyConflict
from escrow.inserts import insert_sql
from escrow.models import Escrow
from escrow.opening import escrows_funded, escrows_open_sql, holds_refused
from escrow.services import escrow_create, escrow_open_funded
from marketplace.apikeys import api_key_charge_task
from marketplace.apikeys.charging import REFUSAL, REFUSED, api_key_charge_sql
from marketplace.fair_share import (
    fair_tag_next,
    fair_tags_sql,
    in_flight_check,
    tasks_admit_sql,
    too_many,
)
from marketplace.models import Task
from marketplace.queues import task_run_messages, task_run_send, tasks_run_send

# The most tasks one batch submits (marketplace.batches).
MAX_BATCH = 100


@dataclass
class Prepared:
    """A checked submission, ready to be written: the task (not saved), the wallets its
    escrow moves money between, and for a channel payment the channel and its voucher."""

    task: Task
    payer: int
    payee: int
    channel: Any = None
    voucher: Any = None


def task_enqueue(*, task_id: Any) -> None:
    """Hand the task to a worker once the surrounding transaction commits.

    The task row, not the broker message, is the source of truth: a lost message is
    found and re-sent by recovery, and a duplicate one loses the claim's compare-and-set.
    """

    def send() -> None:
        task_run_send(task_id=task_id)

    # robust: a broker that is down (a Redis restart) is logged, not raised into a request
    # whose task is already committed; recovery re-sends the message.
    transaction.on_commit(send, robust=True)


def tasks_enqueue(*, task_ids: list[Any]) -> None:
    """`task_enqueue` for each of a batch's tasks, their messages sent together."""
    transaction.on_commit(lambda: tasks_run_send(task_ids=task_ids), robust=True)


def task_open(prepared: Prepared) -> Task:
    """Write the prepared submission; with its Idempotency-Key taken by a twin already, the
    twin's task (409 `idempotency_conflict` when it is another submission)."""
    task = prepared.task
    try:
        [opened] = _open([prepared])
        return opened
    except DatabaseError as exc:
        if task.idempotency_key is None or not key_taken(exc):
            raise
    existing = Task.objects.select_related("agent", "binary", "escrow").get(
        requester_id=task.requester_id, idempotency_key=task.idempotency_key
    )
    return same_submission(existing, task)


def tasks_open(batch: Sequence[Prepared]) -> list[Task]:
    """Write every prepared escrow submission of one requester and key, or none (a refusal
    of one task's says which: the error's `index`)."""
    return _open(batch)


def _open(batch: Sequence[Prepared]) -> list[Task]:
    try:
        if connection.vendor == "postgresql" and all(
            p.task.payment == Task.Payment.ESCROW for p in batch
        ):
            opened = _open_at_once(batch)
            if opened is not None:
                return opened
        return _open_in_transaction(batch)
    except DatabaseError as exc:
        refused = too_many(exc)
        if refused is not None:
            raise refused from None
        raise


def _queued(task: Task) -> None:
    now = timezone.now()
    task.status, task.enqueued_at, task.queued_at = Task.Status.QUEUED, now, now
    task.fair_tag = fair_tag_next(requester_id=task.requester_id)  # type: ignore[assignment]


def _open_at_once(batch: Sequence[Prepared]) -> list[Task] | None:
    """The submission's one statement (see the module's note); None, with nothing written,
    when it refused itself."""
    tasks = [p.task for p in batch]
    for task in tasks:
        _queued(task)
    budgets = [(task.pk, task.budget) for task in tasks]
    escrows = escrows_funded(
        payer_id=batch[0].payer, tasks=[(p.task.pk, p.task.budget, p.payee) for p in batch]
    )
    # A new task's output is empty, written as SQL: a binary field would keep the rows from
    # being passed as arrays.
    assert not any(task.stdout or task.stderr for task in tasks)
    computed = {
        "fair_tag": fair_tags_sql(tasks=len(tasks)),
        "stdout": ("''::bytea", []),
        "stderr": ("''::bytea", []),
    }
    admitted, params = tasks_admit_sql(requester_id=tasks[0].requester_id, tasks=len(tasks))
    task_sql, task_params = insert_sql(Task, tasks, returning=("id",), computed=computed)
    params += task_params
    ctes = [admitted, f"new_task AS ({task_sql})"]
    after = "new_task"
    key = tasks[0].api_key
    if key is not None:
        key_ctes, key_params = api_key_charge_sql(
            key_id=key.pk,
            agent_ids=[task.agent_id for task in tasks],
            budgets=budgets,
            now=timezone.now(),
            after=after,
        )
        ctes.append(key_ctes)
        params += key_params
        after = "key_counted"
    escrow_ctes, escrow_params = escrows_open_sql(escrows, after=after)
    ctes.append(escrow_ctes)
    params += escrow_params
    # On the ORM broker the tasks' messages are rows of this database: written with them.
    messages = task_run_messages(task_ids=[task.pk for task in tasks], alias=connection.alias)
    if messages is not None:
        queue_sql, queue_params = insert_sql(OrmQ, messages, returning=("id",))
        ctes.append(f"queued AS ({queue_sql})")
        params += queue_params
    # The task rows first (their admission), then the key's, then the accounts': each part
    # only starts once the one before it has returned its rows.
    sql = (
        f"WITH {', '.join(ctes)} "  # noqa: S608
        "SELECT o.id, o.task_id, (SELECT count(*) FROM hold_posted) FROM opened AS o"
    )
    # Its own transaction, as the durable one of `_open_in_transaction` is: nobody nests it
    # (a test's transaction gets a savepoint, so a refusal leaves that one usable).
    savepoint = transaction.atomic(durable=True) if connection.in_atomic_block else nullcontext()
    try:
        with savepoint, holds_refused(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    except DatabaseError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) == REFUSED and REFUSAL in str(exc):
            return None
        raise
    assert rows and rows[0][2] == len(tasks), "every hold is posted with its escrow"
    escrow_ids = {task_id: escrow_id for escrow_id, task_id, _ in rows}
    for task, escrow in zip(tasks, escrows, strict=True):
        escrow.pk = escrow_ids[task.pk]
        escrow._state.adding = False
        _opened(task, escrow)
    if messages is None:
        _enqueue(tasks)
    return tasks


@transaction.atomic(durable=True)
def _open_in_transaction(batch: Sequence[Prepared]) -> list[Task]:
    """The submission in a transaction, statement by statement: each task, then in the lock
    order its API key, its channel and its escrow with the money, and the requester's tasks
    in flight counted (by the INSERT on PostgreSQL)."""
    for index, prepared in enumerate(batch):
        try:
            _write(prepared)
        except DomainError as exc:
            exc.index = index  # type: ignore[attr-defined]  # which task of a batch failed
            raise
    in_flight_check(requester_id=batch[0].task.requester_id)
    tasks = [prepared.task for prepared in batch]
    _enqueue(tasks)  # sent once the transaction commits
    return tasks


def _write(prepared: Prepared) -> None:
    """One task of the transaction, its key's charge, its channel's reservation, its escrow."""
    task = prepared.task
    _queued(task)
    # A concurrent twin with the same key waits on the unique index, then fails here.
    task.save(force_insert=True)
    if task.api_key is not None:
        # The key's spending caps: its row is locked before any channel, escrow or account.
        api_key_charge_task(key=task.api_key, task=task, channel=prepared.channel)
    if task.payment == Task.Payment.CHANNEL:
        # The channel row is locked before the escrow row that references it is written.
        reserved = channel_reserve(
            channel_id=prepared.channel,
            requester_user_id=task.requester_id,
            agent_id=task.agent_id,
            voucher=prepared.voucher,
            budget=task.budget,
            task_id=task.pk,
        )
        escrow = escrow_create(
            payer_user_id=task.requester_id,
            payee_user_id=task.agent.owner_id,
            payer_id=prepared.payer,
            payee_id=prepared.payee,
            amount=task.budget,
            task_id=task.pk,
            channel_id=reserved.pk,
            shard=reserved.shard,
        )
    else:
        escrow = escrow_open_funded(
            payer_id=prepared.payer, payee_id=prepared.payee, amount=task.budget, task_id=task.pk
        )
    _opened(task, escrow)


def _opened(task: Task, escrow: Escrow) -> None:
    # The INSERT computed it; nothing here reads it, and a save must never compute it again.
    task.fair_tag = None  # type: ignore[assignment]
    task._state.adding = False
    task.opened_escrow = escrow  # type: ignore[attr-defined]  # for the response: no read back


def _enqueue(tasks: Sequence[Task]) -> None:
    if len(tasks) == 1:
        task_enqueue(task_id=tasks[0].pk)
    else:
        tasks_enqueue(task_ids=[task.pk for task in tasks])


def key_taken(exc: DatabaseError) -> bool:
    """Whether `exc` is the unique index of tasks' Idempotency-Keys refusing a twin."""
    # PostgreSQL names the constraint; SQLite names its columns.
    text = str(exc)
    return isinstance(exc, IntegrityError) and (
        "task_idempotency_key_unique" in text or "marketplace_task.idempotency_key" in text
    )


def same_submission(existing: Task, task: Task) -> Task:
    """The task a twin with the same key submitted, if it is this submission."""
    if (existing.agent_id, existing.input, existing.budget) != (
        task.agent_id,
        task.input,
        task.budget,
    ):
        raise IdempotencyConflict()
    return existing
