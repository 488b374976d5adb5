"""Recording a settled task's result on PostgreSQL in one statement: the compare-and-set
on the task, its receipt and webhook event, and (given) its money and reputation — see
`execution.settlement`. Elsewhere, statements of their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from django.db import DatabaseError, connection
from django.db.models import Field
from django.utils import timezone

from execution.channel_finish import ChannelFinish, Recorded
from execution.escrow_finish import EscrowFinish
from execution.models import Receipt
from marketplace.models import Task
from marketplace.webhooks.outbox import EventInsert, webhook_event_send
from reputation.settle_sql import ReputationWrite


class Refused(Exception):
    """The settlement's statement refused itself: the task's channel or escrow refused what
    it writes (in a transaction, `verdict` says why). Migration execution 0009 defines the
    function that says so (ES002)."""


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "ES002":
            raise Refused(str(exc)) from exc
        raise


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
    reputation: ReputationWrite | None = None,
    refuse: bool = False,
) -> Recorded | None:
    """running (this attempt) → final, the receipt and the webhook event (and with `finish`,
    the task's channel or escrow row and its money; with `reputation`, the outcome scored
    and recorded in SQL, last, and the fuel sample with it): one statement on PostgreSQL.
    With `refuse`, a channel or escrow that refuses its part makes the statement refuse
    itself (Refused, nothing written) instead of leaving the verdict to the caller's
    transaction.

    Recorded for the one caller whose attempt held the task; None, and nothing written,
    for another.
    """
    if connection.vendor != "postgresql":
        assert finish is None and reputation is None, "PostgreSQL only"
        running = Task.objects.filter(pk=task_id, status=Task.Status.RUNNING, attempts=attempt)
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
    if refuse and finish is not None:  # refused in SQL, before what `verdict` reads
        finish_columns = (
            f", CASE WHEN {finish.accepted} THEN 0 ELSE settlement_refused() END{finish_columns}"
        )
    scored, scored_column = "", ""
    scored_params: list[Any] = []
    if reputation is not None:
        # Called once, only if the task was settled here (its id comes from `settled`),
        # and selected last, so that the agent's row is locked after every other row here.
        call, scored_params = reputation.call(task="settled.id")
        scored = f", scored AS (SELECT scoring.event_id FROM settled, LATERAL {call} AS scoring)"  # noqa: S608
        scored_column = ", (SELECT count(*) FROM scored)"
    sql = (
        f"WITH settled AS ({update} RETURNING {table}.id), "  # noqa: S608
        f"receipt AS (INSERT INTO {receipts} (task_id, payload, signature, key_id, created_at) "
        f"SELECT id, %s, %s, %s, %s FROM settled RETURNING task_id){events}{finished}{scored} "
        f"SELECT task_id, {counted}{finish_columns}{scored_column} FROM receipt"
    )
    with connection.cursor() as cursor, _refusals():
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
    row = row[:-1] if reputation is not None else row
    row = (*row[:2], *row[3:]) if refuse and finish is not None else row
    recorded = Recorded() if finish is None else finish.verdict(row[2:])
    if event is not None and row[1] > 0:
        webhook_event_send(event.event_id)
    return recorded
