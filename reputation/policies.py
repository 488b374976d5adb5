"""Scoring policies. Pure functions of (standing, outcome) → new score, so events replay exactly.

A policy is chosen with the REPUTATION_POLICY setting (a dotted path); each event records
the policy that scored it, so the audit replays history even across a policy change. A
policy may also have an SQL form (`sql_form`, the functions of migration reputation 0006),
which settlement scores with on PostgreSQL, inside its one statement; the Python form
scores on SQLite and replays every event in the audit, and both give the same, as stored.

On top of the policy sits the daily cap (SPEC §13): one requester moves an agent by at most
so many points a UTC day. `score_outcome` applies an outcome within what is left of that
allowance; when the policy's move is larger, the policy itself says how to count the
outcome in part (`capped`), so the standing stays one the policy can go on from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from reputation.models import ReputationEvent

# What an outcome counts as. Events store its value, which the audit replays as is.
OutcomeKind = ReputationEvent.Outcome
NeutralReason = ReputationEvent.NeutralReason

QUANTUM = Decimal("0.0001")
WEIGHT_QUANTUM = Decimal("0.00000001")
WEIGHT_STEPS = 10**8  # weights are multiples of WEIGHT_QUANTUM in [0, 1]
ZERO, ONE, HUNDRED = Decimal(0), Decimal(1), Decimal(100)


def quantize(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def clamp(value: Decimal) -> Decimal:
    return max(ZERO, min(HUNDRED, quantize(value)))


@dataclass(frozen=True)
class Standing:
    score: Decimal
    successes: int
    failures: int
    # Successes and failures weighted by the share of each that counted; by default the
    # plain counts (every outcome counted in full).
    evidence_successes: Decimal = field(default=Decimal(-1))
    evidence_failures: Decimal = field(default=Decimal(-1))

    def __post_init__(self) -> None:
        if self.evidence_successes < 0:
            object.__setattr__(self, "evidence_successes", Decimal(self.successes))
        if self.evidence_failures < 0:
            object.__setattr__(self, "evidence_failures", Decimal(self.failures))


@dataclass(frozen=True)
class Outcome:
    kind: str  # an OutcomeKind value
    reason: str = ""
    fuel_used: int = 0
    fuel_limit: int = 0
    elapsed_ms: int = 0
    neutral_reason: str = ""  # a NeutralReason value, for a neutral outcome


class Policy(Protocol):
    def next_score(self, standing: Standing, outcome: Outcome) -> Decimal: ...

    def capped(
        self, standing: Standing, outcome: Outcome, allowance: Decimal
    ) -> tuple[Decimal, Decimal]:
        """(score, weight): the outcome counted only in part, moving the score by at most
        `allowance` (> 0) points; the weight is the share of the outcome that counted."""
        ...


class DefaultPolicy:
    """+2.0 for a success, + up to 1.0 for leaving fuel unused, + 0.5 under one second;
    −5.0 for a failure the agent caused; 0 for platform faults and failed validation."""

    sql_form = "default"  # reputation_default_policy() in SQL (migration reputation 0006)

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

    def capped(
        self, standing: Standing, outcome: Outcome, allowance: Decimal
    ) -> tuple[Decimal, Decimal]:
        full = self.delta(outcome)
        move = min(abs(full), allowance)
        if full == 0 or move <= 0:
            return standing.score, ZERO
        score = clamp(standing.score + (move if full > 0 else -move))
        return score, (move / abs(full)).quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN)


class BetaPolicy:
    """Bayesian success rate: the mean of Beta(1 + successes, 1 + failures), × 100.

    A new agent scores 50; neutral outcomes (platform faults, failed validation) count for
    nothing. Unlike the default policy, one lucky streak cannot outweigh a long record.
    Successes and failures are the weighted evidence: an outcome the daily cap cut short
    adds only the share of it that counted.
    """

    sql_form = "beta"  # reputation_beta_policy() in SQL (migration reputation 0006)

    def _mean(self, standing: Standing, outcome: Outcome, weight: Decimal) -> Decimal:
        successes = standing.evidence_successes
        failures = standing.evidence_failures
        if outcome.kind == OutcomeKind.SUCCESS:
            successes += weight
        elif outcome.kind == OutcomeKind.FAILURE:
            failures += weight
        return clamp(HUNDRED * (successes + 1) / (successes + failures + 2))

    def next_score(self, standing: Standing, outcome: Outcome) -> Decimal:
        if outcome.kind == OutcomeKind.NEUTRAL:
            return standing.score
        return self._mean(standing, outcome, ONE)

    def capped(
        self, standing: Standing, outcome: Outcome, allowance: Decimal
    ) -> tuple[Decimal, Decimal]:
        if outcome.kind == OutcomeKind.NEUTRAL:
            return standing.score, ZERO
        # The direction the outcome pushes the mean: up for a success, down for a failure.
        push = 1 if outcome.kind == OutcomeKind.SUCCESS else -1

        def within(steps: int) -> bool:
            mean = self._mean(standing, outcome, Decimal(steps) * WEIGHT_QUANTUM)
            return push * (mean - standing.score) <= allowance

        if within(0):
            # The mean moves monotonically with the weight: the largest share that fits.
            low, high = 0, WEIGHT_STEPS
            while low < high:
                middle = (low + high + 1) // 2
                if within(middle):
                    low = middle
                else:
                    high = middle - 1
            weight = Decimal(low) * WEIGHT_QUANTUM
            mean = self._mean(standing, outcome, weight)
            if abs(mean - standing.score) <= allowance:
                return mean, weight
        # Only after a change of policy does the score sit this far from the mean of its
        # evidence: it moves toward where the policy puts it by the allowance, and the
        # outcome adds no evidence.
        target = self.next_score(standing, outcome)
        step = max(-allowance, min(allowance, target - standing.score))
        return clamp(standing.score + step), ZERO


@dataclass(frozen=True)
class Scored:
    """What an outcome does to an agent: the kind it counts as, the new score, the share of
    the outcome that counted, and why it was not scored when it is neutral."""

    kind: str
    score: Decimal
    weight: Decimal
    neutral_reason: str = ""


def score_outcome(
    policy: Policy, standing: Standing, outcome: Outcome, allowance: Decimal | None
) -> Scored:
    """Score `outcome` within `allowance` points (None: uncapped), as the policy says.

    An outcome moves the score in full when the move fits the allowance, in part when it
    does not, and not at all (neutral, `daily_cap`) when nothing remains.
    """
    if outcome.kind == OutcomeKind.NEUTRAL:
        return Scored(OutcomeKind.NEUTRAL, standing.score, ZERO, outcome.neutral_reason)
    if allowance is not None and allowance <= 0:
        return Scored(OutcomeKind.NEUTRAL, standing.score, ZERO, NeutralReason.DAILY_CAP)
    after = policy.next_score(standing, outcome)
    if allowance is None or abs(after - standing.score) <= allowance:
        return Scored(outcome.kind, after, ONE)
    after, weight = policy.capped(standing, outcome, allowance)
    return Scored(outcome.kind, after, weight)


def policy_for(path: str | None = None) -> Policy:
    return import_string(path or settings.REPUTATION_POLICY)()


def current_policy_path() -> str:
    return settings.REPUTATION_POLICY


def sql_form_of(policy: Policy) -> str | None:
    """The name of the policy's SQL form, which settlement scores with on PostgreSQL; None
    for a policy without one (a subclass does not inherit its parent's: it may score
    otherwise), which settlement scores in Python under the agent's row lock."""
    form = vars(type(policy)).get("sql_form")
    return form if isinstance(form, str) else None
