from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, Subquery, Sum, Value
from django.db.models.functions import Abs, Coalesce
from django.utils import timezone

from reputation.models import AgentReputation, ReputationEvent, score_field
from reputation.policies import (
    NeutralReason,
    Outcome,
    OutcomeKind,
    Standing,
    current_policy_path,
    policy_for,
    quantize,
    score_outcome,
)
from reputation.record_sql import AlsoWrite, reputation_record_sql, reputation_recorded
from reputation.scoring import Scoring

# The AgentReputation counter each kind of outcome adds to.
COUNTERS: dict[str, str] = {
    OutcomeKind.SUCCESS: "successes",
    OutcomeKind.FAILURE: "failures",
    OutcomeKind.NEUTRAL: "neutral",
}
EVIDENCE: dict[str, str] = {
    OutcomeKind.SUCCESS: "evidence_successes",
    OutcomeKind.FAILURE: "evidence_failures",
}


def reputation_open(*, agent_id: int) -> AgentReputation:
    # ON CONFLICT DO NOTHING: safe against a concurrent first call, and no failed INSERT.
    AgentReputation.objects.bulk_create([AgentReputation(agent_id=agent_id)], ignore_conflicts=True)
    return AgentReputation.objects.get(agent_id=agent_id)


def standing_of(rep: AgentReputation) -> Standing:
    return Standing(
        score=rep.score,
        successes=rep.successes,
        failures=rep.failures,
        evidence_successes=rep.evidence_successes,
        evidence_failures=rep.evidence_failures,
    )


@dataclass(frozen=True)
class Record:
    """What scoring an outcome needs to know besides the standing, read in one statement."""

    scored_already: bool  # the task has its event: a repeated settlement
    moved_today: Decimal  # points the requester moved the agent by this UTC day
    requester_known: bool  # some earlier outcome of the requester's was scored


def _moved_on(theirs: Any, day: datetime.date) -> Subquery:
    """How far these events moved the agent on `day`: the daily cap's sum."""
    return Subquery(
        theirs.filter(settled_on=day)
        .exclude(delta=0)  # adds nothing, and leaves the partial index usable
        .order_by()
        .values("agent_id")
        .annotate(total=Sum(Abs("delta")))
        .values("total")
    )


def record_of(*, agent_id: int, task_id: Any, requester_id: Any, day: datetime.date) -> Record:
    theirs = ReputationEvent.objects.filter(agent_id=agent_id, requester_id=requester_id)
    today = _moved_on(theirs, day)
    no = Value(False)
    row = (
        AgentReputation.objects.filter(agent_id=agent_id)
        .values(
            scored_already=Exists(ReputationEvent.objects.filter(task_id=task_id))
            if task_id is not None
            else no,
            moved_today=Coalesce(today, Value(Decimal(0)), output_field=score_field()),
            requester_known=Exists(theirs.exclude(outcome=OutcomeKind.NEUTRAL))
            if requester_id is not None
            else no,
        )
        .get()
    )
    return Record(**row)


def reputation_apply(
    *, agent_id: int, task_id: Any, outcome: Outcome, requester_id: Any = None
) -> ReputationEvent:
    """Score one outcome. Idempotent per task: a second call returns the first event.

    An outcome a requester caused moves the agent by at most what is left of that
    requester's REPUTATION_DAILY_CAP_PER_REQUESTER for this agent on this UTC day; nothing
    left makes it neutral (`daily_cap`).
    """
    if outcome.kind not in OutcomeKind.values:
        raise ValueError(f"unknown outcome {outcome.kind!r}")
    if outcome.neutral_reason and (
        outcome.kind != OutcomeKind.NEUTRAL or outcome.neutral_reason not in NeutralReason.values
    ):
        raise ValueError(
            f"a {outcome.kind} outcome has no neutral reason {outcome.neutral_reason!r}"
        )
    with transaction.atomic():
        rep = reputation_lock(agent_id=agent_id)
        day = timezone.now().astimezone(datetime.UTC).date()
        # Read under the reputation row lock, in a statement of its own (not the locking
        # one, whose snapshot predates a concurrent settlement it may have waited for):
        # every event of this agent is written under that lock, so the sum is exact.
        record = record_of(agent_id=agent_id, task_id=task_id, requester_id=requester_id, day=day)
        if record.scored_already:
            return ReputationEvent.objects.get(task_id=task_id)
        cap = allowance = None
        if requester_id is not None:
            cap = quantize(Decimal(settings.REPUTATION_DAILY_CAP_PER_REQUESTER))
            allowance = cap - record.moved_today
        return reputation_write_locked(
            rep,
            record=record,
            outcome=outcome,
            requester_id=requester_id,
            day=day,
            cap=cap,
            allowance=allowance,
            task_id=task_id,
            fuel_used=outcome.fuel_used,
            fuel_limit=outcome.fuel_limit,
            elapsed_ms=outcome.elapsed_ms,
        )


def reputation_lock(*, agent_id: int) -> AgentReputation:
    """The agent's reputation row, locked (created first for agents older than the row)."""
    locked = AgentReputation.objects.select_for_update(no_key=True)
    rep = locked.filter(agent_id=agent_id).first()
    if rep is None:
        reputation_open(agent_id=agent_id)
        rep = locked.get(agent_id=agent_id)
    return rep


def reputation_write_locked(
    rep: AgentReputation,
    *,
    record: Record,
    outcome: Outcome,
    requester_id: Any,
    day: datetime.date,
    cap: Decimal | None,
    allowance: Decimal | None,
    **event: Any,
) -> ReputationEvent:
    """Score `outcome` against the locked row and write the row and its event. `event`
    names what the event is for (`task_id` or `dispute_id`) and any run figures."""
    path = current_policy_path()
    before = rep.score
    scored = score_outcome(policy_for(path), standing_of(rep), outcome, allowance)
    changed = ["score", COUNTERS[scored.kind], "updated_at"]
    setattr(rep, COUNTERS[scored.kind], getattr(rep, COUNTERS[scored.kind]) + 1)
    if scored.kind in EVIDENCE:
        evidence = EVIDENCE[scored.kind]
        setattr(rep, evidence, getattr(rep, evidence) + scored.weight)
        changed.append(evidence)
        if requester_id is not None and not record.requester_known:
            rep.requesters += 1
            changed.append("requesters")
    rep.score = scored.score
    rep.save(update_fields=changed)
    return ReputationEvent.objects.create(
        agent_id=rep.agent_id,
        requester_id=requester_id,
        outcome=scored.kind,
        reason=outcome.reason,
        neutral_reason=scored.neutral_reason,
        policy=path,
        settled_on=day,
        daily_cap=cap,
        weight=scored.weight,
        delta=scored.score - before,
        score_before=before,
        score_after=scored.score,
        **event,
    )


# --- settlement: scored before the transaction, written by one conditional statement ------


STANDING_FIELDS = (
    "score",
    "successes",
    "failures",
    "neutral",
    "evidence_successes",
    "evidence_failures",
    "requesters",
)


def _validate(outcome: Outcome) -> None:
    if outcome.kind not in OutcomeKind.values:
        raise ValueError(f"unknown outcome {outcome.kind!r}")
    if outcome.neutral_reason and (
        outcome.kind != OutcomeKind.NEUTRAL or outcome.neutral_reason not in NeutralReason.values
    ):
        raise ValueError(
            f"a {outcome.kind} outcome has no neutral reason {outcome.neutral_reason!r}"
        )


def _standing_read_orm(agent_id: int, requester_id: Any, day: datetime.date) -> dict | None:
    theirs = ReputationEvent.objects.filter(agent_id=agent_id, requester_id=requester_id)
    today = _moved_on(theirs, day)
    no = Value(False)
    return (
        AgentReputation.objects.filter(agent_id=agent_id)
        .values(
            *STANDING_FIELDS,
            moved_today=Coalesce(today, Value(Decimal(0)), output_field=score_field()),
            requester_known=Exists(theirs.exclude(outcome=OutcomeKind.NEUTRAL))
            if requester_id is not None
            else no,
        )
        .first()
    )


def _standing_sql(by_requester: bool) -> str:
    rep, events = AgentReputation._meta.db_table, ReputationEvent._meta.db_table
    columns = ", ".join(f"r.{name}" for name in STANDING_FIELDS)
    if not by_requester:  # nobody's allowance to work out
        return f"SELECT {columns}, 0, false FROM {rep} AS r WHERE r.agent_id = %s"  # noqa: S608
    theirs = f"FROM {events} AS e WHERE e.agent_id = r.agent_id AND e.requester_id = %s"
    return (
        f"SELECT {columns}, "  # noqa: S608
        f"COALESCE((SELECT sum(abs(e.delta)) {theirs} AND e.settled_on = %s AND e.delta <> 0), 0), "
        # The constant written in, so that a prepared statement's generic plan can use
        # the partial index on outcomes that scored.
        f"EXISTS (SELECT 1 {theirs} AND e.outcome <> '{OutcomeKind.NEUTRAL}') "
        f"FROM {rep} AS r WHERE r.agent_id = %s"
    )


STANDING_SQL: dict[bool, str] = {}


def _standing_read(agent_id: int, requester_id: Any, day: datetime.date) -> dict | None:
    """What `_standing_read_orm` reads, as one statement built once (PostgreSQL)."""
    by_requester = requester_id is not None
    if by_requester not in STANDING_SQL:
        STANDING_SQL[by_requester] = _standing_sql(by_requester)
    params = [requester_id, day, requester_id, agent_id] if by_requester else [agent_id]
    with connection.cursor() as cursor:
        cursor.execute(STANDING_SQL[by_requester], params)
        row = cursor.fetchone()
    if row is None:
        return None
    names = (*STANDING_FIELDS, "moved_today", "requester_known")
    return dict(zip(names, row, strict=True))


def reputation_score(
    *, agent_id: int, task_id: Any, outcome: Outcome, requester_id: Any = None
) -> Scoring:
    """Score an outcome against the standing as it is now: one statement, no lock, outside
    any transaction (the policy's work is done before the row is touched)."""
    _validate(outcome)
    day = timezone.now().astimezone(datetime.UTC).date()
    read = _standing_read if connection.vendor == "postgresql" else _standing_read_orm
    row = read(agent_id, requester_id, day)
    if row is None:  # agents get their row when created; this is for older data
        reputation_open(agent_id=agent_id)
        row = read(agent_id, requester_id, day)
        assert row is not None
    rep = AgentReputation(agent_id=agent_id, **{name: row[name] for name in STANDING_FIELDS})
    cap = allowance = None
    if requester_id is not None:
        cap = quantize(Decimal(settings.REPUTATION_DAILY_CAP_PER_REQUESTER))
        allowance = cap - row["moved_today"]
    path = current_policy_path()
    before = rep.score
    scored = score_outcome(policy_for(path), standing_of(rep), outcome, allowance)
    changes: dict[str, Any] = {"score": scored.score, "updated_at": timezone.now()}
    counter = COUNTERS[scored.kind]
    changes[counter] = getattr(rep, counter) + 1
    if scored.kind in EVIDENCE:
        evidence = EVIDENCE[scored.kind]
        changes[evidence] = getattr(rep, evidence) + scored.weight
        if requester_id is not None and not row["requester_known"]:
            changes["requesters"] = rep.requesters + 1
    event = {
        "agent_id": agent_id,
        "task_id": task_id,
        "requester_id": requester_id,
        "outcome": scored.kind,
        "reason": outcome.reason,
        "neutral_reason": scored.neutral_reason,
        "policy": path,
        "settled_on": day,
        "daily_cap": cap,
        "weight": scored.weight,
        "fuel_used": outcome.fuel_used,
        "fuel_limit": outcome.fuel_limit,
        "elapsed_ms": outcome.elapsed_ms,
        "delta": scored.score - before,
        "score_before": before,
        "score_after": scored.score,
        "created_at": timezone.now(),
    }
    return Scoring(agent_id, (rep.successes, rep.failures, rep.neutral), changes, event)


def reputation_record(scoring: Scoring, also: AlsoWrite | None = None) -> ReputationEvent | None:
    """Write a Scoring if the standing is still the one it was scored against: a conditional
    UPDATE of the agent's row and the event's INSERT — one statement on PostgreSQL, with
    `also` (a statement that goes with the event: a settlement's fuel sample) in it.

    The row lock this takes is held only until the caller commits, so a settlement does
    this last. None when another event came first (nothing written): the caller then
    scores under the row lock with `reputation_apply`.
    """
    successes, failures, neutral = scoring.version
    if connection.vendor != "postgresql":
        won = AgentReputation.objects.filter(
            agent_id=scoring.agent_id, successes=successes, failures=failures, neutral=neutral
        ).update(**scoring.changes)
        if not won:
            return None
        if also is not None:
            with connection.cursor() as cursor:
                cursor.execute(*also(None))
        return ReputationEvent.objects.create(**scoring.event)
    ctes, params = reputation_record_sql(scoring, also)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {ctes} SELECT id FROM scored_event", params)  # noqa: S608
        row = cursor.fetchone()
    return None if row is None else reputation_recorded(scoring, row[0])


def reputation_score_locked(
    *,
    agent_id: int,
    task_id: Any,
    outcome: Outcome,
    requester_id: Any = None,
    also: AlsoWrite | None = None,
) -> tuple[Scoring, ReputationEvent]:
    """When `reputation_record` found the standing moved on: take the agent's row lock
    (queueing behind the settlement that holds it until its commit), score against the
    standing read after it, and write — three statements, the row locked from the first."""
    locked = AgentReputation.objects.select_for_update(no_key=True).filter(agent_id=agent_id)
    list(locked.values_list("agent_id", flat=True))
    # Read in a statement of its own: the locking one's snapshot may predate the commit it
    # waited for, and every event of this agent is written under this lock.
    scoring = reputation_score(
        agent_id=agent_id, task_id=task_id, outcome=outcome, requester_id=requester_id
    )
    event = reputation_record(scoring, also)
    if event is None:  # nothing else writes the row without its lock
        raise RuntimeError(f"the reputation of agent {agent_id} changed under its lock")
    return scoring, event
