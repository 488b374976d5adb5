"""What the tools answer: structured results shaped to the catalog's output schemas, and tool
errors that carry the REST API's error codes."""

from __future__ import annotations

import json
from typing import Any

from mcp_types import CallToolResult, TextContent
from rest_framework.response import Response

from marketplace.contracts import contract_of, output_schema_of
from marketplace.evaluators import evaluation_shown
from marketplace.exceptions import api_exception_handler
from marketplace.models import Agent, AgentBinary, Task
from marketplace.quotes import Quote


def contract(binary: AgentBinary | None) -> dict[str, Any]:
    """A version's contract: {version, input_schema, output_schema} (schemas null for text)."""
    return contract_of(binary) or {"version": None, "input_schema": None, "output_schema": None}


def contract_summary(binary: AgentBinary | None) -> dict[str, Any]:
    full = contract(binary)
    schema = full["input_schema"]
    required = schema.get("required", []) if isinstance(schema, dict) else []
    return {
        "version": full["version"],
        "input": "text" if schema is None else "json",
        "output": "text" if full["output_schema"] is None else "json",
        "input_required": [name for name in required if isinstance(name, str)],
    }


def agent_summary(agent: Agent) -> dict[str, Any]:
    """An agent of the catalogue (annotated with `score` and `requesters`)."""
    return {
        "slug": agent.slug,
        "name": agent.name,
        "description": agent.description,
        "tags": agent.tag_list,
        "base_fee": agent.base_fee,
        "fuel_price": agent.fuel_price,
        "reputation": float(agent.score),  # type: ignore[attr-defined]
        "requesters": agent.requesters,  # type: ignore[attr-defined]
        "contract": contract_summary(agent.current_binary),
    }


def quote_result(quote: Quote) -> dict[str, Any]:
    estimate = quote.estimate
    return {
        "base_fee": quote.base_fee,
        "fuel_price": quote.fuel_price,
        "fuel_limit": quote.fuel_limit,
        "input_bytes": quote.input_bytes,
        "max_cost": quote.max_cost,
        "estimate": None
        if estimate is None
        else {
            "p50": estimate.p50,
            "p95": estimate.p95,
            "fuel_p50": estimate.fuel_p50,
            "fuel_p95": estimate.fuel_p95,
        },
        "runs": quote.runs,
        "suggested_budget": quote.suggested_budget,
    }


def _output(task: Task) -> Any:
    """The agent's output once final: the JSON value when a schema typed it (the run was
    checked against it), the text otherwise."""
    if task.status not in Task.FINAL_STATUSES or task.status == Task.Status.CANCELLED:
        return None
    text = bytes(task.stdout or b"").decode("utf-8", errors="replace")
    typed = output_schema_of(task)
    if task.status == Task.Status.SUCCEEDED and typed is not None:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def task_result(task: Task) -> dict[str, Any]:
    """A task as run_agent and get_task answer it (`binary` and `receipt` read with it)."""
    final = task.status in Task.FINAL_STATUSES
    receipt = getattr(task, "receipt", None) if final else None
    return {
        "task_id": str(task.pk),
        "agent": task.agent.slug,
        "status": task.status,
        "final": final,
        "output": _output(task),
        "budget": task.budget,
        "cost": task.cost or 0,
        "refund": task.refund or 0,
        "version": task.binary.version,
        "failure_reason": task.failure_reason or None,
        "receipt_id": None if receipt is None else receipt.pk,
        "fuel_used": task.fuel_used,
        "elapsed_ms": task.elapsed_ms,
        "evaluation": _evaluation(task),
    }


def _evaluation(task: Task) -> dict[str, Any] | None:
    shown = evaluation_shown(task)
    if shown is None:
        return None
    return {name: shown[name] for name in ("evaluator", "verdict", "score", "reason", "cost")}


def success(structured: dict[str, Any]) -> CallToolResult:
    # The same JSON as text too, for clients that show only text content.
    text = json.dumps(structured, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(text=text)], structured_content=structured)


def error(code: str, message: str, fields: dict[str, Any] | None = None) -> CallToolResult:
    structured = {"error": {"code": code, "message": message, "fields": fields or {}}}
    return CallToolResult(
        content=[TextContent(text=f"{code}: {message}")],
        structured_content=structured,
        is_error=True,
    )


def error_from(exc: Exception, *, tool: str) -> CallToolResult:
    """An exception as a tool error, with the code, message and fields the REST API's one
    exception handler gives it (an unexpected one is logged there, as `internal_error`)."""
    response: Response = api_exception_handler(exc, {"view": f"mcp:{tool}"})
    body = response.data["error"]
    return error(body["code"], body["message"], body.get("fields"))
