"""Data from before the reputation rules migrates cleanly, and the audit still passes on it."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from marketplace.models import Agent, Task
from reputation.audit import reputation_audit
from reputation.models import AgentReputation, ReputationEvent

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal
UTC = datetime.UTC
AGENT_FIELDS = ("marketplace", "0006_agent_recommended_limits")
EVENT_FIELDS = ("reputation", "0002_event_requester_and_cap")


def state_before(executor: MigrationExecutor) -> list[tuple[str, str]]:
    """The migrations just before the ones that added the new fields."""
    graph = executor.loader.graph
    parents = {
        parent.key
        for node in (AGENT_FIELDS, EVENT_FIELDS)
        for parent in graph.node_map[node].parents
        if parent.key[0] == node[0]
    }
    return sorted(parents)


def test_existing_events_agents_and_tasks_migrate():
    executor = MigrationExecutor(connection)
    before = state_before(executor)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    User = old.get_model("auth", "User")
    OldAgent, OldTask = old.get_model("marketplace", "Agent"), old.get_model("marketplace", "Task")
    Binary = old.get_model("marketplace", "AgentBinary")
    OldReputation = old.get_model("reputation", "AgentReputation")
    OldEvent = old.get_model("reputation", "ReputationEvent")

    alice, bob, charlie = (User.objects.create(username=n) for n in ("alice", "bob", "charlie"))
    agent = OldAgent.objects.create(
        owner=bob,
        slug="echo",
        name="Echo",
        base_fee=1_000,
        fuel_price=2_000,
        output_schema={"type": "object"},
    )
    binary = Binary.objects.create(
        agent=agent, version=1, sha256="0" * 64, size=8, storage_name="wasm/00/x.wasm"
    )

    def task(requester, status, **fields):
        return OldTask.objects.create(
            requester=requester,
            agent=agent,
            binary=binary,
            budget=100_000,
            fuel_limit=1_000_000,
            memory_limit_mb=64,
            timeout_ms=10_000,
            min_reputation=30,
            status=status,
            **fields,
        )

    done = [task(alice, "succeeded"), task(charlie, "failed"), task(alice, "failed")]
    mine = task(alice, "queued", output_schema={"type": "array"})
    theirs = task(charlie, "queued", output_schema={"type": "object"})
    OldReputation.objects.create(agent=agent, score=D("47.5"), successes=1, failures=1, neutral=2)
    # The default policy's own history: +2.5 (fast, no fuel limit), −5, 0, 0.
    rows = [
        (done[0], "success", "", D("50"), D("52.5")),
        (done[1], "failure", "trap", D("52.5"), D("47.5")),
        (done[2], "neutral", "platform_error", D("47.5"), D("47.5")),
        (None, "neutral", "", D("47.5"), D("47.5")),
    ]
    for number, (event_task, outcome, reason, before_score, after_score) in enumerate(rows):
        event = OldEvent.objects.create(
            agent=agent,
            task=event_task,
            outcome=outcome,
            reason=reason,
            policy="reputation.policies.DefaultPolicy",
            elapsed_ms=10,
            delta=after_score - before_score,
            score_before=before_score,
            score_after=after_score,
        )
        # Scored late in the evening, Paris time: the UTC day is the one that counts.
        created = datetime.datetime(2026, 1, 10 + number, 23, 30, tzinfo=UTC)
        OldEvent.objects.filter(pk=event.pk).update(created_at=created)

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    migrated = Agent.objects.get(slug="echo")
    assert (
        migrated.recommended_fuel,
        migrated.recommended_memory_mb,
        migrated.recommended_timeout_ms,
    ) == (
        settings.TASK_DEFAULT_FUEL,
        settings.TASK_DEFAULT_MEMORY_MB,
        settings.TASK_DEFAULT_TIMEOUT_MS,
    )
    events = list(ReputationEvent.objects.order_by("id"))
    assert [e.requester_id for e in events] == [alice.pk, charlie.pk, alice.pk, None]
    assert [e.settled_on for e in events] == [
        datetime.date(2026, 1, 10 + number) for number in range(4)
    ]
    assert [e.weight for e in events] == [D(1), D(1), D(0), D(0)]
    assert {(e.neutral_reason, e.daily_cap) for e in events} == {("", None)}
    rep = AgentReputation.objects.get(agent=migrated)
    assert (rep.evidence_successes, rep.evidence_failures, rep.requesters) == (D(1), D(1), 2)
    # Settled tasks keep no pins; the queued ones are judged like new submissions.
    pins = {
        t.pk: (t.recommended_fuel, t.recommended_timeout_ms, t.requester_schema)
        for t in Task.objects.all()
    }
    assert pins[done[0].pk] == (None, None, False)
    assert pins[mine.pk] == (settings.TASK_DEFAULT_FUEL, settings.TASK_DEFAULT_TIMEOUT_MS, True)
    assert pins[theirs.pk][2] is False  # the agent's own schema, named again
    report = reputation_audit()
    assert report.ok, report.violations
