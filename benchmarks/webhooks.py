"""Webhook and quote figures on PostgreSQL: how long after a task settles its webhook
arrives, and how long a quote takes with 10⁵ tasks in the table.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/webhooks.py [--tasks N]

Webhook latency is measured from the task's `finished_at` (set in the settlement
transaction) to the moment a real HTTP receiver on 127.0.0.1 has read the request, with
real `qcluster` workers (production limits): one task at a time, then a backlog of N tasks
on two workers, where the events queue behind the runs. Quotes are timed as the selector
and through the API once 10⁵ succeeded tasks sit in the table, against the query a quote
would need without the per-binary ring of samples. Prints tables; asserts nothing about
timings. Ends with the ledger audit.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported first: it refuses anything but PostgreSQL and sets Django up.
from benchmarks.common import (
    INPUT,
    audit,
    database_prepare,
    echo_agent,
    percentiles,
    platform,
    table,
)

# isort: split
from django.db import connection
from django.db.models.functions import Length
from django.test import Client
from rest_framework.authtoken.models import Token

from marketplace.models import Agent, Task
from marketplace.quotes import quote_for
from marketplace.services import task_submit
from marketplace.webhooks.models import WebhookAttempt, WebhookDelivery
from marketplace.webhooks.outbox import webhook_create
from tests.webhook_receiver import Receiver
from tests.workers import Cluster

BUDGET = 500_000
BULK_TASKS = 100_000


def latency_row(label: str, seconds: list[float]) -> list[str]:
    p50, p95, p99 = percentiles(seconds)
    return [
        label,
        str(len(seconds)),
        *(f"{value * 1000:.1f}" for value in (p50, p95, p99, max(seconds))),
    ]


def arrivals(receiver: Receiver) -> dict[str, float]:
    """Task id → when its event first arrived."""
    arrived: dict[str, float] = {}
    for got in list(receiver.received):
        arrived.setdefault(_task_id(got.body), got.at)
    return arrived


def wait_for_events(
    receiver: Receiver, tasks: list[Task], cluster: Cluster, timeout: float
) -> None:
    wanted = {str(task.pk) for task in tasks}
    deadline = time.monotonic() + timeout
    while not wanted <= arrivals(receiver).keys():
        if time.monotonic() > deadline:
            missing = len(wanted - arrivals(receiver).keys())
            sys.exit(f"{missing} webhooks missing; worker log:\n{cluster.output()}")
        time.sleep(0.01)


def latencies(receiver: Receiver, tasks: list[Task]) -> list[float]:
    """Seconds from each task's settlement to its webhook's (first) arrival."""
    arrived = arrivals(receiver)
    finished = dict(
        Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("pk", "finished_at")
    )
    return [arrived[str(pk)] - moment.timestamp() for pk, moment in finished.items() if moment]


def breakdown(tasks: list[Task]) -> tuple[list[float], list[float]]:
    """Per event: settlement → its first attempt began (queued), and the POST itself."""
    started = dict(
        WebhookAttempt.objects.filter(
            number=1, delivery__object_id__in=[str(t.pk) for t in tasks]
        ).values_list("delivery__object_id", "attempted_at")
    )
    posts = list(
        WebhookAttempt.objects.filter(
            number=1, delivery__object_id__in=[str(t.pk) for t in tasks]
        ).values_list("duration_ms", flat=True)
    )
    queued = [
        (started[str(pk)] - finished).total_seconds()
        for pk, finished in Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list(
            "pk", "finished_at"
        )
        if str(pk) in started and finished is not None
    ]
    return queued, [ms / 1000 for ms in posts]


def _task_id(body: bytes) -> str:
    return json.loads(body)["data"]["task"]["id"]


def one_at_a_time(
    requester: Any, agent: Agent, receiver: Receiver, count: int
) -> tuple[list[float], list[Task]]:
    tasks = []
    with Cluster(1, short_limits=False) as cluster:
        for _ in range(count):
            task = task_submit(requester=requester, agent=agent, input=INPUT, budget=BUDGET)
            tasks.append(task)
            wait_for_events(receiver, [task], cluster, timeout=30)
    return latencies(receiver, tasks), tasks


def backlog(
    requester: Any, agent: Agent, receiver: Receiver, count: int
) -> tuple[list[float], list[Task]]:
    tasks = [
        task_submit(requester=requester, agent=agent, input=INPUT, budget=BUDGET)
        for _ in range(count)
    ]
    with Cluster(2, short_limits=False) as cluster:
        wait_for_events(receiver, tasks, cluster, timeout=300)
    return latencies(receiver, tasks), tasks


def bulk_tasks(requester: Any, agent: Agent, count: int) -> None:
    """`count` succeeded tasks on the agent's binary, written straight into the table."""
    rng = random.Random(13)
    binary_id = agent.current_binary_id
    assert binary_id is not None
    batch = 5_000
    for start in range(0, count, batch):
        Task.objects.bulk_create(
            Task(
                requester=requester,
                agent=agent,
                binary_id=binary_id,
                input="x" * rng.randint(1, 400),
                budget=BUDGET,
                fuel_limit=1_000_000_000,
                memory_limit_mb=64,
                timeout_ms=10_000,
                min_reputation=30,
                status=Task.Status.SUCCEEDED,
                fuel_used=rng.randint(50_000, 400_000),
            )
            for _ in range(min(batch, count - start))
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE marketplace_task")


def timed(repeat: int, work: Any) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def without_the_ring(agent: Agent) -> None:
    """What a quote would read without FuelSample: the binary's latest successful runs."""
    list(
        Task.objects.filter(binary_id=agent.current_binary_id, status=Task.Status.SUCCEEDED)
        .order_by("-finished_at")
        .annotate(size=Length("input"))
        .values_list("fuel_used", "size")[:64]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    options = parser.parse_args()
    database_prepare()
    print(platform())
    _, requester, agent = echo_agent()
    with Receiver() as receiver:
        webhook_create(owner=requester, url=receiver.url, events=["task.succeeded", "task.failed"])
        paced, paced_tasks = one_at_a_time(requester, agent, receiver, options.tasks)
        queued, queued_tasks = backlog(requester, agent, receiver, options.tasks)
    paced_wait, paced_post = breakdown(paced_tasks)
    queued_wait, queued_post = breakdown(queued_tasks)
    table(
        "Webhook latency: settlement commit → request read by the receiver (ms)",
        ["", "n", "p50", "p95", "p99", "max"],
        [
            latency_row("one task at a time, 1 worker", paced),
            latency_row("  of which: settlement → attempt starts", paced_wait),
            latency_row("  of which: the POST (attempt duration)", paced_post),
            latency_row(f"backlog of {options.tasks}, 2 workers", queued),
            latency_row("  of which: settlement → attempt starts", queued_wait),
            latency_row("  of which: the POST (attempt duration)", queued_post),
        ],
    )
    events = WebhookDelivery.objects.filter(endpoint__owner=requester)
    ids = [json.loads(got.body)["id"] for got in receiver.received]
    attempts = sum(events.values_list("attempts", flat=True)) / events.count()
    print(
        f"events {events.count()}, delivered {events.filter(status='delivered').count()}, "
        f"attempts per event {attempts:.2f}, "
        f"requests received {len(ids)} ({len(ids) - len(set(ids))} repeated an event)"
    )

    bulk_tasks(requester, agent, BULK_TASKS)
    total = Task.objects.count()
    client = Client(SERVER_NAME="localhost")
    client.defaults["HTTP_AUTHORIZATION"] = (
        f"Token {Token.objects.get_or_create(user=requester)[0].key}"
    )
    url = f"/api/v1/agents/{agent.slug}/quote/?input_bytes=5000"
    assert client.get(url).status_code == 200
    quote = quote_for(agent, input_bytes=5_000)
    rows = [
        latency_row(
            "quote_for() (the ring)", timed(2_000, lambda: quote_for(agent, input_bytes=5_000))
        ),
        latency_row("GET …/quote/ (API, token auth)", timed(500, lambda: client.get(url))),
        latency_row(
            "latest 64 runs from the task table", timed(50, lambda: without_the_ring(agent))
        ),
    ]
    table(
        f"Quote latency with {total:,} tasks in the table (ms)",
        ["", "n", "p50", "p95", "p99", "max"],
        rows,
    )
    print(
        f"quote: runs {quote.runs}, estimate {quote.estimate}, "
        f"suggested budget {quote.suggested_budget} µCR"
    )
    Task.objects.filter(escrow__isnull=True, requester=requester).delete()
    audit(lambda report: f"{options.tasks * 2} tasks")


if __name__ == "__main__":
    main()
