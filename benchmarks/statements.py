"""What one database statement costs, raw and through Django, and which setting changes it.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/statements.py [--n N]

The same one-row primary-key SELECT and UPDATE, inside one transaction each batch, timed
per statement: raw psycopg (the floor), Django's cursor with client-side binding (Django's
default for psycopg 3), with server-side binding and with prepared statements; then the ORM
(query building and model instances) on top, savepoints, the execute wrapper and the query
log (DEBUG), and a fresh connection per request against a persistent one. Prints µs per
statement; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import database_prepare, external_account_id, platform, table

# isort: split
import psycopg
from django.db import connections, transaction
from django.db.models import F

from escrow.models import Account

SELECT = "SELECT id, balance FROM {table} WHERE id = %s"
UPDATE = "UPDATE {table} SET balance = balance + 0 WHERE id = %s"


def alias_with(name: str, **options: object) -> str:
    """A connection alias like `default`, with these OPTIONS on top."""
    base = dict(connections.settings["default"])
    base["OPTIONS"] = {**base.get("OPTIONS", {}), **options}
    connections.settings[name] = base
    return name


def per_statement(batch: Callable[[int], None], n: int, repeat: int = 3) -> float:
    """µs per statement: the best of `repeat` batches of n (after one warm-up batch)."""
    batch(min(n, 50))
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        batch(n)
        best = min(best, time.perf_counter() - began)
    return best / n * 1e6


def raw_batch(dsn: str, sql: str, pk: int, *, prepare: bool) -> Callable[[int], None]:
    conn = psycopg.connect(dsn)

    def batch(n: int) -> None:
        with conn.transaction():
            cur = conn.cursor()
            for _ in range(n):
                cur.execute(sql, (pk,), prepare=prepare)
                if cur.description is not None:
                    cur.fetchall()

    return batch


def django_batch(alias: str, sql: str, pk: int) -> Callable[[int], None]:
    def batch(n: int) -> None:
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            for _ in range(n):
                cursor.execute(sql, [pk])
                if cursor.description is not None:
                    cursor.fetchall()

    return batch


def orm_batch(alias: str, pk: int, kind: str) -> Callable[[int], None]:
    accounts = Account.objects.using(alias)

    def one(n: int) -> None:
        with transaction.atomic(using=alias):
            for _ in range(n):
                if kind == "get":
                    accounts.get(pk=pk)
                elif kind == "values":
                    accounts.filter(pk=pk).values_list("balance", flat=True).first()
                elif kind == "lock":
                    list(accounts.select_for_update(no_key=True).filter(pk=pk).only("id"))
                elif kind == "update":
                    accounts.filter(pk=pk).update(balance=F("balance") + 0)
                elif kind == "savepoint":
                    with transaction.atomic(using=alias):
                        accounts.filter(pk=pk).update(balance=F("balance") + 0)

    return one


def connect_batch(alias: str, pk: int) -> Callable[[int], None]:
    """A request's worth with CONN_MAX_AGE 0: connect, one statement, close."""
    connection = connections[alias]

    def batch(n: int) -> None:
        for _ in range(n):
            connection.connect()
            with connection.cursor() as cursor:
                cursor.execute(SELECT.format(table=Account._meta.db_table), [pk])
                cursor.fetchall()
            connection.close()

    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="statements per batch (1000)")
    args = parser.parse_args()
    database_prepare()
    print(platform())
    pk = external_account_id()
    table_name = Account._meta.db_table
    select, update = SELECT.format(table=table_name), UPDATE.format(table=table_name)
    params = connections["default"].get_connection_params()
    dsn = psycopg.conninfo.make_conninfo(
        **{k: v for k, v in params.items() if k in {"dbname", "user", "password", "host", "port"}}
    )
    server = alias_with("server_side", server_side_binding=True)
    prepared = alias_with("prepared", server_side_binding=True, prepare_threshold=1)
    n = args.n

    rows: list[list[str]] = []

    def row(label: str, micros: float, floor: float | None) -> None:
        rows.append([label, f"{micros:.0f}", f"{micros / floor:.1f}" if floor else "1.0"])

    floor = per_statement(raw_batch(dsn, select, pk, prepare=False), n)
    row("raw psycopg SELECT by pk", floor, None)

    def measure(label: str, batch: Callable[[int], None], count: int = n) -> None:
        row(label, per_statement(batch, count), floor)

    measure("raw psycopg SELECT, prepared", raw_batch(dsn, select, pk, prepare=True))
    measure("raw psycopg UPDATE by pk", raw_batch(dsn, update, pk, prepare=False))
    for label, alias in [
        ("client-side binding (default)", "default"),
        ("server-side binding", server),
        ("server-side binding, prepared", prepared),
    ]:
        measure(f"Django cursor SELECT, {label}", django_batch(alias, select, pk))
        measure(f"Django cursor UPDATE, {label}", django_batch(alias, update, pk))
    for alias, label in [("default", "client-side"), (prepared, "prepared")]:
        for kind, what in [
            ("values", "filter().values_list().first()"),
            ("get", "get() (every column, a model)"),
            ("lock", "select_for_update().only('id')"),
            ("update", "filter().update(F() + 0)"),
            ("savepoint", "update() in a nested atomic (savepoint)"),
        ]:
            measure(f"ORM {what}, {label}", orm_batch(alias, pk, kind), n // 2)

    connection = connections["default"]
    with connection.execute_wrapper(lambda execute, *a: execute(*a)):
        measure("ORM update(), one execute wrapper", orm_batch("default", pk, "update"), n // 2)
    connection.force_debug_cursor = True
    measure("ORM update(), query log on (DEBUG)", orm_batch("default", pk, "update"), n // 2)
    connection.force_debug_cursor = False
    connection.close()
    measure("connect + SELECT + close (CONN_MAX_AGE 0)", connect_batch("default", pk), 200)

    table(
        f"One statement, µs (best of 3 batches of {n}, one connection, one transaction per "
        "batch; × = against raw psycopg)",
        ["", "µs", "×"],
        rows,
    )


if __name__ == "__main__":
    main()
