"""A requester's output schema cannot hold a real worker past the task's own timeout, and the
next honest task is served at once (SPEC §13)."""

from __future__ import annotations

import time

import pytest

from escrow.models import Account
from escrow.services import deposit_create
from marketplace.binaries import binary_upload
from marketplace.models import Agent, Task
from marketplace.services import task_submit
from tests import wasm_modules as wasm
from tests.factories import AgentFactory, UserFactory
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FUNDS = 50_000_000
# Python's `re` backtracks on this: ~1.4 s for 24 a's, doubling with each one more.
CATASTROPHIC = {"type": "string", "pattern": "^(a|a)*$"}
A_40 = '"' + "a" * 40 + 'b"'


def doubling(levels: int) -> dict:
    """2 KiB of schema whose evaluation doubles at every level: 2^40 checks of one string."""
    defs: dict = {"d0": {"type": "integer"}}
    for level in range(1, levels + 1):
        below = {"$ref": f"#/$defs/d{level - 1}"}
        defs[f"d{level}"] = {"anyOf": [below, below]}
    return {"$defs": defs, "$ref": f"#/$defs/d{levels}"}


def agent_printing(owner, slug: str, text: str) -> Agent:
    agent = AgentFactory.create(owner=owner, slug=slug, base_fee=1_000, fuel_price=1_000)
    binary_upload(
        agent=agent, data=wasm.module(f'(func (export "_start") {wasm.write(text)})', wasm.FD_WRITE)
    )
    agent.refresh_from_db()
    return agent


def held_seconds(task: Task) -> float:
    assert task.started_at is not None and task.finished_at is not None
    return (task.finished_at - task.started_at).total_seconds()


def test_a_hostile_schema_ends_within_the_task_timeout_and_the_next_task_runs():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=FUNDS)
    aaab = agent_printing(bob, "aaab", A_40)
    hello = agent_printing(bob, "hello", '"hello"')
    redos = task_submit(
        requester=alice,
        agent=aaab,
        input="",
        budget=1_000_000,
        timeout_ms=2_000,
        output_schema=CATASTROPHIC,
    )
    bomb = task_submit(
        requester=alice,
        agent=aaab,
        input="",
        budget=1_000_000,
        timeout_ms=1_000,
        output_schema=doubling(40),
    )

    with Cluster(workers=1) as cluster:
        wait_for(lambda: _final(redos, bomb), timeout=30, message="hostile tasks", cluster=cluster)
        submitted = time.monotonic()
        honest = task_submit(
            requester=alice,
            agent=hello,
            input="",
            budget=1_000_000,
            output_schema={"type": "string", "pattern": "^h"},
        )
        wait_for(lambda: _final(honest), timeout=10, message="honest task", cluster=cluster)
        honest_seconds = time.monotonic() - submitted

    redos.refresh_from_db()
    bomb.refresh_from_db()
    honest.refresh_from_db()
    # The linear-time engine decides the pattern at once: the output really does not match.
    assert (redos.status, redos.failure_reason, redos.attempts) == ("failed", "invalid_output", 1)
    assert redos.failure_detail == f'output fails the schema: {A_40} does not match "^(a|a)*$"'
    assert held_seconds(redos) < 1.0
    # The doubling schema is stopped by what is left of the task's own timeout.
    assert (bomb.status, bomb.failure_reason, bomb.attempts) == ("failed", "invalid_output", 1)
    assert bomb.failure_detail.startswith(
        "output not checked against the schema: the check did not finish within"
    )
    assert held_seconds(bomb) < 1.0 + 0.5
    for task in (redos, bomb):
        assert (task.cost, task.refund) == (0, 1_000_000)
    assert (honest.status, bytes(honest.stdout)) == ("succeeded", b'"hello"')
    assert honest_seconds < 5.0
    assert honest.cost is not None
    assert Account.objects.get(user=alice).balance == FUNDS - honest.cost


def _final(*tasks: Task) -> bool:
    return Task.objects.filter(
        pk__in=[t.pk for t in tasks], status__in=Task.FINAL_STATUSES
    ).count() == len(tasks)
