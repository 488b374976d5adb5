"""Evaluated settlement with real runs (SPEC §21): the echo agent's output judged by tiny
evaluator modules in the wasmtime sandbox — a fixed verdict, one that spins past its
timeout, one that runs out of the fuel the budget left — and, on PostgreSQL, workers
SIGKILLed between the task's settlement and its verdict, finished by real workers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from escrow.models import Earning, Transfer
from execution.engine.receipts import receipt_sign
from execution.runs import cost_for, fee_for
from execution.services import receipt_replay, task_execute, tasks_recover
from marketplace.binaries import binary_upload
from marketplace.models import Agent, Evaluation, Task
from marketplace.services import task_submit
from reputation.models import ReputationEvent
from tests import wasm_modules as wasm
from tests.factories import AgentFactory, balance, echo_world, held_for

BUDGET = 2_000_000
FUNDS = 10_000_000


def printing(text: str) -> bytes:
    return wasm.module(f'(func (export "_start") {wasm.write(text)})', wasm.FD_WRITE)


ACCEPT = printing('{"accept": true, "score": 0.75, "reason": "echoed"}')
REJECT = printing('{"accept": false, "score": 0, "reason": "not what was asked"}')


def evaluator(owner, module: bytes, slug: str = "judge", **fields) -> Agent:
    agent = AgentFactory.create(
        owner=owner, slug=slug, **{"base_fee": 700, "fuel_price": 1_000, **fields}
    )
    binary_upload(agent=agent, data=module)
    agent.refresh_from_db()
    return agent


@pytest.fixture
def world(db):
    """alice (10 CR), bob's real echo agent, and charlie who owns the evaluators."""
    from tests.factories import UserFactory

    alice, echo = echo_world()
    return alice, echo, UserFactory.create(username="charlie")


def run_both(alice, echo, judge) -> tuple[Task, Task]:
    echo.accepted_evaluators.add(judge)
    task = task_submit(
        requester=alice, agent=echo, input="hello", budget=BUDGET, evaluator=judge.slug
    )
    task_execute(task_id=task.pk)
    run = Task.objects.get(evaluates=task)
    task_execute(task_id=run.pk)
    return Task.objects.get(pk=task.pk), Task.objects.get(pk=run.pk)


def priced(task: Task) -> tuple[int, int]:
    cost = cost_for(
        base_fee=task.base_fee,
        fuel_price=task.fuel_price,
        fuel_used=known(task.fuel_used),
        budget=BUDGET,
    )
    return cost, fee_for(cost)


def known(amount: int | None) -> int:
    assert amount is not None
    return amount


def money(run: Task) -> tuple[int, int]:
    """A settled run's cost and fee."""
    return known(run.cost), known(run.fee)


def test_a_real_evaluator_accepts_the_echo(world):
    alice, echo, charlie = world
    task, run = run_both(alice, echo, evaluator(charlie, ACCEPT))
    cost, fee = priced(task)
    # The evaluator read the task's input, its output and the contract.
    assert json.loads(run.input) == {
        "contract": {"input_schema": None, "output_schema": None, "version": 1},
        "output": "hello",
        "task_input": "hello",
    }
    assert run.status == "succeeded" and run.budget == BUDGET - cost
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.verdict, str(evaluation.score), evaluation.reason) == (
        "accept",
        "0.7500",
        "echoed",
    )
    run_cost, run_fee = money(run)
    assert evaluation.cost == run_cost == 700 + -(-known(run.fuel_used) * 1_000 // 1_000_000)
    assert balance(alice) == FUNDS - cost - run_cost
    assert held_for(echo.owner) == cost - fee
    assert held_for(charlie) == run_cost - run_fee
    assert Earning.objects.get(task=task).status == "held"
    assert ReputationEvent.objects.get(task=task).outcome == "success"


def test_a_real_evaluator_rejects_the_echo(world):
    alice, echo, charlie = world
    task, run = run_both(alice, echo, evaluator(charlie, REJECT))
    assert Evaluation.objects.get(task=task).verdict == "reject"
    assert balance(alice) == FUNDS - money(run)[0]
    assert held_for(echo.owner) == 0
    assert ReputationEvent.objects.get(task=task).outcome == "failure"


def test_a_verdicts_receipt_replays_the_evaluators_run(world, tmp_path):
    """`verify_receipt --replay` on a verdict reruns the evaluator's run it names (not the
    task it judged); a verdict whose evaluator never ran says there is nothing to replay."""
    alice, echo, charlie = world
    task, run = run_both(alice, echo, evaluator(charlie, REJECT))
    receipt = known_receipt(Evaluation.objects.get(task=task).receipt)
    payload = json.loads(receipt["payload"])
    assert payload["run_task_id"] == str(run.pk)
    assert receipt_replay(payload) == (True, f"output hash {run.output_sha256}")
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps(receipt))
    out = io.StringIO()
    call_command("verify_receipt", str(path), "--replay", stdout=out)
    assert f"replay matches: output hash {run.output_sha256}" in out.getvalue()
    # Another run's output under this verdict is a mismatch, as for any receipt.
    forged = {**payload, "output_sha256": "0" * 64}
    assert receipt_replay(forged)[0] is False
    # A verdict given without a run (the evaluator never ran) has nothing to replay.
    unrun = {**payload, "run_task_id": None, "reason": "evaluator_failed"}
    assert receipt_replay(unrun) == (
        False,
        "nothing to replay: the evaluator never ran (evaluator_failed)",
    )
    signed = receipt_sign(unrun)
    path.write_text(json.dumps(signed))
    call_command("verify_receipt", str(path), "--replay", stdout=(out := io.StringIO()))
    assert "nothing to replay: the evaluator never ran" in out.getvalue()
    # Nor has a dispute's resolution: a decision, not a run.
    decision = {"kind": "dispute_refund", "task_id": str(task.pk)}
    assert receipt_replay(decision)[1].startswith("nothing to replay: a dispute_refund receipt")


def known_receipt(receipt: dict[str, str] | None) -> dict[str, str]:
    assert receipt is not None
    return receipt


def test_an_evaluator_timing_out_counts_as_accept_with_its_run_refunded(world):
    alice, echo, charlie = world
    judge = evaluator(charlie, wasm.SPIN, recommended_timeout_ms=200)
    task, run = run_both(alice, echo, judge)
    cost, fee = priced(task)
    assert run.failure_reason == "timeout" and run.cost == 0
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.verdict, evaluation.reason, evaluation.cost) == (
        "accept",
        "evaluator_failed",
        0,
    )
    assert balance(alice) == FUNDS - cost
    assert held_for(echo.owner) == cost - fee and held_for(charlie) == 0
    # The evaluator ran with the time it recommends: its own reputation pays.
    assert ReputationEvent.objects.get(task=run).outcome == "failure"


def test_an_evaluator_out_of_the_fuel_the_budget_left_counts_as_accept(world):
    alice, echo, charlie = world
    # 1 CR per million fuel: the ~2 CR the budget leaves buys about 2 million fuel.
    judge = evaluator(charlie, wasm.busy(10_000_000), fuel_price=1_000_000)
    task, run = run_both(alice, echo, judge)
    cost, _ = priced(task)
    assert run.failure_reason == "out_of_fuel" and run.cost == 0
    assert Evaluation.objects.get(task=task).reason == "evaluator_failed"
    assert balance(alice) == FUNDS - cost
    # Capped by the requester's budget, below what it recommends: not the evaluator's fault.
    assert ReputationEvent.objects.get(task=run).neutral_reason == "requester_limits"


# --- workers killed between the task's settlement and its verdict --------------------------

# A worker process that runs one task and is SIGKILLed at the named point.
KILLED_AT = """
import os, signal, sys
import django
django.setup()
from execution import services
from marketplace import queues
point, task_id = sys.argv[1], sys.argv[2]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "before-verdict":
    services.evaluation_decide = die  # the run has settled; its verdict never does here
else:
    queues.async_task = die  # the task has settled; its evaluator's run is never sent
services.task_execute(task_id=task_id)
"""


def killed_worker(point: str, task_id: object) -> None:
    from django.conf import settings

    from tests.workers import ROOT, database_url

    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AT, point, str(task_id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("payment", ["escrow", "channel"])
def test_a_worker_killed_between_settlement_and_verdict_settles_each_once(settings, payment):
    from escrow.channels import channel_close
    from tests.factories import UserFactory, channel_opened, paid_by
    from tests.workers import Cluster, wait_for

    settings.REQUEUE_AFTER_SECONDS = 1
    alice, echo = echo_world()
    charlie = UserFactory.create(username="charlie")
    judge = evaluator(charlie, ACCEPT)
    echo.accepted_evaluators.add(judge)
    channel = channel_opened(alice, echo, echo.owner, deposit=2 * BUDGET)
    tasks = [
        task_submit(
            requester=alice,
            agent=echo,
            input=f"hi {i}",
            budget=BUDGET,
            evaluator="judge",
            **(paid_by(channel, i + 1, BUDGET * (i + 1)) if payment == "channel" else {}),
        )
        for i in range(2)
    ]
    # 1: killed once the task settled, before its evaluator's run was sent to a worker.
    killed_worker("before-send", tasks[0].pk)
    assert Task.objects.get(pk=tasks[0].pk).status == "succeeded"
    assert Task.objects.get(evaluates=tasks[0]).status == "queued"
    # 2: its evaluator's run settled, then killed before the verdict.
    task_execute(task_id=tasks[1].pk)
    run = Task.objects.get(evaluates=tasks[1])
    killed_worker("before-verdict", run.pk)
    assert Task.objects.get(pk=run.pk).status == "succeeded"
    for task in tasks:
        assert Evaluation.objects.get(task=task).status == "running"
        if payment == "escrow":
            assert Earning.objects.get(task=task).status == "evaluating"
    channel.refresh_from_db()  # both tasks await their verdicts in the channel's flight
    assert (channel.in_flight, channel.reserved) == ((2, 0) if payment == "channel" else (0, 0))

    with Cluster() as cluster:

        def decided() -> bool:
            tasks_recover()  # what the schedule runs
            return Evaluation.objects.filter(status="decided").count() == 2

        wait_for(decided, timeout=60, every=0.5, message="both verdicts", cluster=cluster)
    tasks_recover()
    channel_close(channel_id=channel.pk, by_user_id=alice.pk)  # a channel task's share held now
    spent = drawn = 0
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        run = Task.objects.get(evaluates=task)
        assert run.attempts == 1  # each evaluator ran once
        evaluation = Evaluation.objects.get(task=task)
        assert evaluation.verdict == "accept" and evaluation.cost == run.cost
        assert Earning.objects.get(task=task).status == "held"
        assert ReputationEvent.objects.filter(task=task).count() == 1
        assert Transfer.objects.filter(task=run, kind="escrow_payout").count() == 1
        spent += known(task.cost) + known(run.cost)
        drawn += BUDGET - known(task.cost)  # on a channel: the budget's rest, for the run
    channel.refresh_from_db()
    assert channel.status == "settled" and channel.in_flight == 0
    assert channel.drawn == (drawn if payment == "channel" else 0)
    assert balance(alice) == FUNDS - spent
