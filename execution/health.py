"""`/healthz`, for load balancers and monitoring: the database, the broker and the workers.

Besides the checks that decide the status, the body lists every host's clusters (their
heartbeats' age; the dead ones stay a day) and the queue: queued tasks in the task table and
the messages the broker holds for the workers.

It lives in the executor app because it reads the workers' heartbeats; the URLconf routes to
it (the one place where the apps meet, see tests/test_layering.py).
"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker

from execution.heartbeat import hosts_status, worker_status
from marketplace.models import Task


def broker_depth() -> int:
    """Messages waiting in the broker: the ORM broker's unlocked rows, the Redis list's length."""
    return int(get_broker().queue_size())


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """503 when the database or the broker fails, or when no worker has reported for
    WORKER_STALE_SECONDS: submissions would be accepted but nothing would run or recover
    them, which a monitor must hear about as loudly as a broken database."""
    checks: dict[str, object] = {}
    queue: dict[str, int | None] = {"tasks": None, "broker": None}
    hosts: list[dict[str, object]] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks["database"] = "ok"
    except Exception as exc:  # a health check reports every failure, whatever its type
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        broker = get_broker()
        checks["broker"] = "ok" if broker.ping() else "error: no answer"
        checks["queued_messages"] = queue["broker"] = broker.queue_size()
    except Exception as exc:
        checks["broker"] = f"error: {exc.__class__.__name__}"
    if checks["database"] == "ok":
        workers = worker_status()
        checks["worker"] = "stale" if workers.stale else "ok"
        # Clusters heard from within WORKER_STALE_SECONDS (a restarted one counts until then).
        checks["clusters"] = workers.live
        checks["worker_silent_seconds"] = workers.silent_seconds
        hosts = hosts_status(workers.checked_at)
        queue["tasks"] = Task.objects.filter(status=Task.Status.QUEUED).count()
    else:
        checks["worker"] = "unknown"
    healthy = checks["database"] == checks["broker"] == checks["worker"] == "ok"
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "checks": checks,
            "queue": queue,
            "hosts": hosts,
        },
        status=200 if healthy else 503,
    )
