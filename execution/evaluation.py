"""Evaluated settlement (SPEC §21): a second agent checks a task's output before its money
moves.

A task that names an `evaluator` settles its success as any other does, except that the
owner's share waits in held earnings marked `evaluating` (never swept, not yet disputable),
no reputation event is written, and — in the same transaction — what the budget left is
held again for the evaluator's run: a task of its own (`Task.evaluates`), queued with it.
So a crash after the settlement leaves a queued task that recovery sends again, never money
in limbo.

The run's own settlement pays the evaluator (or refunds its run) as for any task. Its
verdict then settles in one transaction (`evaluation_decide`), won once by a conditional
change of the evaluation row:
- accept: the earnings' hold starts now; the task's success is scored;
- reject: the task's cost goes back to the requester (the owner's held share and the
  platform's fee, as an accepted dispute gives them back); the task scores a failure
  (neutral when the requester owns the agent or the evaluator);
- the evaluator failed (any run that did not print a verdict): accept, `evaluator_failed`.

A channel-paid task is the same, with the channel in the escrow's place
(escrow.channel_evaluation): its cost redeemed, the budget's rest drawn from the deposit
into the run's escrow, the task in flight on its channel until the verdict, and a rejection
taking its cost off what the channel redeemed (as an accepted dispute on an open channel).

The worker decides right after the run settles; `evaluations_recover` decides any whose
worker died in between, or whose run ended without a worker (cancelled, refunded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import OperationalError, connection, transaction
from django.db.models import BigIntegerField, Func, Value
from django.utils import timezone

from escrow.channel_evaluation import channel_verdict, escrow_open_from_channel
from escrow.earning_models import Earning
from escrow.holds import release_time
from escrow.ledger import Leg, ledger_post, wallet_id
from escrow.models import Account, Escrow, Transfer
from escrow.services import escrow_open_funded
from escrow.system_accounts import system_account_id
from execution.engine.receipts import receipt_sign
from execution.runs import Execution, affordable_fuel
from execution.scoring import task_outcome
from marketplace.contracts import input_shown
from marketplace.dispute_keys import dispute_key_give_back, dispute_key_lock
from marketplace.fair_share import fair_tag_next
from marketplace.models import Agent, Evaluation, Task
from marketplace.services import task_enqueue
from marketplace.webhooks.outbox import webhook_event_record
from reputation.models import ReputationEvent
from reputation.policies import Outcome, OutcomeKind
from reputation.services import reputation_apply

log = logging.getLogger(__name__)

TASK_EVALUATED = "task.evaluated"
REJECTED = "evaluator_rejected"  # the reason a rejection's reputation event carries
# What an evaluator must print, exactly (the run's output schema: anything else is the
# evaluator's invalid output, which fails its run).
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "accept": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["accept", "score", "reason"],
    "additionalProperties": False,
}
# What a reason may decode to but no text column can store (a NUL, a lone surrogate such
# as "\ud800"): replaced, so that no evaluator can print a verdict that cannot be written.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# An evaluator's run is never refused for being too many: the task it checks was admitted.
UNLIMITED = 2**31 - 1


@dataclass(frozen=True)
class Verdict:
    accept: bool
    score: Decimal | None
    reason: str

    @property
    def name(self) -> str:
        return Evaluation.Verdict.ACCEPT if self.accept else Evaluation.Verdict.REJECT


FAILED = Verdict(accept=True, score=None, reason=Evaluation.EVALUATOR_FAILED)


def verdict_of(run: Task | None) -> Verdict:
    """The verdict the evaluator's run printed; FAILED for a run that failed, was never
    made, or printed anything but exactly `{"accept": bool, "score": 0..1, "reason": str}`."""
    if run is None or run.status != Task.Status.SUCCEEDED:
        return FAILED
    try:
        # Read as the run's output check read it (from bytes: a byte-order mark, UTF-16 or
        # UTF-32 as JSON allows), so that a run paid for its verdict never counts as failing.
        printed = json.loads(bytes(run.stdout), parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        return FAILED
    if not isinstance(printed, dict) or set(printed) != {"accept", "score", "reason"}:
        return FAILED
    accept, score, reason = printed["accept"], printed["score"], printed["reason"]
    if not isinstance(accept, bool) or not isinstance(reason, str):
        return FAILED
    if isinstance(score, bool) or not isinstance(score, int | Decimal):
        return FAILED
    try:
        score = Decimal(score).quantize(Decimal("0.0001"))
    except InvalidOperation:
        return FAILED
    if not Decimal(0) <= score <= Decimal(1):
        return FAILED
    return Verdict(accept=accept, score=score, reason=UNSTORABLE.sub("\ufffd", reason[:500]))


def evaluator_input(task: Task, output: bytes) -> str:
    """What the evaluator reads on stdin: the task's input (as the API shows it), its
    output (stdout as text) and the contract of the version that ran."""
    binary = task.binary
    return json.dumps(
        {
            "task_input": input_shown(task),
            "output": bytes(output).decode("utf-8", errors="replace"),
            "contract": {
                "version": binary.version,
                "input_schema": binary.input_schema,
                "output_schema": binary.output_schema,
            },
        },
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )


# --- opening: inside the evaluated task's settlement ------------------------------------------


def evaluation_open(*, task: Task, cost: int, output: bytes) -> Evaluation:
    """The evaluation of a task that has just succeeded, in its settlement's transaction:
    the evaluation row, and the evaluator's run queued, paid by what the budget left (the
    settlement refunded it to the requester a statement ago; it is held again here)."""
    assert task.evaluator_id is not None
    evaluator = Agent.objects.select_related("current_binary").get(pk=task.evaluator_id)
    evaluation = Evaluation.objects.create(task_id=task.pk, evaluator=evaluator)
    left, binary = task.budget - cost, evaluator.current_binary
    if left <= 0 or binary is None:  # nothing to pay a run with, or nothing to run
        # The task as just settled (its cost and figures), for the verdict's scoring.
        settled = Task.objects.select_related("agent", "binary").defer("stdout", "stderr")
        _decide(
            evaluation, task=settled.get(pk=task.pk), run=None, verdict=FAILED, now=timezone.now()
        )
        return evaluation
    recommended = evaluator.recommended_limits()
    text = evaluator_input(task, output)
    now = timezone.now()
    run = Task(
        requester_id=task.requester_id,
        agent=evaluator,
        binary=binary,
        input=text,
        input_sha256=hashlib.sha256(text.encode()).hexdigest(),
        budget=left,
        # Its price as pinned at submission (tasks from before the pin: its price now).
        base_fee=_pinned(task.evaluator_base_fee, evaluator.base_fee),
        fuel_price=_pinned(task.evaluator_fuel_price, evaluator.fuel_price),
        min_reputation=Decimal(0),
        output_schema=VERDICT_SCHEMA,
        recommended_fuel=recommended["fuel_limit"],
        recommended_memory_mb=recommended["memory_limit_mb"],
        recommended_timeout_ms=recommended["timeout_ms"],
        evaluates_id=task.pk,
        status=Task.Status.QUEUED,
        enqueued_at=now,
        queued_at=now,
        **recommended,
    )
    run.fair_tag = _fair_tag(task.requester_id)  # type: ignore[assignment]
    run.save(force_insert=True)
    payer, channel = Escrow.objects.values_list("payer_id", "channel_id").get(task_id=task.pk)
    payee = wallet_id(user_id=evaluator.owner_id)
    if channel is None:
        escrow_open_funded(payer_id=payer, payee_id=payee, amount=left, task_id=run.pk)
    else:  # drawn from the channel the voucher paid the budget from
        escrow_open_from_channel(
            channel_id=channel, payer_id=payer, payee_id=payee, amount=left, task_id=run.pk
        )
    task_enqueue(task_id=run.pk)
    return evaluation


def _pinned(pinned: int | None, now: int) -> int:
    return now if pinned is None else pinned


def _fair_tag(requester_id: int) -> Any:
    if connection.vendor == "postgresql":  # admitted whatever the requester has in flight
        return Func(
            Value(requester_id),
            Value(UNLIMITED),
            function="marketplace_task_admit",
            output_field=BigIntegerField(),
        )
    return fair_tag_next(requester_id=requester_id)


# --- the verdict ------------------------------------------------------------------------------

DECIDE_TRIES = 5


def evaluation_decide(*, run_id: Any) -> bool:
    """Settle the verdict of the evaluator's run `run_id` once it is final: True for the
    one caller that settles it, False for any other (or while the run is not final)."""
    run = Task.objects.select_related("agent", "binary").filter(pk=run_id).first()
    if run is None or run.evaluates_id is None or run.status not in Task.FINAL_STATUSES:
        return False
    task = Task.objects.select_related("agent", "binary").get(pk=run.evaluates_id)
    for tries in range(1, DECIDE_TRIES + 1):
        try:
            with transaction.atomic(durable=True):
                evaluation = Evaluation.objects.select_related("evaluator").get(task_id=task.pk)
                return _decide(
                    evaluation, task=task, run=run, verdict=verdict_of(run), now=timezone.now()
                )
        except OperationalError as exc:
            # A rejection keeps the lock order (reputation, then accounts); a settlement of
            # the same agent takes its reputation row last: the rare deadlock between them
            # is resolved by trying again, as the settlement does.
            if getattr(exc.__cause__, "sqlstate", None) != "40P01" or tries == DECIDE_TRIES:
                raise
            log.warning("the verdict on task %s deadlocked, trying again", task.pk)
    return False  # not reached


def _decide(
    evaluation: Evaluation, *, task: Task, run: Task | None, verdict: Verdict, now: Any
) -> bool:
    """running → decided, then in the lock order: the API key that paid (if one did), the
    channel that paid (if one did), the agent's reputation, the task's earning and the
    accounts. In the caller's transaction."""
    cost, fee, refund = (run.cost or 0, run.fee or 0, run.refund or 0) if run else (0, 0, 0)
    receipt = _receipt(evaluation, task=task, run=run, verdict=verdict, now=now, money=(cost, fee))
    won = Evaluation.objects.filter(pk=evaluation.pk, status=Evaluation.Status.RUNNING).update(
        status=Evaluation.Status.DECIDED,
        verdict=verdict.name,
        score=verdict.score,
        reason=verdict.reason,
        cost=cost,
        fee=fee,
        refund=refund,
        receipt=receipt,
        decided_at=now,
    )
    if not won:
        return False
    charge = dispute_key_lock(task_id=task.pk) if task.api_key_id is not None else None
    # A channel task leaves its flight now, a rejection taking its cost off the channel.
    channel = Escrow.objects.values_list("channel_id", flat=True).get(task_id=task.pk)
    off_channel = (
        channel_verdict(channel_id=channel, task_id=task.pk, reject=not verdict.accept)
        if channel is not None
        else 0
    )
    reputation_apply(
        agent_id=task.agent_id,
        task_id=task.pk,
        outcome=_outcome(task, evaluation.evaluator, verdict),
        requester_id=task.requester_id,
    )
    given_back = refund if run is not None else task.budget - (task.cost or 0)
    if verdict.accept:
        Earning.objects.filter(task_id=task.pk, status=Earning.Status.EVALUATING).update(
            status=Earning.Status.HELD, release_at=release_time(now)
        )
    else:
        given_back += off_channel if channel is not None else _refund_rejected(task, now=now)
    if charge is not None:
        dispute_key_give_back(charge, task_id=task.pk, refunded=given_back)
    webhook_event_record(owner_id=task.requester_id, type=TASK_EVALUATED, object_id=str(task.pk))
    return True


def _outcome(task: Task, evaluator: Agent, verdict: Verdict) -> Outcome:
    """An accept scores the task's success as its settlement would have; a rejection, a
    failure of the agent's own — neutral when the requester owns the agent or the
    evaluator (it could reject at will)."""
    fuel = affordable_fuel(task)
    if verdict.accept:
        run = Execution(
            fuel_used=task.fuel_used or 0, fuel_limit=fuel, elapsed_ms=task.elapsed_ms or 0
        )
        return task_outcome(task, run, cost=task.cost or 0, fuel=fuel)
    kind, neutral = OutcomeKind.FAILURE, ""
    if task.requester_id in (task.agent.owner_id, evaluator.owner_id):
        kind, neutral = OutcomeKind.NEUTRAL, ReputationEvent.NeutralReason.SELF_DEALING
    return Outcome(
        kind,
        reason=REJECTED,
        fuel_used=task.fuel_used or 0,
        fuel_limit=fuel,
        elapsed_ms=task.elapsed_ms or 0,
        neutral_reason=neutral,
    )


def _refund_rejected(task: Task, *, now: Any) -> int:
    """The task's cost back to its requester: the owner's share from held earnings and the
    platform's fee, from the shards its settlement paid them into. Returns the µCR."""
    earning = (
        Earning.objects.select_for_update(no_key=True)
        .filter(task_id=task.pk, status=Earning.Status.EVALUATING)
        .first()
    )
    if earning is None:  # the task cost nothing: nothing was held
        return 0
    Earning.objects.filter(pk=earning.pk).update(status=Earning.Status.REFUNDED, released_at=now)
    payer, shard = Escrow.objects.values_list("payer_id", "shard").get(task_id=task.pk)
    memo = f"rejected by evaluator of task {task.pk}"
    ledger_post(
        [
            Leg(
                system_account_id(Account.Kind.EARNINGS, shard),
                payer,
                earning.amount,
                Transfer.Kind.EVALUATION_REFUND,
                task_id=task.pk,
                memo=memo,
            ),
            Leg(
                system_account_id(Account.Kind.PLATFORM_FEES, shard),
                payer,
                earning.fee,
                Transfer.Kind.EVALUATION_FEE_REFUND,
                task_id=task.pk,
                memo=memo,
            ),
        ]
    )
    return earning.amount + earning.fee


def _receipt(
    evaluation: Evaluation,
    *,
    task: Task,
    run: Task | None,
    verdict: Verdict,
    now: Any,
    money: tuple[int, int],
) -> dict[str, str]:
    """The verdict's signed receipt: the evaluator's run, and the task's receipt it
    judged, named by its signature."""
    task_receipt = getattr(task, "receipt", None)
    run_receipt = getattr(run, "receipt", None) if run is not None else None
    cost, fee = money
    return receipt_sign(
        {
            "kind": "evaluation",
            "task_id": str(task.pk),
            "task_receipt_signature": task_receipt.signature if task_receipt else None,
            "evaluator": evaluation.evaluator.slug,
            "run_task_id": str(run.pk) if run is not None else None,
            "run_receipt_signature": run_receipt.signature if run_receipt else None,
            "agent_version": run.binary.version if run is not None else None,
            "binary_sha256": run.binary.sha256 if run is not None else None,
            "input_sha256": run.input_sha256 if run is not None else None,
            "output_sha256": run.output_sha256 if run is not None else None,
            "status": run.status if run is not None else None,
            "failure_reason": (run.failure_reason or None) if run is not None else None,
            "fuel_used": run.fuel_used if run is not None else None,
            "verdict": verdict.name,
            "score": None if verdict.score is None else str(verdict.score),
            "reason": verdict.reason,
            "cost": cost,
            "fee": fee,
            "refund": (run.refund or 0) if run is not None else 0,
            "decided_at": now.isoformat(),
        }
    )


# --- recovery ---------------------------------------------------------------------------------


def evaluations_recover() -> dict[str, int]:
    """Decide every evaluation whose run is final but whose verdict was never settled: its
    worker died between the two, or the run ended without one (cancelled or refunded by an
    operator). Each in its own transaction; one that fails never holds back the others."""
    counts = {"decided": 0, "errors": 0}
    stuck = Evaluation.objects.filter(
        status=Evaluation.Status.RUNNING, task__evaluation_run__status__in=Task.FINAL_STATUSES
    ).values_list("task__evaluation_run__pk", flat=True)
    for run_id in list(stuck):
        try:
            counts["decided"] += evaluation_decide(run_id=run_id)
        except Exception:  # whatever broke this one must not hold the others back
            log.exception("recovery could not decide the evaluation run %s", run_id)
            counts["errors"] += 1
    return counts
