"""Waiting for a task to be final (`Prefer: wait=N`, SPEC §19), without polling the database.

On PostgreSQL each process has one listener: a thread with a connection of its own that
LISTENs on `task_final` and wakes the requests waiting in this process for the task a
notification names. The notification comes from the statement that makes a waited-for
task final (a trigger on the task table, migration marketplace 0019: the settlement, a
cancellation, a refund, whichever does it), when its transaction commits. A waiting
request makes a fixed number of statements whatever it waits for: marking the task as
waited for (which reads its status), reading its status when woken, reading the task at
the end.

Why one listener per process rather than a connection per waiting request: under gunicorn
with threads (`--worker-class gthread`), every waiting request holds a thread and its own
idle database connection already; a LISTEN connection each would double the connections
a busy process holds (against the server's `max_connections`), and open and close one per
request. One listener costs one connection per process, opened once, and reconnects by
itself; while it is down, the waiting requests re-read their task once a second instead.

No lost wake-up: a request registers, and the listener is LISTENing, before the request
marks the task (an UPDATE that returns its status): a settlement that commits before the
mark is seen by it, one that commits after it sees the mark and notifies.

On SQLite (one machine, `make run`) the request reads the task's status every
POLL_SECONDS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import connection, connections

from marketplace.env import database_from_url
from marketplace.models import Task

log = logging.getLogger(__name__)

CHANNEL = "task_final"  # the trigger's channel (migration marketplace 0019)
MAX_SECONDS = 60  # the longest wait a request may ask for
POLL_SECONDS = 0.25  # SQLite: how often a waiting request reads its task's status
# PostgreSQL, while the listener is reconnecting: how often waiting requests read instead.
FALLBACK_POLL_SECONDS = 1.0
# How long a request waits for the process's listener to connect the first time.
CONNECT_SECONDS = 2.0
# With no notification for this long, the listener checks that its connection still works.
HEALTH_SECONDS = 30.0


class WaitersFull(Exception):
    """This process already holds TASK_WAITERS_PER_PROCESS waiting requests: the caller
    answers at once instead (`Prefer: wait` is not applied)."""


class _Waiters:
    """The requests waiting in this process: task id → their events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, set[threading.Event]] = defaultdict(set)
        self.count = 0

    def add(self, task_id: str) -> threading.Event:
        event = threading.Event()
        with self.lock:
            if self.count >= settings.TASK_WAITERS_PER_PROCESS:
                raise WaitersFull()
            self.count += 1
            self.events[task_id].add(event)
        return event

    def remove(self, task_id: str, event: threading.Event) -> None:
        with self.lock:
            self.count -= 1
            waiting = self.events.get(task_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self.events[task_id]

    def wake(self, task_id: str) -> None:
        with self.lock:
            woken = list(self.events.get(task_id, ()))
        for event in woken:
            event.set()

    def wake_all(self) -> None:
        with self.lock:
            woken = [event for events in self.events.values() for event in events]
        for event in woken:
            event.set()


class _Listener:
    """This process's LISTEN connection, in a daemon thread started on first use."""

    def __init__(self, waiters: _Waiters) -> None:
        self.waiters = waiters
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def ensure(self) -> bool:
        """Start the thread if this process has none; True once it is LISTENing."""
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.stopping.clear()
                self.thread = threading.Thread(target=self._run, name="task-listener", daemon=True)
                self.thread.start()
        return self.connected.wait(CONNECT_SECONDS)

    def stop(self) -> None:
        """Close the connection and end the thread (within about a second)."""
        with self.lock:
            thread, self.thread = self.thread, None
            self.stopping.set()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with psycopg.connect(**_listen_params(), autocommit=True) as conn:
                    # psycopg keeps notifications that arrive during another statement (the
                    # health check) and yields them at the next `notifies()`.
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self.waiters.wake_all()  # anything may have been missed while down
                    backoff = 0.5
                    checked = time.monotonic()
                    while not self.stopping.is_set():
                        # A select() on the socket, no statement: idle costs the server nothing.
                        for notify in conn.notifies(timeout=1.0):
                            self.waiters.wake(notify.payload)
                        if time.monotonic() - checked >= HEALTH_SECONDS:
                            conn.execute("SELECT 1")
                            checked = time.monotonic()
            except Exception:
                log.warning("the task listener lost its connection; reconnecting", exc_info=True)
            self.connected.clear()
            self.waiters.wake_all()  # they read their tasks once a second meanwhile
            if not self.stopping.wait(backoff):
                backoff = min(backoff * 2, 10.0)


def _listen_params() -> dict[str, Any]:
    """Connection parameters for the listener: LISTEN_DATABASE_URL when set (a direct
    connection, where the application's goes through a pooler in transaction mode, which
    cannot keep a LISTEN), else the default database's."""
    if settings.LISTEN_DATABASE_URL:
        database = database_from_url(settings.LISTEN_DATABASE_URL)
        params = {"dbname": database["NAME"], **database["OPTIONS"]}
        for key, name in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
            if database[key]:
                params[name] = database[key]
        if database["PORT"]:
            params["port"] = database["PORT"]
    else:
        params = connections["default"].get_connection_params()
    for django_only in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(django_only, None)
    return params


_waiters = _Waiters()
_listener = _Listener(_waiters)
_pid = os.getpid()


def _process_state() -> tuple[_Waiters, _Listener]:
    """This process's waiters and listener (a forked child starts with its own: threads
    don't survive `fork()`)."""
    global _waiters, _listener, _pid
    if _pid != os.getpid():
        _waiters = _Waiters()
        _listener = _Listener(_waiters)
        _pid = os.getpid()
    return _waiters, _listener


def listener_stop() -> None:
    """Stop this process's listener, if it runs (tests do, before their database goes)."""
    _process_state()[1].stop()


FINAL = tuple(str(status) for status in Task.FINAL_STATUSES)


def _mark(task_id: str) -> str | None:
    """Mark the task as waited for, and read its status, in one statement (None: no such
    task). From here on, the statement that makes it final notifies."""
    table = connection.ops.quote_name(Task._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET wake_waiters = true WHERE id = %s RETURNING status",  # noqa: S608
            [task_id],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def _status(task_id: str) -> str | None:
    return Task.objects.filter(pk=task_id).values_list("status", flat=True).first()


def _final_read(task_id: str) -> Task:
    return Task.objects.select_related("agent", "binary", "receipt", "escrow").get(pk=task_id)


def task_wait(task_id: Any, seconds: float) -> Task:
    """The task once it is final, or as it stands after `seconds` (at most MAX_SECONDS).

    Raises WaitersFull when this process already holds TASK_WAITERS_PER_PROCESS waiting
    requests, and Task.DoesNotExist for an unknown id. Call it outside any transaction:
    the settlement must be able to commit meanwhile."""
    key = str(uuid.UUID(str(task_id)))
    until = time.monotonic() + max(0.0, min(float(seconds), MAX_SECONDS))
    waiters, listener = _process_state()
    event = waiters.add(key)
    try:
        if connection.vendor == "postgresql":
            listener.ensure()  # LISTENing before the task is read: no lost wake-up
            # A wake-up from before the mark (the listener's first connect) is no news: the
            # mark reads the status after it.
            event.clear()
            status = _mark(key)
        else:
            status = _status(key)
        if status is None:
            raise Task.DoesNotExist(f"no task {key}")
        while status not in FINAL:
            left = until - time.monotonic()
            if left <= 0:
                break
            if connection.vendor != "postgresql":
                every = POLL_SECONDS
            else:
                every = left if listener.connected.is_set() else FALLBACK_POLL_SECONDS
            woken = event.wait(min(left, every))
            if not woken and time.monotonic() >= until:
                break  # the task as it stands is read once, below
            event.clear()  # before the read: a notification after it sets it again
            status = _status(key)
    finally:
        waiters.remove(key, event)
    return _final_read(key)
