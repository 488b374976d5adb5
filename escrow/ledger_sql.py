"""The ledger's two ways of writing a posting (see `escrow.services.ledger_post`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import BigIntegerField, Case, F, Value, When
from django.utils import timezone

from escrow.errors import InvalidAmount
from escrow.models import Account, Transfer

if TYPE_CHECKING:
    from escrow.services import Leg


def apply_balances(changed: dict[int, int]) -> None:
    """The portable way: one UPDATE of every balance (SQLite locks the whole database)."""
    if not changed:
        return
    moved = Account.objects.filter(pk__in=changed).update(
        balance=F("balance")
        + Case(
            *(When(pk=account_id, then=Value(change)) for account_id, change in changed.items()),
            default=Value(0),
            output_field=BigIntegerField(),
        )
    )
    if moved != len(changed):
        raise InvalidAmount("Unknown account in transfer.")


TRANSFER_COLUMNS = (
    ("debit_account_id", "bigint"),
    ("credit_account_id", "bigint"),
    ("amount", "bigint"),
    ("kind", "varchar"),
    ("escrow_id", "bigint"),
    ("channel_id", "uuid"),
    ("task_id", "uuid"),
    ("idempotency_key", "varchar"),
    ("memo", "varchar"),
    ("created_at", "timestamptz"),
)


def posting_of(legs: Sequence[Leg]) -> tuple[dict[int, int], list[tuple[Any, ...]]]:
    """What posting the legs changes: each account's net change (in id order) and one
    transfer row per leg with an amount (its values in `TRANSFER_COLUMNS` order)."""
    legs = [leg for leg in legs if leg.amount]
    delta: dict[int, int] = defaultdict(int)
    for leg in legs:
        delta[leg.debit_id] -= leg.amount
        delta[leg.credit_id] += leg.amount
    changed = {account_id: change for account_id, change in sorted(delta.items()) if change}
    now = timezone.now()
    rows = [
        (
            leg.debit_id,
            leg.credit_id,
            leg.amount,
            leg.kind,
            leg.escrow_id,
            leg.channel_id,
            leg.task_id,
            leg.idempotency_key,
            leg.memo,
            now,
        )
        for leg in legs
    ]
    return changed, rows


def posting_sql(
    changed: dict[int, int], rows: list[tuple[Any, ...]], *, after: str | None = None
) -> tuple[str, list[Any]]:
    """A posting as three CTEs: `locked` (the accounts, in id order), `moved` (their
    balances) and `posted` (the transfers, inserted only if every account moved). With
    `after`, the name of an earlier CTE, nothing is locked unless it returned a row."""
    account, transfer = Account._meta.db_table, Transfer._meta.db_table
    params: list[Any] = [list(changed)]
    changes = ", ".join("(%s::bigint, %s::bigint)" for _ in changed) or "(NULL, NULL)"
    for account_id, change in changed.items():
        params += [account_id, change]
    row = "(" + ", ".join(f"%s::{kind}" for _, kind in TRANSFER_COLUMNS) + ")"
    for values in rows:
        params += values
    params.append(len(changed))
    names = ", ".join(name for name, _ in TRANSFER_COLUMNS)
    guard = f" AND EXISTS (SELECT 1 FROM {after})" if after else ""  # noqa: S608
    # Only table names and placeholders are formatted in; every value is a parameter.
    sql = f"""
        locked AS (
            SELECT id FROM {account} WHERE id = ANY(%s){guard} ORDER BY id FOR NO KEY UPDATE
        ), moved AS (
            UPDATE {account} AS a SET balance = a.balance + c.change
            FROM locked, (VALUES {changes}) AS c (id, change)
            WHERE a.id = locked.id AND a.id = c.id
            RETURNING a.id
        ), posted AS (
            INSERT INTO {transfer} ({names})
            SELECT * FROM (VALUES {", ".join(row for _ in rows)}) AS t ({names})
            WHERE (SELECT count(*) FROM moved) = %s
            RETURNING id
        )"""  # noqa: S608
    return sql, params


def post_postgresql(changed: dict[int, int], rows: list[tuple[Any, ...]]) -> list[int] | None:
    """Lock (in id order) and change the balances, then insert the transfer rows — one
    statement. None (nothing inserted) when an account does not exist."""
    ctes, params = posting_sql(changed, rows)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {ctes} SELECT id FROM posted", params)  # noqa: S608
        ids = [pk for (pk,) in cursor.fetchall()]
    return ids or None
