"""A dead worker is visible and comes back (SPEC §13), with real qcluster processes.

The process tree of a cluster: `qcluster` main → sentinel → workers, monitor, pusher. The
supervisor (`manage.py supervise`, what `make run` runs) sits above the main process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from execution.models import WorkerHeartbeat
from marketplace.models import Task
from marketplace.services import task_submit
from tests.factories import echo_world
from tests.workers import (
    Cluster,
    Supervisor,
    alive,
    children,
    descendants,
    only_child,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def heartbeat_after(moment, *, besides: int | None = None, queue: str | None = None) -> bool:
    rows = WorkerHeartbeat.objects.filter(last_seen__gt=moment)
    if queue:
        rows = rows.filter(cluster=queue)
    return rows.exclude(pid=besides).exists() if besides else rows.exists()


def test_a_real_cluster_beats_until_its_sentinel_is_killed(client, settings):
    started = time.monotonic()
    cluster = Cluster(workers=2, WORKER_HEARTBEAT_SECONDS="1").start()
    main = cluster.process
    assert main is not None
    tasks_rows = WorkerHeartbeat.objects.filter(cluster=django_settings.TASK_QUEUE)
    try:
        wait_for(
            lambda: WorkerHeartbeat.objects.count() == 2,
            timeout=30,
            message="a heartbeat from each cluster",
            cluster=cluster,
        )
        print(f"first heartbeats {time.monotonic() - started:.2f}s after qcluster started")
        sentinel = only_child(main.pid)
        row = tasks_rows.get()
        assert (row.pid, row.host) == (sentinel, socket.gethostname())
        assert set(WorkerHeartbeat.objects.values_list("cluster", flat=True)) == {
            django_settings.TASK_QUEUE,
            django_settings.SERVICE_QUEUE,
        }
        wait_for(lambda: heartbeat_after(row.last_seen), timeout=5, message="a second beat")
        assert tasks_rows.count() == 1  # two workers, one row for their cluster
        assert client.get("/healthz").json()["worker"] == "ok"

        workers = children(sentinel)
        os.kill(sentinel, signal.SIGKILL)
        wait_for(lambda: main.poll() is not None, timeout=10, message="main exits")
        time.sleep(1.5)  # a beat already under way lands
        last_seen = tasks_rows.get().last_seen
        time.sleep(3)
        # Its workers live on as orphans, but nothing guards them: they beat no more.
        assert any(alive(pid) for pid in workers)
        assert tasks_rows.get().last_seen == last_seen
        settings.WORKER_STALE_SECONDS = 3
        response = client.get("/healthz")
        # The service cluster still beats, but no live cluster takes task runs.
        assert (response.status_code, response.json()["worker"]) == (503, "stale")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the orphans are still in its group
            os.killpg(main.pid, signal.SIGKILL)
        cluster.stop()


def test_the_supervisor_brings_the_cluster_back_when_its_sentinel_is_killed():
    alice, echo = echo_world()
    tasks_queue = django_settings.TASK_QUEUE

    with Supervisor() as supervised:
        supervisor = supervised.process
        assert supervisor is not None
        wait_for(
            lambda: WorkerHeartbeat.objects.filter(cluster=tasks_queue).exists(),
            timeout=30,
            message="the first task cluster's beat",
        )
        main = supervised.clusters()[tasks_queue]
        sentinel = only_child(main)
        first_cluster = [main, *descendants(main)]

        killed = timezone.now()
        clock = time.monotonic()
        os.kill(sentinel, signal.SIGKILL)
        # The supervisor clears the dead cluster's orphans before it starts the next one; a
        # task submitted meanwhile waits in the queue for the new cluster.
        wait_for(
            lambda: not any(alive(pid) for pid in first_cluster),
            timeout=10,
            message="the dead cluster's processes to be gone",
        )
        task = task_submit(requester=alice, agent=echo, input="back again", budget=100_000)
        wait_for(
            lambda: heartbeat_after(killed, besides=sentinel, queue=tasks_queue),
            timeout=30,
            message="a heartbeat from a new cluster",
        )
        to_heartbeat = time.monotonic() - clock
        wait_for(
            lambda: Task.objects.filter(pk=task.pk, status__in=Task.FINAL_STATUSES).exists(),
            timeout=30,
            message="the task to run on the new cluster",
        )
        to_task = time.monotonic() - clock
        print(f"sentinel killed → new heartbeat {to_heartbeat:.2f}s, → task done {to_task:.2f}s")
        task.refresh_from_db()
        assert (task.status, bytes(task.stdout)) == ("succeeded", b"back again")
        assert supervised.clusters()[tasks_queue] != main

        # SIGTERM (what `make run` sends on Ctrl-C) stops everything, in bounded time.
        tree = [supervisor.pid, *descendants(supervisor.pid)]
        clock = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        print(f"SIGTERM → supervisor and clusters gone in {time.monotonic() - clock:.2f}s")
        assert [pid for pid in tree if alive(pid)] == []
