"""Replay every agent's events through the policy that scored them, within the daily cap
that was in force; compare exactly. A refunded dispute's event (reputation.disputes) is
replayed in its place like any other: a failure the requester caused."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from reputation.models import INITIAL_SCORE, AgentReputation, ReputationEvent
from reputation.policies import (
    NeutralReason,
    Outcome,
    OutcomeKind,
    Scored,
    Standing,
    policy_for,
    score_outcome,
)


@dataclass
class ReputationReport:
    agents: int = 0
    events: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class Replay:
    """One agent's standing as its events replay, with each requester's moves per day."""

    standing: Standing = field(
        default_factory=lambda: Standing(score=INITIAL_SCORE, successes=0, failures=0)
    )
    neutral: int = 0
    requesters: set[Any] = field(default_factory=set)
    moved: dict[tuple[Any, Any], Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def allowance(self, event: ReputationEvent) -> Decimal | None:
        if event.daily_cap is None or event.requester_id is None:
            return None
        return event.daily_cap - self.moved[(event.requester_id, event.settled_on)]

    def replay(self, event: ReputationEvent) -> Scored:
        kind = event.outcome
        if event.neutral_reason == NeutralReason.DAILY_CAP:
            # The cap makes any scored outcome neutral when nothing was left, and only then:
            # replayed as scored, it comes out capped exactly when that was so.
            kind = OutcomeKind.SUCCESS
        outcome = Outcome(
            kind=kind,
            reason=event.reason,
            fuel_used=event.fuel_used,
            fuel_limit=event.fuel_limit,
            elapsed_ms=event.elapsed_ms,
            neutral_reason=event.neutral_reason,
        )
        return score_outcome(
            policy_for(event.policy), self.standing, outcome, self.allowance(event)
        )

    def advance(self, event: ReputationEvent, scored: Scored) -> None:
        before = self.standing
        success, failure = scored.kind == OutcomeKind.SUCCESS, scored.kind == OutcomeKind.FAILURE
        self.standing = Standing(
            score=scored.score,
            successes=before.successes + success,
            failures=before.failures + failure,
            evidence_successes=before.evidence_successes + (scored.weight if success else 0),
            evidence_failures=before.evidence_failures + (scored.weight if failure else 0),
        )
        self.neutral += scored.kind == OutcomeKind.NEUTRAL
        if event.requester_id is not None:
            self.moved[(event.requester_id, event.settled_on)] += abs(scored.score - before.score)
            if scored.kind != OutcomeKind.NEUTRAL:
                self.requesters.add(event.requester_id)


def _show(values: tuple) -> str:
    return "(" + ", ".join(str(value) for value in values) + ")"


def reputation_audit() -> ReputationReport:
    report = ReputationReport()
    events = defaultdict(list)
    for event in ReputationEvent.objects.order_by("id").iterator():
        events[event.agent_id].append(event)
        report.events += 1
    reputations = {r.agent_id: r for r in AgentReputation.objects.all()}
    for agent_id in sorted(set(reputations) | set(events)):
        report.agents += 1
        replay = Replay()
        for event in events.get(agent_id, []):
            before = replay.standing.score
            scored = replay.replay(event)
            if event.dispute_id is not None and (
                event.task_id is not None or event.outcome == OutcomeKind.SUCCESS
            ):
                report.violations.append(
                    f"agent {agent_id} event {event.pk}: a dispute's event is the task's or "
                    "scores a success"
                )
            if event.delta != event.score_after - event.score_before:
                report.violations.append(
                    f"agent {agent_id} event {event.pk}: delta does not add up"
                )
            recorded = (
                event.outcome,
                event.neutral_reason,
                event.score_before,
                event.score_after,
                event.weight,
            )
            replayed = (scored.kind, scored.neutral_reason, before, scored.score, scored.weight)
            if recorded != replayed:
                report.violations.append(
                    f"agent {agent_id} event {event.pk}: recorded (outcome, neutral reason, "
                    f"before, after, weight) = {_show(recorded)}, replay gives {_show(replayed)}"
                )
            replay.advance(event, scored)
        stored = reputations.get(agent_id)
        if stored is None:
            report.violations.append(f"agent {agent_id} has events but no reputation row")
            continue
        standing = replay.standing
        found = (
            stored.score,
            stored.successes,
            stored.failures,
            stored.neutral,
            stored.evidence_successes,
            stored.evidence_failures,
            stored.requesters,
        )
        expected = (
            standing.score,
            standing.successes,
            standing.failures,
            replay.neutral,
            standing.evidence_successes,
            standing.evidence_failures,
            len(replay.requesters),
        )
        if found != expected:
            report.violations.append(
                f"agent {agent_id}: stored (score, successes, failures, neutral, evidence of "
                f"successes, of failures, requesters) = {_show(found)}, replay gives "
                f"{_show(expected)}"
            )
    return report
