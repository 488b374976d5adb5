"""What a settled task says about its agent (SPEC §13): a success, a failure the agent can
be held to, or a neutral outcome with the reason it is not scored.

A failure counts against an agent only when the agent can be held to it. Running out of
fuel or time counts only when the run had at least the fuel or time the agent recommends
(pinned on the task at submission; the fuel judged is what the run actually got, after the
budget capped it), and no failure counts when the run had less memory than recommended. An
output that fails a schema the requester added is the requester's business. A task whose
requester owns the agent, and a success that cost nothing, are never scored: they would
let an owner buy reputation.
"""

from __future__ import annotations

from typing import Protocol

from marketplace.models import Task
from reputation.models import ReputationEvent
from reputation.policies import Outcome, OutcomeKind

Reason = Task.FailureReason
Neutral = ReputationEvent.NeutralReason

# Failures the agent caused cost it reputation; the platform's and the requester's don't.
AGENT_FAULTS = {
    Reason.OUT_OF_FUEL,
    Reason.TIMEOUT,
    Reason.MEMORY_LIMIT,
    Reason.TRAP,
    Reason.EXIT_NONZERO,
    Reason.OUTPUT_TOO_LARGE,
    Reason.INVALID_OUTPUT,
}
NOT_THE_AGENTS: dict[str, str] = {
    Reason.PLATFORM_ERROR: Neutral.PLATFORM,
    Reason.VALIDATION_FAILED: Neutral.VALIDATION,
}


class Run(Protocol):
    """What settlement knows of a run (execution.services.Execution)."""

    @property
    def reason(self) -> str: ...
    @property
    def fuel_used(self) -> int: ...
    @property
    def fuel_limit(self) -> int: ...
    @property
    def elapsed_ms(self) -> int: ...


def below_recommended(task: Task, reason: str, *, fuel: int) -> bool:
    """Whether the run had less than the agent recommends, in a way that explains `reason`.

    Less fuel explains running out of it and less time a timeout; less memory explains any
    failure, because a program whose allocation is refused may end in any of them (a trap,
    an exit code, garbage output). `fuel` is what the run got. A task that predates
    recommendations pinned none and is judged as before.
    """
    if task.recommended_memory_mb is not None and task.memory_limit_mb < task.recommended_memory_mb:
        return True
    limits: dict[str, tuple[int, int | None]] = {
        Reason.OUT_OF_FUEL: (fuel, task.recommended_fuel),
        Reason.TIMEOUT: (task.timeout_ms, task.recommended_timeout_ms),
    }
    ran_with, recommended = limits.get(reason, (0, None))
    return recommended is not None and ran_with < recommended


def task_outcome(task: Task, run: Run, *, cost: int, fuel: int) -> Outcome:
    """The outcome a settled task scores as; `fuel` is the fuel the run was given."""
    reason = run.reason
    kind: str
    neutral: str
    if reason in NOT_THE_AGENTS:
        kind, neutral = OutcomeKind.NEUTRAL, NOT_THE_AGENTS[reason]
    elif task.requester_id == task.agent.owner_id:
        kind, neutral = OutcomeKind.NEUTRAL, Neutral.SELF_DEALING
    elif not reason:
        kind, neutral = OutcomeKind.SUCCESS, ""
        if cost == 0:
            kind, neutral = OutcomeKind.NEUTRAL, Neutral.ZERO_COST
    elif below_recommended(task, reason, fuel=fuel):
        kind, neutral = OutcomeKind.NEUTRAL, Neutral.REQUESTER_LIMITS
    elif reason == Reason.INVALID_OUTPUT and task.requester_schema:
        kind, neutral = OutcomeKind.NEUTRAL, Neutral.REQUESTER_SCHEMA
    elif reason in AGENT_FAULTS:
        kind, neutral = OutcomeKind.FAILURE, ""
    else:  # a reason this module does not know is nobody's fault until it is classified
        kind, neutral = OutcomeKind.NEUTRAL, Neutral.PLATFORM
    return Outcome(
        kind,
        reason=reason,
        fuel_used=run.fuel_used,
        fuel_limit=run.fuel_limit or task.fuel_limit,
        elapsed_ms=run.elapsed_ms,
        neutral_reason=neutral,
    )
