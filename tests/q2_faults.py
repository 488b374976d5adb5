"""Faults planted in real q2 worker processes, sent to them as jobs by the tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from execution import liveness


def die_holding_the_queue_lock(once: str) -> None:
    """Take the cluster's task-queue read lock (as `Queue.get` does) and die with it held,
    as a worker the OOM killer SIGKILLs inside `Queue.get` does (django-q2 #23): every other
    worker of the cluster, and the one the sentinel starts instead of this one, then waits
    on that lock for good.

    Once: the file `once` marks that it happened, so the message, which no monitor will ever
    acknowledge and the broker hands out again, does nothing the next time."""
    marker = Path(once)
    if marker.exists():
        return
    marker.touch()
    queue = liveness.PROGRESS.task_queue
    assert queue is not None, "the worker loop's queue was not found"
    # An idle sibling holds the lock while it waits for a message: run this on a cluster
    # with one worker, or it waits here until a message comes.
    assert queue._rlock.acquire(timeout=2), "another worker holds the read lock"
    os.kill(os.getpid(), signal.SIGKILL)
