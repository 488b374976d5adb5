"""Evaluators (SPEC §21): which agents may judge an agent's work, the checks a submission
naming one passes, and how a dispute's outcome scores the evaluator whose verdict it tests.

The evaluation itself (its run, its verdict and their money) is the executor's:
execution/evaluation.py.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from escrow.errors import DomainError
from marketplace.models import Agent, Evaluation, Task
from reputation.policies import NeutralReason, Outcome, OutcomeKind, quantize
from reputation.services import record_of, reputation_lock, reputation_write_locked

MAX_EVALUATORS = 20  # evaluators one agent may accept
VERDICT_OVERTURNED = "verdict_overturned"
VERDICT_UPHELD = "verdict_upheld"


class EvaluatorNotAccepted(DomainError):
    code = "evaluator_not_accepted"
    default_message = "The agent does not accept this evaluator's verdict."


class BudgetTooSmall(DomainError):
    code = "budget_too_small"
    default_message = "The budget does not cover the agent's base fee and the evaluator's."


def evaluator_for(*, agent: Agent, slug: Any, budget: int, least: int) -> Agent:
    """The evaluator a submission names, if the agent accepts it and the budget covers the
    agent's least (its base fee and some fuel) plus the evaluator's base fee. Escrow or
    channel: either way the evaluator is paid from the budget (escrow.channel_evaluation)."""
    found = (
        agent.accepted_evaluators.filter(
            slug=str(slug), status=Agent.Status.ACTIVE, current_binary__isnull=False
        ).first()
        if isinstance(slug, str)
        else None
    )
    if found is None:
        raise EvaluatorNotAccepted(
            f"Agent {agent.slug} accepts no active evaluator {slug!r}; it accepts "
            f"{', '.join(accepted_slugs(agent)) or 'none'}.",
            fields={"evaluator": ["not accepted by the agent"]},
        )
    theirs = evaluator_least(base_fee=found.base_fee, fuel_price=found.fuel_price)
    if budget < least + theirs:
        raise BudgetTooSmall(
            f"The budget ({budget} µCR) must be at least {least + theirs} µCR: the agent's "
            f"base fee and some fuel ({least} µCR) plus the evaluator's ({theirs} µCR).",
            fields={"budget": [f"at least {least + theirs}"]},
        )
    return found


def evaluator_least(*, base_fee: int, fuel_price: int) -> int:
    """What an evaluator's run needs at least (its base fee and some fuel): what the task's
    own fuel is capped to leave in the budget (execution.runs.affordable_fuel)."""
    return base_fee + (1 if fuel_price > 0 else 0)


def evaluation_shown(task: Task) -> dict[str, Any] | None:
    """`evaluation` in a task's body: None for a task that names no evaluator; while the
    evaluator runs, its verdict is null."""
    if task.evaluator_id is None:
        return None
    evaluation = Evaluation.objects.filter(task_id=task.pk).select_related("evaluator").first()
    if evaluation is None:  # not settled yet, or it failed (then nothing was evaluated)
        slug = Agent.objects.values_list("slug", flat=True).get(pk=task.evaluator_id)
        return {
            "evaluator": slug,
            "status": None,
            "verdict": None,
            "score": None,
            "reason": None,
            "cost": None,
            "run": None,
            "receipt": None,
        }
    run = Task.objects.filter(evaluates_id=task.pk).values_list("pk", flat=True).first()
    return {
        "evaluator": evaluation.evaluator.slug,
        "status": evaluation.status,
        "verdict": evaluation.verdict or None,
        "score": None if evaluation.score is None else float(evaluation.score),
        "reason": evaluation.reason or None,
        "cost": evaluation.cost,
        "run": run,
        "receipt": evaluation.receipt,
    }


def accepted_slugs(agent: Agent) -> list[str]:
    return sorted(agent.accepted_evaluators.values_list("slug", flat=True))


def accepted_evaluators_set(*, agent: Agent, slugs: list[str]) -> list[str]:
    """Replace the evaluators an agent accepts (any agent, even its own: its owner chooses
    whom to trust); EvaluatorNotAccepted names unknown slugs."""
    wanted = sorted(set(slugs))
    found = list(Agent.objects.filter(slug__in=wanted).order_by("slug"))
    missing = sorted(set(wanted) - {evaluator.slug for evaluator in found})
    if missing:
        raise EvaluatorNotAccepted(
            f"No such agent: {', '.join(missing)}.",
            fields={"accepted_evaluators": [f"no such agent: {slug}" for slug in missing]},
        )
    agent.accepted_evaluators.set(found)
    return wanted


def evaluation_dispute_scored(*, task_id: Any, requester_id: int, upheld: bool) -> None:
    """A dispute on an evaluated task was resolved: the evaluator's accept verdict survived
    it (`upheld`: rejected) or not (refunded). Scores the evaluator once per evaluation —
    the first resolution — as a success or a failure the requester caused (within its
    daily cap; neutral when the requester owns the evaluator, or the agent: then it
    answered its own dispute). A verdict the evaluator never gave (`evaluator_failed`) is
    not its to answer for. In the dispute's transaction, after the agent's reputation and
    before the earning and the accounts (the lock order).
    """
    won = (
        Evaluation.objects.filter(
            task_id=task_id,
            status=Evaluation.Status.DECIDED,
            verdict=Evaluation.Verdict.ACCEPT,
            upheld__isnull=True,
        )
        .exclude(reason=Evaluation.EVALUATOR_FAILED)
        .update(upheld=upheld)
    )
    if not won:
        return
    evaluator_id, *owners = Evaluation.objects.values_list(
        "evaluator_id", "evaluator__owner_id", "task__agent__owner_id"
    ).get(task_id=task_id)
    reason = VERDICT_UPHELD if upheld else VERDICT_OVERTURNED
    if requester_id in owners:
        outcome = Outcome(
            OutcomeKind.NEUTRAL, reason=reason, neutral_reason=NeutralReason.SELF_DEALING
        )
    else:
        outcome = Outcome(OutcomeKind.SUCCESS if upheld else OutcomeKind.FAILURE, reason=reason)
    with transaction.atomic():
        rep = reputation_lock(agent_id=evaluator_id)
        day = timezone.now().astimezone(datetime.UTC).date()
        record = record_of(agent_id=evaluator_id, task_id=None, requester_id=requester_id, day=day)
        cap = quantize(Decimal(settings.REPUTATION_DAILY_CAP_PER_REQUESTER))
        reputation_write_locked(
            rep,
            record=record,
            outcome=outcome,
            requester_id=requester_id,
            day=day,
            cap=cap,
            allowance=cap - record.moved_today,
        )
