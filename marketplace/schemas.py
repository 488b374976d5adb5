"""The one check of an agent's or a task's `output_schema`: a JSON Schema, or nothing.

Both the API's input validation and the services apply it, so a schema the API accepts
is one the services accept, and the other way round.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from marketplace.errors import InvalidOutputSchema


def output_schema_check(schema: Any) -> None:
    """Raise `InvalidOutputSchema` unless `schema` is None or a valid JSON Schema object.

    The schema is checked against the meta-schema of the draft it declares (the latest
    draft when it declares none). When it fails that check, the `jsonschema.SchemaError`
    is chained as the error's `__cause__`, for callers that word the problem themselves.
    """
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise InvalidOutputSchema("output_schema must be a JSON object.")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidOutputSchema(
            f"output_schema is not a valid JSON Schema: {exc.message}"
        ) from exc
