"""Wire format of an agent's quote."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers


class QueryBigIntegerField(serializers.IntegerField):
    """A whole number in a query string, plain digits only (fuel runs to 10 digits)."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not data.isascii() or not data.isdigit() or len(data) > 18:
            self.fail("invalid")
        return super().to_internal_value(data)


class QuoteQuerySerializer(serializers.Serializer):
    input_bytes = QueryBigIntegerField(
        min_value=0,
        max_value=settings.TASK_MAX_INPUT_BYTES,
        help_text="The size of the input you mean to send, in bytes (UTF-8).",
    )
    fuel_limit = QueryBigIntegerField(
        min_value=1,
        max_value=settings.TASK_MAX_FUEL,
        required=False,
        help_text="The fuel limit you mean to set; default: the agent's recommended fuel.",
    )


class EstimateSerializer(serializers.Serializer):
    p50 = serializers.IntegerField(help_text="Median cost of a run like this, µCR.")
    p95 = serializers.IntegerField(help_text="95th-percentile cost, µCR.")
    fuel_p50 = serializers.IntegerField(help_text="Median fuel of a run like this.")
    fuel_p95 = serializers.IntegerField(help_text="95th-percentile fuel.")


class QuoteSerializer(serializers.Serializer):
    base_fee = serializers.IntegerField(help_text="µCR charged for every successful run.")
    fuel_price = serializers.IntegerField(help_text="µCR per million fuel units.")
    fuel_limit = serializers.IntegerField(help_text="The fuel limit this quote assumes.")
    input_bytes = serializers.IntegerField()
    max_cost = serializers.IntegerField(
        help_text="The most a run can cost with this fuel limit: base fee + the limit's fuel."
    )
    estimate = EstimateSerializer(
        allow_null=True,
        help_text="From the current binary's recent successful runs, scaled to the input "
        "size; null before it has any.",
    )
    runs = serializers.IntegerField(help_text="How many recent runs the estimate rests on.")
    suggested_budget = serializers.IntegerField(
        help_text="Covers the p95 run's fuel with a quarter to spare (the max cost without "
        "history); anything unused is refunded."
    )
