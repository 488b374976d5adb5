"""SIGKILL real workers mid-task and prove every task still settles exactly once."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from escrow.audit import ledger_audit
from escrow.channels import channel_close, channel_open, key_register
from escrow.models import Account, Escrow, PaymentChannel, Transfer
from escrow.services import deposit_create, system_account_id
from execution.models import Receipt
from execution.services import tasks_recover
from marketplace.binaries import binary_upload
from marketplace.models import Task
from marketplace.services import task_submit
from reputation.audit import reputation_audit
from reputation.models import ReputationEvent
from tests import wasm_modules as wasm
from tests.factories import KEY, AgentFactory, UserFactory, public, sign
from tests.workers import Cluster, database_url, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FUNDS = 50_000_000


@pytest.fixture(autouse=True)
def _resend_lost_messages_quickly(settings):
    settings.REQUEUE_AFTER_SECONDS = 3


@pytest.fixture
def slow_agent_tasks():
    """`count` tasks for a slow agent; with `channel=True` every other one pays by channel."""

    def submit(count: int, iterations: int, channel: bool = False) -> list[Task]:
        alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
        deposit_create(user_id=alice.pk, amount=FUNDS)
        agent = AgentFactory.create(owner=bob, slug="slow", base_fee=1_000, fuel_price=1)
        binary_upload(agent=agent, data=wasm.busy(iterations))
        agent.refresh_from_db()
        key_register(user_id=alice.pk, public_key=public(KEY))
        opened = channel_open(
            requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=FUNDS // 2
        )
        tasks = []
        for i in range(count):
            by_channel = channel and i % 2 == 1
            payment: dict[str, Any] = (
                {
                    "payment": "channel",
                    "channel": str(opened.pk),
                    "voucher": sign(opened.pk, i, (i + 1) * 1_000_000),
                }
                if by_channel
                else {}
            )
            tasks.append(
                task_submit(
                    requester=alice,
                    agent=agent,
                    input=str(i),
                    budget=1_000_000,
                    fuel_limit=10_000_000_000,
                    timeout_ms=3_000,
                    **payment,
                )
            )
        return tasks

    return submit


def assert_each_task_final_exactly_once(tasks: list[Task]) -> Counter[str]:
    ids = [t.pk for t in tasks]
    assert Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES).count() == len(ids)
    assert ReputationEvent.objects.filter(task_id__in=ids).count() == len(ids)
    assert Receipt.objects.filter(task_id__in=ids).count() == len(ids)
    outcomes: Counter[str] = Counter()
    for task in Task.objects.filter(pk__in=ids):
        escrow = Escrow.objects.get(task=task)
        if escrow.channel_id:
            assert escrow.status == ("completed" if task.status == "succeeded" else "cancelled")
            assert not Transfer.objects.filter(escrow=escrow).exists()
        else:
            assert escrow.status == ("released" if task.status == "succeeded" else "refunded")
            legs = Transfer.objects.filter(escrow=escrow).exclude(kind="escrow_hold")
            assert sum(legs.values_list("amount", flat=True)) == task.budget
        assert (task.cost or 0) + (task.refund or 0) == task.budget
        outcomes[task.failure_reason or task.status] += 1
    ledger, reputation = ledger_audit(), reputation_audit()
    assert ledger.ok, ledger.violations
    assert reputation.ok, reputation.violations
    return outcomes


def recover_until_final(tasks: list[Task], cluster: Cluster, timeout: float) -> None:
    ids = [t.pk for t in tasks]

    def done() -> bool:
        tasks_recover()
        return Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES).count() == len(ids)

    wait_for(done, timeout=timeout, every=0.5, message="every task to finish", cluster=cluster)


def test_random_sigkills_never_lose_or_double_pay_a_task(slow_agent_tasks, capsys):
    # About 6e9 fuel (9 per iteration): a few tenths of a second of wasm per task.
    tasks = slow_agent_tasks(10, iterations=700_000_000, channel=True)
    rng = random.Random(20261124)
    cluster = Cluster()
    kills = []
    try:
        for _ in range(8):
            round_started = timezone.now()
            cluster.start()

            # Wait for work in progress, then kill at a random point of it: mid-run, or
            # (for a short run) around its settlement or the next claim.
            def busy_or_done(since: datetime = round_started) -> bool:
                return (
                    Task.objects.filter(status="running", started_at__gte=since).exists()
                    or not Task.objects.exclude(status__in=Task.FINAL_STATUSES).exists()
                )

            wait_for(
                busy_or_done,
                timeout=30,
                message="a task to start",
                cluster=cluster,
            )
            time.sleep(rng.uniform(0, 0.6))
            running = Task.objects.filter(status="running", started_at__gte=round_started).count()
            cluster.kill()
            kills.append(running)
            tasks_recover()
        cluster.start()
        recover_until_final(tasks, cluster, timeout=90)
    finally:
        cluster.stop()
    outcomes = assert_each_task_final_exactly_once(tasks)
    # The channel's counters matched its tasks (the audit above); closing pays exactly.
    channel = PaymentChannel.objects.get()
    assert (channel.in_flight, channel.reserved) == (0, 0)
    alice_before = Account.objects.get(user=channel.requester).balance
    channel = channel_close(channel_id=channel.pk, by_user_id=channel.requester_id)
    assert Account.objects.get(user=channel.requester).balance == (
        alice_before + channel.deposit - channel.redeemed
    )
    attempts = Counter(Task.objects.values_list("attempts", flat=True))
    with capsys.disabled():
        print(
            f"\n  crash test: {len(kills)} SIGKILLs, tasks running at each kill {kills}; "
            f"outcomes {dict(outcomes)}; attempts per task {dict(sorted(attempts.items()))}"
        )
    assert sum(kills) > 0, "no kill landed while a task was running"


def test_a_worker_killed_inside_the_settlement_transaction_settles_once_after_recovery(
    slow_agent_tasks,
):
    [task] = slow_agent_tasks(1, iterations=1_000)
    # The escrow account shard this task's money sits in.
    hold = system_account_id("escrow", Escrow.objects.get(task_id=task.pk).shard)
    # Hold the escrow account's row lock: the worker's settlement blocks on it, midway
    # through its transaction (the task row is already updated), and dies there.
    with psycopg.connect(database_url(), autocommit=False) as blocker:
        blocker.execute("SELECT id FROM escrow_account WHERE id = %s FOR UPDATE", [hold])
        cluster = Cluster().start()
        try:
            wait_for(
                lambda: _backends_waiting_on_a_lock() > 0,
                timeout=30,
                message="the settlement to block",
                cluster=cluster,
            )
            cluster.kill()
        finally:
            blocker.rollback()
    # Once the dead worker's statement is over, the settlement happened whole or not at
    # all: a settlement is one statement that is its own transaction, so it commits if it
    # ends (its worker never hears), and rolls back if the server drops it.
    wait_for(lambda: _other_active_backends() == 0, timeout=30, message="the statement to end")
    task.refresh_from_db()
    moved = Transfer.objects.filter(escrow__task=task).exclude(kind="escrow_hold").count()
    if task.status == "running":
        assert moved == 0 and not Receipt.objects.filter(task=task).exists()
        assert Account.objects.get(pk=hold).balance == task.budget
    else:
        assert (task.status, moved) == ("succeeded", 3)
        assert ReputationEvent.objects.filter(task=task).count() == 1
    settled_by_the_dead_worker = task.status == "succeeded"
    cluster = Cluster().start()
    try:
        recover_until_final([task], cluster, timeout=30)
    finally:
        cluster.stop()
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("succeeded", 1 if settled_by_the_dead_worker else 2)
    assert_each_task_final_exactly_once([task])


def _other_active_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active'"
        )
        return cursor.fetchone()[0]


def _backends_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]
