"""Scoring policies. Pure functions of (standing, outcome) → new score, so events replay exactly.

A policy is chosen with the REPUTATION_POLICY setting (a dotted path); each event records
the policy that scored it, so the audit replays history even across a policy change.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from reputation.models import ReputationEvent

# What an outcome counts as. Events store its value, which the audit replays as is.
OutcomeKind = ReputationEvent.Outcome

QUANTUM = Decimal("0.0001")
ZERO, HUNDRED = Decimal(0), Decimal(100)


def quantize(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def clamp(value: Decimal) -> Decimal:
    return max(ZERO, min(HUNDRED, quantize(value)))


@dataclass(frozen=True)
class Standing:
    score: Decimal
    successes: int
    failures: int


@dataclass(frozen=True)
class Outcome:
    kind: str  # an OutcomeKind value
    reason: str = ""
    fuel_used: int = 0
    fuel_limit: int = 0
    elapsed_ms: int = 0


class Policy(Protocol):
    def next_score(self, standing: Standing, outcome: Outcome) -> Decimal: ...


class DefaultPolicy:
    """+2.0 for a success, + up to 1.0 for leaving fuel unused, + 0.5 under one second;
    −5.0 for a failure the agent caused; 0 for platform faults and failed validation."""

    SUCCESS = Decimal("2.0")
    EFFICIENCY = Decimal("1.0")
    FAST = Decimal("0.5")
    FAST_UNDER_MS = 1000
    FAILURE = Decimal("-5.0")

    def delta(self, outcome: Outcome) -> Decimal:
        if outcome.kind == OutcomeKind.SUCCESS:
            delta = self.SUCCESS
            if outcome.fuel_limit > 0:
                unused = max(0, min(outcome.fuel_limit, outcome.fuel_limit - outcome.fuel_used))
                delta += quantize(self.EFFICIENCY * Decimal(unused) / Decimal(outcome.fuel_limit))
            if outcome.elapsed_ms < self.FAST_UNDER_MS:
                delta += self.FAST
            return delta
        if outcome.kind == OutcomeKind.FAILURE:
            return self.FAILURE
        return ZERO

    def next_score(self, standing: Standing, outcome: Outcome) -> Decimal:
        return clamp(standing.score + self.delta(outcome))


class BetaPolicy:
    """Bayesian success rate: the mean of Beta(1 + successes, 1 + failures), × 100.

    A new agent scores 50; neutral outcomes (platform faults, failed validation) count for
    nothing. Unlike the default policy, one lucky streak cannot outweigh a long record.
    """

    def next_score(self, standing: Standing, outcome: Outcome) -> Decimal:
        successes = standing.successes + (outcome.kind == OutcomeKind.SUCCESS)
        failures = standing.failures + (outcome.kind == OutcomeKind.FAILURE)
        if outcome.kind == OutcomeKind.NEUTRAL:
            return standing.score
        return clamp(HUNDRED * Decimal(successes + 1) / Decimal(successes + failures + 2))


def policy_for(path: str | None = None) -> Policy:
    return import_string(path or settings.REPUTATION_POLICY)()


def current_policy_path() -> str:
    return settings.REPUTATION_POLICY
