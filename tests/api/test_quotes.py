"""Quotes: GET /api/v1/agents/{slug}/quote/ from the runs settlement records."""

from __future__ import annotations

from typing import Any

import pytest
import wasmtime
from django.conf import settings
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from escrow.services import deposit_create
from execution.runs import Execution, cost_for
from execution.services import task_claim, task_settle
from marketplace.apikeys import api_key_create
from marketplace.binaries import binary_upload
from marketplace.models import Agent, FuelSample
from marketplace.quotes import QUOTE_SAMPLES, fuel_sample_record, run_cost, scaled_fuel
from marketplace.services import task_submit
from tests.factories import make_agent

from .conftest import error

BASE_FEE, FUEL_PRICE = 1_000, 2_000


@pytest.fixture
def agent(bob) -> Agent:
    return make_agent(bob, base_fee=BASE_FEE, fuel_price=FUEL_PRICE)


def quote(client: APIClient, slug: str = "echo", **query: Any) -> dict:
    response = client.get(f"/api/v1/agents/{slug}/quote/", query)
    assert response.status_code == 200, response.content
    return response.json()


def run(requester: Any, agent: Agent, *, size: int, fuel: int, succeeded: bool = True) -> None:
    """A task with an input of `size` bytes that ran with `fuel`, settled for real."""
    task = task_submit(requester=requester, agent=agent, input="x" * size, budget=1_000_000)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    outcome = (
        Execution(exit_code=0, fuel_used=fuel, fuel_limit=task.fuel_limit)
        if succeeded
        else Execution(reason="trap", fuel_used=fuel, fuel_limit=task.fuel_limit)
    )
    assert task_settle(task_id=task.pk, attempt=claim[1], execution=outcome)


def test_without_history_there_is_no_estimate_and_the_budget_covers_the_limit(as_alice, agent):
    body = quote(as_alice, input_bytes=5_000)
    limit = agent.recommended_fuel
    max_cost = BASE_FEE + -(-limit * FUEL_PRICE // 1_000_000)
    assert body == {
        "base_fee": BASE_FEE,
        "fuel_price": FUEL_PRICE,
        "fuel_limit": limit,
        "input_bytes": 5_000,
        "max_cost": max_cost,
        "estimate": None,
        "runs": 0,
        "suggested_budget": max_cost,
    }


def test_max_cost_is_exactly_what_the_fuel_limit_could_cost(as_alice, agent):
    # 1_234_567 fuel at 2_000 µCR per million = 2_469.134 µCR, rounded up.
    body = quote(as_alice, input_bytes=0, fuel_limit=1_234_567)
    assert body["max_cost"] == 1_000 + 2_470 == 3_470
    assert body["max_cost"] == cost_for(
        base_fee=BASE_FEE, fuel_price=FUEL_PRICE, fuel_used=1_234_567, budget=10**18
    )
    top = quote(as_alice, input_bytes=0, fuel_limit=settings.TASK_MAX_FUEL)
    assert top["max_cost"] == BASE_FEE + settings.TASK_MAX_FUEL * FUEL_PRICE // 1_000_000


@given(
    base_fee=st.integers(0, 10**15),
    fuel_price=st.integers(0, 10**15),
    fuel=st.integers(0, 10**11),
)
def test_the_quotes_cost_formula_is_the_executors(base_fee, fuel_price, fuel):
    expected = cost_for(base_fee=base_fee, fuel_price=fuel_price, fuel_used=fuel, budget=2**70)
    assert run_cost(base_fee=base_fee, fuel_price=fuel_price, fuel=fuel) == expected


def test_history_of_different_sizes_scales_by_the_fuel_per_byte(as_alice, alice, agent):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    # A fixed 10_000 fuel to start, then 50 per byte.
    for size in (100, 200, 400):
        run(alice, agent, size=size, fuel=10_000 + 50 * size)
    run(alice, agent, size=300, fuel=999_999, succeeded=False)  # failures are not sampled
    body = quote(as_alice, input_bytes=1_000)
    fuel = 10_000 + 50 * 1_000
    assert body["runs"] == 3
    assert body["estimate"] == {
        "p50": BASE_FEE + fuel * FUEL_PRICE // 1_000_000,
        "p95": BASE_FEE + fuel * FUEL_PRICE // 1_000_000,
        "fuel_p50": fuel,
        "fuel_p95": fuel,
    }
    # The p95 run's fuel and a quarter more: 75_000 fuel.
    assert body["suggested_budget"] == BASE_FEE + 75_000 * FUEL_PRICE // 1_000_000 == 1_150
    # Twice the input, the per-byte part doubles; the start-up cost does not.
    assert quote(as_alice, input_bytes=2_000)["estimate"]["fuel_p50"] == 10_000 + 50 * 2_000


def test_history_of_one_size_scales_in_proportion(as_alice, alice, agent):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    for fuel in (5_000, 7_000, 6_000):
        run(alice, agent, size=100, fuel=fuel)
    same = quote(as_alice, input_bytes=100)["estimate"]
    assert (same["fuel_p50"], same["fuel_p95"]) == (6_000, 7_000)
    tripled = quote(as_alice, input_bytes=300)["estimate"]
    assert (tripled["fuel_p50"], tripled["fuel_p95"]) == (18_000, 21_000)
    assert tripled["p95"] == BASE_FEE + 21_000 * FUEL_PRICE // 1_000_000
    # A smaller input is not scaled down: runs of one size can't tell the agent's start-up
    # fuel from its per-byte fuel, so a tenth of the input is quoted at the runs' own.
    tenth = quote(as_alice, input_bytes=10)["estimate"]
    assert (tenth["fuel_p50"], tenth["fuel_p95"]) == (6_000, 7_000)


def test_an_estimate_never_exceeds_the_fuel_limit(as_alice, alice, agent):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    run(alice, agent, size=10, fuel=1_000_000)
    body = quote(as_alice, input_bytes=1_000, fuel_limit=2_000_000)
    assert body["estimate"]["fuel_p95"] == 2_000_000
    assert body["estimate"]["p95"] == body["max_cost"] == body["suggested_budget"]


def test_only_the_current_binarys_runs_count(as_alice, alice, agent):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    run(alice, agent, size=10, fuel=5_000)
    assert quote(as_alice, input_bytes=10)["runs"] == 1
    other = wasmtime.wat2wasm('(module (memory (export "memory") 2) (func (export "_start")))')
    binary_upload(agent=agent, data=bytes(other))  # a new version
    assert quote(as_alice, input_bytes=10)["runs"] == 0


def test_the_ring_keeps_the_latest_runs_of_a_binary(agent):
    binary_id = agent.current_binary_id
    assert binary_id is not None
    for n in range(1, QUOTE_SAMPLES + 7):
        fuel_sample_record(binary_id=binary_id, fuel_used=n, input_bytes=1)
    rows = FuelSample.objects.filter(binary_id=binary_id)
    assert rows.count() == QUOTE_SAMPLES
    assert sorted(rows.values_list("fuel_used", flat=True)) == list(range(7, QUOTE_SAMPLES + 7))
    assert sorted(rows.values_list("seq", flat=True)) == list(range(7, QUOTE_SAMPLES + 7))


def test_scaling_handles_empty_inputs_and_a_downward_line():
    assert scaled_fuel([(5_000, 0), (5_000, 0)], 1_000) == [5_000, 5_000]
    # Bigger inputs that happened to cost less: the slope is floored at zero.
    assert scaled_fuel([(9_000, 10), (1_000, 1_000)], 500) == [9_000, 1_000]


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"input_bytes": "-1"},
        {"input_bytes": "1.5"},
        {"input_bytes": "abc"},
        {"input_bytes": str(settings.TASK_MAX_INPUT_BYTES + 1)},
        {"input_bytes": "1", "fuel_limit": "0"},
        {"input_bytes": "1", "fuel_limit": str(settings.TASK_MAX_FUEL + 1)},
    ],
)
def test_bad_queries_are_validation_errors(as_alice, agent, query):
    response = as_alice.get("/api/v1/agents/echo/quote/", query)
    assert error(response) == (400, "validation_error")


def test_an_unknown_agent_is_404(as_alice):
    assert error(as_alice.get("/api/v1/agents/nope/quote/", {"input_bytes": 1})) == (
        404,
        "agent_not_found",
    )


def test_any_api_key_may_ask_for_a_quote(alice, agent):
    _, raw = api_key_create(user=alice, name="robot", scopes=["tasks:read"])
    robot = APIClient()
    robot.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert quote(robot, input_bytes=10)["base_fee"] == BASE_FEE
