"""Reputation that can't be griefed or bought (SPEC §13), through real runs in wasmtime.

A requester who starves an agent of fuel, time or memory, or holds it to a schema it never
promised, gets a full refund and moves nothing; the same failures under the limits the
agent recommends still cost it. Runs its owner pays for, and runs that cost nothing, are
recorded but never scored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from escrow.models import Escrow
from execution.engine import modules
from execution.services import task_execute
from marketplace.binaries import binary_upload
from marketplace.models import Agent, Task
from marketplace.services import agent_update, task_submit
from reputation.models import AgentReputation, ReputationEvent
from tests.factories import AgentFactory, balance
from tests.wasm_modules import FD_WRITE, module, write

D = Decimal
FUNDS = 10_000_000
BUDGET = 100_000

# An honest agent: grows its memory a page at a time to 2 MiB (aborting if refused, as
# malloc would), burns about 320 M fuel (a few tenths of a second), then prints JSON.
HONEST = module(
    '(func (export "_start") (local $i i32) (local $p i32)'
    "(local.set $p (i32.const 31))"
    "(loop $g (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))"
    "(local.set $p (i32.sub (local.get $p) (i32.const 1)))"
    "(br_if $g (i32.ne (local.get $p) (i32.const 0))))"
    "(local.set $i (i32.const 40000000))"
    "(loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1)))"
    "(br_if $l (i32.ne (local.get $i) (i32.const 0))))" + write('{"ok":true}') + ")",
    FD_WRITE,
)

# Asks for 4 MiB at once and aborts if refused: under too little memory it traps with its
# memory far from the limit, so the sandbox cannot call it a memory_limit.
GREEDY = module(
    '(func (export "_start")'
    "(if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then unreachable))"
    + write('{"ok":true}')
    + ")",
    FD_WRITE,
)

GRIEFS: dict[str, tuple[dict[str, Any], str]] = {
    "fuel": ({"fuel_limit": 1}, "out_of_fuel"),
    "timeout": ({"timeout_ms": 1}, "timeout"),
    "memory": ({"memory_limit_mb": 1}, "memory_limit"),
    "schema": ({"output_schema": {"type": "array"}}, "invalid_output"),
}


@pytest.fixture(autouse=True)
def _wasm_cache(settings, tmp_path):
    settings.WASM_CACHE_DIR = tmp_path / "wasm-cache"
    modules.clear_memory_cache()


@pytest.fixture
def requester(alice):
    from escrow.services import deposit_create

    deposit_create(user_id=alice.pk, amount=FUNDS)
    return alice


def honest_agent(owner: Any, slug: str = "honest", **fields: Any) -> Agent:
    fields.setdefault("base_fee", 1_000)
    fields.setdefault("fuel_price", 10)
    agent = AgentFactory.create(owner=owner, slug=slug, **fields)
    binary_upload(agent=agent, data=HONEST)
    agent.refresh_from_db()
    return agent


def run(requester: Any, agent: Agent, **options: Any) -> Task:
    task = task_submit(requester=requester, agent=agent, input="x", budget=BUDGET, **options)
    task_execute(task_id=task.pk)
    task.refresh_from_db()
    return task


def score(agent: Agent) -> Decimal:
    return AgentReputation.objects.get(agent=agent).score


def assert_refunded(task: Task, reason: str) -> None:
    assert (task.status, task.failure_reason) == ("failed", reason), task.failure_detail
    assert (task.cost, task.fee, task.refund) == (0, 0, BUDGET)
    assert Escrow.objects.get(task=task).status == "refunded"


# --- griefing ------------------------------------------------------------------------------


def test_the_honest_agent_succeeds_under_its_recommended_limits(requester, bob):
    agent = honest_agent(bob)
    task = run(requester, agent)
    assert task.status == "succeeded", (task.failure_reason, task.failure_detail)
    assert bytes(task.stdout) == b'{"ok":true}'
    assert task.reputation_event.outcome == "success"
    assert task.reputation_event.delta > 0


@pytest.mark.parametrize("grief", list(GRIEFS))
def test_griefing_an_agent_moves_nothing_and_refunds_in_full(requester, bob, grief):
    options, reason = GRIEFS[grief]
    agent = honest_agent(bob)

    tasks = [run(requester, agent, **options) for _ in range(5)]

    expected = "requester_schema" if grief == "schema" else "requester_limits"
    for task in tasks:
        assert_refunded(task, reason)
        event = task.reputation_event
        assert (event.outcome, event.neutral_reason, event.delta) == ("neutral", expected, 0)
    assert score(agent) == D("50")  # five −5s would have left it at 25, below the default 30
    assert balance(requester) == FUNDS
    assert balance(bob) == 0
    # The agent can still take tasks with the default minimum reputation.
    assert run(requester, agent).status == "succeeded"


@pytest.mark.parametrize(
    ("grief", "recommended"),
    [
        ("fuel", {"recommended_fuel": 1}),
        ("timeout", {"recommended_timeout_ms": 1}),
        ("memory", {"recommended_memory_mb": 1}),
        ("schema", {"output_schema": {"type": "array"}}),
    ],
)
def test_the_same_failures_under_the_agents_own_limits_cost_five(
    requester, bob, grief, recommended
):
    _, reason = GRIEFS[grief]
    agent = honest_agent(bob, **recommended)
    # The requester names nothing: the run gets exactly what the agent declared.
    task = run(requester, agent)
    assert_refunded(task, reason)
    event = task.reputation_event
    assert (event.outcome, event.neutral_reason, event.delta) == ("failure", "", D("-5"))
    assert score(agent) == D("45")


def test_any_failure_under_less_memory_than_recommended_is_not_the_agents_fault(
    requester, charlie, bob
):
    from escrow.services import deposit_create

    deposit_create(user_id=charlie.pk, amount=FUNDS)
    greedy = AgentFactory.create(owner=bob, slug="greedy", base_fee=1_000, fuel_price=10)
    binary_upload(agent=greedy, data=GREEDY)
    starved = run(requester, greedy, memory_limit_mb=1)
    assert_refunded(starved, "trap")
    assert starved.reputation_event.neutral_reason == "requester_limits"
    # Declared by the agent itself, the same limit holds it to the crash.
    agent_update(agent=greedy, recommended_memory_mb=1)
    held = run(charlie, greedy)
    assert_refunded(held, "trap")
    assert (held.reputation_event.outcome, held.reputation_event.delta) == ("failure", D("-5"))


def test_a_limit_at_or_above_the_recommended_one_holds_the_agent_to_it(requester, bob):
    from escrow.services import deposit_create
    from tests.factories import UserFactory

    agent = honest_agent(bob, recommended_fuel=1_000_000)
    # Three requesters, so that no one's daily cap is what stops a penalty.
    others = [UserFactory.create(username=name) for name in ("dave", "erin")]
    for other in others:
        deposit_create(user_id=other.pk, amount=FUNDS)
    at = run(requester, agent, fuel_limit=1_000_000)
    above = run(others[0], agent, fuel_limit=2_000_000)
    below = run(others[1], agent, fuel_limit=999_999)
    assert [t.failure_reason for t in (at, above, below)] == ["out_of_fuel"] * 3
    assert [
        (t.reputation_event.outcome, t.reputation_event.neutral_reason) for t in (at, above, below)
    ] == [
        ("failure", ""),
        ("failure", ""),
        ("neutral", "requester_limits"),
    ]
    assert score(agent) == D("40")


def test_a_budget_that_buys_less_fuel_than_recommended_is_not_the_agents_fault(requester, bob):
    # 1,000 µCR per million fuel: the budget (less the base fee) buys 99 M fuel, below the
    # 1,000 M the agent recommends; the run needs about 320 M.
    agent = honest_agent(bob, fuel_price=1_000)
    task = run(requester, agent)
    assert task.fuel_limit == 1_000_000_000
    assert_refunded(task, "out_of_fuel")
    assert task.fuel_used == 99_000_000
    event = task.reputation_event
    assert (event.outcome, event.neutral_reason, event.delta) == ("neutral", "requester_limits", 0)


def test_a_schema_the_requester_copies_from_the_agent_is_the_agents_promise(requester, bob):
    promise = {"type": "array"}
    agent = honest_agent(bob, output_schema=promise)
    task = run(requester, agent, output_schema={"type": "array"})
    assert task.requester_schema is False
    assert task.reputation_event.delta == D("-5")


# --- recommended limits -------------------------------------------------------------------


def test_a_task_naming_no_limits_runs_with_the_agents_recommended_ones(requester, bob):
    agent = honest_agent(
        bob,
        recommended_fuel=500_000_000,
        recommended_memory_mb=16,
        recommended_timeout_ms=5_000,
    )
    task = run(requester, agent)
    assert (task.fuel_limit, task.memory_limit_mb, task.timeout_ms) == (500_000_000, 16, 5_000)
    assert task.status == "succeeded"
    # A limit the task names wins; the others still come from the agent.
    named = task_submit(requester=requester, agent=agent, input="x", budget=BUDGET, timeout_ms=7)
    assert (named.fuel_limit, named.memory_limit_mb, named.timeout_ms) == (500_000_000, 16, 7)


def test_agents_start_with_the_platform_defaults(bob, settings):
    agent = honest_agent(bob)
    assert (agent.recommended_fuel, agent.recommended_memory_mb, agent.recommended_timeout_ms) == (
        settings.TASK_DEFAULT_FUEL,
        settings.TASK_DEFAULT_MEMORY_MB,
        settings.TASK_DEFAULT_TIMEOUT_MS,
    )


def test_a_later_edit_of_the_agent_does_not_change_the_verdict(requester, bob):
    agent = honest_agent(bob)
    starved = task_submit(
        requester=requester, agent=agent, input="x", budget=BUDGET, fuel_limit=1_000_000
    )
    unpromised = task_submit(
        requester=requester,
        agent=agent,
        input="x",
        budget=BUDGET,
        output_schema={"type": "array"},
    )
    # The owner lowers the recommendation and adopts the schema (a new version) after the
    # submissions, which run the version they were submitted for.
    agent_update(agent=agent, recommended_fuel=1_000_000)
    binary_upload(agent=agent, data=HONEST, output_schema={"type": "array"})
    for task in (starved, unpromised):
        task_execute(task_id=task.pk)
        task.refresh_from_db()
    assert starved.reputation_event.neutral_reason == "requester_limits"
    assert unpromised.reputation_event.neutral_reason == "requester_schema"
    assert score(agent) == D("50")


def test_a_recommended_limit_above_the_platform_maximum_is_refused(bob, settings):
    from django.core.exceptions import ValidationError

    agent = honest_agent(bob)
    with pytest.raises(ValidationError) as refused:
        agent_update(agent=agent, recommended_memory_mb=settings.TASK_MAX_MEMORY_MB + 1)
    assert "recommended_memory_mb" in refused.value.message_dict
    with pytest.raises(ValidationError):
        agent_update(agent=agent, recommended_fuel=0)
    agent.refresh_from_db()
    assert agent.recommended_memory_mb == settings.TASK_DEFAULT_MEMORY_MB


# --- self-dealing and free runs -----------------------------------------------------------


def test_an_owner_running_their_own_agent_is_never_scored(bob):
    from escrow.services import deposit_create

    deposit_create(user_id=bob.pk, amount=FUNDS)
    agent = honest_agent(bob)
    success = run(bob, agent)
    failure = run(bob, agent, output_schema={"type": "array"}, timeout_ms=5_000)
    assert (success.status, failure.status) == ("succeeded", "failed")
    assert (success.cost or 0) > 0  # a real price, paid to himself
    for task in (success, failure):
        event = task.reputation_event
        assert (event.outcome, event.neutral_reason, event.delta) == ("neutral", "self_dealing", 0)
    rep = AgentReputation.objects.get(agent=agent)
    assert (rep.score, rep.successes, rep.failures, rep.neutral, rep.requesters) == (
        D("50"),
        0,
        0,
        2,
        0,
    )


def test_a_run_that_cost_nothing_is_not_scored(requester, bob):
    agent = honest_agent(bob, base_fee=0, fuel_price=0)
    task = run(requester, agent)
    assert (task.status, task.cost) == ("succeeded", 0)
    event = task.reputation_event
    assert (event.outcome, event.neutral_reason, event.delta) == ("neutral", "zero_cost", 0)
    assert score(agent) == D("50")


def test_platform_faults_and_refusals_are_neutral_with_their_reason(requester, bob):
    agent = honest_agent(bob)
    refused = run(requester, agent, min_reputation="99")
    assert refused.failure_reason == "validation_failed"
    assert refused.reputation_event.neutral_reason == "validation"
    assert ReputationEvent.objects.filter(neutral_reason="validation").count() == 1
