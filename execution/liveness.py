"""Liveness by progress, not by a thread (SPEC §18).

django-q2 passes messages between a cluster's processes through multiprocessing queues. A
process SIGKILLed while it holds one of their locks (the kernel's OOM killer does exactly
this) leaves the lock held for good: the cluster then runs nothing, while every process of it
stays alive and the heartbeat thread of each worker — which is not its worker loop — goes on
beating (upstream django-q2 #23 and #339, Koed00/django-q #200 and #394, all open). A fresh
heartbeat proves only that a thread runs.

So each worker also reports progress: when it last started a job (or that it is busy with one,
within q2's timeout), and since when messages have waited in its cluster's own queue, between
the pusher and the workers. A cluster is **stalled** when work it could take has waited longer
than WORKER_STALL_SECONDS — in its own queue, or in the broker, unclaimed — and it has started
nothing in that time. /healthz and /metrics say so per host, and the host's supervisor
(`manage.py supervise`) kills the whole cluster and starts it again; leases and recovery
finish what it held.

The worker side lives at the top of this module (q2 signals, in each worker process); the
judgement below it (any process: the web's /healthz, the supervisor).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from django.conf import settings
from django.db.models import Min
from django.utils import timezone

from execution.models import WorkerHeartbeat

log = logging.getLogger(__name__)

# --- in each worker process -------------------------------------------------------------


class _Progress:
    """This worker process's own record (wall-clock seconds), read by its heartbeat thread."""

    last_started: float | None = None
    busy_since: float | None = None
    # The cluster's task queue (q2's multiprocessing queue between its pusher and its
    # workers), found once from the worker loop that sent `post_spawn`.
    task_queue: Any = None


PROGRESS = _Progress()


def job_started(**kwargs: Any) -> None:
    """q2's `pre_execute` receiver: this worker starts a job."""
    PROGRESS.last_started = PROGRESS.busy_since = time.time()


def job_finished(**kwargs: Any) -> None:
    """q2's `post_execute_in_worker` receiver: the job is done (its result is being sent)."""
    PROGRESS.busy_since = None


def worker_progress(now: float) -> float | None:
    """When this worker last made progress: now while a job runs within q2's timeout (a job
    past it is stuck, not working), else when it last started one; None if it never did."""
    busy = PROGRESS.busy_since
    if busy is not None and now - busy < settings.Q_TIMEOUT + 5:
        return now
    return PROGRESS.last_started


def queue_bind(depth: int = 12) -> bool:
    """Find the cluster's task queue in the worker loop's frame (q2's `worker(task_queue,
    result_queue, …)`, which sends `post_spawn` before it reads the queue). Called from that
    receiver; False if q2's loop looks different (then only the broker shows waiting work)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        if frame.f_code.co_name == "worker" and "task_queue" in frame.f_locals:
            PROGRESS.task_queue = frame.f_locals["task_queue"]
            return True
        frame = frame.f_back
    log.warning("q2's worker loop not found: the cluster's own queue is not watched")
    return False


def queue_depth() -> int | None:
    """Messages waiting in the cluster's own queue. Read without the counter's lock: a
    process killed inside the counter's update holds that lock for good too."""
    queue = PROGRESS.task_queue
    if queue is None:
        return None
    try:
        return int(queue.size.count.get_obj().value)
    except Exception:  # a queue of another shape: don't guess
        return None


def epoch(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


# --- judging ----------------------------------------------------------------------------


def stall_after() -> timedelta:
    return timedelta(seconds=settings.WORKER_STALL_SECONDS)


def broker_waiting_since(queue: str, now: datetime) -> datetime | None:
    """Since when work has waited in the broker for `queue`, unclaimed by any cluster.

    The ORM broker stamps each message (its `lock`) when it is sent and again when a pusher
    takes it, until `retry` seconds later: a message whose stamp has passed is waiting, since
    then. Redis keeps no times: while its list holds messages, the oldest queued task (task
    queue) or the oldest webhook delivery overdue for its message (service queue) stands in.
    """
    if "orm" in settings.Q_CLUSTER:
        from django_q.models import OrmQ

        found = OrmQ.objects.filter(key=queue, lock__lte=now).aggregate(since=Min("lock"))
        return found["since"]
    from marketplace.queues import broker_for

    if not broker_for(queue).queue_size():
        return None
    if queue == settings.TASK_QUEUE:
        from marketplace.models import Task

        found = Task.objects.filter(status=Task.Status.QUEUED).aggregate(since=Min("queued_at"))
        return found["since"]
    from marketplace.webhooks.models import WebhookDelivery

    found = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
    ).aggregate(since=Min("next_attempt_at"))
    return found["since"]


@dataclass(frozen=True)
class ClusterState:
    """One cluster's last report, judged: stale (silent), stalled (silent in its work)."""

    row: WorkerHeartbeat
    age_seconds: float
    stale: bool
    stopped: bool
    # How long work it could take has waited, and how long since it last started any.
    waiting_seconds: float | None
    idle_seconds: float
    stalled: bool

    @property
    def live(self) -> bool:
        return not (self.stale or self.stopped)

    def as_json(self) -> dict[str, Any]:
        row = self.row
        return {
            "cluster": row.cluster,
            "pid": row.pid,
            "started_at": row.started_at.isoformat(),
            "last_seen": row.last_seen.isoformat(),
            "age_seconds": int(self.age_seconds),
            "stale": self.stale,
            "stopped": self.stopped,
            "idle_seconds": int(self.idle_seconds),
            "waiting_seconds": None if self.waiting_seconds is None else int(self.waiting_seconds),
            "stalled": self.stalled,
        }


def cluster_judge(
    row: WorkerHeartbeat, *, now: datetime, broker_since: datetime | None
) -> ClusterState:
    """Judge one cluster by its row and what waits for its queue in the broker."""
    age = max(0.0, (now - row.last_seen).total_seconds())
    stale = age > settings.WORKER_STALE_SECONDS
    stopped = row.stopped_at is not None
    progress = max(filter(None, (row.progress_at, row.started_at)))
    idle = max(0.0, (now - progress).total_seconds())
    waits = [since for since in (row.queue_waiting_since, broker_since) if since is not None]
    waiting = max(0.0, (now - min(waits)).total_seconds()) if waits else None
    limit = stall_after().total_seconds()
    stalled = not (stale or stopped) and waiting is not None and waiting > limit and idle > limit
    return ClusterState(
        row=row,
        age_seconds=age,
        stale=stale,
        stopped=stopped,
        waiting_seconds=waiting,
        idle_seconds=idle,
        stalled=stalled,
    )


def clusters_judge(
    rows: list[WorkerHeartbeat], *, now: datetime | None = None
) -> list[ClusterState]:
    """Judge every row; the broker is asked once per queue that has a live cluster."""
    now = now or timezone.now()
    fresh = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    queues = {row.cluster for row in rows if row.stopped_at is None and row.last_seen >= fresh}
    waiting = {queue: broker_waiting_since(queue, now) for queue in sorted(queues)}
    return [cluster_judge(row, now=now, broker_since=waiting.get(row.cluster)) for row in rows]


def instance_verdict(instance: str, *, now: datetime | None = None) -> str:
    """What the supervisor needs to know of the cluster it launched as `instance`:
    `starting` (no report yet), `stale`, `stalled` or `ok`."""
    now = now or timezone.now()
    row = (
        WorkerHeartbeat.objects.filter(instance=instance, stopped_at__isnull=True)
        .order_by("-last_seen")
        .first()
    )
    if row is None:
        return "starting"
    [state] = clusters_judge([row], now=now)
    if state.stale:
        return "stale"
    return "stalled" if state.stalled else "ok"


def instance_stopped(instance: str) -> int:
    """The supervisor stopped (or killed) this launch: its row is no longer judged, so that
    /healthz shows the stall over as soon as the cluster is gone."""
    return WorkerHeartbeat.objects.filter(instance=instance, stopped_at__isnull=True).update(
        stopped_at=timezone.now()
    )
