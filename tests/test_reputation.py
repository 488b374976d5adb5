from __future__ import annotations

from decimal import Decimal

import pytest

from reputation.models import AgentReputation
from reputation.policies import BetaPolicy, DefaultPolicy, Outcome, Standing
from reputation.services import reputation_apply
from tests.factories import TaskFactory

D = Decimal


def at(score: str, successes: int = 0, failures: int = 0) -> Standing:
    return Standing(score=D(score), successes=successes, failures=failures)


@pytest.mark.parametrize(
    ("fuel_used", "fuel_limit", "elapsed_ms", "expected"),
    [
        (0, 1_000, 10, "53.5000"),  # 2.0 + 1.0 efficiency + 0.5 fast
        (1_000, 1_000, 10, "52.5000"),  # no fuel left: no efficiency bonus
        (250, 1_000, 999, "53.2500"),  # 2.0 + 0.75 + 0.5
        (250, 1_000, 1_000, "52.7500"),  # exactly 1 s is not "under 1 s"
        (1, 3, 5_000, "52.6667"),  # 2.0 + 0.6667 (rounded half-even at 4 places)
        (5_000, 1_000, 10, "52.5000"),  # fuel over the limit never gives a negative bonus
    ],
)
def test_default_policy_rewards_a_success(fuel_used, fuel_limit, elapsed_ms, expected):
    outcome = Outcome("success", fuel_used=fuel_used, fuel_limit=fuel_limit, elapsed_ms=elapsed_ms)
    assert DefaultPolicy().next_score(at("50"), outcome) == D(expected)


@pytest.mark.parametrize("reason", ["out_of_fuel", "timeout", "trap", "invalid_output"])
def test_default_policy_takes_five_for_an_agent_failure(reason):
    assert DefaultPolicy().next_score(at("50"), Outcome("failure", reason=reason)) == D("45.0000")


@pytest.mark.parametrize("reason", ["validation_failed", "platform_error"])
def test_default_policy_ignores_platform_and_validation_failures(reason):
    assert DefaultPolicy().next_score(at("50"), Outcome("neutral", reason=reason)) == D("50")


def test_default_policy_clamps_to_the_range():
    success = Outcome("success", fuel_used=0, fuel_limit=10, elapsed_ms=1)
    assert DefaultPolicy().next_score(at("98.9"), success) == D("100")
    assert DefaultPolicy().next_score(at("3"), Outcome("failure")) == D("0")


def test_beta_policy_is_the_smoothed_success_rate():
    policy = BetaPolicy()
    assert policy.next_score(at("50"), Outcome("success")) == D("66.6667")  # 2/3
    assert policy.next_score(at("66.6667", 1, 0), Outcome("failure")) == D("50.0000")  # 2/4
    assert policy.next_score(at("75", 2, 0), Outcome("neutral")) == D("75")
    assert policy.next_score(at("0", 0, 97), Outcome("failure")) == D("1.0000")  # 1/100


def test_applying_an_outcome_records_an_event_and_updates_the_score(db):
    task = TaskFactory.create()
    event = reputation_apply(
        agent_id=task.agent_id,
        task_id=task.pk,
        outcome=Outcome("success", fuel_used=500, fuel_limit=1_000, elapsed_ms=200),
    )
    assert (event.score_before, event.delta, event.score_after) == (D("50"), D("3"), D("53"))
    assert event.policy == "reputation.policies.DefaultPolicy"
    rep = AgentReputation.objects.get(agent_id=task.agent_id)
    assert (rep.score, rep.successes, rep.failures) == (D("53"), 1, 0)


def test_the_policy_is_chosen_by_setting_and_recorded_per_event(db, settings):
    first = TaskFactory.create()
    reputation_apply(agent_id=first.agent_id, task_id=first.pk, outcome=Outcome("failure"))
    settings.REPUTATION_POLICY = "reputation.policies.BetaPolicy"
    second = TaskFactory.create(binary=first.binary)
    event = reputation_apply(agent_id=first.agent_id, task_id=second.pk, outcome=Outcome("success"))
    # Beta counts the record (1 success, 1 failure) rather than adding to the old score.
    assert (event.policy, event.score_before, event.score_after) == (
        "reputation.policies.BetaPolicy",
        D("45"),
        D("50"),
    )
