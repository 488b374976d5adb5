"""Quotes: what a task on an agent is likely to cost, before it is submitted.

Settlement records each successful run of a binary (fuel used, input size) in a ring of
`QUOTE_SAMPLES` rows per binary with one statement; a quote reads the ring of the agent's
current binary, so it costs the same with ten tasks on the platform or ten million.

The estimate scales each recent run to the input size asked about: a run's fuel, plus the
fuel per input byte times the difference in size. The fuel per byte is the slope of a
least-squares line through the runs when their inputs differ in size (so a fixed start-up
cost is not scaled with the input), and each run's own ratio when they don't, for larger
inputs only (a smaller one is quoted at the runs' own fuel: they can't tell the start-up
cost apart, and scaling it down would suggest a budget that runs out of fuel). p50 and p95
are taken over those scaled runs, capped at the fuel limit; the suggested budget buys the
p95 run's fuel with a quarter to spare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from django.db import connection
from django.utils import timezone

from marketplace.models import Agent, FuelSample

QUOTE_SAMPLES = 64
HEADROOM = Fraction(5, 4)


@dataclass(frozen=True)
class Estimate:
    p50: int
    p95: int
    fuel_p50: int
    fuel_p95: int


@dataclass(frozen=True)
class Quote:
    base_fee: int
    fuel_price: int
    fuel_limit: int
    input_bytes: int
    max_cost: int
    estimate: Estimate | None
    runs: int
    suggested_budget: int


def run_cost(*, base_fee: int, fuel_price: int, fuel: int) -> int:
    """What a run using `fuel` costs (SPEC §3, before the budget cap): the base fee plus
    fuel at µCR per million units, rounded up. Matches the executor's cost_for."""
    return base_fee + -(-fuel * fuel_price // 1_000_000)


def fuel_sample_record(*, binary_id: int, fuel_used: int, input_bytes: int) -> None:
    """Remember a successful run, overwriting the binary's oldest sample once its ring is
    full. One statement, inside the settlement's transaction (where the agent's
    reputation row is locked, so one agent's settlements take turns here)."""
    sql, params = fuel_sample_sql(binary_id=binary_id, fuel_used=fuel_used, input_bytes=input_bytes)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def fuel_sample_sql(
    *, binary_id: int, fuel_used: int, input_bytes: int, after: str | None = None
) -> tuple[str, list[Any]]:
    """The INSERT that records a sample; with `after`, the name of a CTE of the statement
    it goes in, only if that CTE returned a row. Its ring position comes from the binary's
    latest sample as the statement sees it: every sample is written under the agent's
    reputation row lock, by a statement that saw that row unchanged (or took the lock)."""
    table = connection.ops.quote_name(FuelSample._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    guard = f"EXISTS (SELECT 1 FROM {after})" if after else "true"  # noqa: S608
    sql = (
        f"INSERT INTO {table} (binary_id, slot, seq, fuel_used, input_bytes, recorded_at) "  # noqa: S608
        f"SELECT %s, (m + 1) %% {QUOTE_SAMPLES}, m + 1, %s, %s, %s FROM "
        f"(SELECT COALESCE(MAX(seq), 0) AS m FROM {table} WHERE binary_id = %s) AS latest "
        f"WHERE {guard} ON CONFLICT (binary_id, slot) DO UPDATE SET seq = excluded.seq, "
        "fuel_used = excluded.fuel_used, input_bytes = excluded.input_bytes, "
        "recorded_at = excluded.recorded_at"
    )
    return sql, [binary_id, fuel_used, input_bytes, now, binary_id]


def scaled_fuel(samples: list[tuple[int, int]], input_bytes: int) -> list[int]:
    """Each sampled run's fuel (fuel, input size), scaled to `input_bytes`."""
    sizes = [size for _, size in samples]
    slope: Fraction | None = None
    if len(set(sizes)) > 1:
        mean_size = Fraction(sum(sizes), len(sizes))
        mean_fuel = Fraction(sum(fuel for fuel, _ in samples), len(samples))
        spread = sum(((size - mean_size) ** 2 for size in sizes), Fraction(0))
        covariance = sum(
            ((size - mean_size) * (fuel - mean_fuel) for fuel, size in samples), Fraction(0)
        )
        slope = max(Fraction(0), covariance / spread)
    scaled = []
    for fuel, size in samples:
        # All of one size: each run's own fuel per byte (none for an empty input), for a
        # larger input only. Those runs can't tell the start-up cost from the per-byte part,
        # so a smaller input is quoted at the run's own fuel, not scaled down to below what
        # starting the agent takes (a budget so suggested would run out of fuel).
        own = Fraction(fuel, size) if size and input_bytes > size else Fraction(0)
        per_byte = slope if slope is not None else own
        scaled.append(max(0, math.ceil(fuel + per_byte * (input_bytes - size))))
    return scaled


def percentile(values: list[int], p: int) -> int:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)]


def quote_for(agent: Agent, *, input_bytes: int, fuel_limit: int | None = None) -> Quote:
    limit = fuel_limit if fuel_limit is not None else agent.recommended_limits()["fuel_limit"]

    def cost(fuel: int) -> int:
        return run_cost(base_fee=agent.base_fee, fuel_price=agent.fuel_price, fuel=fuel)

    samples: list[tuple[int, int]] = []
    if agent.current_binary_id is not None:
        samples = list(
            FuelSample.objects.filter(binary_id=agent.current_binary_id).values_list(
                "fuel_used", "input_bytes"
            )
        )
    estimate = None
    suggested_fuel = limit
    if samples:
        fuel = [min(limit, each) for each in scaled_fuel(samples, input_bytes)]
        p50, p95 = percentile(fuel, 50), percentile(fuel, 95)
        estimate = Estimate(p50=cost(p50), p95=cost(p95), fuel_p50=p50, fuel_p95=p95)
        suggested_fuel = min(limit, math.ceil(p95 * HEADROOM))
    # The least budget a submission takes: the base fee and some fuel.
    least = max(1, agent.base_fee + (1 if agent.fuel_price > 0 else 0))
    return Quote(
        base_fee=agent.base_fee,
        fuel_price=agent.fuel_price,
        fuel_limit=limit,
        input_bytes=input_bytes,
        max_cost=cost(limit),
        estimate=estimate,
        runs=len(samples),
        suggested_budget=max(least, cost(suggested_fuel)),
    )
