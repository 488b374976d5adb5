"""The ledger's one way of moving money: a posting of legs (`ledger_post`), written in one
statement on PostgreSQL (`posting_sql`, which a settlement can also put in a statement of
its own) and two elsewhere; and the wallets the legs move money between."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField, Case, F, Value, When
from django.utils import timezone

from escrow.errors import InsufficientFunds, InvalidAmount
from escrow.models import Account, Transfer


@dataclass(frozen=True)
class Leg:
    """One transfer of a posting: `amount` from the debit account to the credit account."""

    debit_id: int
    credit_id: int
    amount: int
    kind: str
    escrow_id: int | None = None
    channel_id: Any = None
    task_id: Any = None
    idempotency_key: str | None = None
    memo: str = ""


def validate_amount(amount: object, *, allow_zero: bool = False) -> int:
    """`amount`, if it is a whole number of µCR above zero (or zero, when allowed);
    otherwise InvalidAmount."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmount(f"Amounts are integers of µCR, got {amount!r}.")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidAmount(f"Amount must be {'≥ 0' if allow_zero else '> 0'}, got {amount}.")
    return amount


# --- wallets -----------------------------------------------------------------------------


def wallet_open(*, user_id: int) -> Account:
    """The user's wallet, created on first use (safe against concurrent first use)."""
    account = Account.objects.filter(kind=Account.Kind.WALLET, user_id=user_id).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return Account.objects.create(kind=Account.Kind.WALLET, user_id=user_id)
    except IntegrityError:
        return Account.objects.get(kind=Account.Kind.WALLET, user_id=user_id)


def wallet_id(*, user_id: int) -> int:
    return wallet_open(user_id=user_id).pk


# --- posting -----------------------------------------------------------------------------


def ledger_post(legs: Sequence[Leg]) -> list[Transfer]:
    """Post the legs to the ledger: change every balance they touch by its net effect and
    record one Transfer per leg, in one statement on PostgreSQL (two elsewhere).

    Must run inside a transaction. Zero-amount legs are dropped. The account rows are
    locked in primary-key order by the statement itself, and the balances' CHECK
    constraint is the guard: a balance that would go below zero fails the statement
    (InsufficientFunds), so nothing is read before it is written.
    """
    changed, rows = posting_of(legs)
    if not rows:
        return []
    names = [name for name, _ in TRANSFER_COLUMNS]
    transfers = [Transfer(**dict(zip(names, row, strict=True))) for row in rows]
    try:
        if connection.vendor == "postgresql":
            ids = post_postgresql(changed, rows)
            if ids is None:
                raise InvalidAmount("Unknown account in transfer.")
            for transfer, pk in zip(transfers, ids, strict=True):
                transfer.pk = pk
                transfer._state.adding = False
            return transfers
        apply_balances(changed)
        return Transfer.objects.bulk_create(transfers)
    except IntegrityError as exc:
        if "account_balance_gte_0" not in str(exc):
            raise
        raise InsufficientFunds(
            "Not enough money: an account this payment draws on holds less than it needs."
        ) from exc


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
