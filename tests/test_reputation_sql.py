"""The SQL form of each reputation policy against its Python form (SPEC §20), on PostgreSQL.

Random sequences of outcomes — successes, failures, neutral outcomes, a refunded dispute's
failure — from random requesters (or none) under a random daily cap, over one or more UTC
days, under one policy or switching between them: scored by the SQL form (what a
settlement's statement calls) for one agent and by the Python form for another, they give
the same events and the same standing, as stored; and the audit replays both exactly. A
policy without an SQL form is settled in Python under the agent's row lock.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent
from marketplace.services import task_submit
from reputation.audit import reputation_audit
from reputation.disputes import DISPUTE_REFUNDED
from reputation.models import AgentReputation, ReputationEvent
from reputation.policies import DefaultPolicy, NeutralReason, Outcome, OutcomeKind
from reputation.services import reputation_apply
from reputation.settle_sql import ReputationWrite, reputation_settle
from tests.factories import AgentFactory, UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFAULT = "reputation.policies.DefaultPolicy"
BETA = "reputation.policies.BetaPolicy"
REQUESTERS = 3  # and None: an outcome no requester caused (never capped)
NEUTRAL_REASONS = [reason for reason in NeutralReason.values if reason != NeutralReason.DAILY_CAP]
EVENT_FIELDS = (
    "outcome",
    "reason",
    "neutral_reason",
    "policy",
    "settled_on",
    "daily_cap",
    "weight",
    "delta",
    "score_before",
    "score_after",
)
ROW_FIELDS = (
    "score",
    "successes",
    "failures",
    "neutral",
    "evidence_successes",
    "evidence_failures",
    "requesters",
)


@st.composite
def outcomes(draw: Any) -> Outcome:
    kind = draw(st.sampled_from([*OutcomeKind.values, "dispute"]))
    if kind == "dispute":  # a refunded dispute: a failure the requester caused
        return Outcome(kind=OutcomeKind.FAILURE, reason=DISPUTE_REFUNDED)
    if kind == OutcomeKind.NEUTRAL:
        return Outcome(
            kind=kind,
            reason="platform_error",
            neutral_reason=draw(st.sampled_from(NEUTRAL_REASONS)),
        )
    fuel_limit = draw(st.sampled_from([0, 1, 3, 7, 20_000, 10_000_000, 123_456_789]))
    return Outcome(
        kind=kind,
        reason="" if kind == OutcomeKind.SUCCESS else "trap",
        fuel_used=draw(st.integers(0, max(fuel_limit, 1) * 2)),
        fuel_limit=fuel_limit,
        elapsed_ms=draw(st.sampled_from([0, 999, 1000, 5000])),
    )


steps = st.lists(
    st.tuples(
        outcomes(),
        st.sampled_from([None, *range(REQUESTERS)]),  # who caused it
        st.integers(0, 9).map(lambda n: n == 0),  # a new UTC day begins before it
        st.integers(0, 1),  # the policy (of those the example uses) that scores it
    ),
    min_size=1,
    max_size=30,
)
CAPS = st.sampled_from(["0.0001", "0.5", "1.7", "3.5", "5", "12.25", "999.9999"])


@pytest.fixture
def requesters(db) -> list[Any]:
    return [UserFactory.create(username=f"requester{i}") for i in range(REQUESTERS)]


@pytest.fixture
def owner(db) -> Any:
    return UserFactory.create(username="owner")


def stored(agent: Agent) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    events = ReputationEvent.objects.filter(agent=agent).order_by("id")
    rows = [tuple(getattr(event, name) for name in EVENT_FIELDS) for event in events]
    reputation = AgentReputation.objects.get(agent=agent)
    return rows, tuple(getattr(reputation, name) for name in ROW_FIELDS)


@pytest.mark.parametrize("policies", [[DEFAULT], [BETA], [DEFAULT, BETA]])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps, cap=CAPS)
def test_the_sql_and_python_forms_store_the_same(requesters, monkeypatch, policies, steps, cap):
    owner = UserFactory.create()
    by_sql, by_python = AgentFactory.create(owner=owner), AgentFactory.create(owner=owner)
    day = datetime.datetime(2026, 3, 1, 23, 59, tzinfo=datetime.UTC)
    monkeypatch.setattr(timezone, "now", lambda: day)
    try:
        for outcome, who, new_day, policy in steps:
            requester = None if who is None else requesters[who].pk
            if new_day:
                day += datetime.timedelta(days=1)
            path = policies[policy % len(policies)]
            with override_settings(
                REPUTATION_POLICY=path, REPUTATION_DAILY_CAP_PER_REQUESTER=Decimal(cap)
            ):
                if outcome.reason == DISPUTE_REFUNDED:
                    # Disputes are scored in Python on PostgreSQL too: both agents get it so.
                    reputation_apply(
                        agent_id=by_sql.pk, task_id=None, outcome=outcome, requester_id=requester
                    )
                else:
                    reputation_settle(ReputationWrite(by_sql.pk, None, requester, outcome))
                reputation_apply(
                    agent_id=by_python.pk, task_id=None, outcome=outcome, requester_id=requester
                )
        sql_events, sql_row = stored(by_sql)
        python_events, python_row = stored(by_python)
        assert sql_events == python_events
        assert sql_row == python_row
        report = reputation_audit()
        assert report.ok, report.violations
    finally:
        ReputationEvent.objects.filter(agent__in=[by_sql, by_python]).delete()
        AgentReputation.objects.filter(agent__in=[by_sql, by_python]).delete()
        Agent.objects.filter(pk__in=[by_sql.pk, by_python.pk]).delete()
    assert connection.vendor == "postgresql"


class PythonOnlyPolicy(DefaultPolicy):
    """The default policy's rules under another name, without an SQL form of its own."""


def test_a_policy_without_an_sql_form_is_scored_in_python_under_the_lock(
    requester, agent, settings
):
    settings.REPUTATION_POLICY = f"{__name__}.PythonOnlyPolicy"
    task = task_submit(requester=requester, agent=agent, input="hi", budget=100_000)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    claimed, attempt = claim
    run = Execution(exit_code=0, stdout=b"ok", fuel_used=1_000, fuel_limit=10_000)
    with CaptureQueriesContext(connection) as captured:
        assert task_settle(task_id=task.pk, attempt=attempt, execution=run, task=claimed)
    # In a transaction: the statement without the reputation, then the row lock, the
    # requester's day and the event (reputation_apply), then the fuel sample.
    assert len(captured.captured_queries) > 1
    event = ReputationEvent.objects.get(task=task)
    assert (event.policy, event.outcome, event.delta) == (
        settings.REPUTATION_POLICY,
        "success",
        Decimal("3.4"),
    )
    report = reputation_audit()
    assert report.ok, report.violations
