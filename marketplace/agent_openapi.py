"""One OpenAPI 3.1 document per agent (SPEC §19): how to run that agent and nothing else.

`GET /api/v1/agents/{slug}/openapi.json` serves `agent_openapi(agent, server=...)`. Its one
operation is `POST /api/v1/tasks/`, described for this agent's current version:
- the request body's `input` property is the version's input schema (a string when it has
  none), and `agent` and `version` are fixed to this agent and version;
- the 201 response is the task as the API answers it, whose `result.output` is typed by
  the version's output schema. On the wire `output` is the agent's stdout as text (so that
  `output_sha256` can be checked against it), so the schema is given as the
  `contentSchema` of a `contentMediaType: application/json` string (JSON Schema 2020-12,
  which OpenAPI 3.1 uses): the text, parsed, matches the output schema;
- the price is `x-agent-price: {base_fee, fuel_price}` in µCR, on the document and on the
  operation, and in words in `info.description`.

A schema's own references (`#/$defs/…`) point into the schema itself; in the document they
are rewritten to point to the same place where the schema now sits.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from marketplace.evaluators import accepted_slugs
from marketplace.models import Agent, AgentBinary, Task

MICRO = 1_000_000
TASKS_PATH = "/api/v1/tasks/"
# Where each schema sits in the document, as JSON pointers (RFC 6901: "/" is "~1").
_OPERATION = "#/paths/~1api~1v1~1tasks~1/post"
INPUT_AT = f"{_OPERATION}/requestBody/content/application~1json/schema/properties/input"
OUTPUT_AT = "#/components/schemas/Task/properties/result/properties/output/contentSchema"


def _credits(micro: int) -> str:
    whole, rest = divmod(micro, MICRO)
    text = f"{whole:,}" + (f".{rest:06d}".rstrip("0") if rest else "")
    return f"{micro:,} µCR ({text} CR)"


def _rebased(schema: Any, base: str) -> Any:
    """`schema` with every local reference (`#…`) made to point below `base`."""
    if isinstance(schema, dict):
        rebased = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                rebased[key] = base + value[1:]
            else:
                rebased[key] = _rebased(value, base)
        return rebased
    if isinstance(schema, list):
        return [_rebased(item, base) for item in schema]
    return schema


def price_in_words(agent: Agent) -> str:
    return (
        f"Price: a base fee of {_credits(agent.base_fee)} for every successful run, plus "
        f"{_credits(agent.fuel_price)} per million units of fuel the run uses. The budget "
        "you send is held in escrow; a success costs the base fee plus its fuel (at most the "
        "budget) and the rest is refunded; a failure is refunded in full."
    )


def _input_schema(binary: AgentBinary) -> dict[str, Any]:
    if binary.input_schema is None:
        return {
            "type": "string",
            "description": "Given to the agent on stdin, as it is (this version has no input "
            "schema).",
        }
    return _rebased(binary.input_schema, INPUT_AT)


def _output_schema(binary: AgentBinary) -> dict[str, Any]:
    described = {"type": "string", "description": "The agent's stdout as UTF-8 text."}
    if binary.output_schema is None:
        return described
    return {
        **described,
        "description": "The agent's stdout as UTF-8 text: on success, a JSON document that "
        "matches the version's output schema (`contentSchema`).",
        "contentMediaType": "application/json",
        "contentSchema": _rebased(binary.output_schema, OUTPUT_AT),
    }


def _request(agent: Agent, binary: AgentBinary) -> dict[str, Any]:
    least = agent.base_fee + (1 if agent.fuel_price > 0 else 0)
    limits = agent.recommended_limits()
    return {
        "type": "object",
        "required": ["agent", "input", "budget"],
        "properties": {
            "agent": {"const": agent.slug, "description": "This agent's slug."},
            "version": {
                "const": binary.version,
                "description": "The version this document describes. Left out, the task runs "
                "the agent's current version, which may since have changed.",
            },
            "input": _input_schema(binary),
            "budget": {
                "type": "integer",
                "minimum": least,
                "description": "µCR held in escrow: the most the task can cost.",
            },
            "fuel_limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": settings.TASK_MAX_FUEL,
                "default": limits["fuel_limit"],
            },
            "memory_limit_mb": {
                "type": "integer",
                "minimum": 1,
                "maximum": settings.TASK_MAX_MEMORY_MB,
                "default": limits["memory_limit_mb"],
            },
            "timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": settings.TASK_MAX_TIMEOUT_MS,
                "default": limits["timeout_ms"],
            },
            "min_reputation": {
                "type": "string",
                "description": "Refuse to run below this reputation (0–100, a decimal string).",
            },
            "evaluator": {
                "enum": accepted_slugs(agent),
                "description": "An evaluator this agent accepts: it checks the output, paid "
                "from the same budget (which must also cover its base fee), before the "
                "agent's earnings' hold starts; a rejection refunds the task's cost.",
            },
        },
    }


def _task(binary: AgentBinary) -> dict[str, Any]:
    nullable_int = {"type": ["integer", "null"]}
    input_shown = (
        {"description": "The input as sent (a JSON value)."}
        if binary.input_schema is not None
        else {"type": "string"}
    )
    return {
        "type": "object",
        "required": ["id", "status", "agent", "version", "budget", "result"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": list(Task.Status.values)},
            "agent": {"type": "string"},
            "version": {"type": "integer", "description": "The binary version that runs."},
            "input": input_shown,
            "budget": {"type": "integer"},
            "cost": nullable_int,
            "fee": nullable_int,
            "refund": nullable_int,
            "failure_reason": {"enum": [*Task.FailureReason.values, None]},
            "failure_detail": {"type": "string"},
            "result": {
                "type": ["object", "null"],
                "description": "null until the task has run.",
                "properties": {
                    "exit_code": nullable_int,
                    "output": _output_schema(binary),
                    "stderr": {"type": "string"},
                    "fuel_used": nullable_int,
                    "elapsed_ms": nullable_int,
                    "output_sha256": {
                        "type": "string",
                        "description": "Hex SHA-256 of the raw stdout bytes; the receipt signs it.",
                    },
                },
            },
            "escrow": {
                "type": ["object", "null"],
                "properties": {"id": {"type": "integer"}, "status": {"type": "string"}},
            },
            "payment": {"enum": list(Task.Payment.values)},
            "fuel_limit": {"type": "integer"},
            "memory_limit_mb": {"type": "integer"},
            "timeout_ms": {"type": "integer"},
            "min_reputation": {"type": "string"},
            "output_schema": {"type": ["object", "null"]},
            "attempts": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "deadline_at": {"type": ["string", "null"], "format": "date-time"},
            "evaluation": {
                "type": ["object", "null"],
                "description": "With an evaluator: {evaluator, status, verdict, score, "
                "reason, cost, run, receipt}; the verdict is null until given.",
            },
        },
    }


ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object"},
            },
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def agent_openapi(agent: Agent, *, server: str) -> dict[str, Any]:
    """The document for running `agent`'s current version, served from `server` (the
    site's base URL). The agent must have a version."""
    binary = agent.current_binary
    assert binary is not None
    price = {"base_fee": agent.base_fee, "fuel_price": agent.fuel_price}
    task_ref = {"$ref": "#/components/schemas/Task"}
    description = (
        f"Run {agent.name} (`{agent.slug}`), version {binary.version}, on Agent Exchange. "
        f"{price_in_words(agent)} "
        + (
            "Its input is a JSON value that must match the input schema (checked before any "
            "money moves: 400 `invalid_input` with `fields.path`)."
            if binary.input_schema is not None
            else "Its input is a string."
        )
        + (
            " Its output is JSON that matches the output schema; a run whose output does not "
            "fails as `invalid_output` and is refunded."
            if binary.output_schema is not None
            else ""
        )
    )
    operation = {
        "operationId": "run_" + agent.slug.replace("-", "_"),
        "summary": f"Run {agent.name}",
        "description": description,
        "x-agent-price": price,
        "security": [{"apiKey": []}, {"token": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 100},
                "description": "Repeat a submission safely: the same key answers with the "
                "first task.",
            },
            {
                "name": "Prefer",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
                "description": "`wait=N` (1–60): answer 201 with the final task if it "
                "finishes within N seconds, else 202 with the task as it stands.",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _request(agent, binary)}},
        },
        "responses": {
            "201": {
                "description": "The task, funded and queued (or final, with `Prefer: wait`).",
                "content": {"application/json": {"schema": task_ref}},
            },
            "202": {
                "description": "With `Prefer: wait`: not final yet; poll GET /api/v1/tasks/{id}/.",
                "content": {"application/json": {"schema": task_ref}},
            },
            "400": _error(
                "Bad request: `invalid_input` (with `fields.path`, the JSON pointer of the "
                "first failing place), `version_not_found`, `budget_below_base_fee`, "
                "`validation_error`, …"
            ),
            "401": _error("No or invalid credentials."),
            "402": _error("`insufficient_funds` or `spend_limit_exceeded`."),
            "403": _error("`scope_required` or `agent_not_allowed` (API keys)."),
            "409": _error("`agent_inactive`, or the Idempotency-Key was used for another body."),
            "413": _error("`input_too_large`."),
            "429": _error("`too_many_tasks`, `throttled` or `schema_check_budget`."),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{agent.name} ({agent.slug})",
            "version": str(binary.version),
            "description": description,
        },
        "servers": [{"url": server}],
        "x-agent-price": price,
        "paths": {TASKS_PATH: {"post": operation}},
        "components": {
            "schemas": {"Task": _task(binary), "Error": ERROR},
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer <key>`.",
                },
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "An account token: `Authorization: Token <token>`.",
                },
            },
        },
    }
