"""`/healthz`, for load balancers and monitoring: the database, the broker and the workers.

It lives in the executor app because it reads the workers' heartbeats; the URLconf routes to
it (the one place where the apps meet, see tests/test_layering.py).
"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker

from execution.heartbeat import worker_status


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """503 when the database or the broker fails, or when no worker has reported for
    WORKER_STALE_SECONDS: submissions would be accepted but nothing would run or recover
    them, which a monitor must hear about as loudly as a broken database."""
    checks: dict[str, object] = {}
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
        checks["queued_messages"] = broker.queue_size()
    except Exception as exc:
        checks["broker"] = f"error: {exc.__class__.__name__}"
    if checks["database"] == "ok":
        workers = worker_status()
        checks["worker"] = "stale" if workers.stale else "ok"
        # Clusters heard from within WORKER_STALE_SECONDS (a restarted one counts until then).
        checks["clusters"] = workers.live
        checks["worker_silent_seconds"] = workers.silent_seconds
    else:
        checks["worker"] = "unknown"
    healthy = checks["database"] == checks["broker"] == checks["worker"] == "ok"
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
