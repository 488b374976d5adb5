"""The claim on PostgreSQL: queued → running with a lease, and the task with its agent and
binary, in one conditional UPDATE … RETURNING (`execution.services.task_claim`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection, models

from marketplace.models import Agent, AgentBinary, Task


def _columns(alias: str, model: type[models.Model]) -> str:
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in _fields(model))


def _fields(model: type[models.Model]) -> list[Any]:
    return list(model._meta.concrete_fields)


def _instance(model: type[models.Model], alias: str, values: list[Any]) -> Any:
    """A model instance from its columns as the database returned them, converted as the
    ORM converts them (JSON, decimals…)."""
    fields = _fields(model)
    converted = []
    for field, value in zip(fields, values, strict=True):
        column = field.get_col(alias)
        for converter in connection.ops.get_db_converters(column) + field.get_db_converters(
            connection
        ):
            value = converter(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def task_claim_returning(
    task_id: Any, *, now: datetime, margin_seconds: float
) -> tuple[Task, int] | None:
    """One statement: the compare-and-set (queued → running, one attempt more, a lease of
    the task's timeout plus `margin_seconds`) returning the task as it now is, its agent
    (whose status the worker checks) and its binary. None when the task is not queued.

    `task_id=None` claims the fairest queued task instead (the lowest fair-share tag, the
    oldest among equals; marketplace/fair_share.py), skipping rows another worker is
    claiming at the same moment."""
    task_table, agent_table = Task._meta.db_table, Agent._meta.db_table
    binary_table = AgentBinary._meta.db_table
    key = task_id is None
    if key not in CLAIM_SQL:
        if task_id is None:
            which = (
                f"t.id = (SELECT q.id FROM {task_table} AS q "  # noqa: S608
                "WHERE q.status = %s ORDER BY q.fair_tag, q.queued_at, q.id "
                "LIMIT 1 FOR UPDATE SKIP LOCKED)"
            )
        else:
            which = "t.id = %s"
        CLAIM_SQL[key] = (
            f"UPDATE {task_table} AS t SET status = %s, attempts = t.attempts + 1, "  # noqa: S608
            "started_at = %s, lease_expires_at = %s::timestamptz "
            "+ t.timeout_ms * interval '1 millisecond' + %s * interval '1 second' "
            f"FROM {agent_table} AS a, {binary_table} AS b "
            f"WHERE {which} AND t.status = %s AND a.id = t.agent_id AND b.id = t.binary_id "
            f"RETURNING {_columns('t', Task)}, {_columns('a', Agent)}, "
            f"{_columns('b', AgentBinary)}"
        )
    when = connection.ops.adapt_datetimefield_value(now)
    target = (
        Task.Status.QUEUED
        if task_id is None
        else Task._meta.pk.get_db_prep_value(task_id, connection)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_SQL[key],
            [Task.Status.RUNNING, when, when, margin_seconds, target, Task.Status.QUEUED],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    sizes = [len(_fields(model)) for model in (Task, Agent)]
    task = _instance(Task, "t", values[: sizes[0]])
    task.agent = _instance(Agent, "a", values[sizes[0] : sizes[0] + sizes[1]])
    task.binary = _instance(AgentBinary, "b", values[sizes[0] + sizes[1] :])
    return task, task.attempts


# (claims the fairest task) → the claim's UPDATE, built once per process.
CLAIM_SQL: dict[bool, str] = {}
