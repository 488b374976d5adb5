"""Throughput with 1, 2 and 3 worker hosts (SPEC §17), and how long a lost message waits.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/hosts.py
    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/hosts.py --recovery

Each host is a production-like `qcluster` (DEBUG off, one worker) with its own data
directory and module cache, on the run's PostgreSQL and a throwaway redis-server, as in
tests/test_distributed.py. A backlog of echo tasks is queued before the hosts start; the
figure is tasks settled per second from their start until the last is final.

`--recovery` measures the time a message lost with Redis waits before recovery re-sends
it, with the real schedule (django-q2 runs recovery once a minute) and REQUEUE_AFTER_SECONDS
as configured: Redis is restarted with the backlog in it, then one host starts.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# isort: split
from benchmarks.common import (  # sets Django up
    RUN_ID,
    audit,
    database_prepare,
    echo_agent,
    production_env,
    table,
)

# isort: split
from django.conf import settings
from django_q.conf import Conf

from marketplace.models import Task
from marketplace.services import task_submit
from tests.hosts import Host
from tests.rediscluster import RedisServer

TASKS = int(os.environ.get("BENCH_HOST_TASKS", "300"))
RECOVERY_TASKS = 20


def host_env() -> dict[str, str]:
    env = production_env()
    for name in ("DATA_DIR", "MEDIA_ROOT"):
        env.pop(name)  # each host has its own
    return env


def wait_all_final(ids: list[str], hosts: list[Host], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES).count() == len(ids):
            return time.monotonic()
        time.sleep(0.05)
    logs = "\n".join(f"--- {host.name}\n{host.output()}" for host in hosts)
    sys.exit(f"{len(ids)} tasks not final after {timeout:.0f}s; host logs:\n{logs}")


def run_hosts(count: int, redis: RedisServer, root: Path, requester, agent) -> list[str]:
    ids = [
        str(task_submit(requester=requester, agent=agent, input="hello", budget=50_000).pk)
        for _ in range(TASKS)
    ]
    hosts = [
        Host(f"host{i}", root, redis_url=redis.url, short_limits=False, extra_env=host_env())
        for i in range(count)
    ]
    started = time.monotonic()
    try:
        for host in hosts:
            host.start()
        ended = wait_all_final(ids, hosts, timeout=300)
    finally:
        for host in hosts:
            host.stop()
    first = Task.objects.filter(pk__in=ids).order_by("started_at").first()
    last = Task.objects.filter(pk__in=ids).order_by("-finished_at").first()
    assert first and last and first.started_at and last.finished_at
    warm = (last.finished_at - first.started_at).total_seconds()
    failed = Task.objects.filter(pk__in=ids).exclude(status=Task.Status.SUCCEEDED).count()
    wall = ended - started
    rates = [f"{TASKS / wall:.0f}", f"{TASKS / warm:.0f}"]
    return [str(count), str(TASKS), f"{wall:.1f}", *rates, str(failed)]


def throughput() -> None:
    _owner, requester, agent = echo_agent()
    rows = []
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="bench-hosts-") as root:
        Conf.ORM, Conf.REDIS = None, redis.url  # this process enqueues to Redis too
        for count in (1, 2, 3):
            rows.append(run_hosts(count, redis, Path(root) / f"run{count}", requester, agent))
        audit(lambda report: f"{len(rows) * TASKS} tasks")  # purges the queue: Redis still up
    table(
        f"Worker hosts on one PostgreSQL and Redis ({TASKS} echo tasks queued before the hosts "
        "start; one worker per host)",
        ["hosts", "tasks", "wall s", "tasks/s", "tasks/s warm", "failed"],
        rows,
    )
    print(
        f"These figures are bounded by this machine ({os.cpu_count()} CPUs shared by every host, "
        "PostgreSQL and Redis): on separate machines each host brings its own CPUs."
    )


def recovery() -> None:
    _owner, requester, agent = echo_agent()
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="bench-hosts-") as root:
        Conf.ORM, Conf.REDIS = None, redis.url
        ids = [
            str(task_submit(requester=requester, agent=agent, input="lost", budget=50_000).pk)
            for _ in range(RECOVERY_TASKS)
        ]
        queued = redis.queue_length(f"django_q:{settings.TASK_QUEUE}:q")
        lost_at = time.monotonic()
        redis.restart()
        env = host_env()
        host = Host("host0", Path(root), redis_url=redis.url, short_limits=False, extra_env=env)
        try:
            host.start()
            ended = wait_all_final(ids, [host], timeout=600)
        finally:
            host.stop()
        audit(lambda report: f"{RECOVERY_TASKS} tasks")
    print(
        f"\nRecovery with the real schedule (run {RUN_ID}): {queued} messages lost with a Redis "
        f"restart were re-sent and all {RECOVERY_TASKS} tasks final {ended - lost_at:.0f}s "
        f"later (REQUEUE_AFTER_SECONDS={settings.REQUEUE_AFTER_SECONDS}; recovery runs once a "
        "minute, when django-q2's scheduler, checked every 30s, finds it due)."
    )


if __name__ == "__main__":
    database_prepare()
    recovery() if "--recovery" in sys.argv else throughput()
