"""The daily cap per requester (SPEC §13), under both policies, and its replay by the audit.

No single requester moves an agent by more than REPUTATION_DAILY_CAP_PER_REQUESTER points
in a UTC day, up and down together; the settlements run here as a worker would, with a
made-up result, on a clock the tests set.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent, Task
from marketplace.services import task_submit
from reputation.audit import reputation_audit
from reputation.models import AgentReputation, ReputationEvent
from reputation.policies import Outcome
from reputation.services import reputation_apply
from tests.concurrency import run_threads
from tests.factories import UserFactory, make_agent

D = Decimal
UTC = datetime.UTC
BETA = "reputation.policies.BetaPolicy"
# +2.0, +0.5 for half the fuel left, +0.5 under a second: +3.0 under the default policy.
SUCCESS = Execution(exit_code=0, stdout=b"ok", fuel_used=500_000, fuel_limit=1_000_000)
TRAP = Execution(reason="trap", detail="unreachable")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(timezone, "now", lambda: clock.now)
    return clock


@pytest.fixture
def agent(bob) -> Agent:
    return make_agent(bob)


@pytest.fixture
def people(alice, charlie):
    for user in (alice, charlie):
        deposit_create(user_id=user.pk, amount=10_000_000)
    return alice, charlie


def settle(requester: Any, agent: Agent, execution: Execution) -> ReputationEvent:
    task = task_submit(requester=requester, agent=agent, input="x", budget=100_000)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    assert task_settle(task_id=task.pk, attempt=claim[1], execution=execution)
    return ReputationEvent.objects.get(task=task)


def moves(events: list[ReputationEvent]) -> list[tuple[str, Decimal, str]]:
    return [(e.outcome, e.delta, e.neutral_reason) for e in events]


def standing(agent: Agent) -> AgentReputation:
    return AgentReputation.objects.get(agent=agent)


# --- the default policy -----------------------------------------------------------------------


def test_one_requesters_successes_stop_at_plus_five_a_day(people, agent, clock):
    alice, _ = people
    events = [settle(alice, agent, SUCCESS) for _ in range(4)]
    assert moves(events) == [
        ("success", D("3"), ""),
        ("success", D("2"), ""),  # cut to what was left of the five points
        ("neutral", D("0"), "daily_cap"),
        ("neutral", D("0"), "daily_cap"),
    ]
    assert [e.weight for e in events] == [D(1), D("0.66666666"), D(0), D(0)]
    rep = standing(agent)
    assert (rep.score, rep.successes, rep.neutral, rep.requesters) == (D("55"), 2, 2, 1)
    assert rep.evidence_successes == D("1.66666666")
    assert {(e.requester_id, e.settled_on, e.daily_cap) for e in events} == {
        (alice.pk, datetime.date(2026, 3, 1), D("5"))
    }


def test_one_requesters_failures_stop_at_minus_five_a_day(people, agent, clock):
    alice, _ = people
    events = [settle(alice, agent, TRAP) for _ in range(3)]
    assert moves(events) == [
        ("failure", D("-5"), ""),
        ("neutral", D("0"), "daily_cap"),
        ("neutral", D("0"), "daily_cap"),
    ]
    assert standing(agent).score == D("45")


def test_moves_up_and_down_count_together(people, agent, clock):
    alice, _ = people
    events = [settle(alice, agent, e) for e in (SUCCESS, TRAP, SUCCESS)]
    assert moves(events) == [
        ("success", D("3"), ""),
        ("failure", D("-2"), ""),
        ("neutral", D("0"), "daily_cap"),
    ]
    assert standing(agent).score == D("51")


def test_another_requester_still_moves_the_agent(people, agent, clock):
    alice, charlie = people
    for _ in range(3):
        settle(alice, agent, SUCCESS)
    event = settle(charlie, agent, SUCCESS)
    assert moves([event]) == [("success", D("3"), "")]
    rep = standing(agent)
    assert (rep.score, rep.requesters) == (D("58"), 2)


def test_the_next_utc_day_starts_afresh(people, agent, clock):
    alice, _ = people
    clock.now = datetime.datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC)
    for _ in range(3):
        settle(alice, agent, SUCCESS)
    assert standing(agent).score == D("55")
    clock.now = datetime.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    event = settle(alice, agent, SUCCESS)
    assert (moves([event]), event.settled_on) == (
        [("success", D("3"), "")],
        datetime.date(2026, 3, 2),
    )
    # A UTC day, whatever the time zone: half past midnight in Paris on the 3rd is still
    # the 2nd in UTC, so alice has only the rest of the 2nd's five points.
    clock.now = datetime.datetime(2026, 3, 3, 0, 30, tzinfo=ZoneInfo("Europe/Paris"))
    event = settle(alice, agent, SUCCESS)
    assert (event.delta, event.settled_on) == (D("2"), datetime.date(2026, 3, 2))


def test_the_cap_comes_from_the_setting(people, agent, clock, settings):
    settings.REPUTATION_DAILY_CAP_PER_REQUESTER = D("1.25")
    alice, _ = people
    events = [settle(alice, agent, SUCCESS) for _ in range(2)]
    assert moves(events) == [("success", D("1.25"), ""), ("neutral", D("0"), "daily_cap")]


def test_neutral_outcomes_use_none_of_the_allowance(people, agent, clock):
    alice, _ = people
    below = task_submit(requester=alice, agent=agent, input="x", budget=100_000, timeout_ms=1)
    claim = task_claim(task_id=below.pk)
    assert claim is not None
    task_settle(task_id=below.pk, attempt=claim[1], execution=Execution(reason="timeout"))
    assert ReputationEvent.objects.get(task=below).neutral_reason == "requester_limits"
    assert settle(alice, agent, TRAP).delta == D("-5")


def test_events_no_requester_caused_are_not_capped(agent, clock):
    for _ in range(3):
        reputation_apply(agent_id=agent.pk, task_id=None, outcome=Outcome("failure"))
    assert standing(agent).score == D("35")


# --- the beta policy --------------------------------------------------------------------------


def test_the_cap_holds_under_the_beta_policy(people, agent, clock, settings):
    settings.REPUTATION_POLICY = BETA
    alice, charlie = people
    # Uncapped, a new agent's first success takes it from 50 to 66.6667.
    first, second = settle(alice, agent, SUCCESS), settle(alice, agent, SUCCESS)
    assert (first.outcome, first.score_after) == ("success", D("55"))
    assert D(0) < first.weight < D(1)
    assert moves([second]) == [("neutral", D("0"), "daily_cap")]
    # The share that counted is the evidence the next score starts from, so charlie's
    # success does not bring alice's cut-off part back.
    rep = standing(agent)
    assert (rep.successes, rep.evidence_successes) == (1, first.weight)
    third = settle(charlie, agent, SUCCESS)
    assert third.score_after == D("60")
    failure = settle(charlie, agent, TRAP)
    assert failure.delta == D("0")  # charlie's five points are used up
    assert failure.neutral_reason == "daily_cap"


def test_beta_counts_a_fully_fitting_outcome_in_full(people, agent, clock, settings):
    settings.REPUTATION_POLICY = BETA
    settings.REPUTATION_DAILY_CAP_PER_REQUESTER = D("20")
    alice, _ = people
    event = settle(alice, agent, SUCCESS)
    assert (event.score_after, event.weight) == (D("66.6667"), D(1))


# --- the audit --------------------------------------------------------------------------------


@pytest.fixture
def history(people, agent, clock, settings, bob) -> list[ReputationEvent]:
    """Three days of events across both policies: capped, cut short, neutral, uncapped."""
    alice, charlie = people
    deposit_create(user_id=bob.pk, amount=1_000_000)
    settings.REPUTATION_POLICY = BETA
    events = [settle(alice, agent, SUCCESS) for _ in range(2)]  # cut short, then capped
    events.append(settle(charlie, agent, SUCCESS))  # cut short
    events.append(settle(bob, agent, SUCCESS))  # self-dealing
    clock.now += datetime.timedelta(days=1)
    settings.REPUTATION_POLICY = "reputation.policies.DefaultPolicy"
    events += [settle(alice, agent, e) for e in (SUCCESS, SUCCESS, TRAP)]  # +3, +2, capped
    events.append(settle(charlie, agent, TRAP))  # −5
    events.append(reputation_apply(agent_id=agent.pk, task_id=None, outcome=Outcome("success")))
    clock.now += datetime.timedelta(days=1)
    settings.REPUTATION_POLICY = BETA
    events += [settle(charlie, agent, SUCCESS), settle(alice, agent, TRAP)]
    return events


def test_the_audit_replays_the_cap_across_both_policies(history, agent):
    report = reputation_audit()
    assert report.ok, report.violations
    assert report.events == len(history) == 11
    assert [(e.outcome, e.neutral_reason) for e in history][:4] == [
        ("success", ""),
        ("neutral", "daily_cap"),
        ("success", ""),
        ("neutral", "self_dealing"),
    ]
    cut_short = [i for i, e in enumerate(history) if D(0) < e.weight < D(1)]
    assert cut_short[:3] == [0, 2, 5]
    for day in {e.settled_on for e in history}:
        for requester in {e.requester_id for e in history} - {None}:
            moved = sum(
                abs(e.delta) for e in history if (e.settled_on, e.requester_id) == (day, requester)
            )
            assert moved <= D("5")
    rep = standing(agent)
    assert rep.score == history[-1].score_after
    assert rep.requesters == 2  # bob's own runs do not count


def tamper(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


EVENTS = "UPDATE reputation_reputationevent SET "


# (statement, its parameters as history indices or "charlie", the event the audit flags)
TAMPERING: dict[str, tuple[str, list[Any], int]] = {
    # A bigger cap on the event that was cut short: the replay moves it in full.
    "cap": (EVENTS + "daily_cap = 50 WHERE id = %s", [5], 5),
    # The cut-short event credited to another requester, whose day was untouched.
    "requester": (EVENTS + "requester_id = %s WHERE id = %s", ["charlie", 5], 5),
    # An event moved to another day: the next one that day then had room for all of it.
    "day": (EVENTS + "settled_on = '2026-02-28' WHERE id = %s", [4], 5),
    # The share of a cut-short outcome that counted, under either policy.
    "weight": (EVENTS + "weight = 1 WHERE id = %s", [5], 5),
    "beta weight": (EVENTS + "weight = 0.5 WHERE id = %s", [0], 0),
    # A scored failure passed off as capped while its requester had room for it.
    "capped": (
        EVENTS + "outcome = 'neutral', neutral_reason = 'daily_cap', weight = 0, "
        "score_after = score_before, delta = 0 WHERE id = %s",
        [7],
        7,
    ),
}


@pytest.mark.corrupts_ledger
@pytest.mark.parametrize("change", list(TAMPERING))
def test_the_audit_finds_a_tampered_event(history, people, change):
    statement, params, flagged = TAMPERING[change]
    _, charlie = people
    tamper(statement, [charlie.pk if p == "charlie" else history[p].pk for p in params])
    report = reputation_audit()
    assert not report.ok
    assert any(f"event {history[flagged].pk}:" in v for v in report.violations), report


@pytest.mark.corrupts_ledger
def test_the_audit_finds_a_tampered_count_of_requesters(history, agent):
    tamper("UPDATE reputation_agentreputation SET requesters = 7 WHERE agent_id = %s", [agent.pk])
    report = reputation_audit()
    assert [v for v in report.violations if "requesters" in v], report.violations


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("policy", ["reputation.policies.DefaultPolicy", BETA])
def test_concurrent_settlements_from_one_requester_never_pass_the_cap(settings, policy):
    settings.REPUTATION_POLICY = policy
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    agent = make_agent(bob)
    workers = 12
    tasks: list[Task] = []
    for _ in range(workers):
        task = task_submit(requester=alice, agent=agent, input="x", budget=100_000)
        assert task_claim(task_id=task.pk) is not None
        tasks.append(task)
    outcomes = [SUCCESS if number % 3 else TRAP for number in range(workers)]

    errors = run_threads(
        workers,
        lambda i: task_settle(task_id=tasks[i].pk, attempt=1, execution=outcomes[i]),
    )

    assert errors == []
    events = list(ReputationEvent.objects.filter(agent=agent))
    assert len(events) == workers
    moved = sum((abs(e.delta) for e in events), D(0))
    assert moved == D("5")  # exactly the cap: every settlement saw the ones before it
    assert sum(e.neutral_reason == "daily_cap" for e in events) >= workers - 3
    report = reputation_audit()
    assert report.ok, report.violations
