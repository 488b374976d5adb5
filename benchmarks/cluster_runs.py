"""The end-to-end benchmark's world (a requester, an echo agent, a wallet for bare
transfers) and its runs on real `manage.py qcluster` workers: a backlog for a cold
cluster, then tasks one at a time (see `benchmarks/e2e.py`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Imported first: it refuses anything but PostgreSQL and sets Django up.
from benchmarks.common import BUDGET, INPUT, RUN_ID, echo_agent, production_env

# isort: split
from django.contrib.auth.models import User
from django.utils import timezone

from escrow.services import wallet_id
from marketplace.models import Agent, Task
from marketplace.services import task_submit, user_create
from tests.workers import Cluster

# --- the world this run works in ---------------------------------------------------------


@dataclass(frozen=True)
class World:
    owner: User
    requester: User
    agent: Agent
    bare_wallet: int  # credited by the bare SQL transfers


def world_create() -> World:
    owner, requester, agent = echo_agent()
    bare = user_create(username=f"bench-bare-{RUN_ID}")
    return World(
        owner=owner,
        requester=requester,
        agent=agent,
        bare_wallet=wallet_id(user_id=bare.pk),
    )


def submit(world: World, count: int) -> list[Any]:
    return [
        task_submit(requester=world.requester, agent=world.agent, input=INPUT, budget=BUDGET).pk
        for _ in range(count)
    ]


# --- workers -------------------------------------------------------------------------------


def wait_final(cluster: Cluster, ids: Sequence[Any], timeout: float = 150) -> float:
    """Poll until every task is final; the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES).count()
        if done == len(ids):
            return time.monotonic()
        if cluster.process is not None and cluster.process.poll() is not None:
            break
        time.sleep(0.02)
    sys.exit(
        f"the workers did not finish {len(ids)} tasks in time; worker log:\n{cluster.output()}"
    )


@dataclass
class ClusterRun:
    workers: int
    tasks: int
    startup: float  # cluster start → first task claimed
    wall: float  # cluster start → all tasks final
    failed: int
    queue_wait: list[float]
    run: list[float]  # elapsed_ms as the sandbox reported it
    in_worker: list[float]  # claim → result computed (started_at → finished_at)
    paced_wait: list[float]
    paced_latency: list[float]  # enqueued → finished, one task at a time

    @property
    def rate(self) -> float:
        return self.tasks / self.wall

    @property
    def rate_warm(self) -> float:
        return self.tasks / (self.wall - self.startup)


def _rows(ids: Sequence[Any]) -> list[tuple[str, datetime, datetime, datetime, int | None]]:
    rows = []
    for status, enqueued, started, finished, elapsed in Task.objects.filter(pk__in=ids).values_list(
        "status", "enqueued_at", "started_at", "finished_at", "elapsed_ms"
    ):
        assert enqueued and started and finished, "a final task has all its timestamps"
        rows.append((status, enqueued, started, finished, elapsed))
    return rows


def cluster_run(world: World, workers: int, tasks: int, paced: int) -> ClusterRun:
    """A backlog of `tasks` for a cold cluster; then `paced` tasks one at a time."""
    ids = submit(world, tasks)
    with Cluster(workers, short_limits=False, **production_env()) as cluster:
        started_at = timezone.now()
        started = time.monotonic()
        ended = wait_final(cluster, ids)
        paced_ids = []
        for _ in range(paced):
            paced_ids += submit(world, 1)
            time.sleep(0.05)
        if paced_ids:
            wait_final(cluster, paced_ids)
    rows = _rows(ids)
    first = min(row[2] for row in rows)
    paced_rows = _rows(paced_ids)
    return ClusterRun(
        workers=workers,
        tasks=tasks,
        startup=(first - started_at).total_seconds(),
        wall=ended - started,
        failed=sum(row[0] != Task.Status.SUCCEEDED for row in rows + paced_rows),
        queue_wait=[(row[2] - row[1]).total_seconds() for row in rows],
        run=[(row[4] or 0) / 1000 for row in rows],
        in_worker=[(row[3] - row[2]).total_seconds() for row in rows],
        paced_wait=[(row[2] - row[1]).total_seconds() for row in paced_rows],
        paced_latency=[(row[3] - row[1]).total_seconds() for row in paced_rows],
    )
