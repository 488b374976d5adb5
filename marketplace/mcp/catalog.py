"""The tools `/mcp` offers: name, description, and the JSON Schemas of their arguments and of
their structured results. The server lists them as they are here and checks every call's
arguments against the same input schema, so what a client is told is what is enforced.
Amounts are integers of µCR (1 CR = 1,000,000 µCR)."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from mcp_types import Tool, ToolAnnotations

SEARCH_LIMIT = 20
WAIT_DEFAULT = 30
WAIT_MAX = 60

SLUG = {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
    "description": "An agent's slug.",
}
TASK_ID = {"type": "string", "format": "uuid", "description": "A task's id (a UUID)."}
AMOUNT = {"type": "integer", "minimum": 0}
ANY_JSON: dict[str, Any] = {
    "description": "The task's input: any JSON value. An agent whose contract has an input "
    "schema takes a JSON document matching it; an agent without one takes a string, given to "
    "it on stdin as it is."
}
NULLABLE_OBJECT = {"type": ["object", "null"]}

CONTRACT = {
    "type": "object",
    "description": "What the agent's version takes and gives: its JSON Schemas (null: free text).",
    "properties": {
        "version": {"type": ["integer", "null"]},
        "input_schema": NULLABLE_OBJECT,
        "output_schema": NULLABLE_OBJECT,
    },
    "required": ["version", "input_schema", "output_schema"],
}
CONTRACT_SUMMARY = {
    "type": "object",
    "description": "The current version's contract in short: `input` and `output` are "
    "`json` when a schema types them, `text` otherwise; `input_required` names the input's "
    "required properties. get_agent gives the schemas.",
    "properties": {
        "version": {"type": ["integer", "null"]},
        "input": {"enum": ["json", "text"]},
        "output": {"enum": ["json", "text"]},
        "input_required": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["version", "input", "output", "input_required"],
}
QUOTE = {
    "type": "object",
    "description": "What a run is likely to cost, from the fuel the agent's current version "
    "used on its recent successful runs, scaled to the input's size.",
    "properties": {
        "base_fee": AMOUNT,
        "fuel_price": {**AMOUNT, "description": "µCR per million fuel units."},
        "fuel_limit": AMOUNT,
        "input_bytes": AMOUNT,
        "max_cost": {**AMOUNT, "description": "The most a run can cost with this fuel limit."},
        "estimate": {
            "type": ["object", "null"],
            "description": "p50 and p95 cost (µCR) and fuel; null before the agent has runs.",
            "properties": {"p50": AMOUNT, "p95": AMOUNT, "fuel_p50": AMOUNT, "fuel_p95": AMOUNT},
        },
        "runs": AMOUNT,
        "suggested_budget": {
            **AMOUNT,
            "description": "Covers the p95 run with a quarter to spare; unused budget is refunded.",
        },
    },
    "required": ["base_fee", "fuel_price", "max_cost", "estimate", "runs", "suggested_budget"],
}
AGENT_SUMMARY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "slug": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "base_fee": {**AMOUNT, "description": "µCR charged for every successful run."},
        "fuel_price": {**AMOUNT, "description": "µCR per million fuel units."},
        "reputation": {"type": "number", "minimum": 0, "maximum": 100},
        "requesters": {
            **AMOUNT,
            "description": "How many distinct requesters the reputation rests on.",
        },
        "contract": CONTRACT_SUMMARY,
    },
    "required": [
        "slug",
        "name",
        "base_fee",
        "fuel_price",
        "reputation",
        "requesters",
        "contract",
    ],
}
TASK = {
    "type": "object",
    "properties": {
        "task_id": {"type": "string"},
        "agent": {"type": "string"},
        "status": {
            "enum": ["pending_funding", "queued", "running", "succeeded", "failed", "cancelled"]
        },
        "final": {"type": "boolean", "description": "Whether the task is settled."},
        "output": {
            "description": "The agent's output once final: the JSON value when its contract "
            "types it, the text otherwise; null while the task runs."
        },
        "budget": AMOUNT,
        "cost": {**AMOUNT, "description": "µCR paid; 0 until final and on failure."},
        "refund": {**AMOUNT, "description": "µCR given back from the budget."},
        "version": {"type": ["integer", "null"], "description": "The agent version that runs."},
        "failure_reason": {"type": ["string", "null"]},
        "receipt_id": {"type": ["integer", "null"], "description": "Once final: its receipt."},
        "fuel_used": {"type": ["integer", "null"]},
        "elapsed_ms": {"type": ["integer", "null"]},
        "evaluation": {
            "type": ["object", "null"],
            "description": "With an evaluator: its verdict (null until given), score, reason "
            "and the µCR its run cost.",
        },
    },
    "required": ["task_id", "status", "output", "cost", "refund", "version"],
}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _tool(
    name: str,
    description: str,
    arguments: dict[str, Any],
    result: dict[str, Any],
    *,
    read_only: bool = True,
) -> Tool:
    return Tool(
        name=name,
        description=description,
        input_schema=arguments,
        output_schema=result,
        annotations=ToolAnnotations(
            read_only_hint=read_only, destructive_hint=False, open_world_hint=False
        ),
    )


TOOLS: list[Tool] = [
    _tool(
        "search_agents",
        f"Find agents to hire, best reputation first (at most {SEARCH_LIMIT}): their price, "
        "reputation, how many requesters it rests on, and their contract in short.",
        _object(
            {
                "query": {
                    "type": "string",
                    "maxLength": 200,
                    "description": "Words that must each appear in the agent's name, slug, "
                    "description or tags.",
                },
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,31}$"},
                    "maxItems": 20,
                    "description": "Only agents with every one of these tags.",
                },
                "min_reputation": {"type": "number", "minimum": 0, "maximum": 100},
                "max_base_fee": {**AMOUNT, "description": "The most base fee (µCR) to pay."},
            }
        ),
        _object({"agents": {"type": "array", "items": AGENT_SUMMARY}}, ("agents",)),
    ),
    _tool(
        "get_agent",
        "One agent: its contract (the JSON Schemas its current version takes and gives), "
        "price, recommended limits, reputation, and a quote for a typical input.",
        _object({"slug": SLUG}, ("slug",)),
        {
            **AGENT_SUMMARY,
            "properties": {
                **AGENT_SUMMARY["properties"],
                "status": {"enum": ["active", "suspended"]},
                "contract": CONTRACT,
                "recommended": {
                    "type": "object",
                    "properties": {
                        "fuel_limit": AMOUNT,
                        "memory_limit_mb": AMOUNT,
                        "timeout_ms": AMOUNT,
                    },
                },
                "quote": QUOTE,
                "accepted_evaluators": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Evaluators run_agent may name for this agent.",
                },
            },
            "required": [*AGENT_SUMMARY["required"], "recommended", "quote"],
        },
    ),
    _tool(
        "quote",
        "What running the agent on this input is likely to cost, and the budget to give it.",
        _object({"slug": SLUG, "input": ANY_JSON}, ("slug", "input")),
        QUOTE,
    ),
    _tool(
        "run_agent",
        "Run the agent on the input and wait for the result (up to wait_seconds). The budget "
        "is held in escrow and what the run does not use is refunded. Returns the output, "
        "cost, refund and receipt id once final, or the task id and status while it still "
        "runs (then call get_task).",
        _object(
            {
                "slug": SLUG,
                "input": ANY_JSON,
                "budget": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "The most the run may cost, µCR. Default: the quote's "
                    "suggested budget, capped by this API key's per-task limit.",
                },
                "version": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "The agent version to run. Default: its current one.",
                },
                "wait_seconds": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": WAIT_MAX,
                    "default": WAIT_DEFAULT,
                    "description": "How long to wait for the task to be final.",
                },
                "idempotency_key": {
                    "type": "string",
                    "pattern": "^[\\x21-\\x7e]{1,100}$",
                    "description": "Send the same key again (e.g. after a timeout) to get "
                    "the same task back instead of a second run. The REST API's "
                    "Idempotency-Key, shared with it.",
                },
                "evaluator": {
                    "type": "string",
                    "description": "An evaluator agent the agent accepts (get_agent lists "
                    "them): it checks the output, paid from the same budget, before the "
                    "agent's earnings' hold starts; a rejection refunds the task's cost.",
                },
            },
            ("slug", "input"),
        ),
        TASK,
        read_only=False,
    ),
    _tool(
        "get_task",
        "A task of yours: its status, and once final its output, cost, refund and receipt id.",
        _object({"id": TASK_ID}, ("id",)),
        TASK,
    ),
    _tool(
        "verify_receipt",
        "Check the signature of a finished task's execution receipt against the exchange's "
        "receipt keys. Returns whether it is valid, and the receipt.",
        _object({"task_id": TASK_ID}, ("task_id",)),
        _object(
            {
                "valid": {"type": "boolean"},
                "task_id": {"type": "string"},
                "receipt": {
                    "type": "object",
                    "description": "The signed receipt: canonical JSON payload, base64 "
                    "Ed25519 signature, the signing key's id.",
                    "properties": {
                        "payload": {"type": "string"},
                        "signature": {"type": "string"},
                        "key_id": {"type": "string"},
                    },
                },
            },
            ("valid", "task_id", "receipt"),
        ),
    ),
]

BY_NAME: dict[str, Tool] = {tool.name: tool for tool in TOOLS}
# Our own schemas, compiled once: every call's arguments are checked against them.
ARGUMENT_VALIDATORS = {tool.name: jsonschema_rs.validator_for(tool.input_schema) for tool in TOOLS}


def input_schema(name: str) -> dict[str, Any] | None:
    tool = BY_NAME.get(name)
    return None if tool is None else tool.input_schema
