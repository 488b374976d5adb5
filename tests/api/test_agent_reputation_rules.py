"""The API side of SPEC §13: an agent's recommended limits, the requesters its score rests
on, and why a reputation event was not scored."""

from __future__ import annotations

import pytest

from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent
from marketplace.services import task_submit

from .conftest import error, make_agent

AGENTS = "/api/v1/agents/"
NEW_AGENT = {"slug": "wordcount", "name": "Word count", "base_fee": 500, "fuel_price": 1_000}
LIMITS = {
    "recommended_fuel": 5_000_000,
    "recommended_memory_mb": 16,
    "recommended_timeout_ms": 2_000,
}


def test_an_agent_is_created_with_its_recommended_limits(as_alice):
    response = as_alice.post(AGENTS, {**NEW_AGENT, **LIMITS}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert {name: body[name] for name in LIMITS} == LIMITS
    assert body["requesters"] == 0
    agent = Agent.objects.get(slug="wordcount")
    assert (agent.recommended_fuel, agent.recommended_memory_mb, agent.recommended_timeout_ms) == (
        5_000_000,
        16,
        2_000,
    )


def test_limits_left_out_are_the_platform_defaults(as_alice, settings):
    body = as_alice.post(AGENTS, NEW_AGENT, format="json").json()
    assert (
        body["recommended_fuel"],
        body["recommended_memory_mb"],
        body["recommended_timeout_ms"],
    ) == (
        settings.TASK_DEFAULT_FUEL,
        settings.TASK_DEFAULT_MEMORY_MB,
        settings.TASK_DEFAULT_TIMEOUT_MS,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recommended_fuel": 10_000_000_001}, "recommended_fuel"),
        ({"recommended_fuel": 0}, "recommended_fuel"),
        ({"recommended_memory_mb": 513}, "recommended_memory_mb"),
        ({"recommended_timeout_ms": 60_001}, "recommended_timeout_ms"),
        ({"recommended_timeout_ms": "2000"}, "recommended_timeout_ms"),
        ({"recommended_memory_mb": None}, "recommended_memory_mb"),
    ],
)
def test_recommended_limits_are_positive_integers_within_the_platform_maxima(
    as_alice, change, field
):
    response = as_alice.post(AGENTS, {**NEW_AGENT, **change}, format="json")

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == [field]
    assert not Agent.objects.exists()


def test_the_owner_changes_the_limits_and_nobody_else_can(as_bob, as_charlie, bob):
    make_agent(bob)
    refused = as_charlie.patch(f"{AGENTS}echo/", {"recommended_fuel": 7}, format="json")
    assert error(refused) == (403, "not_agent_owner")

    response = as_bob.patch(f"{AGENTS}echo/", {"recommended_timeout_ms": 1_500}, format="json")

    assert response.status_code == 200
    assert response.json()["recommended_timeout_ms"] == 1_500
    agent = Agent.objects.get(slug="echo")
    assert (agent.recommended_timeout_ms, agent.recommended_fuel) == (1_500, 1_000_000_000)
    too_much = as_bob.patch(f"{AGENTS}echo/", {"recommended_memory_mb": 10_000}, format="json")
    assert error(too_much) == (400, "validation_error")


def settle(requester, agent, execution, **options):
    task = task_submit(requester=requester, agent=agent, input="x", budget=100_000, **options)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    task_settle(task_id=task.pk, attempt=claim[1], execution=execution)
    return task


def test_reputation_events_say_why_they_were_not_scored(as_charlie, alice, bob, charlie):
    for user in (alice, bob, charlie):
        deposit_create(user_id=user.pk, amount=1_000_000)
    agent = make_agent(bob)
    success = Execution(exit_code=0, fuel_used=500_000, fuel_limit=1_000_000)
    settle(alice, agent, success)  # +3
    settle(charlie, agent, Execution(reason="out_of_fuel"), fuel_limit=10)  # starved
    settle(bob, agent, success)  # the owner's own run
    settle(alice, agent, success)  # +2: the rest of alice's five points today
    settle(alice, agent, success)  # nothing left

    body = as_charlie.get(f"{AGENTS}echo/reputation/").json()

    assert (body["score"], body["successes"], body["neutral"], body["requesters"]) == (
        "55.0000",
        2,
        3,
        1,
    )
    assert [(e["outcome"], e["neutral_reason"], e["delta"]) for e in body["events"]] == [
        ("neutral", "daily_cap", "0.0000"),
        ("success", "", "2.0000"),
        ("neutral", "self_dealing", "0.0000"),
        ("neutral", "requester_limits", "0.0000"),
        ("success", "", "3.0000"),
    ]
    assert as_charlie.get(f"{AGENTS}echo/").json()["requesters"] == 1
