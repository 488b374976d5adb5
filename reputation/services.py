from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
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
