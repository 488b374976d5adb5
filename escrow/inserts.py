"""INSERTs of model instances, to be put in a statement of several parts (a CTE).

A submission writes its task, its key's charge, its escrow and the hold in one statement on
PostgreSQL (marketplace.submissions); each part's INSERT is built here from model instances,
every value prepared by its field as `bulk_create` would prepare it (`pre_save`, then
`get_db_prep_save`). Rows go as one array per column (`UNNEST`), and a column whose value is
the same in every row (most of a batch's: its requester, agent, price, limits, the empty
result) as one value, prepared once: a batch of a hundred tasks is a few dozen parameters.
What that can't express (expressions, fields with placeholders of their own, types without
an array) is left to Django's compiler.
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
    """`INSERT INTO … RETURNING <returning>` for `objs`, and its parameters. `computed`
    names columns computed by SQL for each row (column → its SQL and parameters) rather than
    given: a row's value then sees the rows inserted before it."""
    computed = computed or {}
    opts = model._meta
    fields = [
        field
        for field in opts.concrete_fields
        if not field.generated
        and not (field is opts.auto_field and objs[0].pk is None)
        and field.column not in computed
    ]
    raw = [[field.pre_save(obj, add=True) for obj in objs] for field in fields]
    if not all(_plain(field, values) for field, values in zip(fields, raw, strict=True)):
        return _compiled(model, objs, fields, returning, computed)
    quote = connection.ops.quote_name
    selected: list[str] = []
    params: list[Any] = []
    arrays: list[str] = []
    array_params: list[Any] = []
    for field, values in zip(fields, raw, strict=True):
        kind = field.db_type(connection).split("(")[0]  # type: ignore[union-attr]
        first = values[0]
        if all(type(value) is type(first) and value == first for value in values):
            selected.append(f"%s::{kind}")
            params.append(field.get_db_prep_save(first, connection))
        else:
            selected.append(f"u.c{len(arrays)}")
            arrays.append(f"%s::{kind}[]")
            array_params.append([field.get_db_prep_save(value, connection) for value in values])
    for expression, expression_params in computed.values():
        selected.append(expression)
        params += expression_params
    columns = ", ".join(quote(column) for column in [*(str(f.column) for f in fields), *computed])
    names = ", ".join(f"c{i}" for i in range(len(arrays)))
    rows = f" FROM unnest({', '.join(arrays)}) AS u ({names})" if arrays else ""
    assert arrays or len(objs) == 1, "rows that differ in nothing but their number"
    returned = ", ".join(quote(_column(model, name)) for name in returning)
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({columns}) "
        f"SELECT {', '.join(selected)}{rows} RETURNING {returned}"
    )
    return sql, params + array_params


def _column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column, name
    return field.column


def _plain(field: models.Field[Any, Any], values: list[Any]) -> bool:
    """Whether the values go as they are prepared, in an array of the column's type."""
    target = field.target_field if field.is_relation else field  # type: ignore[attr-defined]
    return (
        not hasattr(field, "get_placeholder_sql")
        and target.get_internal_type() in connection.data_types
        and not any(hasattr(value, "resolve_expression") for value in values)
    )


def _compiled(
    model: type[models.Model],
    objs: Sequence[models.Model],
    fields: list[Any],
    returning: Sequence[str],
    computed: dict[str, tuple[str, list[Any]]],
) -> tuple[str, list[Any]]:
    """The INSERT Django's compiler builds, the computed columns added at the end of its
    column list and of its rows (one UNNEST for several rows, one VALUES row for one)."""
    opts = model._meta
    query = InsertQuery(model)
    query.insert_values(fields, list(objs), raw=False)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [opts.get_field(name) for name in returning]
    [(sql, compiled)] = compiler.as_sql()
    params = list(compiled)
    if not computed:
        return sql, params
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in computed)
    values = ", ".join(expression for expression, _ in computed.values())
    extra = [param for _, column_params in computed.values() for param in column_params]
    head = f"INSERT INTO {quote(opts.db_table)} ("
    assert sql.startswith(head), sql[:80]
    end = sql.index(")", len(head))
    rows, returned = sql[end + 1 :].split(" RETURNING ", 1)
    if rows.startswith(" SELECT * FROM UNNEST("):
        rows = f" SELECT *, {values} FROM" + rows.removeprefix(" SELECT * FROM")
        params = extra + params  # the computed values come before the arrays
    else:
        assert rows.startswith(" VALUES (") and rows.endswith(")"), rows[:80]
        rows = f"{rows[:-1]}, {values})"
        params += extra  # after the row's values; RETURNING takes no parameters
    return f"{sql[:end]}, {columns}){rows} RETURNING {returned}", params
