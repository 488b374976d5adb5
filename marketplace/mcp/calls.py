"""What each tool does, for one caller (an API key), through the services and selectors the
REST API uses, with the same scopes, allowlists, caps and throttles:

| tool           | REST equivalent                          | key scope     |
|----------------|------------------------------------------|---------------|
| search_agents  | GET /api/v1/agents/                      | any key       |
| get_agent      | GET /api/v1/agents/{slug}/ and its quote | any key       |
| quote          | GET /api/v1/agents/{slug}/quote/         | any key       |
| run_agent      | POST /api/v1/tasks/ (and waiting)        | tasks:write   |
| get_task       | GET /api/v1/tasks/{id}/                  | tasks:read    |
| verify_receipt | GET /api/v1/tasks/{id}/receipt/ + verify | tasks:read    |

Each function takes the caller and the arguments the catalog's input schema has already
checked, and returns the structured result or raises the domain error the API would.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.request import Request

from escrow.errors import IdempotencyConflict
from execution.engine.receipts import receipt_verify
from marketplace import selectors
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_allowlist, api_key_spending
from marketplace.contracts import InvalidInput, contract_version, input_text
from marketplace.errors import AgentNotFound, ScopeRequired
from marketplace.evaluators import accepted_slugs
from marketplace.exceptions import ReceiptNotReady, TaskNotFound
from marketplace.mcp import results, waiting
from marketplace.mcp.catalog import SEARCH_LIMIT, WAIT_DEFAULT
from marketplace.models import Agent, AgentBinary, FuelSample, Task
from marketplace.quotes import Quote, quote_for
from marketplace.selectors.agents import agent_for_submission
from marketplace.services import task_submit
from marketplace.submission_throttle import SubmissionKeyThrottle, SubmissionUserThrottle


@dataclass(frozen=True)
class Caller:
    """Who calls: the API key the request came with, its user, and the request itself (the
    throttles count per user and per key on it)."""

    user: User
    key: ApiKey
    request: Request

    def need(self, scope: str) -> None:
        # The same refusal as the REST endpoint that does the same thing.
        if scope not in self.key.scopes:
            raise ScopeRequired(
                f"This API key needs the `{scope}` scope for this tool.",
                fields={"required_scope": scope, "key_scopes": self.key.scopes},
            )


def search_agents(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    listing = selectors.agent_catalogue(
        query=args.get("query", ""), status=Agent.Status.ACTIVE
    ).filter(current_binary__isnull=False)
    for tag in args.get("tags", []):
        listing = listing.filter(tags__regex=rf"(^| ){tag}( |$)")
    if "min_reputation" in args:
        least = Decimal(str(args["min_reputation"]))
        listing = listing.filter(score__gte=least)  # type: ignore[misc]  # an annotation
    if "max_base_fee" in args:
        listing = listing.filter(base_fee__lte=args["max_base_fee"])
    return {"agents": [results.agent_summary(agent) for agent in listing[:SEARCH_LIMIT]]}


def get_agent(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    agent = selectors.agent_by_slug(args["slug"], missing=AgentNotFound)
    typical = _typical_input_bytes(agent)
    return {
        **results.agent_summary(agent),
        "status": agent.status,
        "contract": results.contract(agent.current_binary),
        "recommended": agent.recommended_limits(),
        "quote": results.quote_result(quote_for(agent, input_bytes=typical)),
        "accepted_evaluators": accepted_slugs(agent),
    }


def _typical_input_bytes(agent: Agent) -> int:
    """The median input size of the current version's recent runs (0 before it has any)."""
    sizes = FuelSample.objects.filter(binary_id=agent.current_binary_id).values_list(
        "input_bytes", flat=True
    )
    found = list(sizes)
    return int(statistics.median_low(found)) if found else 0


def quote(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    agent = selectors.agent_by_slug(args["slug"], missing=AgentNotFound)
    return results.quote_result(_quote(agent, contract_version(agent), args["input"]))


def _quote(agent: Agent, binary: AgentBinary, value: Any) -> Quote:
    # Sized as the task would store it and the agent read it on stdin.
    text = input_text(binary=binary, input=value)
    return quote_for(agent, input_bytes=len(text.encode()))


def run_agent(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    caller.need(ApiKey.Scope.TASKS_WRITE)
    _throttle(caller)
    agent = agent_for_submission(requester_id=caller.user.pk, slug=args["slug"])
    if agent is None:
        raise AgentNotFound()
    allowlist = api_key_allowlist(caller.key)
    if allowlist is not None:
        allowlist.check(agent_id=agent.pk)
    version = args.get("version")
    key = args.get("idempotency_key")
    budget = args.get("budget")
    # A retry with its key answers with the first run's task (its default budget was the
    # quote of then, which may have moved since); task_submit refuses another run's key.
    task = _submitted(caller.user, key, agent=agent, args=args)
    if task is None:
        if budget is None:
            binary = contract_version(agent, version)
            budget = _default_budget(
                caller.key, _quote(agent, binary, args["input"]), args.get("evaluator")
            )
        # The input is checked against the version's contract here, before any money moves.
        task = task_submit(
            requester=caller.user,
            agent=agent,
            input=args["input"],
            version=version,
            budget=budget,
            api_key=caller.key,
            idempotency_key=key,
            evaluator=args.get("evaluator"),
        )
    done = waiting.wait_for_final(task.pk, seconds=args.get("wait_seconds", WAIT_DEFAULT))
    return results.task_result(done)


def _submitted(user: User, key: str | None, *, agent: Agent, args: dict[str, Any]) -> Task | None:
    """The task submitted earlier under `key`, if any; 409 `idempotency_conflict` when it
    was another agent, version, input or budget."""
    if key is None:
        return None
    task = Task.objects.select_related("binary", "evaluator").filter(
        requester=user, idempotency_key=key
    )
    earlier = task.first()
    if earlier is None:
        return None
    try:
        same_input = earlier.input == input_text(binary=earlier.binary, input=args["input"])
    except InvalidInput:
        same_input = False
    same = (
        earlier.agent_id == agent.pk
        and same_input
        and args.get("version") in (None, earlier.binary.version)
        and args.get("budget") in (None, earlier.budget)
        and args.get("evaluator") == (earlier.evaluator.slug if earlier.evaluator else None)
    )
    if not same:
        raise IdempotencyConflict()
    return earlier


def _throttle(caller: Caller) -> None:
    """TASK_SUBMIT_RATE per user and per key, in the buckets POST /api/v1/tasks/ counts in."""
    for throttle in (SubmissionUserThrottle(), SubmissionKeyThrottle()):
        if not throttle.allow_request(caller.request, None):
            raise Throttled(wait=throttle.wait())


def _default_budget(key: ApiKey, quoted: Quote, evaluator: Any = None) -> int:
    """The quote's suggested budget (with an evaluator, plus its own for twice the input's
    size: it reads the input and the output), capped by the key's per-task limit."""
    suggested = quoted.suggested_budget
    judge = Agent.objects.filter(slug=evaluator).first() if isinstance(evaluator, str) else None
    if judge is not None:
        suggested += quote_for(judge, input_bytes=2 * quoted.input_bytes).suggested_budget
    per_task = api_key_spending(key).limits["per_task"]
    return suggested if per_task is None else min(suggested, per_task)


def _task_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError({"id": ["Must be a task id (a UUID)."]}) from None


def _own_task(caller: Caller, task_id: str) -> Task:
    return selectors.task_of(
        caller.user,
        _task_id(task_id),
        missing=TaskNotFound,
        allowlist=api_key_allowlist(caller.key),
    )


def get_task(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    caller.need(ApiKey.Scope.TASKS_READ)
    return results.task_result(_own_task(caller, args["id"]))


def verify_receipt(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    caller.need(ApiKey.Scope.TASKS_READ)
    task = _own_task(caller, args["task_id"])
    receipt = getattr(task, "receipt", None)
    if receipt is None:
        raise ReceiptNotReady()
    signed = receipt.as_dict()
    return {"valid": receipt_verify(signed), "task_id": str(task.pk), "receipt": signed}


CALLS: dict[str, Callable[[Caller, dict[str, Any]], dict[str, Any]]] = {
    "search_agents": search_agents,
    "get_agent": get_agent,
    "quote": quote,
    "run_agent": run_agent,
    "get_task": get_task,
    "verify_receipt": verify_receipt,
}
