"""Fields and limits the resources' serializers share: strict JSON types, amounts, query
integers, agent slugs and output schemas."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from marketplace.errors import InvalidOutputSchema, SchemaTooLarge
from marketplace.models import Agent
from marketplace.schemas import output_schema_check

# Amounts are µCR in a signed 64-bit column; anything larger is refused as input.
MAX_AMOUNT = 2**63 - 1
# Agents set their prices within the largest possible single deposit.
MAX_PRICE = 10**15
MAX_TAGS = 20
TAG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}\Z"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, floats or booleans, so amounts are never guessed at."""

    default_error_messages = {"invalid": "A whole number (JSON integer) is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string: numbers are not silently turned into text."""

    default_error_messages = {"invalid": "A string is required."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def amount_field(*, min_value: int = 1, max_value: int = MAX_AMOUNT, **kwargs: Any):
    return StrictIntegerField(min_value=min_value, max_value=max_value, **kwargs)


class QueryIntegerField(serializers.IntegerField):
    """Integers in query strings are text; accept only plain digits."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not data.isascii() or not data.isdigit() or len(data) > 9:
            self.fail("invalid")
        return super().to_internal_value(data)


def existing_agent(slug: str) -> Agent:
    """The agent a request names, or a field error: naming a missing agent is bad input."""
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        raise serializers.ValidationError("No such agent.")
    return agent


def checked_output_schema(value: Any, *, user_id: int | None = None) -> Any:
    """An `output_schema` input, checked by the services' own rule (`marketplace.schemas`).

    The API reports a bad one as a field error (400 `validation_error`, like any other bad
    field) rather than as the services' `invalid_output_schema`; one over the size limit
    is its own error, 400 `schema_too_large`.
    """
    if value is not None and not isinstance(value, dict):
        raise serializers.ValidationError("Must be a JSON object (a JSON Schema).")
    try:
        output_schema_check(value, user_id=user_id)
    except SchemaTooLarge:
        raise
    except InvalidOutputSchema as exc:
        raise serializers.ValidationError(exc.message) from None
    return value
