"""A dead worker is visible and comes back (SPEC §13), with real qcluster processes.

The process tree of a cluster: `qcluster` main → sentinel → workers, monitor, pusher. The
supervisor (`manage.py supervise`, what `make run` runs) sits above the main process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from escrow.services import deposit_create
from execution.models import WorkerHeartbeat
from marketplace.binaries import binary_upload
from marketplace.models import Task
from marketplace.services import task_submit
from tests.factories import AgentFactory, UserFactory
from tests.workers import ROOT, WORKER_ENV, Cluster, database_url, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ECHO = ROOT / "agents" / "dist" / "echo.wasm"
BEAT = {"WORKER_HEARTBEAT_SECONDS": "1"}


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [child for child in pids if parent_of(child) == pid and alive(child)]


def only_child(pid: int) -> int:
    found = children(pid)
    assert len(found) == 1, f"{pid} has children {found}"
    return found[0]


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [grandchild for child in found for grandchild in descendants(child)]


def heartbeat_after(moment, *, besides: int | None = None) -> bool:
    rows = WorkerHeartbeat.objects.filter(last_seen__gt=moment)
    return rows.exclude(pid=besides).exists() if besides else rows.exists()


def test_a_real_cluster_beats_until_its_sentinel_is_killed(client, settings):
    started = time.monotonic()
    cluster = Cluster(workers=2, WORKER_HEARTBEAT_SECONDS="1").start()
    main = cluster.process
    assert main is not None
    try:
        wait_for(WorkerHeartbeat.objects.exists, timeout=20, message="a heartbeat", cluster=cluster)
        print(f"first heartbeat {time.monotonic() - started:.2f}s after qcluster started")
        sentinel = only_child(main.pid)
        row = WorkerHeartbeat.objects.get()
        assert (row.pid, row.host) == (sentinel, socket.gethostname())
        assert row.cluster == "agent-exchange"
        wait_for(lambda: heartbeat_after(row.last_seen), timeout=5, message="a second beat")
        assert WorkerHeartbeat.objects.count() == 1  # two workers, one row for their cluster
        assert client.get("/healthz").json()["checks"]["worker"] == "ok"

        workers = children(sentinel)
        os.kill(sentinel, signal.SIGKILL)
        wait_for(lambda: main.poll() is not None, timeout=10, message="main exits")
        time.sleep(1.5)  # a beat already under way lands
        last_seen = WorkerHeartbeat.objects.get().last_seen
        time.sleep(3)
        # Its workers live on as orphans, but nothing guards them: they beat no more.
        assert any(alive(pid) for pid in workers)
        assert WorkerHeartbeat.objects.get().last_seen == last_seen
        settings.WORKER_STALE_SECONDS = 3
        response = client.get("/healthz")
        assert (response.status_code, response.json()["checks"]["worker"]) == (503, "stale")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the orphans are still in its group
            os.killpg(main.pid, signal.SIGKILL)
        cluster.stop()


class Supervised:
    """`manage.py supervise` as `make run` starts it, against the test database."""

    def __init__(self) -> None:
        self.env = {
            **os.environ,
            **WORKER_ENV,
            **BEAT,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(django_settings.DATA_DIR),
            "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "supervise"],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )
        return self.process

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        tree = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_supervisor_brings_the_cluster_back_when_its_sentinel_is_killed():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    echo = AgentFactory.create(owner=bob, slug="echo", base_fee=1_000, fuel_price=1_000)
    binary_upload(agent=echo, data=ECHO.read_bytes())
    echo.refresh_from_db()

    with Supervised() as supervisor:
        wait_for(WorkerHeartbeat.objects.exists, timeout=30, message="the first cluster's beat")
        main = only_child(supervisor.pid)
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
            lambda: heartbeat_after(killed, besides=sentinel),
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
        assert only_child(supervisor.pid) != main

        # SIGTERM (what `make run` sends on Ctrl-C) stops everything, in bounded time.
        tree = [supervisor.pid, *descendants(supervisor.pid)]
        clock = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        print(f"SIGTERM → supervisor and cluster gone in {time.monotonic() - clock:.2f}s")
        assert [pid for pid in tree if alive(pid)] == []
