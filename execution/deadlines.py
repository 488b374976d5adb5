"""Deadlines (SPEC §19): a task still queued at its `deadline_at` is cancelled as
`deadline_passed`, with the full refund of any cancellation (`task_cancel`: the escrow or
the channel, the API key's give-back, a `task.cancelled` webhook) and no reputation event.

Two paths, so that a deadline holds whether the workers are idle or all busy:
- the worker that claims a task past its deadline cancels it instead of running it
  (`execution.services.task_execute`);
- the sweep below, every SWEEP_SECONDS, in a thread of each service-cluster worker
  process: it runs beside whatever job that process runs, and the task workers' backlog
  never delays it. One sweep at a time across the deployment (an advisory lock, taken only
  when something is overdue), and each task moves by `task_cancel`'s conditional UPDATE,
  so a claim or another sweep that comes first simply wins.

A task already running is not the sweep's: it finishes under its own timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from multiprocessing import parent_process
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.conf import Conf

from marketplace.errors import TaskStateConflict
from marketplace.models import Task
from marketplace.schedule_lock import once_across_hosts
from marketplace.services import task_cancel

log = logging.getLogger(__name__)

# How often the sweep looks: a task is cancelled within about this long after its deadline.
SWEEP_SECONDS = 1.0
# Tasks one sweep cancels at most; the next sweep takes the rest a second later.
SWEEP_BATCH = 500


def overdue_tasks() -> Any:
    """Queued tasks whose deadline has passed, the earliest deadline first (a partial index
    holds exactly the queued tasks with a deadline)."""
    return Task.objects.filter(
        status=Task.Status.QUEUED, deadline_at__isnull=False, deadline_at__lte=timezone.now()
    ).order_by("deadline_at")


def tasks_cancel_overdue(*, limit: int = SWEEP_BATCH) -> dict[str, int]:
    """Cancel up to `limit` overdue queued tasks, each in its own transaction: one that
    fails is logged, counted in `errors` and tried again by the next sweep."""
    counts = {"cancelled": 0, "errors": 0}
    found = overdue_tasks().only("pk", "budget", "requester_id", "api_key_id")[:limit]
    for task in found:
        try:
            task_cancel(task=task, reason=Task.FailureReason.DEADLINE_PASSED)
            counts["cancelled"] += 1
        except TaskStateConflict:
            pass  # a worker claimed it first (and cancels it), or it was cancelled meanwhile
        except Exception:
            log.exception("the deadline sweep could not cancel task %s; tried again", task.pk)
            counts["errors"] += 1
    return counts


@once_across_hosts("deadline sweep")
def _sweep_locked() -> dict[str, int]:
    return tasks_cancel_overdue()


def deadlines_sweep() -> dict[str, int]:
    """One sweep: a single indexed read when nothing is overdue (the usual case), the lock
    and the cancellations only when something is."""
    if not overdue_tasks().exists():
        return {"cancelled": 0, "errors": 0}
    return _sweep_locked()


def deadline_sweeper_start(**kwargs: Any) -> threading.Thread | None:
    """q2's `post_spawn` receiver: in each worker process of the service cluster, sweep
    every SWEEP_SECONDS while the cluster's sentinel lives (threads don't survive `fork()`,
    so the thread is started in the worker itself, like the heartbeat)."""
    if Conf.CLUSTER_NAME != settings.SERVICE_QUEUE:
        return None
    sentinel = parent_process()
    if sentinel is None or sentinel.pid != os.getppid():
        return None
    thread = threading.Thread(
        target=_sweep_forever, args=(os.getppid(),), name="deadline-sweep", daemon=True
    )
    thread.start()
    return thread


def _sweep_forever(sentinel_pid: int) -> None:
    # An orphaned worker (its sentinel gone) stops sweeping, as it stops beating.
    while os.getppid() == sentinel_pid:
        started = time.monotonic()
        try:
            deadlines_sweep()
        except Exception:
            log.exception("the deadline sweep failed; it runs again in %ss", SWEEP_SECONDS)
            connection.close()  # a broken connection is opened afresh by the next sweep
        time.sleep(max(0.0, SWEEP_SECONDS - (time.monotonic() - started)))
    connection.close()
