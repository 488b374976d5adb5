"""`/healthz`, for load balancers and monitoring: the database, the broker and the workers.

Anyone gets the verdict alone: `{status, database, worker}`, where `worker` is `ok`,
`stale` (no live cluster for one of the queues), `stalled` (a host has work waiting and has
started nothing for WORKER_STALL_SECONDS: execution/liveness.py) or `unknown` (the database
is away). Staff, and callers with the metrics token, also get the detail: every host's
clusters with their heartbeat age and progress, which hosts are stalled, and the queues — the
queued tasks in the task table and the messages the broker holds for each queue. Host names,
process ids and queue sizes are for operators, not for the internet (SPEC §23).

It lives in the executor app because it reads the workers' heartbeats; the URLconf routes to
it (the one place where the apps meet, see tests/test_layering.py).
"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from execution.heartbeat import cluster_states, hosts_status, status_of
from marketplace.models import Task
from marketplace.queues import broker_for, queues


def broker_depth() -> dict[str, int]:
    """Messages waiting in the broker for each queue (tasks, service): the ORM broker's
    unlocked rows, the Redis lists' lengths."""
    return {role: int(broker_for(name).queue_size()) for role, name in queues().items()}


def metrics_token_given(request: HttpRequest) -> bool:
    """`Authorization: Bearer <METRICS_TOKEN>`, compared in constant time; False if unset."""
    token = settings.METRICS_TOKEN
    if not token:
        return False
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        secret.strip().encode(), token.encode()
    )


def detail_allowed(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    staff = bool(user is not None and user.is_authenticated and user.is_staff)
    return staff or metrics_token_given(request)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """503 when the database or the broker fails, when a queue has no live cluster, or when a
    host is stalled: submissions would be accepted but nothing would run them, or recover
    them, which a monitor must hear about as loudly as a broken database."""
    checks: dict[str, Any] = {}
    queue: dict[str, Any] = {"tasks": None, "broker": None}
    hosts: list[dict[str, Any]] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks["database"] = "ok"
    except Exception as exc:  # a health check reports every failure, whatever its type
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        pinged = all(broker_for(name).ping() for name in queues().values())
        checks["broker"] = "ok" if pinged else "error: no answer"
        queue["broker"] = broker_depth()
        checks["queued_messages"] = sum(queue["broker"].values())
    except Exception as exc:
        checks["broker"] = f"error: {exc.__class__.__name__}"
    if checks["database"] == "ok":
        now = timezone.now()
        states = cluster_states(now)
        workers = status_of(states, now)
        checks["worker"] = workers.state
        # Clusters heard from within WORKER_STALE_SECONDS (a restarted one counts until then).
        checks["clusters"] = workers.live
        checks["worker_silent_seconds"] = workers.silent_seconds
        checks["stalled_hosts"] = list(workers.stalled_hosts)
        checks["unserved_queues"] = list(workers.unserved)
        hosts = hosts_status(states)
        queue["tasks"] = Task.objects.filter(status=Task.Status.QUEUED).count()
    else:
        checks["worker"] = "unknown"
    healthy = checks["database"] == checks["broker"] == checks["worker"] == "ok"
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unavailable",
        "database": "ok" if checks["database"] == "ok" else "error",
        "worker": checks["worker"],
    }
    if detail_allowed(request):
        body |= {"checks": checks, "queue": queue, "hosts": hosts}
    return JsonResponse(body, status=200 if healthy else 503)
