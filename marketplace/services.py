from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from escrow.channels import (
    channel_finish_task,
    channel_settle_if_due,
    voucher_verify,
)
from escrow.errors import InvalidAmount
from escrow.ledger import wallet_open
from escrow.models import Escrow
from escrow.services import escrow_cancel, escrow_refund
from marketplace.apikeys import api_key_give_back
from marketplace.contracts import contract_version, input_prepare
from marketplace.errors import (
    AgentUnavailable,
    BudgetTooLow,
    LimitExceeded,
    PaymentUnavailable,
    TaskStateConflict,
)
from marketplace.evaluators import evaluator_for
from marketplace.models import Agent, ApiKey, Task
from marketplace.schemas import output_schema_check
from marketplace.selectors.agents import agents_with_wallets
from marketplace.submissions import Prepared, task_open
from marketplace.submissions import task_enqueue as task_enqueue
from marketplace.webhooks.outbox import webhook_event_record
from reputation.services import reputation_open


def user_create(*, username: str, password: str | None = None) -> User:
    """A user with an open wallet."""
    with transaction.atomic():
        user = User.objects.create_user(username=username, password=password)
        wallet_open(user_id=user.pk)
        return user


def agent_create(
    *,
    owner: User,
    slug: str,
    name: str,
    base_fee: int,
    fuel_price: int,
    description: str = "",
    tags: list[str] | None = None,
    output_schema: dict | None = None,
    recommended_fuel: int | None = None,
    recommended_memory_mb: int | None = None,
    recommended_timeout_ms: int | None = None,
) -> Agent:
    # A limit the owner does not name is the platform's default.
    recommended = {
        name: value
        for name, value in (
            ("recommended_fuel", recommended_fuel),
            ("recommended_memory_mb", recommended_memory_mb),
            ("recommended_timeout_ms", recommended_timeout_ms),
        )
        if value is not None
    }
    output_schema_check(output_schema, user_id=owner.pk)
    with transaction.atomic():
        agent = Agent(
            owner=owner,
            slug=slug,
            name=name,
            description=description,
            tags=" ".join(tags or []),
            base_fee=base_fee,
            fuel_price=fuel_price,
            output_schema=output_schema,
            **recommended,
        )
        agent.full_clean(exclude=["current_binary"])
        agent.save()
        wallet_open(user_id=owner.pk)
        reputation_open(agent_id=agent.pk)
        return agent


# --- tasks -----------------------------------------------------------------------------


def _limit(name: str, value: int | None, maximum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LimitExceeded(
            f"{name} must be a positive integer.", fields={name: ["positive integer"]}
        )
    if value > maximum:
        raise LimitExceeded(
            f"{name} is at most {maximum}, got {value}.", fields={name: [f"at most {maximum}"]}
        )
    return value


def task_submit(**options: Any) -> Task:
    """Create the task, pin its binary and price, fund its escrow, enqueue it: all or nothing.
    The options are `task_prepare`'s; `marketplace.submissions` writes it."""
    return task_open(task_prepare(**options))


def task_prepare(
    *,
    requester: User,
    agent: Agent,
    input: Any,
    budget: int,
    version: int | None = None,
    fuel_limit: int | None = None,
    memory_limit_mb: int | None = None,
    timeout_ms: int | None = None,
    min_reputation: Decimal | str | None = None,
    output_schema: dict | None = None,
    payment: str = Task.Payment.ESCROW,
    channel: Any = None,
    voucher: Any = None,
    idempotency_key: str | None = None,
    api_key: ApiKey | None = None,
    deadline_seconds: int | None = None,
    evaluator: str | None = None,
) -> Prepared:
    """Check a submission and build its task, its binary and price pinned (not saved yet).

    With `evaluator` (the slug of an evaluator the agent accepts), the task's success is
    checked by that agent before its earnings' hold starts (SPEC §21, marketplace.evaluators).

    With `deadline_seconds`, a task nobody has started that many seconds from now is
    cancelled as `deadline_passed` with a full refund (execution/deadlines.py).

    With `payment="channel"`, the task's budget is held against a payment channel by the
    voucher instead: the escrow row records the task but holds no money of its own.

    The task runs the agent's current version, or `version` when given (400
    `version_not_found` for one it does not have). With an input schema, `input` is any
    JSON value and must match it (400 `invalid_input`); without one, it is a string
    (marketplace.contracts).

    Everything that can be is done before the transaction: the checks (the input's against
    its contract among them), the voucher's signature, the input's hash, one read of the
    agent with its current version and both wallets. The transaction then writes the task
    (already queued), its escrow (already funded) and the money.
    """
    if payment not in Task.Payment.values:
        raise PaymentUnavailable(f"Payment method {payment!r} is not available.")
    if payment == Task.Payment.CHANNEL and (channel is None or voucher is None):
        raise PaymentUnavailable(
            "A channel payment needs `channel` and `voucher`.",
            fields={"channel": ["required"], "voucher": ["required"]},
        )
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise InvalidAmount(
            "budget must be a positive integer of µCR.", fields={"budget": ["positive integer"]}
        )
    named = {
        "fuel_limit": _limit("fuel_limit", fuel_limit, settings.TASK_MAX_FUEL),
        "memory_limit_mb": _limit("memory_limit_mb", memory_limit_mb, settings.TASK_MAX_MEMORY_MB),
        "timeout_ms": _limit("timeout_ms", timeout_ms, settings.TASK_MAX_TIMEOUT_MS),
    }
    deadline = _limit("deadline_seconds", deadline_seconds, settings.TASK_MAX_DEADLINE_SECONDS)
    threshold = Decimal(
        str(min_reputation if min_reputation is not None else settings.DEFAULT_MIN_REPUTATION)
    )
    if not threshold.is_finite() or not Decimal(0) <= threshold <= Decimal(100):
        raise LimitExceeded(
            "min_reputation is between 0 and 100.", fields={"min_reputation": ["0..100"]}
        )
    output_schema_check(output_schema, user_id=requester.pk)
    if payment == Task.Payment.CHANNEL:
        # Before any row is written or locked: a forged voucher never holds a lock.
        voucher = voucher_verify(
            channel_id=channel, requester_user_id=requester.pk, voucher=voucher
        )
    if getattr(agent, "wallets_for", None) != requester.pk:
        # One statement: the agent as it is now, with its current version and its owner's
        # and the requester's wallets.
        agent = agents_with_wallets(requester_id=requester.pk).get(pk=agent.pk)
    if agent.status != Agent.Status.ACTIVE:
        raise AgentUnavailable()
    binary = contract_version(agent, version)
    # Before any row is written: an input its version refuses costs nothing.
    input = input_prepare(binary=binary, input=input, user_id=requester.pk)
    input_sha256 = hashlib.sha256(input.encode()).hexdigest()
    # The budget must cover the base fee and buy at least one unit of fuel.
    least = agent.base_fee + (1 if agent.fuel_price > 0 else 0)
    if budget < least:
        raise BudgetTooLow(
            f"The budget ({budget} µCR) must be at least {least} µCR: the agent's base fee "
            f"({agent.base_fee} µCR) plus some fuel.",
            fields={"budget": [f"at least {least}"]},
        )
    judge = None
    if evaluator is not None:
        judge = evaluator_for(agent=agent, slug=evaluator, budget=budget, least=least)
    # A limit the task does not name is the agent's recommended one (SPEC §13). The
    # recommendation and the schema's author are pinned for the reputation verdict.
    recommended = agent.recommended_limits()
    limits = {name: named[name] or recommended[name] for name in named}
    pinned = {
        "recommended_fuel": recommended["fuel_limit"],
        "recommended_memory_mb": recommended["memory_limit_mb"],
        "recommended_timeout_ms": recommended["timeout_ms"],
        "requester_schema": output_schema is not None and output_schema != binary.output_schema,
    }
    payer = getattr(agent, "requester_wallet", None) or wallet_open(user_id=requester.pk).pk
    payee = getattr(agent, "owner_wallet", None) or wallet_open(user_id=agent.owner_id).pk
    task = Task(
        requester=requester,
        agent=agent,
        binary=binary,
        idempotency_key=idempotency_key,
        input=input,
        input_sha256=input_sha256,
        budget=budget,
        base_fee=agent.base_fee,
        fuel_price=agent.fuel_price,
        min_reputation=threshold,
        output_schema=output_schema,
        payment=payment,
        api_key=api_key,
        deadline_at=None if deadline is None else timezone.now() + timedelta(seconds=deadline),
        evaluator=judge,
        evaluator_base_fee=judge.base_fee if judge else None,
        evaluator_fuel_price=judge.fuel_price if judge else None,
        **limits,
        **pinned,
    )
    return Prepared(task, payer=payer, payee=payee, channel=channel, voucher=voucher)


@transaction.atomic(durable=True)
def task_cancel(*, task: Task, reason: str = "", attempt: int | None = None) -> Task:
    """queued → cancelled with a full refund. A worker that claimed it first wins.

    `reason` is the failure reason it records (none for the requester's own cancellation).
    With `attempt`, the task is the one a worker claimed as that attempt, and has not run:
    running (that attempt) → cancelled, as if it had never been claimed."""
    if attempt is None:
        cancellable = Task.objects.filter(pk=task.pk, status=Task.Status.QUEUED)
        unclaimed: dict[str, Any] = {}
    else:
        cancellable = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING, attempts=attempt)
        unclaimed = {"started_at": None, "lease_expires_at": None}
    won = cancellable.update(
        status=Task.Status.CANCELLED,
        cost=0,
        fee=0,
        refund=task.budget,
        failure_reason=reason,
        finished_at=timezone.now(),
        **unclaimed,
    )
    if won != 1:
        current = Task.objects.values_list("status", flat=True).get(pk=task.pk)
        raise TaskStateConflict(f"Only a queued task can be cancelled; this one is {current}.")
    if task.api_key_id is not None:
        api_key_give_back(task_id=task.pk, amount=task.budget)
    escrow = Escrow.objects.get(task_id=task.pk)
    if escrow.channel_id:
        channel_finish_task(channel_id=escrow.channel_id, budget=task.budget, cost=0, fee=0)
        escrow_cancel(escrow_id=escrow.pk)
        channel_settle_if_due(channel_id=escrow.channel_id)  # the last task of a closing one
    else:
        escrow_refund(escrow_id=escrow.pk)
    webhook_event_record(owner_id=task.requester_id, type="task.cancelled", object_id=str(task.pk))
    return Task.objects.get(pk=task.pk)


# --- accounts and agents through the API --------------------------------------------------


def user_register(*, username: str, password: str) -> tuple[User, str]:
    """A new user with a wallet and an API token; returns the user and the token key."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        user = user_create(username=username, password=password)
        return user, Token.objects.create(user=user).key


def user_token(*, user: User) -> str:
    """The user's live account token, issued on a first login or when it has expired."""
    from marketplace.account_tokens import account_token_live

    return account_token_live(user=user)


AGENT_EDITABLE_FIELDS = (
    "name",
    "description",
    "tags",
    "base_fee",
    "fuel_price",
    "recommended_fuel",
    "recommended_memory_mb",
    "recommended_timeout_ms",
)


def agent_update(*, agent: Agent, **changes: Any) -> Agent:
    """Change an agent's listing, prices or recommended limits. Tasks already submitted keep
    the price and the recommendation they pinned. Its `output_schema` is not among them: it
    is the current version's, whose contract only a new upload changes (SPEC §19)."""
    unknown = set(changes) - set(AGENT_EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    if "tags" in changes:
        changes["tags"] = " ".join(changes["tags"] or [])
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        for name, value in changes.items():
            setattr(agent, name, value)
        agent.full_clean(exclude=["current_binary", "owner"])
        agent.save(update_fields=[*changes])
        return agent


# --- operator actions ---------------------------------------------------------------------


def agent_suspend(*, agent: Agent) -> bool:
    """active → suspended: no new tasks; queued ones fail validation with a full refund.

    False when the agent was not active.
    """
    won = Agent.objects.filter(pk=agent.pk, status=Agent.Status.ACTIVE).update(
        status=Agent.Status.SUSPENDED
    )
    return won == 1


def agent_activate(*, agent: Agent) -> bool:
    """suspended → active. False when the agent was not suspended."""
    won = Agent.objects.filter(pk=agent.pk, status=Agent.Status.SUSPENDED).update(
        status=Agent.Status.ACTIVE
    )
    return won == 1
