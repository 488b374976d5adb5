"""Replay every agent's events through the policy that scored them; compare exactly."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from reputation.models import INITIAL_SCORE, AgentReputation, ReputationEvent
from reputation.policies import Outcome, OutcomeKind, Standing, policy_for


@dataclass
class ReputationReport:
    agents: int = 0
    events: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def reputation_audit() -> ReputationReport:
    report = ReputationReport()
    events = defaultdict(list)
    for event in ReputationEvent.objects.order_by("id").iterator():
        events[event.agent_id].append(event)
        report.events += 1
    reputations = {r.agent_id: r for r in AgentReputation.objects.all()}
    for agent_id in sorted(set(reputations) | set(events)):
        report.agents += 1
        standing = Standing(score=INITIAL_SCORE, successes=0, failures=0)
        neutral = 0
        for event in events.get(agent_id, []):
            outcome = Outcome(
                kind=event.outcome,
                reason=event.reason,
                fuel_used=event.fuel_used,
                fuel_limit=event.fuel_limit,
                elapsed_ms=event.elapsed_ms,
            )
            expected = policy_for(event.policy).next_score(standing, outcome)
            if event.delta != event.score_after - event.score_before:
                report.violations.append(
                    f"agent {agent_id} event {event.pk}: delta does not add up"
                )
            if event.score_before != standing.score or event.score_after != expected:
                report.violations.append(
                    f"agent {agent_id} event {event.pk}: recorded {event.score_before} → "
                    f"{event.score_after}, replay gives {standing.score} → {expected}"
                )
            standing = Standing(
                score=expected,
                successes=standing.successes + (event.outcome == OutcomeKind.SUCCESS),
                failures=standing.failures + (event.outcome == OutcomeKind.FAILURE),
            )
            neutral += event.outcome == OutcomeKind.NEUTRAL
        stored = reputations.get(agent_id)
        if stored is None:
            report.violations.append(f"agent {agent_id} has events but no reputation row")
            continue
        found = (stored.score, stored.successes, stored.failures, stored.neutral)
        replayed = (standing.score, standing.successes, standing.failures, neutral)
        if found != replayed:
            report.violations.append(
                f"agent {agent_id}: stored (score, successes, failures, neutral) = {found}, "
                f"replay gives {replayed}"
            )
    return report
