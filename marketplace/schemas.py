"""The one check of an agent's or a task's `output_schema`: a JSON Schema, or nothing.

Both the API's input validation and the services apply it, so a schema the API accepts
is one the services accept, and the other way round. A schema is accepted exactly when
the validator the executor checks outputs with compiles it (`execution.engine.outputs`:
jsonschema-rs, linear-time patterns, no remote `$ref`), so no task fails at run time
over a schema it was allowed to submit.
"""

from __future__ import annotations

import json
from typing import Any

from execution.engine import outputs
from marketplace.errors import InvalidOutputSchema, SchemaTooLarge

# SPEC §13: larger schemas are refused at submission (serialized as compact JSON).
OUTPUT_SCHEMA_MAX_BYTES = 64 * 1024
# Compiling is bounded too: a schema whose patterns take longer than this to compile
# (or more than the checker's memory) is refused rather than left for a worker.
OUTPUT_SCHEMA_COMPILE_SECONDS = 2.0


def output_schema_check(schema: Any) -> None:
    """Raise `InvalidOutputSchema` unless `schema` is None or a JSON Schema object that
    the output validator compiles; `SchemaTooLarge` when it is over 64 KiB.

    The schema is checked against the meta-schema of the draft it declares (the latest
    draft when it declares none), and every `pattern` must compile for the linear-time
    regex engine (no lookaround, no backreferences).
    """
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise InvalidOutputSchema("output_schema must be a JSON object.")
    size = len(json.dumps(schema, separators=(",", ":")).encode())
    if size > OUTPUT_SCHEMA_MAX_BYTES:
        raise SchemaTooLarge(
            f"output_schema is {size} bytes as JSON; the limit is {OUTPUT_SCHEMA_MAX_BYTES}.",
            fields={"output_schema": [f"at most {OUTPUT_SCHEMA_MAX_BYTES} bytes"]},
        )
    verdict = outputs.compile_schema(schema, timeout_s=OUTPUT_SCHEMA_COMPILE_SECONDS)
    if verdict.kind == outputs.SCHEMA_INVALID:
        raise InvalidOutputSchema(f"output_schema is not a valid JSON Schema: {_hint(verdict)}")
    if not verdict.ok:
        raise InvalidOutputSchema(f"output_schema is too complex to compile: {verdict.message}.")


def _hint(verdict: outputs.Verdict) -> str:
    if verdict.message.endswith('is not a "regex"'):
        return (
            f"{verdict.message} (patterns are matched in linear time: no lookaround or "
            "backreferences, and each compiles to at most 1 MiB)"
        )
    return verdict.message
