"""A key's charge for new tasks, inside the submission's one statement (PostgreSQL).

The same count as `api_key_charge_task` (marketplace.apikeys.spending), for one task or a
batch: the key's row is updated (and so locked) only if every check passes — not revoked or
expired, allowed every agent, nothing of a settled channel to give back first, each budget
within the per-task limit and their sum within the daily, monthly and lifetime limits — and
one charge is written per task. When the row is not updated, the statement refuses itself
(`REFUSED`) and the submission is made again in a transaction, where `api_key_charge_task`
says which check failed, or gives back first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from escrow.inserts import insert_sql
from escrow.models import PaymentChannel
from marketplace.apikey_models import ApiKey, ApiKeyCharge
from marketplace.apikeys.spending import Windows

# How the statement refuses itself without a function of its own: the word cast to a number
# fails it (SQLSTATE 22P02, "invalid input syntax for type integer"), which undoes everything
# it wrote. The cast is of a CASE on the key's row, so it is only ever made at run time.
REFUSAL = "submission refused"
REFUSED = "22P02"


def api_key_charge_sql(
    *,
    key_id: int,
    agent_ids: Sequence[int],
    budgets: Sequence[tuple[Any, int]],
    now: datetime,
    after: str,
) -> tuple[str, list[Any]]:
    """CTEs `key_row` (the key, counted once `after` has returned its rows), `key_charged`
    (a charge per (task id, budget)) and `key_counted` (one row, or the refusal)."""
    windows = Windows.at(now)
    total = sum(amount for _, amount in budgets)
    largest = max(amount for _, amount in budgets)
    charges = [
        ApiKeyCharge(
            key_id=key_id, task_id=task_id, amount=amount, day=windows.day, month=windows.month
        )
        for task_id, amount in budgets
    ]
    charge_sql, charge_params = insert_sql(ApiKeyCharge, charges, returning=("id",))
    keys = ApiKey._meta.db_table
    through = ApiKey.agents.through._meta.db_table
    channels = PaymentChannel._meta.db_table
    daily = "(CASE WHEN k.spent_daily_on = %(day)s THEN k.spent_daily ELSE 0 END + %(total)s)"
    monthly = (
        "(CASE WHEN k.spent_monthly_on = %(month)s THEN k.spent_monthly ELSE 0 END + %(total)s)"
    )
    # Only table names and the counters' expressions are formatted in; values are parameters.
    sql = f"""
        key_row AS (
            UPDATE {keys} AS k SET
                spent_total = k.spent_total + %(total)s,
                spent_daily = {daily}, spent_daily_on = %(day)s,
                spent_monthly = {monthly}, spent_monthly_on = %(month)s
            WHERE k.id = %(key)s AND (SELECT count(*) FROM {after}) > 0
                AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > %(now)s)
                AND (NOT EXISTS (SELECT 1 FROM {through} WHERE apikey_id = k.id)
                    OR (
                        SELECT count(*) FROM {through}
                        WHERE apikey_id = k.id AND agent_id = ANY(%(agents)s)
                    ) = %(distinct)s)
                AND NOT EXISTS (
                    SELECT 1 FROM {ApiKeyCharge._meta.db_table} AS c
                    JOIN {channels} AS ch ON ch.id = c.channel_id
                    WHERE c.key_id = k.id AND c.settled_at IS NULL AND ch.status = %(settled)s
                )
                AND (k.per_task_limit IS NULL OR %(largest)s <= k.per_task_limit)
                AND (k.total_limit IS NULL OR k.spent_total + %(total)s <= k.total_limit)
                AND (k.monthly_limit IS NULL OR {monthly} <= k.monthly_limit)
                AND (k.daily_limit IS NULL OR {daily} <= k.daily_limit)
            RETURNING k.id
        ), key_counted AS MATERIALIZED (
            SELECT 1 AS counted
            WHERE (CASE WHEN EXISTS (SELECT 1 FROM key_row) THEN '1' ELSE '{REFUSAL}' END)::int = 1
        ), key_charged AS ({charge_sql})"""  # noqa: S608
    named = {
        "total": total,
        "largest": largest,
        "day": windows.day,
        "month": windows.month,
        "key": key_id,
        "now": now,
        "agents": sorted(set(agent_ids)),
        "distinct": len(set(agent_ids)),
        "settled": PaymentChannel.Status.SETTLED,
    }
    return _positional(sql, named, charge_params)


def _positional(sql: str, named: dict[str, Any], tail: list[Any]) -> tuple[str, list[Any]]:
    """The statement's named placeholders as positional ones (the other parts use `%s`)."""
    params: list[Any] = []
    out = []
    rest = sql
    while "%(" in rest:
        head, _, after = rest.partition("%(")
        name, _, rest = after.partition(")s")
        out.append(head + "%s")
        params.append(named[name])
    out.append(rest)
    # The charge INSERT's own `%s` placeholders come last, in the order they appear.
    return "".join(out), params + tail
