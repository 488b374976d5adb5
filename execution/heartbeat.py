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
from django.db.models import Count, Max, Q
from django.utils import timezone

from execution.models import WorkerHeartbeat

log = logging.getLogger(__name__)
# Rows of clusters that died stay a day for the admin, then the next worker to start drops them.
KEEP = timedelta(days=1)


def heartbeat_write(*, sentinel: str, host: str, pid: int, cluster: str) -> None:
    """Insert or refresh one cluster's row in one statement (INSERT … ON CONFLICT UPDATE)."""
    now = timezone.now()
    row = WorkerHeartbeat(
        sentinel=sentinel, host=host, pid=pid, cluster=cluster, started_at=now, last_seen=now
    )
    WorkerHeartbeat.objects.bulk_create(
        [row], update_conflicts=True, unique_fields=["sentinel"], update_fields=["last_seen"]
    )


def heartbeat_start(**kwargs: Any) -> threading.Thread | None:
    """q2's `post_spawn` receiver (in a freshly forked worker): beat while the sentinel lives."""
    sentinel = parent_process()
    if sentinel is None or sentinel.pid != os.getppid():
        return None
    thread = threading.Thread(
        target=_beat, args=(sentinel.name, os.getppid()), name="heartbeat", daemon=True
    )
    thread.start()
    return thread


def _beat(sentinel: str, pid: int) -> None:
    host, cluster = socket.gethostname(), settings.Q_CLUSTER["name"]
    pruned = False
    # An orphaned worker is re-parented (to init or a subreaper): its sentinel is gone.
    while os.getppid() == pid:
        try:
            if not pruned:
                WorkerHeartbeat.objects.filter(last_seen__lt=timezone.now() - KEEP).delete()
                pruned = True
            heartbeat_write(sentinel=sentinel, host=host, pid=pid, cluster=cluster)
        except Exception:  # the database may be away for a while; the next beat tries again
            log.warning("worker heartbeat not written", exc_info=True)
        finally:
            # A connection held by every worker's thread would double the cluster's share of
            # the database's connections; reconnecting every few seconds costs little.
            connection.close()
        time.sleep(settings.WORKER_HEARTBEAT_SECONDS)
    log.warning("sentinel %s (pid %s) is gone: this worker stops its heartbeat", sentinel, pid)


@dataclass(frozen=True)
class WorkerStatus:
    """What the heartbeats say: how many clusters are alive, and since when none reported."""

    live: int
    last_seen: datetime | None
    checked_at: datetime = field(default_factory=timezone.now)

    @property
    def stale(self) -> bool:
        return self.live == 0

    @property
    def silent_seconds(self) -> int | None:
        """Seconds since the last heartbeat of any cluster; None if none is on record."""
        if self.last_seen is None:
            return None
        return max(0, int((self.checked_at - self.last_seen).total_seconds()))


def worker_status() -> WorkerStatus:
    """Clusters heard from within WORKER_STALE_SECONDS, in one query."""
    now = timezone.now()
    fresh = Q(last_seen__gte=now - timedelta(seconds=settings.WORKER_STALE_SECONDS))
    found = WorkerHeartbeat.objects.aggregate(
        live=Count("pk", filter=fresh), last_seen=Max("last_seen")
    )
    return WorkerStatus(live=found["live"], last_seen=found["last_seen"], checked_at=now)


@dataclass(frozen=True)
class ClusterRow:
    """One cluster's last heartbeat, as /healthz, the admin and /metrics show it."""

    host: str
    cluster: str
    pid: int
    sentinel: str
    started_at: datetime
    last_seen: datetime
    age_seconds: float
    stale: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "age_seconds": int(self.age_seconds),
            "stale": self.stale,
        }


def cluster_rows(now: datetime | None = None) -> list[ClusterRow]:
    """Every cluster on record (the dead ones stay a day), by host, freshest first."""
    now = now or timezone.now()
    rows = []
    for beat in WorkerHeartbeat.objects.order_by("host", "-last_seen"):
        age = max(0.0, (now - beat.last_seen).total_seconds())
        rows.append(
            ClusterRow(
                host=beat.host,
                cluster=beat.cluster,
                pid=beat.pid,
                sentinel=beat.sentinel,
                started_at=beat.started_at,
                last_seen=beat.last_seen,
                age_seconds=age,
                stale=age > settings.WORKER_STALE_SECONDS,
            )
        )
    return rows


def hosts_status(now: datetime | None = None) -> list[dict[str, Any]]:
    """The clusters grouped by host, for /healthz: each host's freshest age and its clusters."""
    hosts: dict[str, list[ClusterRow]] = {}
    for row in cluster_rows(now):
        hosts.setdefault(row.host, []).append(row)
    return [
        {
            "host": host,
            "age_seconds": int(min(row.age_seconds for row in rows)),
            "stale": all(row.stale for row in rows),
            "clusters": [row.as_json() for row in rows],
        }
        for host, rows in hosts.items()
    ]
