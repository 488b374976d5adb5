"""A settled task's outcome scored and recorded by SQL on PostgreSQL (SPEC §20): the call of
`reputation_settle` (migration reputation 0006), which a settlement's one statement makes
last, or a statement of its own. Nothing is read before: the function takes the agent's
row lock, reads the standing and the requester's day under it, scores the outcome with
the policy's SQL form and writes the row, the event and the fuel sample that goes with it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from reputation.policies import (
    NeutralReason,
    Outcome,
    OutcomeKind,
    current_policy_path,
    policy_for,
    quantize,
    sql_form_of,
)


@lru_cache(maxsize=8)
def _form_of(path: str) -> str | None:
    return sql_form_of(policy_for(path))


def reputation_sql_form() -> str | None:
    """The SQL form of the policy in force; None when it has none (or off PostgreSQL)."""
    if connection.vendor != "postgresql":
        return None
    return _form_of(current_policy_path())


def outcome_check(outcome: Outcome) -> None:
    """Refuse an outcome no policy can score (before anything is written)."""
    if outcome.kind not in OutcomeKind.values:
        raise ValueError(f"unknown outcome {outcome.kind!r}")
    if outcome.neutral_reason and (
        outcome.kind != OutcomeKind.NEUTRAL or outcome.neutral_reason not in NeutralReason.values
    ):
        raise ValueError(
            f"a {outcome.kind} outcome has no neutral reason {outcome.neutral_reason!r}"
        )


@dataclass(frozen=True)
class FuelRun:
    """A successful run, for the binary's ring of fuel samples (`ring` slots)."""

    binary_id: int
    fuel_used: int
    input_bytes: int
    ring: int


@dataclass(frozen=True)
class ReputationWrite:
    """What a settlement's statement scores and writes for its agent: the task's outcome
    (None: no event, for a task whose outcome is scored elsewhere) and the fuel sample that
    goes with it (None: no sample)."""

    agent_id: int
    task_id: Any
    requester_id: Any
    outcome: Outcome | None
    sample: FuelRun | None = None

    def call(self, task: str = "%s::uuid") -> tuple[str, list[Any]]:
        """`reputation_settle(…)` returning (event_id, delta), and its parameters; the
        task's id is the SQL `task` (by default a parameter)."""
        outcome, sample, form = self.outcome, self.sample, reputation_sql_form()
        if outcome is not None:
            outcome_check(outcome)
            if form is None:
                raise ValueError(f"the policy {current_policy_path()} has no SQL form")
        cap = None
        if self.requester_id is not None:
            cap = quantize(Decimal(settings.REPUTATION_DAILY_CAP_PER_REQUESTER))
        now = timezone.now()
        params: list[Any] = [self.agent_id]
        params += [self.task_id] if task == "%s::uuid" else []
        params += [
            self.requester_id,
            outcome.kind if outcome else None,
            outcome.reason if outcome else "",
            outcome.neutral_reason if outcome else "",
            current_policy_path(),
            form,
            now.astimezone(datetime.UTC).date(),
            cap,
            outcome.fuel_used if outcome else 0,
            outcome.fuel_limit if outcome else 0,
            outcome.elapsed_ms if outcome else 0,
            now,
            *(
                (sample.binary_id, sample.fuel_used, sample.input_bytes, sample.ring)
                if sample
                else (None, None, None, None)
            ),
        ]
        return CALL.format(task=task), params


CALL = (
    "reputation_settle(%s::bigint, {task}, %s::bigint, %s::text, %s::text, %s::text, "
    "%s::text, %s::text, %s::date, %s::numeric, %s::bigint, %s::bigint, %s::integer, "
    "%s::timestamptz, %s::bigint, %s::bigint, %s::bigint, %s::integer)"
)


def reputation_settle(write: ReputationWrite) -> tuple[int | None, Decimal | None]:
    """Score and record in a statement of its own (in the caller's transaction): the
    event's id and delta (None, None without an outcome)."""
    call, params = write.call()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT event_id, delta FROM {call}", params)  # noqa: S608
        event_id, delta = cursor.fetchone()
    return event_id, delta
