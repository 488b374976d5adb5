"""Contracts of agent versions (SPEC §19): what a version takes and what it answers.

Each binary version (`AgentBinary`) carries an optional `input_schema` and an optional
`output_schema`, set when it is uploaded (`marketplace.binaries.binary_upload`) and never
changed: a new contract is a new version. With an input schema, a task's input is a JSON
value that must match it, checked before any money moves; without one, the input is a
string, as it always was. The output of a run is checked against the schema of the version
that ran (or the requester's own, when the task names one).

Public functions, for the API, the pages, MCP and the services alike:

- `contract_schema_check(schema, *, field, user_id=None)`: a schema given at upload is
  None or a JSON Schema the linear-time checker compiles; else 400 `invalid_schema`
  (`SchemaTooLarge`, 400 `schema_too_large`, over 64 KiB; 429 `schema_check_budget` past
  the user's share of the checker).
- `contract_version(agent, version=None) -> AgentBinary`: the version a task runs, the
  agent's current one unless `version` names another; 400 `version_not_found` for a
  version the agent does not have (and 409 `agent_has_no_binary` when it has none).
- `contract_of(binary) -> {version, input_schema, output_schema} | None`: a version's
  contract as the API shows it.
- `input_prepare(*, binary, input, user_id=None) -> str`: the input as a task stores it
  (`Task.input`, text, given to the agent on stdin), checked against the version's
  contract: with an input schema, `input` is any JSON value, stored as compact JSON with
  sorted keys (so its `input_sha256` can be recomputed) after the check; 400
  `invalid_input` with `fields.path` (a JSON pointer) when it breaks the schema, or when
  a version without one is given anything but a string; 413 `input_too_large` past
  TASK_MAX_INPUT_BYTES.
- `input_text(*, binary, input) -> str`: the same stored text, without the checks.
- `input_shown(task) -> Any`: a task's input as the API shows it back: the JSON value
  when the version that ran has an input schema, else the string.
- `output_schema_of(task) -> dict | None`: the schema a task's output must satisfy: the
  requester's own, else the version's.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings

from execution.engine import outputs
from marketplace.errors import (
    AgentHasNoBinary,
    InputTooLarge,
    InvalidInput,
    InvalidSchema,
    VersionNotFound,
)
from marketplace.models import Agent, AgentBinary, Task
from marketplace.schemas import (
    CHECKER_WAIT_SECONDS,
    SchemaCheckerBusy,
    checker_budget_left_or_refuse,
    checker_time_charge,
    output_schema_check,
)

# An input is checked under the same bound as compiling a schema: linear-time matching
# takes milliseconds on a 1 MiB input, so only a pathological schema comes near it.
INPUT_CHECK_SECONDS = 2.0
# A check quicker than this is not counted against the user's share of the checker. Counting
# is two writes to the shared cache, measured at 1.5–3 ms on PostgreSQL: far more than the
# check of an ordinary input (0.04 ms for a small document; 4 ms for 1 MiB of text, which is
# counted). A slower check counts in full.
UNCOUNTED_CHECK_SECONDS = 0.002
CONTRACT_FIELDS = ("input_schema", "output_schema")
# Versions are positive database integers; a number outside them names no version.
MAX_VERSION = 2**31 - 1


def contract_schema_check(schema: Any, *, field: str, user_id: int | None = None) -> None:
    """A version's `input_schema` or `output_schema` as uploaded: None, or a JSON Schema
    object the checker compiles (the same rule and bounds as every output schema)."""
    output_schema_check(schema, user_id=user_id, field=field, invalid=InvalidSchema)


def contract_version(agent: Agent, version: int | None = None) -> AgentBinary:
    """The version a task of `agent` runs: `version` when given, else the current one.

    The current version is read with the agent when the agent was fetched with
    `select_related("current_binary")` (as a submission's read does); another version
    costs one query."""
    current = agent.current_binary if agent.current_binary_id is not None else None
    if version is None:
        if current is None:
            raise AgentHasNoBinary()
        return current
    if isinstance(version, bool) or not isinstance(version, int):
        raise VersionNotFound(
            f"version is a version number, got {version!r}.", fields={"version": [str(version)]}
        )
    if current is not None and current.version == version:
        return current
    in_range = 1 <= version <= MAX_VERSION
    found = (
        AgentBinary.objects.filter(agent_id=agent.pk, version=version).first() if in_range else None
    )
    if found is None:
        raise VersionNotFound(
            f"{agent.slug} has no version {version}.", fields={"version": [str(version)]}
        )
    return found


def contract_of(binary: AgentBinary | None) -> dict[str, Any] | None:
    if binary is None:
        return None
    return {
        "version": binary.version,
        "input_schema": binary.input_schema,
        "output_schema": binary.output_schema,
    }


def input_text(*, binary: AgentBinary, input: Any) -> str:
    """How a task of this version stores `input`: the string itself without an input
    schema; with one, the JSON value as compact JSON with sorted keys (no NaN or
    Infinity, which JSON does not have)."""
    if binary.input_schema is None:
        if not isinstance(input, str):
            raise InvalidInput(
                f"Version {binary.version} has no input schema: its input is a string.",
                path="",
            )
        return input
    try:
        return json.dumps(
            input, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"The input is not a JSON value: {exc}.", path="") from None


def input_prepare(*, binary: AgentBinary, input: Any, user_id: int | None = None) -> str:
    """The input checked against the version's contract, as the task stores it.

    The check runs in the output checker's process (linear time, its own deadline); one
    that takes more than a few milliseconds is counted against the user's share of the
    checker like a schema's compile (SPEC §13, §23)."""
    text = input_text(binary=binary, input=input)
    size = len(text.encode())
    if size > settings.TASK_MAX_INPUT_BYTES:
        raise InputTooLarge(
            f"The input is {size} bytes; the limit is {settings.TASK_MAX_INPUT_BYTES}."
        )
    if binary.input_schema is None:
        return text
    checker_budget_left_or_refuse(user_id, field="input")
    began = time.monotonic()
    verdict = outputs.check_input(
        binary.input_schema,
        text.encode(),
        timeout_s=INPUT_CHECK_SECONDS,
        wait_s=CHECKER_WAIT_SECONDS,
    )
    if verdict.kind == outputs.BUSY:
        raise SchemaCheckerBusy()
    took = time.monotonic() - began
    if took >= UNCOUNTED_CHECK_SECONDS:
        checker_time_charge(user_id, took)
    if verdict.ok:
        return text
    if verdict.kind == outputs.FAILS:
        raise InvalidInput(verdict.message, path=verdict.path)
    if verdict.kind == outputs.SCHEMA_INVALID:  # compiled at upload, not by this checker
        raise InvalidInput(f"The version's input schema does not compile: {verdict.message}")
    # TOO_SLOW, TOO_BIG: an input this schema cannot be checked on is not accepted.
    raise InvalidInput(f"The input could not be checked against the schema: {verdict.message}.")


def input_shown(task: Task) -> Any:
    """The task's input as the API shows it: a JSON value for a version with an input
    schema, else the string it was given."""
    if task.binary.input_schema is None:
        return task.input
    try:
        return json.loads(task.input)
    except ValueError:  # not stored by input_prepare: shown as it is
        return task.input


def output_schema_of(task: Task) -> dict[str, Any] | None:
    """The schema a task's output is checked against: the requester's own, else the one
    of the version that ran."""
    return task.output_schema or task.binary.output_schema
