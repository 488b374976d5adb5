"""Each running qcluster says it is alive, so that a dead one shows (SPEC §13).

The beat runs in a daemon thread of every q2 worker process, started by q2's `post_spawn`
signal: threads don't survive `fork()`, and the workers are forked by the cluster's sentinel,
which offers no hook of its own. The row is keyed by that sentinel (the process that guards
the cluster, reincarnates its workers and runs the schedules, recovery among them), and a
worker stops beating as soon as its sentinel is gone: the orphaned workers of a killed
sentinel may still take messages, but nothing guards them or runs recovery, so that cluster
counts as dead.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing import parent_process
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from django_q.conf import Conf

from execution import liveness
from execution.models import WorkerHeartbeat

log = logging.getLogger(__name__)
# Rows of clusters that died stay a day for the admin, then the next worker to start drops them.
KEEP = timedelta(days=1)


# The environment variable in which the supervisor names each launch of a cluster.
INSTANCE_ENV = "SUPERVISED_CLUSTER"
# How often a worker's heartbeat thread looks at its cluster's queue and its own progress.
TICK_SECONDS = 1.0


def heartbeat_write(
    *,
    sentinel: str,
    host: str,
    pid: int,
    cluster: str,
    instance: str = "",
    progress_at: datetime | None = None,
    queue_waiting_since: datetime | None = None,
) -> None:
    """Insert or refresh one cluster's row (INSERT … ON CONFLICT UPDATE), then move its
    progress forward if this worker's is newer: the cluster's workers share the row, and
    progress is the latest of theirs."""
    now = timezone.now()
    row = WorkerHeartbeat(
        sentinel=sentinel,
        host=host,
        pid=pid,
        cluster=cluster,
        instance=instance,
        started_at=now,
        last_seen=now,
        progress_at=progress_at,
        queue_waiting_since=queue_waiting_since,
    )
    WorkerHeartbeat.objects.bulk_create(
        [row],
        update_conflicts=True,
        unique_fields=["sentinel"],
        update_fields=["last_seen", "queue_waiting_since"],
    )
    if progress_at is not None:
        WorkerHeartbeat.objects.filter(sentinel=sentinel).filter(
            Q(progress_at__isnull=True) | Q(progress_at__lt=progress_at)
        ).update(progress_at=progress_at)


def heartbeat_start(**kwargs: Any) -> threading.Thread | None:
    """q2's `post_spawn` receiver (in a freshly forked worker): beat while the sentinel lives."""
    sentinel = parent_process()
    if sentinel is None or sentinel.pid != os.getppid():
        return None
    liveness.queue_bind()
    thread = threading.Thread(
        target=_beat, args=(sentinel.name, os.getppid()), name="heartbeat", daemon=True
    )
    thread.start()
    return thread


@dataclass
class _Report:
    """What this worker last wrote, and since when the cluster's own queue has held work."""

    written_at: float | None = None
    waiting_since: float | None = None
    written_waiting: float | None = None


def _beat(sentinel: str, pid: int) -> None:
    # The queue this cluster serves (tasks or service), as q2 resolved it for this process.
    host, cluster = socket.gethostname(), Conf.CLUSTER_NAME
    instance = os.environ.get(INSTANCE_ENV, "")
    report = _Report()
    pruned = False
    # An orphaned worker is re-parented (to init or a subreaper): its sentinel is gone.
    while os.getppid() == pid:
        now, clock = time.time(), time.monotonic()
        depth = liveness.queue_depth()
        report.waiting_since = (report.waiting_since or now) if depth else None
        # A beat is due every WORKER_HEARTBEAT_SECONDS; work starting or ceasing to wait in
        # the cluster's queue is written at once, so that a stall is timed from its start.
        due = (
            report.written_at is None
            or clock - report.written_at >= settings.WORKER_HEARTBEAT_SECONDS
        )
        if due or report.waiting_since != report.written_waiting:
            try:
                if not pruned:
                    WorkerHeartbeat.objects.filter(last_seen__lt=timezone.now() - KEEP).delete()
                    pruned = True
                heartbeat_write(
                    sentinel=sentinel,
                    host=host,
                    pid=pid,
                    cluster=cluster,
                    instance=instance,
                    progress_at=liveness.epoch(liveness.worker_progress(now)),
                    queue_waiting_since=liveness.epoch(report.waiting_since),
                )
                report.written_at, report.written_waiting = clock, report.waiting_since
            except Exception:  # the database may be away for a while; the next beat tries again
                log.warning("worker heartbeat not written", exc_info=True)
            finally:
                # A connection held by every worker's thread would double the cluster's share
                # of the database's connections; reconnecting every few seconds costs little.
                connection.close()
        time.sleep(TICK_SECONDS)
    log.warning("sentinel %s (pid %s) is gone: this worker stops its heartbeat", sentinel, pid)


@dataclass(frozen=True)
class WorkerStatus:
    """What the heartbeats say: how many clusters are alive, since when none reported, which
    hosts are stalled (execution.liveness) and which queues no live cluster serves."""

    live: int
    last_seen: datetime | None
    stalled_hosts: tuple[str, ...] = ()
    unserved: tuple[str, ...] = ()
    checked_at: datetime = field(default_factory=timezone.now)

    @property
    def stale(self) -> bool:
        """No live cluster at all, or none for one of the queues: work would wait forever."""
        return self.live == 0 or bool(self.unserved)

    @property
    def stalled(self) -> bool:
        return bool(self.stalled_hosts)

    @property
    def state(self) -> str:
        """What /healthz reports as `worker`: ok, stale or stalled."""
        if self.stalled:
            return "stalled"
        return "stale" if self.stale else "ok"

    @property
    def stall_seconds(self) -> int:
        return settings.WORKER_STALL_SECONDS

    @property
    def silent_seconds(self) -> int | None:
        """Seconds since the last heartbeat of any cluster; None if none is on record."""
        if self.last_seen is None:
            return None
        return max(0, int((self.checked_at - self.last_seen).total_seconds()))


def cluster_states(now: datetime | None = None) -> list[liveness.ClusterState]:
    """Every cluster on record (the dead ones stay a day), judged, by host, freshest first:
    one read of the heartbeats, and one of the broker per queue a live cluster serves."""
    now = now or timezone.now()
    rows = list(WorkerHeartbeat.objects.order_by("host", "-last_seen"))
    return liveness.clusters_judge(rows, now=now)


def status_of(states: list[liveness.ClusterState], now: datetime) -> WorkerStatus:
    live = [state for state in states if state.live]
    served = {state.row.cluster for state in live}
    return WorkerStatus(
        live=len(live),
        last_seen=max((state.row.last_seen for state in states), default=None),
        stalled_hosts=tuple(sorted({state.row.host for state in live if state.stalled})),
        unserved=tuple(queue for queue in queues_served() if live and queue not in served),
        checked_at=now,
    )


def queues_served() -> tuple[str, ...]:
    """The queues a deployment's workers must serve: task runs, and the service queue."""
    return (settings.TASK_QUEUE, settings.SERVICE_QUEUE)


def worker_status() -> WorkerStatus:
    """The workers as a whole (clusters heard from within WORKER_STALE_SECONDS)."""
    now = timezone.now()
    return status_of(cluster_states(now), now)


def hosts_status(states: list[liveness.ClusterState]) -> list[dict[str, Any]]:
    """The clusters grouped by host, for /healthz: each host's freshest age, whether it is
    stale (every cluster silent) or stalled (a live cluster stalled), and its clusters."""
    hosts: dict[str, list[liveness.ClusterState]] = {}
    for state in states:
        hosts.setdefault(state.row.host, []).append(state)
    return [
        {
            "host": host,
            "age_seconds": int(min(state.age_seconds for state in rows)),
            "stale": not any(state.live for state in rows),
            "stalled": any(state.live and state.stalled for state in rows),
            "clusters": [state.as_json() for state in rows],
        }
        for host, rows in hosts.items()
    ]
