from __future__ import annotations

from typing import Any

from django.db import transaction

from reputation.models import AgentReputation, ReputationEvent
from reputation.policies import Outcome, OutcomeKind, Standing, current_policy_path, policy_for

# The AgentReputation counter each kind of outcome adds to.
COUNTERS: dict[str, str] = {
    OutcomeKind.SUCCESS: "successes",
    OutcomeKind.FAILURE: "failures",
    OutcomeKind.NEUTRAL: "neutral",
}


def reputation_open(*, agent_id: int) -> AgentReputation:
    # ON CONFLICT DO NOTHING: safe against a concurrent first call, and no failed INSERT.
    AgentReputation.objects.bulk_create([AgentReputation(agent_id=agent_id)], ignore_conflicts=True)
    return AgentReputation.objects.get(agent_id=agent_id)


def reputation_apply(*, agent_id: int, task_id: Any, outcome: Outcome) -> ReputationEvent:
    """Score one outcome. Idempotent per task: a second call returns the first event."""
    if outcome.kind not in OutcomeKind.values:
        raise ValueError(f"unknown outcome {outcome.kind!r}")
    with transaction.atomic():
        rep = (
            AgentReputation.objects.select_for_update(no_key=True).filter(agent_id=agent_id).first()
        )
        if rep is None:  # agents get their row when created; this is for older data
            reputation_open(agent_id=agent_id)
            rep = AgentReputation.objects.select_for_update(no_key=True).get(agent_id=agent_id)
        if task_id is not None:
            existing = ReputationEvent.objects.filter(task_id=task_id).first()
            if existing is not None:
                return existing
        path = current_policy_path()
        before = rep.score
        after = policy_for(path).next_score(
            Standing(score=before, successes=rep.successes, failures=rep.failures), outcome
        )
        counter = COUNTERS[outcome.kind]
        setattr(rep, counter, getattr(rep, counter) + 1)
        rep.score = after
        rep.save(update_fields=["score", counter, "updated_at"])
        return ReputationEvent.objects.create(
            agent_id=agent_id,
            task_id=task_id,
            outcome=outcome.kind,
            reason=outcome.reason,
            policy=path,
            fuel_used=outcome.fuel_used,
            fuel_limit=outcome.fuel_limit,
            elapsed_ms=outcome.elapsed_ms,
            delta=after - before,
            score_before=before,
            score_after=after,
        )
