"""End to end through real qcluster worker processes on real PostgreSQL."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from escrow.models import Account, Escrow
from escrow.services import deposit_create, system_balance
from execution.engine import modules
from execution.engine.receipts import receipt_verify
from execution.runs import affordable_fuel
from marketplace.binaries import binary_upload
from marketplace.models import Agent, Task
from marketplace.queues import task_run_send
from marketplace.services import task_submit
from marketplace.storage import binary_storage
from reputation.models import ReputationEvent
from reputation.policies import quantize
from tests import wasm_modules as wasm
from tests.factories import AgentFactory, UserFactory, held_for
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
FUNDS = 50_000_000


def balance(user) -> int:
    return Account.objects.get(user=user).balance


def agent_with(owner, slug: str, code: bytes, **fields) -> Agent:
    agent = AgentFactory.create(owner=owner, slug=slug, base_fee=1_000, fuel_price=1_000, **fields)
    binary_upload(agent=agent, data=code)
    agent.refresh_from_db()
    return agent


def final(*tasks: Task) -> bool:
    return Task.objects.filter(
        pk__in=[t.pk for t in tasks], status__in=Task.FINAL_STATUSES
    ).count() == len(tasks)


@pytest.fixture
def people():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=FUNDS)
    return alice, bob


def test_a_task_runs_and_settles_through_a_real_worker(people, tmp_path):
    alice, bob = people
    echo = agent_with(bob, "echo", ECHO.read_bytes())
    task = task_submit(requester=alice, agent=echo, input="hello, exchange", budget=100_000)

    with Cluster() as cluster:
        wait_for(lambda: final(task), timeout=30, message="task to finish", cluster=cluster)

    task.refresh_from_db()
    assert task.status == "succeeded", (task.failure_reason, task.failure_detail)
    assert task.fuel_used is not None
    assert bytes(task.stdout) == b"hello, exchange"
    fuel_limit = affordable_fuel(task)
    assert fuel_limit == 99_000_000  # (budget − base fee) buys 99 M fuel at 1,000 µCR per million
    cost = 1_000 + math.ceil(task.fuel_used * 1_000 / 1_000_000)
    fee = cost * 500 // 10_000
    assert (task.cost, task.fee, task.refund) == (cost, fee, 100_000 - cost)
    assert balance(alice) == FUNDS - cost
    assert (balance(bob), held_for(bob)) == (0, cost - fee)  # held until the hold ends
    assert system_balance("platform_fees") == fee
    event = ReputationEvent.objects.get(task=task)
    bonus = quantize(Decimal(fuel_limit - task.fuel_used) / Decimal(fuel_limit))
    assert event.delta == Decimal("2.0") + bonus + Decimal("0.5")

    receipt = task.receipt.as_dict()
    assert receipt_verify(receipt)
    payload = json.loads(receipt["payload"])
    assert payload["output_sha256"] == task.output_sha256
    assert (payload["cost"], payload["fee"], payload["refund"]) == (cost, fee, 100_000 - cost)
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    call_command("verify_receipt", str(path), "--replay")


def test_every_failure_refunds_in_full_with_the_right_penalty(people):
    alice, bob = people
    schema = {"type": "object"}
    # Each agent is held to what it declares: the limits it recommends, its own schema.
    spin_fuel = agent_with(bob, "spin-fuel", wasm.SPIN, recommended_fuel=5_000_000)
    spin_clock = agent_with(bob, "spin-clock", wasm.SPIN, recommended_timeout_ms=300)
    bomb = agent_with(bob, "bomb", wasm.MEMORY_BOMB, recommended_memory_mb=4)
    cases: dict[str, tuple[Agent, dict[str, Any]]] = {
        "out_of_fuel": (spin_fuel, {"fuel_limit": 5_000_000}),
        "timeout": (spin_clock, {}),
        "memory_limit": (bomb, {"memory_limit_mb": 4}),
        "trap": (agent_with(bob, "trap", wasm.TRAP), {}),
        "exit_nonzero": (agent_with(bob, "exit", wasm.EXIT_3), {}),
        "output_too_large": (agent_with(bob, "flood", wasm.FLOOD), {}),
        "invalid_output": (agent_with(bob, "prose", wasm.NOT_JSON, output_schema=schema), {}),
        "validation_failed": (agent_with(bob, "shunned", wasm.TRAP), {"min_reputation": "99"}),
        "platform_error": (agent_with(bob, "lost", wasm.busy(7)), {}),
    }
    # The platform loses a binary (storage and compiled cache): the platform's fault.
    lost = cases["platform_error"][0].current_binary
    assert lost is not None
    binary_storage().delete(lost.storage_name)
    modules.artifact_path(lost.sha256).unlink(missing_ok=True)
    tasks = {
        reason: task_submit(requester=alice, agent=agent, input="x", budget=2_000_000, **options)
        for reason, (agent, options) in cases.items()
    }
    with Cluster() as cluster:
        wait_for(
            lambda: final(*tasks.values()),
            timeout=60,
            message="tasks to finish",
            cluster=cluster,
        )

    for reason, task in tasks.items():
        task.refresh_from_db()
        assert (task.status, task.failure_reason) == ("failed", reason), task.failure_detail
        assert (task.cost, task.fee, task.refund) == (0, 0, 2_000_000)
        assert Escrow.objects.get(task=task).status == "refunded"
        penalty = (
            Decimal("0") if reason in ("validation_failed", "platform_error") else Decimal("-5")
        )
        assert ReputationEvent.objects.get(task=task).delta == penalty, reason
        assert receipt_verify(task.receipt.as_dict())
    assert balance(alice) == FUNDS
    assert balance(bob) == 0
    assert tasks["exit_nonzero"].exit_code == 3


def test_a_duplicate_delivery_through_the_broker_changes_nothing(people):
    alice, bob = people
    echo = agent_with(bob, "echo", ECHO.read_bytes())
    task = task_submit(requester=alice, agent=echo, input="once", budget=100_000)
    # A second message for the same task, as a broker redelivery would produce.
    task_run_send(task_id=task.pk)
    with Cluster() as cluster:
        wait_for(lambda: final(task), timeout=30, message="the task to finish", cluster=cluster)
        settled = (balance(alice), balance(bob), ReputationEvent.objects.count())
        task_run_send(task_id=task.pk)
        from django_q.models import OrmQ

        wait_for(lambda: not OrmQ.objects.exists(), timeout=30, message="messages to drain")
    task.refresh_from_db()
    assert task.attempts == 1
    assert (balance(alice), balance(bob), ReputationEvent.objects.count()) == settled
