"""Funded escrows for new tasks, opened inside the submission's one statement (PostgreSQL).

`escrows_open_sql` gives the CTEs that insert each task's escrow, already funded, and post
its hold (the payer's wallet → the escrow account's shard), as `escrow_open_funded` and
`ledger_post` do one task at a time. The balances' CHECK constraint is the guard: a wallet
that would go below zero fails the whole statement (InsufficientFunds), so nothing is read
before it is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from escrow.errors import InsufficientFunds
from escrow.inserts import insert_sql
from escrow.ledger import TRANSFER_COLUMNS
from escrow.models import Account, Escrow, Transfer
from escrow.system_accounts import shard_for, system_account_id


def escrows_funded(*, payer_id: int, tasks: Sequence[tuple[Any, int, int]]) -> list[Escrow]:
    """The escrow rows (not saved) of new tasks, funded now: one per (task id, budget,
    payee's wallet id)."""
    now = timezone.now()
    return [
        Escrow(
            payer_id=payer_id,
            payee_id=payee_id,
            amount=amount,
            task_id=task_id,
            status=Escrow.Status.FUNDED,
            funded_at=now,
            shard=shard_for(task_id),
        )
        for task_id, amount, payee_id in tasks
    ]


def escrows_open_sql(escrows: Sequence[Escrow], *, after: str) -> tuple[str, list[Any]]:
    """CTEs `opened` (the escrows: id, task_id), then `hold_locked`, `hold_moved` and
    `hold_posted` (the holds' accounts in id order, their balances, one transfer per escrow).

    The accounts are locked only once `after`, an earlier CTE, has returned a row: the
    caller's rows that come before accounts in the lock order are then locked already."""
    escrow_sql, params = insert_sql(Escrow, escrows, returning=("id", "task_id"))
    change: dict[int, int] = defaultdict(int)
    holds: list[tuple[Any, int, int, int]] = []
    for escrow in escrows:
        credit = system_account_id(Account.Kind.ESCROW, escrow.shard)
        change[escrow.payer_id] -= escrow.amount
        change[credit] += escrow.amount
        holds.append((escrow.task_id, escrow.payer_id, credit, escrow.amount))
    changed = {pk: delta for pk, delta in sorted(change.items()) if delta}
    account, transfer = Account._meta.db_table, Transfer._meta.db_table
    names = ", ".join(name for name, _ in TRANSFER_COLUMNS)
    # Only table names are formatted in; every value is a parameter.
    sql = f"""
        opened AS ({escrow_sql}),
        hold_locked AS (
            SELECT id FROM {account} WHERE id = ANY(%s) AND EXISTS (SELECT 1 FROM {after})
            ORDER BY id FOR NO KEY UPDATE
        ), hold_moved AS (
            UPDATE {account} AS a SET balance = a.balance + c.change
            FROM hold_locked, unnest(%s::bigint[], %s::bigint[]) AS c (id, change)
            WHERE a.id = hold_locked.id AND a.id = c.id
            RETURNING a.id
        ), hold_posted AS (
            INSERT INTO {transfer} ({names})
            SELECT h.debit, h.credit, h.amount, %s, o.id, NULL, o.task_id, NULL, '', %s
            FROM opened AS o
            JOIN unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[])
                AS h (task_id, debit, credit, amount) ON h.task_id = o.task_id
            WHERE (SELECT count(*) FROM hold_moved) = %s
            RETURNING id
        )"""  # noqa: S608
    task_ids, debits, credits, amounts = (list(column) for column in zip(*holds, strict=True))
    params += [
        list(changed),
        list(changed),
        list(changed.values()),
        Transfer.Kind.ESCROW_HOLD,
        timezone.now(),
        task_ids,
        debits,
        credits,
        amounts,
        len(changed),
    ]
    return sql, params


@contextmanager
def holds_refused() -> Iterator[None]:
    """A wallet the holds would take below zero, as the ledger says it (402)."""
    try:
        yield
    except IntegrityError as exc:
        if "account_balance_gte_0" not in str(exc):
            raise
        raise InsufficientFunds(
            "Not enough money: an account this payment draws on holds less than it needs."
        ) from exc
