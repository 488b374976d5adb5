"""The ledger's two ways of writing a posting (see `escrow.services.ledger_post`)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import BigIntegerField, Case, F, Value, When

from escrow.errors import InvalidAmount
from escrow.models import Account, Transfer


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


def post_postgresql(changed: dict[int, int], transfers: list[Transfer]) -> list[int] | None:
    """Lock (in id order) and change the balances, then insert the transfers — one
    statement. None (nothing inserted) when an account does not exist."""
    account, transfer = Account._meta.db_table, Transfer._meta.db_table
    params: list[Any] = [list(changed)]
    changes = ", ".join("(%s::bigint, %s::bigint)" for _ in changed) or "(NULL, NULL)"
    for account_id, change in changed.items():
        params += [account_id, change]
    row = "(" + ", ".join(f"%s::{kind}" for _, kind in TRANSFER_COLUMNS) + ")"
    for item in transfers:
        params += [getattr(item, name) for name, _ in TRANSFER_COLUMNS]
    params.append(len(changed))
    names = ", ".join(name for name, _ in TRANSFER_COLUMNS)
    # Only table names and placeholders are formatted in; every value is a parameter.
    sql = f"""
        WITH locked AS (
            SELECT id FROM {account} WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE
        ), moved AS (
            UPDATE {account} AS a SET balance = a.balance + c.change
            FROM locked, (VALUES {changes}) AS c (id, change)
            WHERE a.id = locked.id AND a.id = c.id
            RETURNING a.id
        )
        INSERT INTO {transfer} ({names})
        SELECT * FROM (VALUES {", ".join(row for _ in transfers)}) AS t ({names})
        WHERE (SELECT count(*) FROM moved) = %s
        RETURNING id
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [pk for (pk,) in cursor.fetchall()]
    return ids or None
