"""A worker plane that can't stall silently (SPEC §18), with real `manage.py supervise` trees.

A q2 process SIGKILLed while it holds one of its cluster's queue locks leaves the lock held
for good: every process stays alive, the heartbeat threads keep beating, and the cluster runs
nothing (django-q2 #23). Here a worker takes the task queue's read lock and kills itself, as
the OOM killer would kill it inside `Queue.get`. Progress-based liveness must see the stall,
/healthz must say so, and the supervisor must restart the whole cluster so that the tasks
waiting behind it run, each exactly once, with the money exact.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import time
from collections import Counter

import pytest
from django.conf import settings
from django.test import Client
from django_q.tasks import async_task

from escrow.models import Escrow, Transfer
from escrow.services import deposit_create
from execution.models import Receipt, WorkerHeartbeat
from execution.services import tasks_recover
from marketplace.binaries import binary_upload
from marketplace.models import Task
from marketplace.services import task_submit
from reputation.models import ReputationEvent
from tests import wasm_modules as wasm
from tests.factories import AgentFactory, UserFactory, echo_world
from tests.workers import Cluster, Supervisor, alive, descendants, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STALL_SECONDS = 5
BUDGET = 100_000


@pytest.fixture
def echo_agent():
    return echo_world()


def both_clusters_beat() -> bool:
    live = WorkerHeartbeat.objects.filter(stopped_at__isnull=True).values_list("cluster", flat=True)
    return {settings.TASK_QUEUE, settings.SERVICE_QUEUE} <= set(live)


def queue_wait(task: Task) -> float:
    """Seconds from its (last) entry into the queue to the claim that ran it."""
    assert task.started_at is not None and task.queued_at is not None
    return (task.started_at - task.queued_at).total_seconds()


def final(tasks: list[Task]) -> bool:
    ids = [task.pk for task in tasks]
    return Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES).count() == len(ids)


def test_a_cluster_stuck_on_a_dead_workers_queue_lock_is_seen_and_restarted(
    echo_agent, settings, tmp_path
):
    settings.WORKER_STALL_SECONDS = STALL_SECONDS
    settings.METRICS_TOKEN = "token"
    alice, agent = echo_agent
    health = Client()
    detail = {"Authorization": "Bearer token"}
    # One worker: it runs the fault, so nobody else holds the read lock (an idle worker holds
    # it while it waits for a message), and the worker started in its place waits for good.
    with Supervisor(workers=1, WORKER_STALL_SECONDS=str(STALL_SECONDS)) as supervisor:
        wait_for(both_clusters_beat, timeout=40, message="both clusters' first beat")
        first = supervisor.clusters()[settings.TASK_QUEUE]
        leaves = supervisor.leaves(settings.TASK_QUEUE)
        async_task(
            "tests.q2_faults.die_holding_the_queue_lock",
            str(tmp_path / "died"),
            cluster=settings.TASK_QUEUE,
        )
        wait_for(
            lambda: not all(alive(pid) for pid in leaves),
            timeout=20,
            message="the worker to die holding the lock",
        )
        time.sleep(1)  # the sentinel starts a worker in its place, which blocks on the lock
        stuck_at = time.monotonic()
        tasks = [
            task_submit(requester=alice, agent=agent, input=f"stuck {i}", budget=BUDGET)
            for i in range(3)
        ]

        # Every process of the cluster is alive and beating, and nothing runs.
        seen_stalled = None
        while seen_stalled is None and time.monotonic() - stuck_at < STALL_SECONDS + 20:
            response = health.get("/healthz", headers=detail)
            if response.json()["worker"] == "stalled":
                seen_stalled = response
            time.sleep(0.25)
        assert seen_stalled is not None, supervisor.output()
        assert seen_stalled.status_code == 503
        body = seen_stalled.json()
        assert body["checks"]["stalled_hosts"] == [socket.gethostname()]
        [host] = body["hosts"]
        stalled = [c["cluster"] for c in host["clusters"] if c["stalled"]]
        assert stalled == [settings.TASK_QUEUE]  # the service cluster is fine
        assert Task.objects.filter(pk__in=[t.pk for t in tasks], status="queued").count() == 3
        anonymous = health.get("/healthz").json()
        assert set(anonymous) == {"status", "database", "worker"}

        wait_for(
            lambda: final(tasks),
            timeout=STALL_SECONDS + 45,
            message="the stuck tasks to run on a restarted cluster",
            cluster=supervisor,
        )
        recovered = time.monotonic() - stuck_at
        assert supervisor.clusters()[settings.TASK_QUEUE] != first  # a new cluster
        assert "stalled" in supervisor.output()
        wait_for(
            lambda: health.get("/healthz").status_code == 200,
            timeout=10,
            message="/healthz to be ok after the restart",
        )
        print(f"stalled → every stuck task settled after {recovered:.1f}s")
        print("\n".join(line for line in supervisor.output().splitlines() if "supervise:" in line))

    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert (task.status, task.attempts) == ("succeeded", 1)
        assert (task.cost or 0) + (task.refund or 0) == BUDGET
        # Queued while the cluster was stuck: no longer than the stall bound plus the restart.
        waited = queue_wait(task)
        assert waited <= STALL_SECONDS + 15, waited


@pytest.fixture
def slow_agent():
    """An agent whose runs take a few tenths of a second of wasm each."""
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=100_000_000)
    agent = AgentFactory.create(owner=bob, slug="slow", base_fee=1_000, fuel_price=1)
    binary_upload(agent=agent, data=wasm.busy(30_000_000))
    agent.refresh_from_db()
    return alice, agent


def submit(alice, agent, count: int, start: int = 0) -> list[Task]:
    return [
        task_submit(
            requester=alice,
            agent=agent,
            input=str(start + i),
            budget=BUDGET,
            fuel_limit=10_000_000_000,
            timeout_ms=3_000,
        )
        for i in range(count)
    ]


def assert_money_exact(tasks: list[Task]) -> None:
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert task.status in Task.FINAL_STATUSES
        assert task.cost is not None and task.refund is not None
        assert task.cost + task.refund == task.budget
        escrow = Escrow.objects.get(task=task)
        assert escrow.status == ("released" if task.status == "succeeded" else "refunded")
        legs = Transfer.objects.filter(escrow=escrow).exclude(kind="escrow_hold")
        assert sum(legs.values_list("amount", flat=True)) == task.budget
    ids = [t.pk for t in tasks]
    assert ReputationEvent.objects.filter(task_id__in=ids).count() == len(ids)
    assert Receipt.objects.filter(task_id__in=ids).count() == len(ids)


def test_stopping_a_host_finishes_what_its_cluster_holds_and_reruns_nothing(slow_agent):
    """systemd's stop with `KillMode=mixed`: SIGTERM to the supervisor alone. It stops both
    clusters in order; every task the host had started finishes, none runs twice."""
    alice, agent = slow_agent
    tasks = submit(alice, agent, 16)
    with Supervisor(workers=2) as supervisor:
        wait_for(
            lambda: Task.objects.filter(status="running").count() >= 2,
            timeout=40,
            message="two tasks running",
            cluster=supervisor,
        )
        took = supervisor.terminate(timeout=30)
        assert supervisor.process is not None and supervisor.process.returncode == 0
        tree_left = [pid for pid in descendants(supervisor.process.pid) if alive(pid)]
    print(f"SIGTERM → host stopped in {took:.2f}s")
    assert tree_left == []
    assert not Task.objects.filter(status="running").exists()  # nothing left mid-run
    started = list(Task.objects.filter(attempts__gt=0))
    assert started and all(task.status == "succeeded" for task in started)
    assert all(task.attempts == 1 for task in started)
    # What it had not started is still queued, for the next host: run it now.
    with Cluster(workers=2) as cluster:
        wait_for(lambda: final(tasks), timeout=60, message="the rest to run", cluster=cluster)
    assert set(Task.objects.values_list("attempts", flat=True)) == {1}  # none ran twice
    assert_money_exact(tasks)


def test_thirty_sigkills_of_cluster_processes_under_load_lose_and_double_pay_nothing(
    slow_agent, settings, capsys
):
    """The OOM killer's way: SIGKILL one process of a cluster at a time (a worker, the pusher
    or the monitor), 30 times, while tasks keep coming. Killed inside a queue lock, a process
    stalls its cluster; the supervisor restarts it. Every task ends final exactly once, the
    money adds up, and no queued task waits longer than the stall bound plus a restart."""
    settings.REQUEUE_AFTER_SECONDS = 3
    alice, agent = slow_agent
    rng = random.Random(20261205)
    tasks: list[Task] = []
    kills: Counter[str] = Counter()
    with Supervisor(
        workers=2, WORKER_STALL_SECONDS=str(STALL_SECONDS), REQUEUE_AFTER_SECONDS="3"
    ) as supervisor:
        wait_for(both_clusters_beat, timeout=40, message="both clusters' first beat")
        tasks += submit(alice, agent, 10)
        while sum(kills.values()) < 30:
            tasks += submit(alice, agent, 3, start=len(tasks))
            time.sleep(rng.uniform(0.3, 1.2))
            queue = settings.TASK_QUEUE if rng.random() < 0.8 else settings.SERVICE_QUEUE
            leaves = supervisor.leaves(queue)
            if not leaves:  # the cluster is restarting: kill on the other one
                continue
            victim = rng.choice(leaves)
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
            kills["tasks" if queue == settings.TASK_QUEUE else "service"] += 1
            tasks_recover()  # the minute's recovery, on a faster clock

        def done() -> bool:
            tasks_recover()
            return final(tasks)

        wait_for(done, timeout=120, every=0.5, message="every task to finish", cluster=supervisor)
        restarts = supervisor.output().count("stalled (work waited")

    assert_money_exact(tasks)
    waits = [queue_wait(task) for task in Task.objects.filter(pk__in=[t.pk for t in tasks])]
    attempts = Counter(Task.objects.values_list("attempts", flat=True))
    with capsys.disabled():
        print(
            f"\n  {sum(kills.values())} SIGKILLs {dict(kills)}; {restarts} stalled clusters "
            f"restarted; {len(tasks)} tasks, attempts {dict(sorted(attempts.items()))}; "
            f"longest queue wait {max(waits):.1f}s"
        )
    assert max(waits) <= STALL_SECONDS + 15
