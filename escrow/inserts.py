"""INSERTs the ORM builds, to be put in a statement of several parts (a CTE).

A submission writes its task, its key's charge, its escrow and the hold in one statement on
PostgreSQL (marketplace.submissions); each part's INSERT is compiled here from model
instances, so every value is prepared by its field as `bulk_create` would prepare it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models
from django.db.models.sql import InsertQuery


def insert_sql(
    model: type[models.Model],
    objs: Sequence[models.Model],
    *,
    returning: Sequence[str],
    computed: dict[str, tuple[str, list[Any]]] | None = None,
) -> tuple[str, list[Any]]:
    """`INSERT INTO … RETURNING <returning>` for `objs`, and its parameters.

    Several rows are passed as one array per column (`SELECT * FROM UNNEST(…)`, as Django's
    `bulk_create` does on PostgreSQL): a hundred rows are a few dozen parameters, not
    thousands to parse and plan. `computed` names columns computed by SQL for each row
    (column → its SQL and parameters) rather than given: a row's value then sees the rows
    inserted before it."""
    computed = computed or {}
    opts = model._meta
    fields = [
        field
        for field in opts.concrete_fields
        if not field.generated
        and not (field is opts.auto_field and objs[0].pk is None)
        and field.column not in computed
    ]
    query = InsertQuery(model)
    query.insert_values(fields, list(objs), raw=False)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [opts.get_field(name) for name in returning]
    [(sql, params)] = compiler.as_sql()
    params = list(params)
    if not computed:
        return sql, params
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in computed)
    values = ", ".join(expression for expression, _ in computed.values())
    extra = [param for _, column_params in computed.values() for param in column_params]
    # The INSERT the compiler built: its column list, then the rows as one UNNEST (several
    # rows) or one VALUES row, then RETURNING; the computed columns go at the end of both.
    head = f"INSERT INTO {quote(opts.db_table)} ("
    end = sql.index(")", len(head))
    assert sql.startswith(head), sql[:80]
    rows, returned = sql[end + 1 :].split(" RETURNING ", 1)
    if rows.startswith(" SELECT * FROM UNNEST("):
        rows = f" SELECT *, {values} FROM" + rows.removeprefix(" SELECT * FROM")
        params = extra + params  # the computed values come before the arrays
    else:
        assert rows.startswith(" VALUES (") and rows.endswith(")"), rows[:80]
        rows = f"{rows[:-1]}, {values})"
        params += extra  # after the row's values; RETURNING takes no parameters
    return f"{sql[:end]}, {columns}){rows} RETURNING {returned}", params
