"""The statement that records a scored outcome on PostgreSQL: the agent's row, changed only
if its standing is still the one scored against, and the event — as CTEs a caller can run
alone (`reputation.services.reputation_record`) or put in a statement of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection

from reputation.models import AgentReputation, ReputationEvent
from reputation.scoring import Scoring

# Another write that goes with an event, given the name of the CTE it must follow (or
# None, for a statement of its own): its SQL and parameters.
AlsoWrite = Callable[[str | None], tuple[str, list[Any]]]


def reputation_record_sql(
    scoring: Scoring, also: AlsoWrite | None = None, *, after: str | None = None
) -> tuple[str, list[Any]]:
    """The CTEs `scored` (the conditional UPDATE; with `after`, the name of an earlier CTE,
    only if that returned a row), `also_written` (`also`) and `scored_event` (the event's
    INSERT, returning its id), and their parameters."""
    successes, failures, neutral = scoring.version
    key = (tuple(scoring.changes), tuple(scoring.event), after)
    if key not in RECORD_SQL:
        RECORD_SQL[key] = _record_sql(*key)
    update, insert = RECORD_SQL[key]
    also_sql, also_params = also("scored") if also is not None else ("", [])
    also_sql = f", also_written AS ({also_sql})" if also_sql else ""
    params = [
        *scoring.changes.values(),
        scoring.agent_id,
        successes,
        failures,
        neutral,
        *also_params,
        *scoring.event.values(),
    ]
    return f"{update}{also_sql}, {insert}", params


def reputation_recorded(scoring: Scoring, event_id: int) -> ReputationEvent:
    """The event a recorded Scoring wrote, as its statement returned its id."""
    event = ReputationEvent(pk=event_id, **scoring.event)
    event._state.adding = False
    return event


# (the names it changes, the event's names, the CTE it follows) → its UPDATE and INSERT.
RECORD_SQL: dict[tuple[tuple[str, ...], tuple[str, ...], str | None], tuple[str, str]] = {}


def _record_sql(
    changes: tuple[str, ...], event: tuple[str, ...], after: str | None
) -> tuple[str, str]:
    rep, events = AgentReputation._meta, ReputationEvent._meta
    changed = [_field(rep, name) for name in changes]
    sets = ", ".join(f"{field.column} = %s::{_cast(field)}" for field in changed)
    fields = [_field(events, name.removesuffix("_id")) for name in event]
    columns = ", ".join(str(field.column) for field in fields)
    values = ", ".join(f"%s::{_cast(field)}" for field in fields)
    guard = f" AND EXISTS (SELECT 1 FROM {after})" if after else ""  # noqa: S608
    update = (
        f"scored AS (UPDATE {rep.db_table} SET {sets} "  # noqa: S608
        f"WHERE agent_id = %s AND successes = %s AND failures = %s AND neutral = %s{guard} "
        "RETURNING agent_id)"
    )
    insert = (
        f"scored_event AS (INSERT INTO {events.db_table} ({columns}) "  # noqa: S608
        f"SELECT {values} FROM scored RETURNING id)"
    )
    return update, insert


def _field(meta: Any, name: str) -> Any:
    return meta.get_field(name)


def _cast(field: Any) -> str:
    # Never a varchar(n): a cast to it would cut a longer string instead of refusing it.
    if field.get_internal_type() == "CharField":
        return "text"
    return str(field.cast_db_type(connection))
