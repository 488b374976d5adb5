"""Scheduled jobs run once at a time across every host (SPEC §17).

django-q2's scheduler already makes one task per tick when several clusters share the
database: it reads due schedules with SELECT … FOR UPDATE and moves `next_run` on in the
same transaction, so a second cluster waiting on the row lock re-reads it, finds it no
longer due and skips it (tests/test_distributed_schedules.py shows it). What it does not
stop is two runs of one job at once: a message the ORM broker delivers again after `retry`,
an operator's manual run, or a run still going when the next tick fires on another host.
The jobs are safe to repeat (conditional UPDATEs), but a concurrent duplicate only burns
database time and re-sends the same messages, so each job takes a PostgreSQL advisory lock
for its whole run and a second comer skips. SQLite means one host: no lock needed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from typing import ParamSpec

from django.db import connection

P = ParamSpec("P")
log = logging.getLogger(__name__)

SKIPPED = {"skipped": 1}
Job = Callable[P, dict[str, int]]


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (same on every host)."""
    digest = hashlib.sha256(f"schedule:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def once_across_hosts(name: str) -> Callable[[Job[P]], Job[P]]:
    """Run the decorated job only if no other process of the deployment is running it; the
    skipped run returns `{"skipped": 1}` for the worker's log."""

    def decorate(job: Job[P]) -> Job[P]:
        @functools.wraps(job)
        def run(*args: P.args, **kwargs: P.kwargs) -> dict[str, int]:
            if connection.vendor != "postgresql":
                return job(*args, **kwargs)
            key = lock_key(name)
            # A session lock, not a transaction one: the job commits many transactions.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
                (acquired,) = cursor.fetchone()
            if not acquired:
                log.info("scheduled job %s is already running elsewhere; skipped", name)
                return dict(SKIPPED)
            try:
                return job(*args, **kwargs)
            finally:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
                except Exception:
                    # The session is broken: closing it is what releases the lock then.
                    log.exception("could not unlock scheduled job %s; closing the connection", name)
                    connection.close()

        return run

    return decorate
